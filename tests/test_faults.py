"""Faults: the evaluator killed (-9) while a candidate runs leaves nothing behind.

    .venv/bin/python -m pytest tests/test_faults.py -q
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxylm.tasks.sandbox import Sandbox, detect_isolation

MARGIN_S = 5.0


def _mentions(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (zombies have an empty cmdline)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def _wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_kill_9_of_eval_humaneval_kills_the_candidate(tmp_path):
    root = tmp_path / "tmp"
    root.mkdir()
    problem = {"task_id": "T/0", "entry_point": "f", "prompt": "def f():\n", "test": "def check(c):\n    c()\n"}
    (tmp_path / "p.jsonl").write_text(json.dumps(problem) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"task_id": "T/0",
                                                  "completion": "    import time\n    time.sleep(600)\n"}) + "\n")
    env = dict(os.environ, TMPDIR=str(root), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    evaluator = subprocess.Popen([sys.executable, "-m", "proxylm", "eval", "humaneval", "--problems",
                                  str(tmp_path / "p.jsonl"), "--completions", str(tmp_path / "c.jsonl"),
                                  "--timeout", "120", "--workers", "1", "--json"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the candidate's process runs when its working dir exists and a process names it
        def running():
            dirs = [p for p in root.iterdir() if p.name.startswith(f"proxylm-sbx-{evaluator.pid}.")]
            return bool(dirs) and bool(_mentions(str(dirs[0])))
        assert _wait_for(running, 60), "the candidate never started"
        time.sleep(0.5)   # past the launcher, inside the program's sleep
    finally:
        evaluator.send_signal(signal.SIGKILL)
        evaluator.wait()
    assert _wait_for(lambda: not _mentions(str(root)), MARGIN_S), _mentions(str(root))
    assert [p.name for p in root.iterdir() if p.name.startswith("proxylm-sbx-")]   # left behind by the kill
    Sandbox(tmp_root=str(root)).run("pass")   # the next sandbox in that folder removes it
    assert [p.name for p in root.iterdir() if p.name.startswith("proxylm-sbx-")] == []


def test_isolation_probe_is_cached():
    assert detect_isolation() is detect_isolation()
