"""One sandboxed process, parent side: its working directory, the launch, the wall clock, the status pipe.

The parent never opens a path inside the working directory once the program may run: the config goes in
on a stdin pipe, the result comes back on an inherited pipe (framed with a per-run nonce, read without
blocking after the whole process group is dead), and stderr goes to an unlinked file the parent made
outside the working directory. Working directories are named after their owner (pid and start time), so
the next sandbox in the same folder removes those of evaluators that died (kill -9) without cleaning up.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .harness import RECORD_BYTES, harness_command, parse_status
from .policy import CHILD_ENV, MESSAGE_CHARS, WORKDIR_PREFIX


@dataclass
class Outcome:
    finished: bool            # exited before the wall clock ran out
    returncode: int | None
    record: dict | None       # the harness's status record, None when none (or a forged one) came
    wrote_garbage: bool       # something other than a record came on the status pipe
    stderr: str               # the last MESSAGE_CHARS characters of the process's stderr
    duration_s: float
    start_error: str = ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): pid + this is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid) or 0}"


_cleaned: set[str] = set()


def clean_stale(root: str) -> int:
    """Remove `proxylm-sbx-<pid>.<start>-*` dirs in `root` whose owner is gone; returns how many."""
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(WORKDIR_PREFIX):
            continue
        tag = name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        pid, _, start = tag.partition(".")
        if not pid.isdigit() or not start.isdigit():
            continue   # not named by this version: owner unknown, left alone
        if _start_time(int(pid)) == start:
            continue   # the owner still runs
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():   # never a symlink, never someone else's
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def make_workdir(root: str | None) -> str:
    root = os.path.realpath(root or tempfile.gettempdir())
    if root not in _cleaned:
        _cleaned.add(root)
        clean_stale(root)
    return os.path.realpath(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{owner_tag()}-", dir=root))


def _wait_exited(proc, timeout_s: float) -> bool:
    """Wait for the child to exit WITHOUT reaping it, so its pid (= the group id) stays ours to kill."""
    import select

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # no pidfd (old kernel, not Linux): reaping wait, tiny pid-reuse race
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(fd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_pipe(fd: int, limit: int) -> bytes:
    """Whatever is in the pipe now, at most `limit` bytes; never blocks (a leftover writer may hold it)."""
    os.set_blocking(fd, False)
    chunks, n = [], 0
    while n < limit:
        try:
            chunk = os.read(fd, limit - n)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)


def _tail(f) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * MESSAGE_CHARS))
    return f.read().decode("utf-8", "replace").strip()[-MESSAGE_CHARS:]


def launch(prefix: list[str], workdir: str, cfg: dict, timeout_s: float) -> Outcome:
    """Run the harness in `workdir` (files already written there) with `cfg`; kill its group afterwards."""
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    r, w = os.pipe()
    cfg = dict(cfg, nonce=nonce, status_fd=w)
    env = dict(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
    with tempfile.TemporaryFile(dir=os.path.dirname(workdir)) as err:
        try:
            try:
                proc = subprocess.Popen(harness_command(prefix, workdir), cwd=workdir, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                        close_fds=True, pass_fds=(w,), start_new_session=True)
            finally:
                os.close(w)
        except OSError as e:
            os.close(r)
            return Outcome(False, None, None, False, "", time.monotonic() - start, f"could not start the sandbox: {e}")
        try:
            with proc:
                try:   # a few hundred bytes into an empty pipe: never blocks
                    proc.stdin.write(json.dumps(cfg).encode())
                    proc.stdin.close()
                except OSError:
                    pass   # the launcher died early; its exit status tells why
                finished = _wait_exited(proc, timeout_s)
                _kill_group(proc.pid)   # leftovers of a finished program too; the leader is not reaped yet
                proc.wait()
            data = _read_pipe(r, RECORD_BYTES)
        finally:
            os.close(r)
        record = parse_status(data, nonce)
        return Outcome(finished, proc.returncode, record, bool(data) and record is None, _tail(err),
                       time.monotonic() - start)
