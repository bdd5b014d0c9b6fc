"""The code-execution sandbox for model-written programs (docs/sandbox.md).

    from proxylm.tasks.sandbox import Sandbox, Limits
    Sandbox(Limits(timeout_s=5)).run("assert 1 + 1 == 2").status    # 'passed'
    python -m proxylm.tasks.sandbox                                  # which isolation layers hold here (JSON)

Modules: policy (limits, statuses, names), isolation (mounts, capabilities, seccomp, rlimits: child side),
guard (the Python-level guard, plain-result checks: child side), harness (the child's entry point
and the parent<->child protocol), process (one launch: workdir, pipes, wall clock), runner (Sandbox: one process per program, timeouts, a thread pool), probe (detect_isolation).
"""

from .isolation import seccomp_program
from . import process
from .policy import DEFAULT_TIMEOUT_S, MESSAGE_CHARS, STATUSES, ExecResult, Limits, Program
from .probe import detect_isolation, isolation_summary
from .runner import Sandbox, default_workers

__all__ = ["DEFAULT_TIMEOUT_S", "MESSAGE_CHARS", "STATUSES", "ExecResult", "Limits", "Program", "Sandbox", "default_workers",
           "detect_isolation", "isolation_summary", "process", "seccomp_program"]
