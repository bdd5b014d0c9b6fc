"""End to end on a tiny model over a tiny folder corpus: resume == uninterrupted, FLOP budget, run dir."""

import math

import pytest
from helpers import metric_records, write_code_corpus

from proxylm.config import load_config
from proxylm.assemble import load_run
from proxylm.train.checkpoint import list_checkpoints
from proxylm.assemble import build_trainer
from proxylm.train.trainer import lr_at

SMALL = ["model.dim=32", "model.n_layers=2", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         "train.log_every=1", "eval.max_bytes=3000", "eval.batch_size=4", "train.warmup_steps=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=40, max_functions=7)


def _cfg(corpus, name="bytes-micro", extra=()):
    return load_config(name, SMALL + [f"data.corpus={corpus}", "data.val_fraction=0.2"] + list(extra))


def _losses(run_dir):
    return [r["loss"] for r in metric_records(run_dir) if "loss" in r]


def test_run_dir_contents_and_learning(corpus, tmp_path):
    cfg = _cfg(corpus, extra=["train.max_steps=30", "train.eval_every=15", "train.ckpt_every=15", "train.lr=0.01"])
    summary = build_trainer(cfg, tmp_path / "run", quiet=True).fit()
    run = tmp_path / "run"
    for name in ("config.yaml", "representation.json", "metrics.jsonl", "summary.json"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir()), "TensorBoard events"
    assert [p.name for p in list_checkpoints(run)] == ["step_0000015", "step_0000030"]
    losses = _losses(run)
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0
    assert summary["val_bpb"] < 8.0
    records = metric_records(run)
    assert [r["step"] for r in records if "val_bpb" in r] == [15, 30]
    assert load_run(run).step == 30


@pytest.mark.parametrize("name, extra", [
    ("bytes-micro", []),
    ("proxy-gzip-micro", ["train.grad_accum=2"]),
    ("proxy-gzip-micro", ["data.num_workers=2"]),  # background readers/encoders: the same exact resume
])
def test_resume_equals_uninterrupted(corpus, tmp_path, name, extra):
    base = ["train.max_steps=8", "train.eval_every=0", "train.ckpt_every=4"] + extra
    full = build_trainer(_cfg(corpus, name, base), tmp_path / "full", quiet=True)
    full.fit()
    # an "interrupted" run: stops after 4 steps (as if killed right after its checkpoint) ...
    part_cfg = _cfg(corpus, name, base)
    part = build_trainer(part_cfg, tmp_path / "part", quiet=True)
    part.total_steps = 8  # same schedules as the full run
    while part.step < 4:
        part.train_step()
    part.save()
    part.loader.close()
    del part
    # ... then resumes in a fresh process-like Trainer from the checkpoint
    resumed = build_trainer(_cfg(corpus, name, base), tmp_path / "part", resume=True, quiet=True)
    assert resumed.step == 4
    rest = [resumed.train_step()["loss"] for _ in range(4)]
    assert rest == _losses(tmp_path / "full")[4:]  # bit-identical


def test_flop_budget_stops_within_5_percent(corpus, tmp_path):
    probe = build_trainer(_cfg(corpus, extra=["train.max_steps=1"]), tmp_path / "probe", quiet=True)
    per_step = probe.step_flops(0)
    budget = per_step * 23.5
    cfg = _cfg(corpus, extra=[f"train.max_flops={budget}", "train.max_steps=1000", "train.eval_every=0",
                              "train.ckpt_every=0"])
    summary = build_trainer(cfg, tmp_path / "budget", quiet=True).fit()
    assert summary["flops"] <= budget and summary["flops"] >= 0.95 * budget
    assert summary["steps"] == 23


def test_flops_match_the_hand_count(corpus, tmp_path):
    t = build_trainer(_cfg(corpus, extra=["train.max_steps=3", "train.grad_accum=2"]), tmp_path / "f", quiet=True)
    m, d = t.cfg.model, t.cfg.data
    V, S, B, D, L, F = t.rep.vocab_size, d.seq_len, d.batch_size, m.dim, m.n_layers, m.hidden_dim
    per_position = L * 2 * (4 * D * D + 3 * D * F) + 2 * D * V
    attention = L * 2 * 2 * S * S * D
    expected = 3 * (B * S * per_position + B * attention) * 2  # fwd+bwd, two micro-batches
    assert t.step_flops(0) == pytest.approx(expected)
    t.train_step()
    assert t.flops == pytest.approx(expected)


def test_lr_schedules():
    cfg = load_config("bytes-micro", ["train.lr=1.0", "train.min_lr_frac=0.1", "train.warmup_steps=10"])
    assert lr_at(cfg, 0, 100) == pytest.approx(0.1) and lr_at(cfg, 9, 100) == pytest.approx(1.0)
    assert lr_at(cfg, 100, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    cfg.train.lr_schedule = "wsd"
    assert lr_at(cfg, 50, 100) == 1.0 and lr_at(cfg, 90, 100) == pytest.approx(0.55)


def test_the_corpus_is_opened_once_per_run(corpus, tmp_path, monkeypatch):
    """Building a run that trains its codec lists the corpus once: the codec cache, the codec training, the
    round-trip check, the loader and the validation set all read the one opened corpus."""
    import proxylm.data.corpus as corpus_module

    listed = []
    list_units = corpus_module.list_units
    monkeypatch.setattr(corpus_module, "list_units", lambda *a, **k: listed.append(a[0]) or list_units(*a, **k))
    monkeypatch.setenv("PROXYLM_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(corpus, "proxy-bpe-micro", ["train.max_steps=1", "train.eval_every=0", "train.ckpt_every=0"])
    build_trainer(cfg, tmp_path / "run", quiet=True)
    assert listed == [corpus]
