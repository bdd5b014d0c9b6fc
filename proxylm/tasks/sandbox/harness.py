"""The harness: the first code of every sandboxed interpreter; sets up the isolation, then runs the program.

The parent starts `python -I -c BOOTSTRAP <this folder> '<json config>'` in the working directory. BOOTSTRAP
loads this folder as a private package (`_proxylm_sbx`) without importing proxylm, so only the standard
library and the child-side modules (policy, isolation, guard, harness) are imported into the child.
"""

from __future__ import annotations

import json
import os
import sys

from . import isolation
from .guard import install_python_guard
from .policy import CANDIDATE_MODULE_NAME, MESSAGE_CHARS, PROGRAM_NAME, STATUS_NAME, STATUSES, STDERR_NAME

PACKAGE = "_proxylm_sbx"
# run by `python -I -c`: argv = ['-c', folder, config]
BOOTSTRAP = ("import sys, types; p = types.ModuleType('_proxylm_sbx'); p.__path__ = [sys.argv[1]]; "
             "sys.modules['_proxylm_sbx'] = p; import _proxylm_sbx.harness as h; h.main(sys.argv[2])")


HERE = os.path.dirname(os.path.abspath(__file__))


def harness_command(prefix: list[str], cfg: dict) -> list[str]:
    """The child's command line: [unshare ...] python -I -c BOOTSTRAP <sandbox folder> <config>."""
    return [*prefix, sys.executable, "-I", "-c", BOOTSTRAP, HERE, json.dumps(cfg)]


def read_status(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(64 * MESSAGE_CHARS))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return None
    record["message"] = str(record.get("message", ""))[:MESSAGE_CHARS]
    return record


def main(config: str) -> None:
    """Child side; cwd is the working directory."""
    cfg = json.loads(config)
    workdir = os.getcwd()
    real_write, real_exit = os.write, os._exit
    layers, problems = [], []
    if cfg["namespaces"]:
        # nothing may be open for writing on a mount while it turns read-only (EBUSY): files are
        # opened afterwards, and the parent hands us a pipe for stderr
        try:
            isolation.readonly_filesystem(workdir)
            layers.append("readonly_fs")
        except OSError as e:
            problems.append(str(e))
    status_fd = os.open(STATUS_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # the program's stderr goes to a file (bounded by RLIMIT_FSIZE), never into the parent's pipe
    err_fd = os.open(STDERR_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err_fd, 2)
    os.close(err_fd)

    def finish(status: str, message: str = "") -> None:
        record = {"status": status, "message": message[:MESSAGE_CHARS], "layers": layers, "problems": problems}
        real_write(status_fd, json.dumps(record).encode())
        real_exit(0)   # skip atexit handlers and non-daemon threads the program may have left

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
            isolation.install_seccomp(block_inet=not cfg["namespaces"])
            layers.append("seccomp")
        except (OSError, AttributeError) as e:
            problems.append(f"seccomp: {e}")
    if problems and not cfg.get("probe"):
        # fail closed: a layer the probe found working did not come up this time
        finish("error", "sandbox set-up failed: " + "; ".join(problems))
    try:
        with open(PROGRAM_NAME, encoding="utf-8", errors="replace") as f:
            source = f.read()
        code = compile(source, PROGRAM_NAME, "exec")
    except (SyntaxError, ValueError) as e:
        finish("failed", f"{type(e).__name__}: {e}")
    if cfg["python_guard"]:
        install_python_guard(workdir)
        layers.append("python_guard")
    try:
        exec(code, {"__name__": CANDIDATE_MODULE_NAME})
    except MemoryError as e:
        finish("memory", f"MemoryError: {e}")
    except BaseException as e:   # SystemExit and KeyboardInterrupt are failures of the program too
        finish("failed", f"{type(e).__name__}: {e}")
    finish("passed")

