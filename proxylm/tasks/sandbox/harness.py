"""The harness: the first code of every sandboxed interpreter; sets up the isolation, then runs the program.

The parent starts `python -I -c BOOTSTRAP <this folder> <workdir>` (through LAUNCHER and unshare) in the
working directory. BOOTSTRAP loads this folder as a private package (`_proxylm_sbx`) without importing
proxylm, so only the standard library and the child-side modules (policy, isolation, guard, harness, proxy,
wire) are imported into the child. The config (with a per-run nonce) comes on stdin; the one result record
goes to an inherited pipe as `<nonce> <json>`: the parent opens no path inside the working directory. A judge
(role "judge") also exits 0 only after the tests passed: the parent needs both, the record and the status.
"""

from __future__ import annotations

import json
import os
import sys

from . import isolation
from .guard import install_python_guard
from .policy import CANDIDATE_MODULE_NAME, CONTEXT_NAME, MESSAGE_CHARS, PROGRAM_NAME, STATUSES, TEST_NAME
from .proxy import CandidateStub, NotSendable, run_tests, serve

PACKAGE = "_proxylm_sbx"
HERE = os.path.dirname(os.path.abspath(__file__))
# run by `python -I -c`: argv = ['-c', folder, workdir]; the config comes on stdin
BOOTSTRAP = ("import sys, types; p = types.ModuleType('_proxylm_sbx'); p.__path__ = [sys.argv[1]]; "
             "sys.modules['_proxylm_sbx'] = p; import _proxylm_sbx.harness as h; h.main(sys.argv[2])")
# the first process: dies with the evaluator (SIGKILL when its parent goes, kept across execve into unshare,
# whose --kill-child passes it on), checks the evaluator did not die before that, then execs the rest
LAUNCHER = ("import ctypes, os, sys\n"
            "if ctypes.CDLL(None).prctl(1, 9, 0, 0, 0) != 0 or os.getppid() != int(sys.argv[1]):\n"
            "    os._exit(70)\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")
RECORD_BYTES = 64 * MESSAGE_CHARS   # the longest status record the parent reads
JUDGE_FAILED_EXIT = 3               # a judge exits 0 only after the tests passed (the verdict, twice)


def harness_command(prefix: list[str], workdir: str) -> list[str]:
    """The child's command line: launcher, [unshare ...], python -I -c BOOTSTRAP <sandbox folder> <workdir>."""
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, str(os.getpid()),
            *prefix, sys.executable, "-I", "-c", BOOTSTRAP, HERE, workdir]


def parse_status(data: bytes, nonce: str) -> dict | None:
    """The harness's record from the status pipe: `<nonce> <json>\n`, nothing before it. Anything else (the
    program wrote to the pipe, or no record came) is None: the run gets no result from the program."""
    head = nonce.encode() + b" "
    if not data.startswith(head):
        return None
    try:
        record = json.loads(data[len(head):].split(b"\n", 1)[0])
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return None
    record["message"] = str(record.get("message", ""))[:MESSAGE_CHARS]
    return record


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_source(name: str) -> str:
    with open(name, encoding="utf-8", errors="replace") as f:
        return f.read()


