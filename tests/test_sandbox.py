"""The sandbox: limits hold, nothing leaks out, statuses are right.

    .venv/bin/python -m pytest tests/test_sandbox.py -q
"""

import os
import socket
import time

import pytest

from helpers import processes_mentioning

from proxylm.tasks.sandbox import (STATUSES, Limits, Program, Sandbox, detect_isolation, isolation_summary,
                                   process, seccomp_program)

FAST = Limits(timeout_s=2.0, memory_mb=256)
MARGIN_S = 3.0   # scheduling slack on a loaded machine


@pytest.fixture(scope="module")
def box():
    return Sandbox(FAST)


@pytest.fixture(scope="module")
def iso():
    return detect_isolation()


def test_statuses(box):
    assert box.run("assert 1 + 1 == 2").status == "passed"
    r = box.run("assert 1 + 1 == 3, 'arithmetic'")
    assert (r.status, r.message) == ("failed", "AssertionError: arithmetic")
    assert box.run("def f(:\n    pass").status == "failed"
    assert box.run("raise SystemExit(0)").status == "failed"          # exiting early is not passing
    assert box.run("import os\nos._exit(0)").status == "error"        # no result written
    assert all(box.run(p).status in STATUSES for p in ("x = 1", "1/0"))


def test_infinite_loop_times_out(box):
    t = time.monotonic()
    r = box.run("while True:\n    pass")
    assert r.status == "timeout"
    assert time.monotonic() - t < FAST.timeout_s + MARGIN_S


def test_memory_hog_is_stopped(box):
    assert box.run("x = bytearray(8 * 1024 ** 3)").status == "memory"
    r = box.run("chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 6)")
    assert r.status == "memory" and r.duration_s < FAST.timeout_s + MARGIN_S


def test_fork_bomb_fails_fast(box):
    r = box.run("import os\nwhile True:\n    os.fork()")
    assert r.status == "failed" and r.duration_s < FAST.timeout_s + MARGIN_S


def test_fork_bomb_without_python_guard(iso):
    if not iso["fork_blocked"]:
        pytest.skip("no kernel-level fork block here (seccomp or RLIMIT_NPROC)")
    r = Sandbox(FAST, python_guard=False).run("import os\nwhile True:\n    os.fork()")
    assert r.status == "failed" and ("Operation not permitted" in r.message or "Resource" in r.message)


@pytest.mark.parametrize("namespaces", ["auto", False])
def test_children_die_with_the_program(tmp_path, namespaces):
    """Without seccomp the program may fork; the group kill (and pid namespace) must take every child."""
    program = ("import os, time\n"
               "for _ in range(6):\n"
               "    if os.fork() == 0:\n"
               "        time.sleep(600)\n"
               "time.sleep(600)\n")
    box = Sandbox(Limits(timeout_s=1.0), namespaces=namespaces, seccomp=False, python_guard=False,
                  tmp_root=str(tmp_path))
    assert box.run(program).status == "timeout"
    deadline = time.monotonic() + MARGIN_S
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(tmp_path)) == []


def test_setsid_escapees_die_in_pid_namespace(tmp_path, iso):
    if not iso["pid_namespace"]:
        pytest.skip("no pid namespace here: a child that calls setsid() can outlive the program")
    program = ("import os, time\n"
               "if os.fork() == 0:\n"
               "    os.setsid()\n"
               "    time.sleep(600)\n")
    box = Sandbox(Limits(timeout_s=2.0), seccomp=False, python_guard=False, tmp_root=str(tmp_path))
    assert box.run(program).status == "passed"
    deadline = time.monotonic() + MARGIN_S
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(tmp_path)) == []


def test_cannot_write_outside_workdir(tmp_path, box, iso):
    target = tmp_path / "escaped.txt"
    assert box.run(f"open({str(target)!r}, 'w').write('x')").status == "failed"
    assert not target.exists()
    if iso["filesystem_readonly"]:   # the OS layer alone, also against code that walks around Python
        raw = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
               f"fd = libc.open({str(target).encode()!r}, 0o101, 0o644)\nassert fd >= 0\n")
        assert Sandbox(FAST, python_guard=False).run(raw).status == "failed"
        assert not target.exists()


