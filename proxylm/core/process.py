"""Child processes that must not outlive their parent: the `die_with_parent` of every layer (the sandboxed
interpreter, which imports nothing from proxylm, keeps its own strict one: proxylm/tasks/sandbox/isolation.py).

    die_with_parent()                      # a worker: SIGKILL when the parent dies (Linux), else nothing
    die_with_parent(parent=pid)            # ... and exit now if that parent already died
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h); the signal survives execve


def die_with_parent(parent: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (a kill -9 of the parent would otherwise leave
    its workers running). -> True when set; False when not Linux or refused (workers then notice the broken pipe
    or the parent's pid change). `parent`: the parent's pid as it gave it; if that parent died before the
    request took effect, this process exits at once."""
    ok = False
    if sys.platform.startswith("linux"):
        ok = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    return ok
