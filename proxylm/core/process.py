"""Child processes that must not outlive their parent: the one `die_with_parent` every layer uses.

    die_with_parent()                      # a worker: SIGKILL when the parent dies (Linux), else nothing
    die_with_parent(parent=pid)            # ... and exit now if that parent already died
    die_with_parent(strict=True)           # the sandbox: raise OSError if the kernel refuses
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h); the signal survives execve


def die_with_parent(parent: int | None = None, strict: bool = False) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (a kill -9 of the parent would otherwise leave
    its workers running). -> True when set. Not Linux, or refused: False (workers then notice the broken pipe
    or the parent's pid change), or OSError with `strict`. `parent`: the parent's pid as it gave it; if that
    parent died before the request took effect, this process exits at once."""
    ok = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        if not ok and strict:
            err = ctypes.get_errno()
            raise OSError(err, f"PR_SET_PDEATHSIG: {os.strerror(err)}")
    elif strict:
        raise OSError(f"PR_SET_PDEATHSIG: not available on {sys.platform}")
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    return ok
