"""Evaluation tasks built on the library: HumanEval-style code generation (humaneval), the code-execution
sandbox (sandbox/), ReCode-style robustness (robustness/). Tasks may import proxylm.assemble, proxylm.eval
and proxylm.core; nothing below them imports proxylm.tasks."""
