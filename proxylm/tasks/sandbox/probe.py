"""What isolation holds on this machine, measured by running a probe program (cached per process).

    python -m proxylm.tasks.sandbox     # print it as JSON
"""

from __future__ import annotations

import json
import os
import socket
import sys

from .policy import CHILD_ENV, PROGRAM_NAME, UNSHARE_LADDER, Limits
from .process import launch, make_workdir

_PROBE = r'''
import json, os, socket
r = {}
target = os.path.join(os.path.dirname(os.getcwd()), NAME)
try:
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    r["write_outside"] = True
except OSError:
    r["write_outside"] = False
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(("127.0.0.1", PORT))
    r["network"] = True
except OSError:
    r["network"] = False
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(UNIX_SOCKET_PATH)
    r["unix_socket"] = True
except OSError:
    r["unix_socket"] = False
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    r["fork"] = True
except OSError:
    r["fork"] = False
r["visible_processes"] = sum(p.isdigit() for p in os.listdir("/proc")) if os.path.isdir("/proc") else -1
r["env"] = sorted(os.environ)
with open("probe.json", "w") as f:
    json.dump(r, f)
'''

_isolation_cache: dict | None = None
UNIX_PATH_MAX = 108  # sun_path of a Linux AF_UNIX address, its final NUL included


def _probe(prefix: list[str], seccomp: bool) -> dict | None:
    """Run the probe program through `prefix`, the OS layers only (no Python guard)."""
    import secrets
    import shutil

    name = f"proxylm-probe-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    workdir = make_workdir(None)
    outside = os.path.join(os.path.dirname(workdir), name)
    unix_path, short_dir = outside + ".sock", None
    if len(os.fsencode(unix_path)) >= UNIX_PATH_MAX:  # a deep TMPDIR: bind in a short folder (still outside)
        import tempfile

        short_dir = tempfile.mkdtemp(prefix="pxlm-", dir="/tmp" if os.access("/tmp", os.W_OK) else None)
        unix_path = os.path.join(short_dir, "p.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen(1)
    try:
        with open(os.path.join(workdir, PROGRAM_NAME), "w") as f:
            f.write(_PROBE.replace("NAME", repr(name)).replace("PORT", str(port)).replace("UNIX_SOCKET_PATH", repr(unix_path)))
        cfg = {"namespaces": bool(prefix), "seccomp": seccomp, "python_guard": False, "limits": Limits().child(),
               "probe": True}
        out = launch(prefix, workdir, cfg, 30.0)
        status = out.record
        try:
            with open(os.path.join(workdir, "probe.json")) as f:
                found = json.load(f)
        except (OSError, ValueError):
            return None
        if status is None or status["status"] != "passed" or status.get("problems"):
            return None   # a namespace prefix that starts but cannot set up its layers does not count
        found["layers"] = status["layers"]
        return found
    finally:
        listener.close()
        unix.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for path in (outside, unix_path):
            if os.path.lexists(path):
                os.unlink(path)
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def detect_isolation(refresh: bool = False) -> dict:
    """What the sandbox can rely on here, measured by running a probe program (cached per process).

    Keys: unshare_prefix (list, [] when namespaces are unavailable), and the measured facts
    filesystem_readonly, network_blocked, fork_blocked, pid_namespace, env_minimal, plus seccomp,
    capabilities_dropped, rlimit_nproc_enforced (False as root), python_guard_available.
    """
    global _isolation_cache
    if _isolation_cache is not None and not refresh:
        return _isolation_cache
    import shutil

    tool = shutil.which("unshare")
    rungs = [[tool, *r] for r in UNSHARE_LADDER] if tool and sys.platform.startswith("linux") else []
    chosen, found = [], None
    for prefix in [*rungs, []]:           # strongest namespaces first, none last
        for seccomp in (True, False):     # seccomp needs Linux on x86_64 or aarch64
            found = _probe(prefix, seccomp)
            if found is not None:
                break
        if found is not None:
            chosen = prefix
            break
    found = found or {}
    allowed_env = set(CHILD_ENV) | {"HOME", "TMPDIR"}
    layers = found.get("layers", [])
    _isolation_cache = {
        "unshare_prefix": chosen,
        "namespaces": bool(chosen),
        "filesystem_readonly": found.get("write_outside") is False,
        "network_blocked": found.get("network") is False,
        "unix_sockets_blocked": found.get("unix_socket") is False,
        "fork_blocked": found.get("fork") is False,
        "pid_namespace": "--pid" in chosen,
        "env_minimal": set(found.get("env", ["?"])) <= allowed_env | {"PWD", "SHLVL", "_", "LC_CTYPE"},
        "seccomp": "seccomp" in layers,
        "capabilities_dropped": "no_capabilities" in layers or os.geteuid() != 0,
        "rlimit_nproc_enforced": os.geteuid() != 0,
        "python_guard_available": True,
        "probe_ok": bool(found),
    }
    return _isolation_cache


def isolation_summary(info: dict | None = None) -> str:
    info = info or detect_isolation()
    facts = ("namespaces", "filesystem_readonly", "network_blocked", "unix_sockets_blocked", "fork_blocked", "pid_namespace", "seccomp",
             "capabilities_dropped", "rlimit_nproc_enforced", "env_minimal")
    return ", ".join(f"{k}={'yes' if info.get(k) else 'NO'}" for k in facts)