def test_workdir_is_private_and_removed(box):
    r = box.run("import os\nopen('scratch.txt', 'w').write('ok')\nraise RuntimeError(os.getcwd())")
    workdir = r.message.split(": ", 1)[1]
    assert r.status == "failed" and "proxylm-sbx-" in workdir
    assert not os.path.exists(workdir)


def test_environment_is_minimal(box, monkeypatch):
    monkeypatch.setenv("PROXYLM_TEST_SECRET", "hunter2")
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR"}
    r = box.run("import os\nassert 'PROXYLM_TEST_SECRET' not in os.environ\n"
                f"assert set(os.environ) <= {allowed!r}, sorted(os.environ)")
    assert r.status == "passed", r.message


def test_network_blocked(box, iso):
    if not iso["network_blocked"]:
        pytest.skip("no network isolation here")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        r = box.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
    finally:
        listener.close()
    assert r.status == "failed"


def test_run_many_keeps_order(box):
    results = box.run_many([f"assert {i} % 2 == 0" for i in range(6)], workers=2, progress=False)
    assert [r.passed for r in results] == [i % 2 == 0 for i in range(6)]


def test_isolation_report(iso):
    for key in ("namespaces", "filesystem_readonly", "network_blocked", "fork_blocked", "pid_namespace",
                "seccomp", "rlimit_nproc_enforced", "env_minimal"):
        assert key in iso
    assert iso["probe_ok"] and iso["env_minimal"]
    assert "namespaces=" in isolation_summary(iso)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("block_inet", [False, True])
def test_seccomp_program_jumps_stay_inside(machine, block_inet):
    prog = seccomp_program(machine, block_inet, own_pid=1234)
    ret = 0x06
    assert prog[-1][0] == ret
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:   # BPF_JMP class
            assert i + 1 + max(jt, jf) < len(prog)


# ---- escapes reproduced against earlier versions (issue 13) ----

def _accepts(listener: socket.socket) -> bool:
    listener.settimeout(0.2)
    try:
        conn, _ = listener.accept()
    except (socket.timeout, BlockingIOError, OSError):
        return False
    conn.close()
    return True


@pytest.mark.parametrize("python_guard", [True, False])
def test_unix_sockets_blocked(tmp_path, python_guard):
    """A host Unix-domain socket by path (through the read-only mount) and an abstract one."""
    path = str(tmp_path / "host.sock")
    by_path = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    by_path.bind(path)
    by_path.listen(1)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"\0proxylm-test-{os.getpid()}-{python_guard}"
    abstract.bind(abstract_name)
    abstract.listen(1)
    box = Sandbox(FAST, python_guard=python_guard)
    try:
        for address in (path, abstract_name):
            program = ("import socket\n"
                       "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                       f"s.connect({address!r})\n"
                       "s.sendall(b'leak')\n")
            r = box.run(program)
            assert r.status == "failed", (address, r)
            assert not _accepts(by_path if address == path else abstract)
        r = box.run("import socket\na, b = socket.socketpair()")
        assert r.status == "failed" and "not permitted" in r.message
    finally:
        by_path.close()
        abstract.close()


def test_status_channel_cannot_be_replaced(tmp_path):
    """The old status file replaced by a FIFO blocked the parent forever; nothing in the workdir is read now."""
    box = Sandbox(FAST, tmp_root=str(tmp_path))
    trick = ("import os\n"
             "for name in ('_proxylm_status.json', '_proxylm_stderr.txt', 'probe.json'):\n"
             "    try:\n        os.unlink(name)\n    except OSError:\n        pass\n"
             "    os.mkfifo(name)\n")
    t = time.monotonic()
    assert box.run(trick + "os._exit(0)\n").status == "error"
    r = box.run(trick + "while True:\n    pass\n")
    assert r.status == "timeout"
    assert time.monotonic() - t < 2 * FAST.timeout_s + 2 * MARGIN_S
    assert [p.name for p in tmp_path.iterdir()] == []   # work dirs removed, FIFOs and all


