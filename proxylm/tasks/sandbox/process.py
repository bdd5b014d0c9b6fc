"""One sandboxed process, parent side: its working directory, the launch, the wall clock, the status pipe.

The parent never opens a path inside the working directory once the program may run: the config goes in
on a stdin pipe, the result comes back on an inherited pipe (framed with a per-run nonce, read without
blocking after the whole process group is dead), and stderr goes to an unlinked file the parent made
outside the working directory. Working directories: workdir.py. A program with tests is two
processes (launch_pair): the judge starts first, says it is set up, then the candidate starts; the two talk
only through two pipes the parent made (proxy.py), and the verdict is the judge's alone.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from .harness import RECORD_BYTES, harness_command, parse_status
from .policy import CHILD_ENV, MESSAGE_CHARS
from .workdir import clean_stale, make_workdir, owner_tag  # noqa: F401  (re-exported: the parent's workdir API)


@dataclass
class Outcome:
    finished: bool            # exited before the wall clock ran out
    returncode: int | None
    record: dict | None       # the harness's status record, None when none (or a forged one) came
    wrote_garbage: bool       # something other than a record came on the status pipe
    stderr: str               # the last MESSAGE_CHARS characters of the process's stderr
    duration_s: float
    start_error: str = ""


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


def _popen(prefix: list[str], workdir: str, pass_fds: tuple, err):
    env = dict(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
    return subprocess.Popen(harness_command(prefix, workdir), cwd=workdir, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=err, close_fds=True, pass_fds=pass_fds,
                            start_new_session=True)


def _feed(proc, cfg: dict) -> None:
    """Write the config to the child's stdin and close it (a judge's tests may be megabytes: a thread)."""
    def write():
        try:
            proc.stdin.write(json.dumps(cfg).encode())
            proc.stdin.close()
        except (OSError, ValueError):
            pass   # the child died early; its exit status tells why
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def launch(prefix: list[str], workdir: str, cfg: dict, timeout_s: float) -> Outcome:
    """Run the harness in `workdir` (files already written there) with `cfg`; kill its group afterwards."""
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    r, w = os.pipe()
    cfg = dict(cfg, nonce=nonce, status_fd=w)
    with tempfile.TemporaryFile(dir=os.path.dirname(workdir)) as err:
        try:
            try:
                proc = _popen(prefix, workdir, (w,), err)
            finally:
                os.close(w)
        except OSError as e:
            os.close(r)
            return Outcome(False, None, None, False, "", time.monotonic() - start, f"could not start the sandbox: {e}")
        try:
            with proc:
                _feed(proc, cfg).join(timeout_s)
                finished = _wait_exited(proc, max(0.0, timeout_s - (time.monotonic() - start)))
                _kill_group(proc.pid)   # leftovers of a finished program too; the leader is not reaped yet
                proc.wait()
            data = _read_pipe(r, RECORD_BYTES)
        finally:
            os.close(r)
        record = parse_status(data, nonce)
        return Outcome(finished, proc.returncode, record, bool(data) and record is None, _tail(err),
                       time.monotonic() - start)


def _ready(fd: int, timeout_s: float) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
    return bool(ready) and os.read(fd, 1) == b"R"


def launch_pair(prefix: list[str], judge_dir: str, cand_dir: str, judge_cfg: dict, cand_cfg: dict,
                timeout_s: float) -> tuple[Outcome, Outcome | None]:
    """The judge (tests, no candidate code) and the candidate (the solution, serving calls), connected by two
    pipes; both groups killed when the judge ends or the wall clock runs out. (judge, candidate) outcomes;
    the candidate's is None when it never started (the judge did not come up)."""
    start = time.monotonic()
    jn, cn = secrets.token_hex(16), secrets.token_hex(16)
    fds: dict[str, int] = {}
    for a, b in (("j_r", "j_w"), ("c_r", "c_w"), ("req_r", "req_w"), ("resp_r", "resp_w"), ("ready_r", "ready_w")):
        fds[a], fds[b] = os.pipe()

    def close(*names: str) -> None:   # each descriptor closed once: a number closed twice may be another thread's
        for name in names:
            fd = fds.pop(name, None)
            if fd is not None:
                os.close(fd)

    judge_cfg = dict(judge_cfg, role="judge", nonce=jn, status_fd=fds["j_w"], req_fd=fds["req_w"],
                     resp_fd=fds["resp_r"], ready_fd=fds["ready_w"])
    cand_cfg = dict(cand_cfg, role="candidate", nonce=cn, status_fd=fds["c_w"], req_fd=fds["req_r"],
                    resp_fd=fds["resp_w"])
    procs: list = []
    with tempfile.TemporaryFile(dir=os.path.dirname(judge_dir)) as j_err, \
            tempfile.TemporaryFile(dir=os.path.dirname(cand_dir)) as c_err:
        try:
            try:
                judge = _popen(prefix, judge_dir, (fds["j_w"], fds["req_w"], fds["resp_r"], fds["ready_w"]), j_err)
                procs.append(judge)
            finally:
                close("j_w", "req_w", "resp_r", "ready_w")
            _feed(judge, judge_cfg)
            cand = None
            # the candidate starts once the judge is set up and non-dumpable (unreadable to it); in a private
            # pid namespace with its own /proc the candidate cannot name the judge at all: both start at once
            private = "--pid" in prefix and "--mount-proc" in prefix
            if private or _ready(fds["ready_r"], timeout_s):
                try:
                    cand = _popen(prefix, cand_dir, (fds["c_w"], fds["req_r"], fds["resp_w"]), c_err)
                    procs.append(cand)
                finally:
                    close("c_w", "req_r", "resp_w")
                _feed(cand, cand_cfg)
            close("c_w", "req_r", "resp_w")
            finished = _wait_exited(judge, max(0.0, timeout_s - (time.monotonic() - start)))
            cand_finished = cand is not None and _wait_exited(cand, 0)
        except OSError as e:
            for proc in procs:
                _kill_group(proc.pid)
                proc.wait()
            close(*list(fds))
            return Outcome(False, None, None, False, "", time.monotonic() - start,
                           f"could not start the sandbox: {e}"), None
        outcomes: list = []
        for proc, r, nonce, err, done in ((judge, "j_r", jn, j_err, finished), (cand, "c_r", cn, c_err, cand_finished)):
            if proc is None:
                outcomes.append(None)
                continue
            _kill_group(proc.pid)   # the leader is not reaped yet: its group id is still ours
            proc.wait()
            data = _read_pipe(fds[r], RECORD_BYTES)
            record = parse_status(data, nonce)
            outcomes.append(Outcome(done, proc.returncode, record, bool(data) and record is None, _tail(err),
                                    time.monotonic() - start))
        close(*list(fds))
        return outcomes[0], outcomes[1]
