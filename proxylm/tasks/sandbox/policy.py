"""Sandbox policy shared by the parent and the in-candidate harness: limits, statuses, names, environment.

Standard library only: the harness imports this module inside the candidate's interpreter (`python -I`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


DEFAULT_TIMEOUT_S = 5.0       # wall clock per program, interpreter start-up included
DEFAULT_MEMORY_MB = 1024      # RLIMIT_AS; HumanEval programs need a few tens of MB
DEFAULT_MAX_PROCESSES = 16    # RLIMIT_NPROC (only enforced for a non-root user; seccomp covers root)
DEFAULT_MAX_FILE_MB = 16      # RLIMIT_FSIZE
DEFAULT_MAX_OPEN_FILES = 64   # RLIMIT_NOFILE
MESSAGE_CHARS = 300           # longest message kept in a result
PROGRAM_NAME = "candidate.py"       # the program (for tasks: prompt + completion)
TEST_NAME = "_proxylm_test.py"      # its tests, run after it with the entry point's results checked
CONTEXT_NAME = "_proxylm_context.py"   # trusted code the tests may call (a prompt's helpers), run apart
WORKDIR_PREFIX = "proxylm-sbx-"     # + <owner pid>.<owner start time>- : stale dirs of dead owners are removed
CANDIDATE_MODULE_NAME = "__candidate__"   # not "__main__": `if __name__ == "__main__":` demo blocks stay off
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
STATUSES = ("passed", "failed", "timeout", "memory", "error")

# unshare prefixes, strongest first; the probe keeps the first one that works here
UNSHARE_LADDER = (
    ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"),
    ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child"),
    ("--user", "--map-root-user", "--net", "--mount"),
)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    max_open_files: int = DEFAULT_MAX_OPEN_FILES

    def __post_init__(self):
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ValueError(f"Limits.timeout_s={self.timeout_s!r}: must be a finite number of seconds > 0")
        for key in ("memory_mb", "max_processes", "max_file_mb", "max_open_files"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2 ** 40:
                raise ValueError(f"Limits.{key}={value!r}: must be an integer in [1, 2**40)")

    def child(self) -> dict:
        d = asdict(self)
        d["cpu_s"] = max(1, math.ceil(self.timeout_s))
        return d


@dataclass
class ExecResult:
    status: str            # one of STATUSES
    message: str = ""
    duration_s: float = 0.0
    layers: list = field(default_factory=list)   # isolation layers the harness set up for this run

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Program:
    """A program with tests: `solution` runs in the candidate's process; `test` (with `context`, trusted code
    such as a HumanEval prompt, run first in the same globals) runs in a separate judge process that calls
    `entry_point` through the call proxy (proxy.py): arguments and results cross as plain data only
    (`opaque_results`: a result with no plain form arrives as a wire.Opaque, else it fails the test)."""
    solution: str
    test: str = ""
    entry_point: str | None = None
    context: str | None = None
    opaque_results: bool = False

    def __post_init__(self):
        if self.test and not self.entry_point:
            raise ValueError("a Program with tests needs the entry_point the tests call (the call proxy forwards it)")

    def text(self) -> str:
        return self.solution + ("\n" + self.test if self.test else "")
