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

import os
import signal

from .process import launch, launch_pair
from .probe import detect_isolation
from .policy import MESSAGE_CHARS, PROGRAM_NAME, ExecResult, Limits, Program
from .workdir import CLEANUP, discard, make_workdir

def _signal_of(returncode: int) -> int | None:
    """A child killed by a signal: Popen says -N; unshare re-raising it may exit with 128 + N."""
    if returncode < 0:
        return -returncode
    if returncode > 128:
        return returncode - 128
    return None

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

    def run(self, program: str | Program) -> ExecResult:
        """Run one program (plain source, or a Program with tests: judge + candidate) in fresh processes."""
        if isinstance(program, str):
            program = Program(program)
        cfg = {"namespaces": bool(self.prefix), "seccomp": self.seccomp, "limits": self.limits.child()}
        workdir = make_workdir(self.tmp_root)
        judge_dir = None
        try:
            with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as f:
                f.write(program.solution)
            if not program.test:
                return self._result(launch(self.prefix, workdir, dict(cfg, python_guard=self.python_guard),
                                           self.limits.timeout_s))
            judge_dir = make_workdir(self.tmp_root)   # empty: the tests come on the judge's stdin, not as a file
            judge_cfg = dict(cfg, python_guard=False, test=program.test, context=program.context,
                             entry_point=program.entry_point, opaque_results=program.opaque_results)
            cand_cfg = dict(cfg, python_guard=self.python_guard, entry_point=program.entry_point)
            judge, cand = launch_pair(self.prefix, judge_dir, workdir, judge_cfg, cand_cfg, self.limits.timeout_s)
            return self._with_candidate_layers(self._verdict(judge, cand), cand)
        finally:
            discard(workdir)
            if judge_dir is not None:
                discard(judge_dir)

    def _verdict(self, judge, cand) -> ExecResult:
        """Passed only on the judge's word: its record says passed AND it exited 0. A failure the candidate's
        own end explains (it crashed, ran out of memory or CPU, never defined the entry point) is told with
        the candidate's status; otherwise with the judge's."""
        verdict = self._result(judge)
        if verdict.passed and judge.returncode != 0:
            return ExecResult("error", f"the judge reported a pass but exited {judge.returncode}", verdict.duration_s)
        if verdict.passed or verdict.status == "timeout" or cand is None:
            return verdict
        if judge.record is not None and judge.record.get("candidate_gone"):
            own = self._result(cand)
            if own.status != "passed":   # a candidate "passed" only means it served to the end
                return ExecResult(own.status, own.message, verdict.duration_s, verdict.layers)
        return verdict

    @staticmethod
    def _with_candidate_layers(result: ExecResult, cand) -> ExecResult:
        """The layers the candidate's own process had (the judge's are the same, less the Python guard)."""
        if cand is not None and cand.record is not None:
            result.layers = list(cand.record.get("layers", result.layers))
        return result

    def _result(self, out) -> ExecResult:
        if out.start_error:
            return ExecResult("error", out.start_error, out.duration_s)
        if not out.finished:
            return ExecResult("timeout", f"wall clock over {self.limits.timeout_s:g} s", out.duration_s)
        if out.record is not None:
            return ExecResult(out.record["status"], out.record["message"], out.duration_s,
                              out.record.get("layers", []))
        if out.wrote_garbage:   # a record without the run's nonce, or bytes before the harness's record
            return ExecResult("error", "the program wrote to the sandbox's status channel", out.duration_s)
        cpu_s = self.limits.child()["cpu_s"]
        sig = _signal_of(out.returncode)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and out.duration_s >= cpu_s):
            return ExecResult("timeout", f"CPU limit of {cpu_s} s", out.duration_s)
        why = f"killed by {signal.Signals(sig).name}" if sig else f"exit code {out.returncode}"
        message = f"exited without a result ({why})" + (f": {out.stderr}" if out.stderr else "")
        return ExecResult("error", message[:MESSAGE_CHARS], out.duration_s)

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

def sandbox_facts() -> dict:
    """What a benchmark summary says about its sandbox: the isolation that held, the verdict's process,
    and how many working directories could not be removed (workdir.CLEANUP, with the last reason)."""
    facts = {k: v for k, v in detect_isolation().items() if k != "unshare_prefix"}
    facts["verdict"] = "judge process (call proxy)"
    facts["workdirs_not_removed"] = CLEANUP["not_removed"]
    if CLEANUP["not_removed"]:
        facts["workdir_error"] = CLEANUP["last_error"]
    return facts


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
