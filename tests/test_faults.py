"""Faults. kill -9 at random (seeded) points of `proxylm train` and `proxylm codec encode`, then resume: the result
must equal an uninterrupted run's (bit-identical losses; byte-identical shards), and no process may outlive a kill.
The evaluator killed (-9) while a sandboxed candidate runs leaves nothing behind either.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q -m slow tests/test_faults.py    # the kill tests (~3 min)
    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_faults.py            # the fast mechanism test only

Kill points are drawn from a seeded RNG: for training, after a random number of logged steps, or the moment a
checkpoint is being written (its temporary folder exists); for encoding, a random delay after the worker
processes exist.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import alive, losses_by_step, processes_mentioning, val_by_step, wait_until, write_code_corpus

from proxylm.tasks.sandbox import Sandbox, detect_isolation

MARGIN_S = 5.0

SMALL = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         "train.log_every=1", "eval.max_bytes=1500", "eval.batch_size=4", "train.warmup_steps=2",
         "train.max_steps=12", "train.ckpt_every=3", "train.eval_every=6", "data.val_fraction=0.2", "train.threads=1"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=120, max_functions=5)


def proxylm(*args) -> list[str]:
    return [sys.executable, "-m", "proxylm", *map(str, args)]


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(proxylm("train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "--out", run, "--quiet"),
                   env=ENV, check=True, capture_output=True, timeout=600)
    return run


def kill_train(corpus, run: Path, seed: int) -> str:
    """Start `train`, kill -9 it at the seeded point; returns where it was killed."""
    rng = random.Random(seed)
    at_save = rng.random() < 0.5
    after_steps = rng.randint(1, 11)
    proc = subprocess.Popen(proxylm("train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "--out", run, "--quiet"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    if at_save:
        where = "while a checkpoint was being written"
        hit = wait_until(lambda: any((run / "checkpoints").glob(".tmp-*")) or proc.poll() is not None, poll=0.001)
    else:
        where = f"after {after_steps} logged steps"
        hit = wait_until(lambda: (metrics.exists() and metrics.read_text().count('"loss"') >= after_steps)
                         or proc.poll() is not None)
    assert hit
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return where


def resume_to_the_end(corpus, run: Path) -> None:
    """What a user does after a crash: resume if a checkpoint exists, else train again."""
    has_ckpt = any(p.name.startswith("step_") for p in (run / "checkpoints").glob("*")) if (run / "checkpoints").exists() else False
    cmd = (proxylm("resume", run, "--quiet") if has_ckpt else
           proxylm("train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "--out", run, "--quiet", "--overwrite"))
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def check_train_kill(corpus, uninterrupted, tmp_path, seed):
    run = tmp_path / "run"
    where = kill_train(corpus, run, seed)
    resume_to_the_end(corpus, run)
    full, got = losses_by_step(uninterrupted), losses_by_step(run)
    assert got == full, f"seed {seed}, killed {where}"  # bit-identical, every step
    assert val_by_step(run) == val_by_step(uninterrupted)
    assert json.loads((run / "summary.json").read_text())["val_bpb"] == \
        json.loads((uninterrupted / "summary.json").read_text())["val_bpb"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_kill_train_then_resume_equals_uninterrupted(corpus, uninterrupted, tmp_path, seed):
    check_train_kill(corpus, uninterrupted, tmp_path, seed)


# ---- codec encode --workers 2 -----------------------------------------------------------------------------------
def encode_cmd(corpus, out):
    return proxylm("codec", "encode", "--codec", "gzip", "--corpus", corpus, "--val-fraction", "0.2", "--split",
                   "train", "--out", out, "--workers", "2", "--threads", "1", "--shard-bytes", "300")


def shard_files(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith(("shard-", "manifest"))}


@pytest.fixture(scope="module")
def encoded(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "full"
    subprocess.run(encode_cmd(corpus, out), env=ENV, check=True, capture_output=True, timeout=600)
    return out


def check_encode_kill(corpus, encoded, tmp_path, seed):
    out = tmp_path / "shards"
    proc = subprocess.Popen(encode_cmd(corpus, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the workers are spawned, import torch and start encoding; kill at a seeded moment after they exist
    assert wait_until(lambda: len(children(proc.pid)) >= 2 or proc.poll() is not None)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: not any(alive(p) for p in workers), timeout=10), "workers outlived the kill"
    out.mkdir(exist_ok=True)
    again = subprocess.run(encode_cmd(corpus, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert shard_files(out) == shard_files(encoded), f"seed {seed}"


def test_a_worker_dies_with_its_parent():
    """The mechanism alone (fast): a process that called die_with_parent() is killed with its parent."""
    worker_code = ("from proxylm.core.process import die_with_parent; import time; die_with_parent(); "
                   "print('armed', flush=True); time.sleep(60)")
    parent_code = ("import subprocess, sys, time; "
                   f"w = subprocess.Popen([sys.executable, '-c', {worker_code!r}], stdout=subprocess.PIPE, text=True); "
                   "assert w.stdout.readline().strip() == 'armed'; print(w.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=ENV, stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_until(lambda: not alive(worker), timeout=10), "the worker outlived its parent"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_encode_workers_die_and_resume_is_identical(corpus, encoded, tmp_path, seed):
    check_encode_kill(corpus, encoded, tmp_path, seed)


# ---- eval humaneval: the sandbox ------------------------------------------------------------------------------


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
        def running():  # any of its dirs: the isolation probe makes one too (listed first or not)
            dirs = [p for p in root.iterdir() if p.name.startswith(f"proxylm-sbx-{evaluator.pid}.")]
            return any(processes_mentioning(str(d)) for d in dirs)
        assert wait_until(running, 60, 0.05), "the candidate never started"
        time.sleep(0.5)   # past the launcher, inside the program's sleep
    finally:
        evaluator.send_signal(signal.SIGKILL)
        evaluator.wait()
    assert wait_until(lambda: not processes_mentioning(str(root)), MARGIN_S, 0.05), processes_mentioning(str(root))
    assert [p.name for p in root.iterdir() if p.name.startswith("proxylm-sbx-")]   # left behind by the kill
    Sandbox(tmp_root=str(root)).run("pass")   # the next sandbox in that folder removes it
    assert [p.name for p in root.iterdir() if p.name.startswith("proxylm-sbx-")] == []


def test_isolation_probe_is_cached():
    assert detect_isolation() is detect_isolation()
