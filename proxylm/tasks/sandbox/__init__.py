"""The code-execution sandbox for model-written programs (docs/sandbox.md).

    from proxylm.tasks.sandbox import Sandbox, Limits
    Sandbox(Limits(timeout_s=5)).run("assert 1 + 1 == 2").status    # 'passed'
    python -m proxylm.tasks.sandbox                                  # which isolation layers hold here (JSON)

Modules: policy (limits, statuses, names), isolation (mounts, capabilities, seccomp, rlimits: child side),
guard (the Python-level guard: child side), harness (the child's entry point and the parent<->child
protocol), proxy + wire (the call proxy: the judge's stub, the candidate's server, the strict plain-data
format), process (launches: pipes, wall clock; a judge + candidate pair), workdir (working directories:
made, removed without recursion, stale ones swept), runner (Sandbox: verdicts, a thread pool), probe
(detect_isolation).
"""

from .isolation import seccomp_program
from . import process
from .policy import DEFAULT_TIMEOUT_S, MESSAGE_CHARS, STATUSES, ExecResult, Limits, Program
from .probe import detect_isolation, isolation_summary
from .runner import Sandbox, default_workers, sandbox_facts
from . import wire

__all__ = ["DEFAULT_TIMEOUT_S", "MESSAGE_CHARS", "STATUSES", "ExecResult", "Limits", "Program", "Sandbox", "default_workers",
           "detect_isolation", "isolation_summary", "process", "sandbox_facts", "seccomp_program", "wire"]