def test_forged_passes_are_refused(tmp_path):
    box = Sandbox(FAST)
    status_file = ("import json\nopen('_proxylm_status.json', 'w').write(json.dumps({'status': 'passed'}))\n"
                   "raise AssertionError('wrong')\n")
    assert box.run(status_file).status == "failed"
    every_fd = ("import json, os\nrecord = json.dumps({'status': 'passed', 'message': ''}).encode()\n"
                "for fd in range(3, 64):\n    try:\n        os.write(fd, record + b'\\n')\n    except OSError:\n"
                "        pass\nos._exit(0)\n")
    r = box.run(every_fd)
    assert r.status == "error" and not r.passed
    finish = ("import sys\nf = sys._getframe()\nwhile f is not None:\n"
              "    if 'finish' in f.f_locals:\n        f.f_locals['finish']('passed')\n    f = f.f_back\n"
              "raise AssertionError('no finish found')\n")
    r = box.run(finish)
    assert r.status == "failed" and not r.passed


def _check_program(completion: str, context: bool = True) -> Program:
    prompt = "def helper(x):\n    return x * 2\n\n\ndef double(x):\n    \"\"\"Twice x.\"\"\"\n"
    test = "def check(candidate):\n    assert candidate(3) == 6\n    assert helper(2) == 4\n\ncheck(double)\n"
    return Program(prompt + completion, test, "double", context=prompt if context else None)


def test_results_must_be_plain_data():
    box = Sandbox(FAST)
    assert box.run(_check_program("    return helper(x)\n")).status == "passed"
    assert box.run(_check_program("    return x + 1\n")).status == "failed"
    always_equal = ("    class Yes:\n        def __eq__(self, other):\n            return True\n"
                    "    return Yes()\n")
    r = box.run(_check_program(always_equal))
    assert r.status == "failed" and "plain data" in r.message
    subclass = ("    class Int(int):\n        __eq__ = lambda self, other: True\n"
                "    return [Int(0)]\n")
    assert box.run(_check_program(subclass)).status == "failed"
    from collections import namedtuple  # noqa: F401  (namedtuples and Counters are plain enough)
    ok = "    from collections import namedtuple, Counter\n    return namedtuple('P', 'a')(x * 2)[0] + len(Counter())\n"
    assert box.run(_check_program(ok)).status == "passed"


def test_program_cannot_rewire_the_tests():
    """Tests that judge through a prompt helper and a builtin (like HumanEval/32's poly and math.fabs)."""
    box = Sandbox(FAST)
    prompt = "def poly(x):\n    return x * x - 4\n\n\ndef root():\n    \"\"\"A root of poly.\"\"\"\n"
    test = "def check(candidate):\n    assert abs(poly(candidate())) < 1e-9\n\ncheck(root)\n"

    def run(completion):
        return box.run(Program(prompt + completion, test, "root", context=prompt)).status

    assert run("    return 2.0\n") == "passed"
    assert run("    return 3.0\n") == "failed"
    assert run("    return 3.0\n\n\ndef poly(x):\n    return 0\n") == "failed"          # a new helper
    assert run("    return 3.0\n\n\nimport builtins\nbuiltins.abs = lambda x: 0\n") == "failed"   # a new builtin
    assert run('    return 2.0\n"""\n') == "failed"   # an open string cannot swallow the tests


def test_stale_workdirs_of_dead_owners_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f"proxylm-sbx-{pid}.12345-abc"
    stale.mkdir()
    (stale / "candidate.py").write_text("x")
    unknown = tmp_path / "proxylm-sbx-oldstyle"
    unknown.mkdir()
    mine = tmp_path / f"proxylm-sbx-{process.owner_tag()}-live"
    mine.mkdir()
    assert process.clean_stale(str(tmp_path)) == 1
    assert not stale.exists() and unknown.exists() and mine.exists()
