"""train.dtype / --dtype: auto picks bfloat16 where the device computes it natively; every path runs in both."""

import json

import pytest
import torch
from helpers import write_code_corpus
from toys import REP, random_model

from proxylm.assemble import build_trainer, load_run
from proxylm.config import load_config
from proxylm.core import device as device_mod
from proxylm.core.device import autocast, resolve_dtype
from proxylm.core.interface import ByteInterface
from proxylm.eval.generate import GenStats, generate, generate_batch

CPU = torch.device("cpu")
PROMPTS = [b"def f(x):\n", b"import os", b"", b"\x00\xff binary \x80", "çé ünïcode".encode()]
SMALL = ["model.dim=32", "model.n_layers=2", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         "train.log_every=1", "eval.max_bytes=2000", "eval.batch_size=4", "train.warmup_steps=2"]


@pytest.fixture
def native(monkeypatch):
    """Fake the CPU's bfloat16 units: native("avx512_bf16") or native(None)."""
    return lambda units: monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: units)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=30, max_functions=6)


def _cfg(corpus, *extra):
    return load_config("bytes-micro", SMALL + [f"data.corpus={corpus}", "data.val_fraction=0.2", "train.dtype=auto",
                                               *extra])


def test_auto_picks_bfloat16_only_where_native(native):
    native("avx512_bf16")
    assert resolve_dtype("auto", CPU) == "bfloat16"
    assert "avx512_bf16" in device_mod.describe_dtype("auto", "bfloat16", CPU)
    native("amx")
    assert resolve_dtype("auto", CPU) == "bfloat16"
    native(None)
    assert resolve_dtype("auto", CPU) == "float32"
    assert "no native bfloat16" in device_mod.describe_dtype("auto", "float32", CPU)
    assert resolve_dtype("bfloat16", CPU) == "bfloat16"  # asked for: emulated, said so
    assert "emulated" in device_mod.describe_dtype("bfloat16", "bfloat16", CPU)
    assert resolve_dtype("float32", CPU) == "float32"
    assert load_config("bytes-micro").train.dtype == "float32"  # the default until bfloat16 passes its numerics gate


@pytest.mark.parametrize("units, expect", [("avx512_bf16", "bfloat16"), (None, "float32")])
def test_train_records_the_dtype_and_resume_equals_uninterrupted(corpus, tmp_path, native, capsys, units, expect):
    native(units)
    whole = build_trainer(_cfg(corpus, "train.max_steps=6"), tmp_path / "whole")
    assert whole.dtype == expect and expect in capsys.readouterr().err  # said in the start-up summary
    losses = [whole.train_step()["loss"] for _ in range(6)]
    part = build_trainer(_cfg(corpus, "train.max_steps=6"), tmp_path / "part", quiet=True)
    first = [part.train_step()["loss"] for _ in range(3)]
    part.save()
    resumed = build_trainer(_cfg(corpus, "train.max_steps=6"), tmp_path / "part", resume=True, quiet=True)
    assert resumed.dtype == expect
    assert first + [resumed.train_step()["loss"] for _ in range(3)] == losses
    summary = resumed.fit()
    assert summary["dtype"] == expect
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["dtype"] == expect


def test_bfloat16_run_resumed_without_native_bf16_keeps_its_dtype_and_says_so(corpus, tmp_path, native, capsys):
    native("avx512_bf16")
    trainer = build_trainer(_cfg(corpus, "train.max_steps=4"), tmp_path / "run", quiet=True)
    trainer.train_step()
    trainer.save()
    native(None)  # "another machine"
    resumed = build_trainer(_cfg(corpus, "train.max_steps=4"), tmp_path / "run", resume=True)
    err = capsys.readouterr().err
    assert resumed.dtype == "bfloat16" and "no native bfloat16" in err and "emulated" in err


def test_eval_and_generate_in_both_dtypes(corpus, tmp_path, capsys):
    from proxylm.cli import main

    build_trainer(_cfg(corpus, "train.max_steps=8", "train.dtype=float32"), tmp_path / "run", quiet=True).fit()
    bpb = {}
    for dtype in ("float32", "bfloat16"):
        assert main(["eval", "bpb", str(tmp_path / "run"), "--dtype", dtype, "--max-bytes", "1500", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["dtype"] == dtype
        bpb[dtype] = out["bpb"]
        assert main(["generate", str(tmp_path / "run"), "--prompt", "def f(", "--max-bytes", "12", "--dtype", dtype,
                     "--json"]) == 0
        gen = json.loads(capsys.readouterr().out)
        assert gen["dtype"] == dtype and gen["completion_bytes"] <= 12
    assert bpb["float32"] != bpb["bfloat16"] and abs(bpb["float32"] - bpb["bfloat16"]) < 0.05
    assert main(["generate", str(tmp_path / "run"), "--prompt", "x", "--max-bytes", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"  # decoding's auto
    assert load_run(tmp_path / "run", dtype="auto").dtype == resolve_dtype("auto", CPU)
    assert load_run(tmp_path / "run", dtype="auto", decoding=True).dtype == "float32"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_greedy_identical_plain_speculative_batched_per_dtype(dtype):
    """A row's greedy output does not depend on the batch or the drafts, in either dtype (in bfloat16 because
    KV-cache forwards attend in float64: attention.Mask.wide)."""
    model, iface = random_model(n_pred=4), ByteInterface(REP)
    iface.stop_ids = ()
    prompts = PROMPTS + [bytes(range(i, i + 3 * i, 3)) for i in range(1, 26)]  # ragged lengths, 30 prompts
    with torch.no_grad(), autocast(CPU, dtype):
        plain = [generate(model, iface, p, max_bytes=32, speculative=False, lookup=0) for p in prompts]
        stats = GenStats()
        spec = [generate(model, iface, p, max_bytes=32, stats=stats) for p in prompts]
        assert stats.speculative
        batched = generate_batch(model, iface, prompts, max_bytes=32, batch_size=3)
        batched_plain = generate_batch(model, iface, prompts, max_bytes=32, batch_size=8, speculative=False)
    assert spec == plain == batched == batched_plain and all(len(o) == 32 for o in plain)


def test_bfloat16_decoding_attends_in_float64(monkeypatch):
    """The KV-cache forwards' attention is widened under bfloat16 autocast; full windows (training, BPB) are not."""
    from proxylm.model import attention

    model = random_model()
    calls = []
    real = attention.Mask.attend

    def spy(self, q, k, v, gqa):
        calls.append((self.wide, attention._low_precision(q, v)))
        return real(self, q, k, v, gqa)

    monkeypatch.setattr(attention.Mask, "attend", spy)
    with torch.no_grad(), autocast(CPU, "bfloat16"):
        model(torch.arange(5).view(1, 5))
        model(torch.arange(5).view(1, 5), kv_cache=model.new_kv_cache(1))
    n = model.cfg.n_layers
    assert calls == [(False, torch.bfloat16)] * n + [(True, torch.bfloat16)] * n
