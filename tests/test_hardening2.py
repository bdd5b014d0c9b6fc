"""Second hardening round (issue 26): resume on edited data, non-finite training, and the smaller cases.

    .venv/bin/python -m pytest tests/test_hardening2.py -q
"""

import dataclasses
import json
import os
import shutil

import pytest
from helpers import write_code_corpus

import proxylm.cli
import proxylm.train.trainer
from proxylm.assemble import build_trainer
from proxylm.config import ConfigError, load_config
from proxylm.train.checkpoint import list_checkpoints

SMALL = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         "train.log_every=1", "eval.max_bytes=2000", "eval.batch_size=4", "train.warmup_steps=2",
         "train.max_steps=6", "train.ckpt_every=3", "train.eval_every=0", "data.val_fraction=0.2", "train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 6-step run (checkpoints at 3 and 6) on its own corpus copy (the tests edit it)."""
    root = tmp_path_factory.mktemp("h2")
    (root / "corpus").mkdir()
    corpus = write_code_corpus(root / "corpus", n_files=30, max_functions=4)
    run = root / "run"
    build_trainer(load_config("bytes-micro", SMALL + [f"data.corpus={corpus}"]), run, quiet=True).fit()
    return run, corpus


@pytest.fixture
def copy(trained, tmp_path):
    """(run, corpus) copies: the run's config points at the copied corpus."""
    run, corpus = trained
    new_corpus = tmp_path / "corpus"
    shutil.copytree(corpus, new_corpus, copy_function=shutil.copy2)   # times kept: an unedited copy is unchanged
    new_run = tmp_path / "run"
    shutil.copytree(run, new_run, ignore=shutil.ignore_patterns(".lock"))
    cfg = (new_run / "config.yaml").read_text().replace(str(corpus), str(new_corpus))
    (new_run / "config.yaml").write_text(cfg)
    return new_run, new_corpus


def cli(args, capsys):
    capsys.readouterr()
    try:
        rc = proxylm.cli.main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


# ---- resume checks the data it reads ----------------------------------------------------------------------
def test_resume_refuses_edited_corpus_files_by_name(copy, capsys):
    run, corpus = copy
    victim = corpus / "m07.py"
    victim.write_text(victim.read_text().replace("return", "return  "))
    rc, err = cli(["resume", run, "train.max_steps=8", "--quiet"], capsys)
    assert rc == 2 and "changed since the checkpoint" in err and "m07.py" in err and "--accept-changed-data" in err
    assert [c.name for c in list_checkpoints(run)][-1].endswith("6")   # nothing written
    rc, err = cli(["resume", run, "train.max_steps=8", "--accept-changed-data"], capsys)
    assert rc == 0 and "m07.py" in err
    record = [json.loads(line) for line in (run / "resume.jsonl").read_text().splitlines()][-1]
    assert record["accepted_changed_units"] == ["m07.py"]


def test_resume_on_unchanged_data_is_not_refused(copy, capsys):
    run, _ = copy
    rc, err = cli(["resume", run, "train.max_steps=7", "--quiet"], capsys)
    assert rc == 0, err


# ---- metrics.jsonl holds each step once -------------------------------------------------------------------
def test_metrics_are_trimmed_to_the_resumed_step(copy, capsys):
    run, _ = copy
    newest = list_checkpoints(run)[-1]
    shutil.rmtree(newest)   # the attempt that wrote steps 4..6 died before its checkpoint at 6
    rc, err = cli(["resume", run, "--quiet"], capsys)
    assert rc == 0, err
    assert steps(run) == [1, 2, 3, 4, 5, 6]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)   # strict JSON: no NaN or Infinity


def test_a_restart_from_step_0_keeps_no_old_rows(copy):
    run, _ = copy
    cfg = load_config(str(run / "config.yaml"))
    trainer = build_trainer(cfg, run, quiet=True)   # not a resume: step 0
    trainer._trim_metrics()
    trainer.run_lock.release()
    assert (run / "metrics.jsonl").read_text() == ""


# ---- non-finite training stops ----------------------------------------------------------------------------
def test_non_finite_loss_stops_with_the_last_good_checkpoint(trained, tmp_path):
    _, corpus = trained
    run = tmp_path / "nan"
    trainer = build_trainer(load_config("bytes-micro", SMALL + [f"data.corpus={corpus}"]), run, quiet=True)
    loss = trainer.raw_model.loss

    def poisoned(*a, **k):
        out = loss(*a, **k)
        return dataclasses.replace(out, loss_sum=out.loss_sum * float("nan")) if trainer.step >= 4 else out

    trainer.raw_model.loss = poisoned
    with pytest.raises(proxylm.train.trainer.NonFiniteTraining, match=r"step 5: the loss is nan.*step 3\) is kept"):
        trainer.fit()
    trainer.run_lock.release()
    assert [c.name for c in list_checkpoints(run)] == [list_checkpoints(run)[0].name] and steps(run) == [1, 2, 3, 4]
    assert "nan" not in (run / "metrics.jsonl").read_text().lower()