def main(workdir: str) -> None:
    """Child side; cwd is the working directory, stdin the config pipe, fd 2 the parent's stderr file.

    Roles (cfg["role"]): "program" runs a program alone; "candidate" runs the solution, then answers the
    judge's calls (proxy.serve); "judge" runs the trusted tests against a stub of the entry point and alone
    decides the verdict (it never runs candidate code, and no file of it lies in any working directory)."""
    try:   # first: no process of our uid may read this one's memory or descriptors (/proc/PID/mem, fd)
        isolation.set_dumpable(False)
    except OSError:
        pass
    raw = _read_all(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    cfg = json.loads(raw)
    nonce, status_fd, role = cfg.pop("nonce"), cfg["status_fd"], cfg.get("role", "program")
    real_write, real_exit = os.write, os._exit
    layers, problems = [], []
    try:
        isolation.die_with_parent()
        layers.append("die_with_parent")
    except OSError as e:
        problems.append(str(e))
    if cfg["namespaces"]:
        try:
            isolation.readonly_filesystem(workdir)
            layers.append("readonly_fs")
        except OSError as e:
            problems.append(str(e))

    def report(record: dict) -> None:
        real_write(status_fd, (nonce + " " + json.dumps(record) + "\n").encode())
        # skip atexit handlers and threads the program may have left; a judge's exit status is its verdict too
        real_exit(0 if role != "judge" or record["status"] == "passed" else JUDGE_FAILED_EXIT)

    def finish(status: str, message: str = "", **extra) -> None:
        if status == "passed":   # a pass is reported in one place only: after the tests ran to their end
            raise PermissionError("finish('passed') is not how a program passes")
        report({"status": status, "message": message[:MESSAGE_CHARS], "layers": layers, "problems": problems, **extra})

    if os.geteuid() == 0:   # real root, or root inside our user namespace
        try:
            isolation.drop_capabilities()
            layers.append("no_capabilities")
        except OSError as e:
            problems.append(str(e))
    try:
        isolation.set_limits(cfg["limits"], own_user_namespace=cfg["namespaces"])
        layers.append("rlimits")
    except (OSError, ValueError) as e:
        problems.append(f"rlimits: {e}")
    if cfg["seccomp"]:
        try:
            isolation.install_seccomp(block_sockets=True)
            layers.append("seccomp")
        except (OSError, AttributeError) as e:
            problems.append(f"seccomp: {e}")
    if problems and not cfg.get("probe"):
        # fail closed: a layer the probe found working did not come up this time
        finish("error", "sandbox set-up failed: " + "; ".join(problems))
    if role == "judge":
        _judge(cfg, layers, finish, report)
    try:   # every file is read before any of the program's code runs
        solution = compile(_read_source(PROGRAM_NAME), PROGRAM_NAME, "exec")
    except (SyntaxError, ValueError) as e:
        finish("failed", f"{type(e).__name__}: {e}")
    if cfg["python_guard"]:
        install_python_guard(workdir)
        layers.append("python_guard")
    try:
        g = {"__name__": CANDIDATE_MODULE_NAME}
        exec(solution, g)
        if role == "candidate":
            serve(g, cfg["entry_point"], cfg["req_fd"], cfg["resp_fd"])
    except MemoryError as e:
        finish("memory", f"MemoryError: {e}")
    except BaseException as e:   # SystemExit and KeyboardInterrupt are failures of the program too
        finish("failed", f"{type(e).__name__}: {e}")
    report({"status": "passed", "message": "", "layers": layers, "problems": problems})


def _judge(cfg: dict, layers: list, finish, report) -> None:
    """The judge's part: tell the parent it is set up (so the candidate starts only now), run the tests."""
    os.write(cfg["ready_fd"], b"R")
    os.close(cfg["ready_fd"])
    stub = CandidateStub(cfg["entry_point"], cfg["req_fd"], cfg["resp_fd"], cfg.get("opaque_results", False))
    try:
        test = compile(cfg["test"], TEST_NAME, "exec")
        context = None
        if cfg.get("context"):
            try:
                context = compile(cfg["context"], CONTEXT_NAME, "exec")
            except (SyntaxError, ValueError):
                context = None   # e.g. a partial-code prompt: the tests run without its helpers
        run_tests(context, test, cfg["entry_point"], stub, CANDIDATE_MODULE_NAME)
    except NotSendable as e:
        finish("error", f"the tests cannot be run through the call proxy: {e}")
    except MemoryError as e:
        finish("memory", f"MemoryError: {e}", candidate_gone=stub.gone)
    except BaseException as e:
        finish("failed", f"{type(e).__name__}: {e}", candidate_gone=stub.gone)
    report({"status": "passed", "message": "", "layers": layers, "problems": []})
