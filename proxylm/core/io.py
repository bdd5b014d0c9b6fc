"""Atomic files, advisory locks and JSON output: the one implementation every layer uses.

    atomic_write(path, b"...")        # readers see the old file or the new one, never a torn one
    with file_lock(path):             # exclusive; released when the process dies, so never stale
        ...
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems refuse directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write(path, data: bytes | str) -> Path:
    """Write `data` to a temporary sibling, fsync it, rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


@contextmanager
def file_lock(lock_path, blocking: bool = True):
    """Exclusive advisory lock on `lock_path` (created if missing). With blocking=False a lock held
    elsewhere raises BlockingIOError at once instead of waiting."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def print_json(obj) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    print(json.dumps(obj, indent=2, default=str))


def printable(text) -> str:
    """`text` safe for a terminal: every non-printable character (controls such as ESC, bidi and other
    format characters, lone surrogates of undecodable file names) written as an escape (\\x1b, \\u202e),
    so a file named with an escape sequence cannot drive the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in str(text))