def test_non_finite_metrics_are_written_as_null(tmp_path):
    from proxylm.train.trainer import Trainer

    t = Trainer.__new__(Trainer)
    t.run_dir, t._tb = tmp_path, None
    t.ctx = type("C", (), {"is_main": True})()
    t._metrics({"step": 1, "val_bpb": float("inf"), "loss": 2.0})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "val_bpb": None, "loss": 2.0,
                                                                     "non_finite": ["val_bpb"]}


# ---- the smaller ones -------------------------------------------------------------------------------------
def test_empty_config_name_is_refused(capsys):
    rc, err = cli(["train", ""], capsys)
    assert rc == 2 and "config name is empty" in err
    with pytest.raises(ConfigError):
        load_config("  ")


def test_parquet_text_column_of_ints_is_named(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array(range(50), pa.int64()), "body": ["x"] * 50}), tmp_path / "a.parquet")
    rc, err = cli(["train", "bytes-micro", f"data.corpus={tmp_path / 'a.parquet'}", *SMALL, "--out", tmp_path / "r"],
                  capsys)
    assert rc == 2 and "column 'text' holds int64, not text" in err and "body" in err
    assert "val_fraction" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_refused_train_leaves_no_stub_run_dir(tmp_path, capsys, existing):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"f{i}.py").write_text(f"def f{i}(x):\n    return x\n")
    out = tmp_path / "r"
    if existing:
        out.mkdir()
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "data.val_fraction=0.99", "--out", out],
                  capsys)
    assert rc == 2 and "split" in err and "is empty" in err
    assert (out.exists() and list(out.iterdir()) == []) if existing else not out.exists()


def test_control_characters_in_file_names_are_escaped(tmp_path, capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    write_code_corpus(corpus, n_files=10, max_functions=2)
    (corpus / "evil\x1b[2J\x07.py").write_bytes(b"\x00\x01binary\xff" * 50)   # skipped as binary: named
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "train.max_steps=1",
                   "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    assert "\x1b" not in err and "\x07" not in err and "evil\\x1b[2J\\x07.py" in err


def test_a_lost_torchrun_peer_is_one_line(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                           "[10.0.0.1]:1234\nException raised from ...")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(proxylm.cli, "build_parser", lambda: _parser_with(boom))
    rc = proxylm.cli.main(["boom"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "rank 1 of 2" in err and "Connection closed by peer" in err
    monkeypatch.setenv("WORLD_SIZE", "1")   # a single process: not a peer problem, the traceback stays
    with pytest.raises(RuntimeError):
        proxylm.cli.main(["boom"])


def _parser_with(func):
    p = proxylm.cli.Parser(prog="proxylm")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("boom").set_defaults(func=func)
    return p


def test_os_stat_stamps_see_an_edit_of_the_same_size(tmp_path):
    from proxylm.data.readers import Unit
    from proxylm.data.stamps import changed_units, unit_stamps

    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    units = [Unit(key="a.py", reader="text", path=str(f), name="a.py", ftype=".py")]
    saved = unit_stamps(units)
    assert changed_units(saved, units) == []
    f.write_text("x = 2\n")
    os.utime(f, ns=(saved["a.py"][1] + 10**9, saved["a.py"][1] + 10**9))
    assert changed_units(saved, units) == ["a.py"]
    assert changed_units(None, units) == []   # a checkpoint from before stamps: nothing known, nothing refused


@pytest.mark.slow
def test_killing_the_torchrun_agent_and_a_rank_leaves_one_clean_line(trained, tmp_path):
    """kill -9 of the agent and rank 0 together: rank 1 loses its peer in a collective and says so in one
    line (no gloo traceback), exiting non-zero."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    _, corpus = trained
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "proxylm",
           "train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "train.max_steps=100000", "train.ckpt_every=0",
           "train.device=cpu", "--out", str(run), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ((run / "metrics.jsonl").exists() and len(steps(run)) >= 2):
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()
            time.sleep(0.5)
        ranks = sorted(int(p) for p in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split())
        rank0 = next(p for p in ranks if "RANK=0\0" in Path(f"/proc/{p}/environ").read_text(errors="replace"))
        os.kill(agent.pid, signal.SIGKILL)
        os.kill(rank0, signal.SIGKILL)
        _, err = agent.communicate(timeout=120)   # the pipes close when the surviving rank exits
    finally:
        try:
            os.killpg(agent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = [line for line in err.splitlines() if line.startswith("proxylm train: error:")]
    assert len(lines) == 1 and "rank 1 of 2" in lines[0] and "Traceback" not in err, err[-3000:]


def test_eval_bpb_window_too_large_for_memory_is_refused_at_once(trained, capsys):
    import time

    run, _ = trained
    t = time.monotonic()
    rc, err = cli(["eval", "bpb", run, "--seq-len", "1000000000"], capsys)
    assert rc == 2 and "--seq-len 1000000000" in err and "GiB" in err and time.monotonic() - t < 30
