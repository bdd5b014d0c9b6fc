"""The harness: the first code of every sandboxed interpreter; sets up the isolation, then runs the program.

The parent starts `python -I -c BOOTSTRAP <this folder> <workdir>` (through LAUNCHER and unshare) in the
working directory. BOOTSTRAP loads this folder as a private package (`_proxylm_sbx`) without importing
proxylm, so only the standard library and the child-side modules (policy, isolation, guard, harness) are
imported into the child. The config (with a per-run nonce) comes on stdin; the one result record goes to
an inherited pipe as `<nonce> <json>`: the parent opens no path inside the working directory.
"""

from __future__ import annotations

import json
import os
import sys

from . import isolation
from .guard import install_python_guard, plain_results
from .policy import CANDIDATE_MODULE_NAME, CONTEXT_NAME, MESSAGE_CHARS, PROGRAM_NAME, STATUSES, TEST_NAME

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


def _reset_hooks(builtins_snapshot: dict) -> None:
    """Between the program and its tests: undo trace hooks and replaced builtins the program installed."""
    import builtins

    sys.settrace(None)
    sys.setprofile(None)
    if "threading" in sys.modules:
        sys.modules["threading"].settrace(None)
        sys.modules["threading"].setprofile(None)
    b = vars(builtins)
    b.update(builtins_snapshot)
    for k in [k for k in b if k not in builtins_snapshot]:
        del b[k]


def main(workdir: str) -> None:
    """Child side; cwd is the working directory, stdin the config pipe, fd 2 the parent's stderr file."""
    raw = _read_all(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    cfg = json.loads(raw)
    nonce, status_fd = cfg.pop("nonce"), cfg["status_fd"]
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
        real_exit(0)   # skip atexit handlers and non-daemon threads the program may have left

    def finish(status: str, message: str = "") -> None:
        if status == "passed":   # a pass is reported in one place only: after the tests ran to their end
            raise PermissionError("finish('passed') is not how a program passes")
        report({"status": status, "message": message[:MESSAGE_CHARS], "layers": layers, "problems": problems})

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
    try:   # every file is read before any of the program's code runs
        solution = compile(_read_source(PROGRAM_NAME), PROGRAM_NAME, "exec")
        test = compile(_read_source(TEST_NAME), TEST_NAME, "exec") if cfg.get("test") else None
    except (SyntaxError, ValueError) as e:
        finish("failed", f"{type(e).__name__}: {e}")
    try:   # trusted code the tests may call (a HumanEval prompt's helpers), run apart from the program's
        context = compile(_read_source(CONTEXT_NAME), CONTEXT_NAME, "exec") if cfg.get("context") else None
    except (SyntaxError, ValueError):
        context = None   # e.g. a partial-code prompt: the tests then share the program's globals
    entry_point = cfg.get("entry_point")
    if cfg["python_guard"]:
        install_python_guard(workdir)
        layers.append("python_guard")
    import builtins

    builtins_snapshot = dict(vars(builtins))
    modules = sys.modules
    try:
        g = {"__name__": CANDIDATE_MODULE_NAME}
        exec(solution, g)
        if test is not None:
            _reset_hooks(builtins_snapshot)
            tg = g
            if context is not None:
                tg = {"__name__": CANDIDATE_MODULE_NAME}
                exec(context, tg)
            if entry_point and callable(g.get(entry_point)):
                tg[entry_point] = plain_results(g[entry_point], modules)
            exec(test, tg)
    except MemoryError as e:
        finish("memory", f"MemoryError: {e}")
    except BaseException as e:   # SystemExit and KeyboardInterrupt are failures of the program too
        finish("failed", f"{type(e).__name__}: {e}")
    report({"status": "passed", "message": "", "layers": layers, "problems": problems})
