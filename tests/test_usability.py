"""A researcher's habits (issue 27): Ctrl-C, help texts, the thread policy, the export's context, --print-config.

    pytest tests/test_usability.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxylm.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PROXYLM_THREADS": "1"}


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, code_corpus):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "proxylm", "train", "bytes-micro", f"data.corpus={code_corpus}",
                          "train.max_steps=100000", "train.log_every=1", "train.ckpt_every=0", "train.eval_every=0",
                          "data.val_fraction=0.2", "--out", str(run)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    err = err.decode()
    assert p.returncode == 130, err
    assert f"continue with `proxylm resume {run}`" in err
    from proxylm.train.checkpoint import list_checkpoints

    assert list_checkpoints(run)  # ckpt_every=0 saves only at the end: this one is the interrupt's


def _help(*verb: str) -> str:
    parser = build_parser()
    for name in verb:
        parser = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and name in a.choices).choices[name]
    return parser.format_help()


def test_help_texts_say_what_the_flags_do():
    assert "LOOKUP_DRAFTS" not in _help("generate") and "default 8" in _help("generate")
    corpus_help = " ".join(_help("eval", "bpb").split())
    for reader in ("folder", ".jsonl", "parquet", "saved dataset", "glob", "arrow"):
        assert reader in corpus_help, reader
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    assert "resume" in sub.choices and "continue a run" in _help().replace("\n", " ")
    for verb in ("generate", "compare"):
        assert "--threads" in _help(verb)
    assert "--threads" in _help("eval", "bpb") and "--threads" in _help("eval", "codegen")
    assert "--threads" in _help("codec", "train") and "--threads" in _help("train")


def test_thread_policy_uses_free_cores_and_the_flag(monkeypatch):
    import torch

    from proxylm.core import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(threads.ENV, raising=False)
        monkeypatch.setattr(threads, "usable_cores", lambda: 8)
        monkeypatch.setattr(os, "getloadavg", lambda: (6.4, 0.0, 0.0))
        assert threads.free_cores() == 2 and threads.set_threads(0) == 2 == torch.get_num_threads()
        monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0.0, 0.0))
        assert threads.default_threads() == 1  # a busy machine: one thread, never 0
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert threads.default_threads() == 8
        assert threads.set_threads(3) == 3 == torch.get_num_threads()
        monkeypatch.setenv(threads.ENV, "2")
        assert threads.default_threads() == 2
        monkeypatch.setenv(threads.ENV, "zero")
        with pytest.raises(ValueError, match="PROXYLM_THREADS"):
            threads.default_threads()
    finally:
        torch.set_num_threads(before)


def test_a_benchmark_given_another_benchmarks_file_is_told_which_it_is(tmp_path):
    from proxylm.core.errors import UserError
    from proxylm.tasks.datasets import load_benchmark

    mbpp = tmp_path / "sanitized-mbpp.json"
    mbpp.write_text(json.dumps([{"task_id": 2, "prompt": "Write f.", "code": "def f(): return 1",
                                 "test_imports": [], "test_list": ["assert f() == 1"]}]))
    with pytest.raises(UserError, match=r"--benchmark mbpp\+: .*sanitized-mbpp.json is a mbpp file; run --benchmark mbpp"):
        load_benchmark("mbpp+", mbpp)


def test_proxy_neural_micro_is_micro():
    from proxylm.codecs.options import M1Options
    from proxylm.config import load_config
    from proxylm.core.representation import Representation
    from proxylm.model.config import ModelConfig  # noqa: F401
    from proxylm.model.transformer import Transformer

    cfg = load_config("proxy-neural-micro")
    n = cfg.views.codec_options.neural
    alphabet = 2 ** n.window_bits + 256  # windows plus passthrough bytes: an upper bound of the codec's symbols
    vocab = Representation.bytes_only().vocab_size + alphabet
    params = sum(p.numel() for p in Transformer(cfg.model, vocab, Representation.bytes_only().raw_vocab_size).parameters())
    assert params < 1_000_000, params  # was 8.55M with 16-bit windows
    default = M1Options()
    assert n.m1.steps * n.m1.dim ** 2 * n.m1.n_layers < default.steps * default.dim ** 2 * default.n_layers / 20


def test_wandb_missing_is_refused_before_any_work(tmp_path, code_corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    rc = main(["train", "bytes-micro", f"data.corpus={code_corpus}", "logging.wandb=true", "--out", str(tmp_path / "r")])
    assert rc == 2 and "pip install 'proxylm[wandb]'" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.slow  # wandb starts its own service process: ~10 s
def test_wandb_offline_logs_the_metrics(tmp_path, code_corpus, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "r"
    assert main(["train", "bytes-micro", f"data.corpus={code_corpus}", "data.val_fraction=0.2", "train.max_steps=2",
                 "train.log_every=1", "logging.wandb=true", "logging.wandb_mode=offline", "--out", str(run)]) == 0
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((run / "wandb").iterdir())


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    import yaml

    assert main(["train", "bytes-micro", "train.max_steps=7", "--threads", "1", "--print-config",
                 "--out", str(tmp_path / "r")]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["max_steps"] == 7 and cfg["train"]["threads"] == 1 and cfg["model"]["dim"] == 64
    assert cfg["data"]["splits"] == "auto" and cfg["logging"]["wandb"] is False and not (tmp_path / "r").exists()


def test_summary_says_what_it_read_and_the_report_which_bytes_it_scored(tmp_path, capsys):
    lines = [json.dumps({"content": f"def f{i}(x):\n    return x + {i}\n" * 20}) for i in range(60)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["train", "bytes-micro", f"data.corpus={tmp_path / 'd.jsonl'}", "data.val_fraction=0.3",
                 "train.max_steps=2", "eval.max_bytes=2000", "eval.final_max_bytes=0", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert "60 documents" in err and "text field: content (data.text_field=text)" in err
    assert "validation: about" in err and "chosen by the hash of each document key" in err
    assert "the final eval: the whole split" in err and "threads: 1 torch CPU thread(s)" in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["val_covers"].startswith("the whole val split") and summary["val_bytes"] > 2000
    assert f"over {summary['val_covers']}" in out
    from proxylm.config import load_config
    from proxylm.eval.bpb import read_eval_docs, text_digest

    # the run directory keeps what the model card needs: the listing and the digests of the scored text
    record = json.loads((tmp_path / "r" / "corpus.json").read_text())
    data = load_config(str(tmp_path / "r" / "config.yaml")).data
    assert record["eval_text"] == text_digest(read_eval_docs(data.corpus, "val", data, 2000))
    assert summary["val_sha256"] == text_digest(read_eval_docs(data.corpus, "val", data, 0))["sha256"]
    assert record["units"] >= 1 and record["validation"]["how"]


def test_non_tty_output_is_one_plain_line_per_log(tmp_path, code_corpus):
    done = subprocess.run([sys.executable, "-m", "proxylm", "train", "bytes-micro", f"data.corpus={code_corpus}",
                           "data.val_fraction=0.2", "train.max_steps=4", "train.log_every=2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "step 2/4 | loss" in done.stderr and "step 4/4 | loss" in done.stderr
