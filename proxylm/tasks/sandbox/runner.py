"""Run untrusted Python programs (model-written code) in a throw-away subprocess with limits.

    from proxylm.tasks.sandbox import Sandbox, Limits
    box = Sandbox(Limits(timeout_s=5))
    box.run("assert 1 + 1 == 2").status            # 'passed'
    box.run_many(programs, workers=8)              # parallel, with a progress bar
    python -m proxylm.tasks.sandbox                # print which isolation layers hold on this machine

Each program runs in its own `python -I` process (`sys.executable`), started in a new session (process
group), with a minimal environment, stdin/stdout closed, and a fresh temporary working directory that is
deleted afterwards. Inside, the harness (harness.py, standard library only) sets up what the machine
allows, then `exec`s the program: namespaces through `unshare` (read-only file system except the working
directory, no network, private pid namespace), seccomp, rlimits and a Python guard (isolation.py, guard.py).
The parent enforces a wall-clock timeout by killing the whole process group. What actually holds is
measured once per process by a probe (probe.py); docs/sandbox.md says what is and is not protected.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from .harness import harness_command, read_status
from .probe import detect_isolation
from .policy import (CHILD_ENV, MESSAGE_CHARS, PROGRAM_NAME, STATUS_NAME, STATUSES, STDERR_NAME, ExecResult,
                     Limits)



def _signal_of(returncode: int) -> int | None:
    """A child killed by a signal: Popen says -N; unshare re-raising it may exit with 128 + N."""
    if returncode < 0:
        return -returncode
    if returncode > 128:
        return returncode - 128
    return None


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - MESSAGE_CHARS))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class Sandbox:
    """Runs programs. `namespaces`, `seccomp`: "auto" (use them when the probe says they work), True, False."""

    def __init__(self, limits: Limits | None = None, *, namespaces: bool | str = "auto",
                 seccomp: bool | str = "auto", python_guard: bool = True, tmp_root: str | None = None):
        self.limits = limits or Limits()
        self.seccomp = detect_isolation()["seccomp"] if seccomp == "auto" else bool(seccomp)
        self.python_guard = python_guard
        self.tmp_root = tmp_root
        if namespaces == "auto":
            self.prefix = detect_isolation()["unshare_prefix"]
        elif namespaces:
            found = detect_isolation()["unshare_prefix"]
            if not found:
                raise OSError("namespaces requested but `unshare` does not work here")
            self.prefix = found
        else:
            self.prefix = []

    def _command(self, workdir: str) -> list[str]:
        cfg = {"namespaces": bool(self.prefix), "seccomp": self.seccomp, "python_guard": self.python_guard,
               "limits": self.limits.child()}
        return harness_command(self.prefix, cfg)

    def run(self, program: str) -> ExecResult:
        import shutil
        import subprocess
        import tempfile

        start = time.monotonic()
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="proxylm-sbx-", dir=self.tmp_root))
        try:
            with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as f:
                f.write(program)
            env = dict(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
            try:
                proc = subprocess.Popen(self._command(workdir), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                                        start_new_session=True)
            except OSError as e:
                return ExecResult("error", f"could not start the sandbox: {e}", time.monotonic() - start)
            with proc:
                finished = _wait_exited(proc, self.limits.timeout_s)
                _kill_group(proc.pid)   # leftovers of a finished program too; the leader is not reaped yet
                proc.wait()
                early_stderr = _drain(proc.stderr)
            duration = time.monotonic() - start
            if not finished:
                return ExecResult("timeout", f"wall clock over {self.limits.timeout_s:g} s", duration)
            status = read_status(os.path.join(workdir, STATUS_NAME))
            if status is not None:
                return ExecResult(status["status"], status["message"], duration, status.get("layers", []))
            cpu_s = self.limits.child()["cpu_s"]
            sig = _signal_of(proc.returncode)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= cpu_s):
                return ExecResult("timeout", f"CPU limit of {cpu_s} s", duration)
            why = f"killed by {signal.Signals(sig).name}" if sig else f"exit code {proc.returncode}"
            detail = (early_stderr or _tail(os.path.join(workdir, STDERR_NAME))).strip()
            message = f"exited without a result ({why})" + (f": {detail}" if detail else "")
            return ExecResult("error", message[:MESSAGE_CHARS], duration)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def map(self, programs, workers: int | None = None, progress: bool = True, desc: str = "executing"):
        """Yield (index, ExecResult) as programs finish, `workers` subprocesses at a time."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from tqdm import tqdm

        programs = list(programs)
        workers = workers or default_workers()
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(programs), desc=desc, disable=not progress or not programs, leave=False) as bar:
            futures = {pool.submit(self.run, p): i for i, p in enumerate(programs)}
            for fut in as_completed(futures):
                bar.update(1)
                yield futures[fut], fut.result()

    def run_many(self, programs, workers: int | None = None, progress: bool = True) -> list[ExecResult]:
        programs = list(programs)
        out: list[ExecResult | None] = [None] * len(programs)
        for i, res in self.map(programs, workers, progress):
            out[i] = res
        return out  # type: ignore[return-value]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _wait_exited(proc, timeout_s: float) -> bool:
    """Wait for the child to exit WITHOUT reaping it, so its pid (= the group id) stays ours to kill."""
    import select
    import subprocess

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


def _drain(pipe) -> str:
    """What the launcher (unshare, the interpreter before the harness took over) wrote; never blocks."""
    try:
        os.set_blocking(pipe.fileno(), False)
        data = pipe.read(MESSAGE_CHARS * 4) or b""
    except (OSError, ValueError):
        data = b""
    return data.decode("utf-8", "replace")[-MESSAGE_CHARS:]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
