"""The neural codec: exact round trips, window budgets, the reset property, passthrough, batch invariance,
persistence, offline shards with resume, and the CLI.

    .venv/bin/python -m pytest tests/test_neural.py -q            # fast (a tiny M1 trained for a few steps)
    .venv/bin/python -m pytest tests/test_neural.py -q -m slow    # whole stdlib val split, worker processes
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import proxylm.cli
from proxylm.codecs.base import load_codec
from proxylm.codecs.neural import coder
from proxylm.codecs.neural.codec import NeuralCodec
from proxylm.prepare.m1 import train_neural_codec
from proxylm.prepare.precomputed import EncodeJob, MissingView, PrecomputedViews, encode_corpus, shard_name
from proxylm.data.config import DataConfig
from proxylm.core.representation import Representation

TINY_M1 = dict(dim=32, n_layers=1, n_heads=2, batch_size=8, threads=1, held_out_every=1000)
TINY_STEPS = 30
JSON_DIR = Path(json.__file__).parent  # a few KB of real Python source in every Python


def json_sources() -> list[bytes]:
    return [p.read_bytes() for p in sorted(JSON_DIR.glob("*.py"))]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # tests share a small machine
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def codec() -> NeuralCodec:
    """A tiny M1 trained briefly with the real Trainer path; 16-bit windows of at most 24 bytes."""
    return train_neural_codec(json_sources(), window_bits=16, max_window_bytes=24, steps=TINY_STEPS, quiet=True,
                              **TINY_M1)


def with_bits(codec: NeuralCodec, window_bits: int) -> NeuralCodec:
    """The same M1 with another window size."""
    return NeuralCodec(codec.model_config, codec.weights, codec.m1.tables, window_bits, codec.spec.max_window_bytes)


def documents() -> list[bytes]:
    rng = np.random.default_rng(0)
    text = b"".join(json_sources())
    return [b"", b"a", b"\n", bytes(range(256)), rng.integers(0, 256, 700, dtype=np.uint8).tobytes(),
            "def grüße():\n    return '🙂'\n".encode(), text[:3000], text[5000:5300] * 3,
            b" " * 200 + b"x", text[-1500:]]


def windows_of(symbols) -> list[int]:
    return [int(s) for s in symbols if s >= coder.N_BYTES]


# ---- the codec -----------------------------------------------------------------------------------------------
def test_round_trip_many_documents(codec):
    docs = documents()
    encoded = codec.encode_many(docs)
    for data, symbols in zip(docs, encoded):
        assert symbols.dtype == np.int64
        assert symbols.size == 0 or (symbols.min() >= 0 and symbols.max() < codec.alphabet_size)
        assert codec.decode(symbols) == data
    assert codec.alphabet_size == 256 + 2 ** 16 and codec.passthrough == 256
    assert sum(len(d) for d in docs) > sum(len(s) for s in encoded)  # it does compress


def test_windows_never_exceed_budget_and_reset_property(codec):
    """Every window is one B-bit value whose meaning depends on its own bytes only: decoding it alone gives its
    bytes, and encoding those bytes alone gives the same single symbol."""
    for bits in (16, 10):
        c = codec if bits == 16 else with_bits(codec, bits)
        symbols = c.encode(b"".join(json_sources())[:2500])
        values = [w - coder.N_BYTES for w in windows_of(symbols)]
        assert values and all(0 <= v < 2 ** bits for v in values)
        pieces = coder.decode_windows(c.m1, np.array(values), c.spec)
        assert all(1 <= len(p) <= c.spec.max_window_bytes for p in pieces)
        alone = c.encode_many(pieces)
        assert all(a.tolist() == [coder.N_BYTES + v] for a, v in zip(alone, values))


def test_window_cost_is_within_budget(codec):
    """Replay the coder on each window's bytes with Python integers: the final interval holds a B-bit cell."""
    c = with_bits(codec, 12)
    symbols = c.encode(b"".join(json_sources())[:500])
    for w in windows_of(symbols):
        data = c.decode([w])
        assert coder.encode_reference(c.m1, data, c.spec) == [w]  # the spec coder checks the fit exactly


def test_passthrough_of_improbable_bytes(codec):
    small = with_bits(codec, 6)  # 6-bit windows: a byte the model finds improbable cannot fit alone
    data = bytes([0xF7, 0x00, 0xFF, 0x80]) * 10 + b"import json\n"
    symbols = small.encode(data)
    assert (symbols < 256).any() and (symbols >= 256).any()
    assert small.decode(symbols) == data
    assert 0 < NeuralCodec.passthrough_share(symbols) < 1
    rep = Representation.for_codec(small)  # passthrough symbols land on the raw-byte ids
    ids = rep.compressed_ids(symbols)
    assert (rep.is_raw_byte(ids) == (symbols < 256)).all()


def test_batched_encoder_equals_plain_python_reference(codec):
    for data in (documents()[5], documents()[6][:600], bytes(range(40, 90))):
        assert codec.encode(data).tolist() == coder.encode_reference(codec.m1, data, codec.spec)


def test_encoder_and_decoder_agree_whatever_the_batch(codec):
    docs = documents()[3:]
    target = docs[-1]  # 1500 bytes: two segments
    alone = codec.encode(target)
    for lanes, batch in ((1, [docs[1], target]), (3, docs), (64, docs[::-1])):
        c = NeuralCodec(codec.model_config, codec.weights, codec.m1.tables, 16, codec.spec.max_window_bytes,
                        n_lanes=lanes)
        assert np.array_equal(c.encode_many(batch)[[id(d) for d in batch].index(id(target))], alone)
    values = np.array(windows_of(alone)) - coder.N_BYTES
    whole = coder.decode_windows(codec.m1, values, codec.spec)
    for chunk in (1, 7):
        assert coder.decode_windows(codec.m1, values, codec.spec, n_lanes=chunk) == whole


def test_m1_logits_do_not_depend_on_the_batch(codec):
    """The fixed-point forward gives bit-identical logits for a lane whatever else is in the batch."""
    m1 = codec.m1
    rng = np.random.default_rng(1)
    seq = torch.from_numpy(rng.integers(0, 256, 10))
    outputs = []
    for batch in (1, 5, 33):
        cache = m1.new_cache(batch)
        m1.reset_lanes(cache, torch.arange(batch))
        others = torch.from_numpy(rng.integers(0, 256, (batch, 10)))
        others[batch // 2] = seq
        steps = [m1.step(cache, others[:, t], torch.full((batch,), t + 1))[batch // 2] for t in range(10)]
        outputs.append(torch.stack(steps))
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    a = torch.from_numpy(rng.integers(-127, 128, (7, 96))).to(torch.int8)
    b = torch.from_numpy(rng.integers(-127, 128, (96, 40))).to(torch.int8)
    assert torch.equal(torch._int_mm(a, b), (a.double() @ b.double()).int())  # the fallback is the same integers


def test_save_load_and_format_check(codec, tmp_path):
    codec.save(tmp_path / "neural")
    loaded = load_codec(tmp_path / "neural")
    data = documents()[6]
    assert np.array_equal(loaded.encode(data), codec.encode(data))
    config = json.loads((tmp_path / "neural" / "codec.json").read_text())
    config["format"]["precision_bits"] += 1
    (tmp_path / "neural" / "codec.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="coder format"):
        load_codec(tmp_path / "neural")


# ---- offline shards ------------------------------------------------------------------------------------------
@pytest.fixture
def folder_corpus(tmp_path) -> str:
    root = tmp_path / "corpus"
    for i, data in enumerate([d[:2000] for d in json_sources()] + documents()[5:8]):  # text: binary files are skipped
        (root / f"f{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"f{i}.py").write_bytes(data)
    return str(root)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".bin", ".sha256", ".json")}


def test_shards_resume_and_lookup(codec, folder_corpus, tmp_path):
    codec.save(tmp_path / "codec")
    data_cfg = DataConfig(corpus=folder_corpus, val_fraction=0.0)
    job = lambda out, **kw: EncodeJob(str(tmp_path / "codec"), data_cfg, "train", out, shard_bytes=3000, **kw)  # noqa
    full = encode_corpus(job(tmp_path / "full"), quiet=True)
    assert full["shards_total"] >= 3 and full["complete_mine"] == full["shards_total"]

    part = tmp_path / "part"
    first = encode_corpus(job(part, max_shards=1), quiet=True)  # interrupted after one shard
    assert first["complete_mine"] == 1
    (part / shard_name(1)).write_bytes(b"half a shard")  # and a torn file that must not be trusted
    again = encode_corpus(job(part), quiet=True)
    assert again["encoded_now"] == full["shards_total"] - 1
    assert shard_bytes(part) == shard_bytes(tmp_path / "full")

    machines = tmp_path / "split"  # two machines, each its half
    for i in range(2):
        encode_corpus(job(machines, shard_index=i, shard_count=2), quiet=True)
    assert shard_bytes(machines) == shard_bytes(tmp_path / "full")

    views = PrecomputedViews(tmp_path / "full", codec)
    from proxylm.data.corpus import open_corpus

    corpus = open_corpus(folder_corpus, data_cfg)
    refs = corpus.documents("train")
    datas = [corpus.read(r) for r in refs]
    for ref, data, symbols in zip(refs, datas, codec.encode_many(datas)):
        assert np.array_equal(views.get(ref.key, data), symbols)
        assert views.get(ref.key, data + b"x") is None  # stale view
        assert np.array_equal(views.as_codec().encode(data), views[ref.key])
    with pytest.raises(MissingView):
        views.as_codec().encode(b"never encoded")
    assert np.array_equal(views.as_codec(inline=True).encode(b"never encoded"), codec.encode(b"never encoded"))
    with pytest.raises(ValueError, match="another codec"):
        PrecomputedViews(tmp_path / "full", with_bits(codec, 12))


# ---- command line and the other codec tools ----------------------------------------------------------------
def test_cli_train_encode_stats_stability(folder_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(proxylm.cli, "COMMAND_MODULES", ["proxylm.cli.codec"])
    monkeypatch.setenv("PROXYLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "neural"
    common = ["--corpus", folder_corpus, "--val-fraction", "0.3"]
    assert proxylm.cli.main(["codec", "train", "neural", "--out", str(out), "--steps", "2", "--window-bits", "12",
                             *common]) == 0
    assert load_codec(out).window_bits == 12
    capsys.readouterr()
    assert proxylm.cli.main(["codec", "stats", "--codec", str(out), "--json", *common]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["roundtrip_failures"] == 0 and stats["bytes_per_symbol"] > 0
    assert proxylm.cli.main(["codec", "stability", "--codec", str(out), "--json", "--limit-docs", "3",
                             "--window-chars", "64", "--split", "all", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["codecs"][str(out)]["families"]["delete"]["pairs"] > 0
    assert proxylm.cli.main(["codec", "encode", "--codec", str(out), "--out", str(tmp_path / "shards"),
                             "--split", "all", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["complete_mine"] == result["shards_total"] >= 1


# ---- slow ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_shards_with_worker_processes(codec, folder_corpus, tmp_path):
    codec.save(tmp_path / "codec")
    data_cfg = DataConfig(corpus=folder_corpus, val_fraction=0.0)
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        encode_corpus(EncodeJob(str(tmp_path / "codec"), data_cfg, "train", out, workers=workers,
                                shard_bytes=4000), quiet=True)
        outs[workers] = shard_bytes(out)
    assert outs[1] == outs[2]


@pytest.mark.slow
def test_stdlib_val_split_round_trip():
    """The whole stdlib validation split through a trained codec: $PROXYLM_NEURAL_CODEC, or one trained here
    (a small M1 for 300 steps)."""
    from proxylm.data.corpus import open_corpus

    directory = os.environ.get("PROXYLM_NEURAL_CODEC")
    codec = load_codec(directory) if directory else None
    corpus = open_corpus("stdlib", DataConfig())
    if codec is None:
        texts = [corpus.read(r) for r in corpus.documents("train")[:200]]
        codec = train_neural_codec(texts, steps=300, quiet=True, threads=1)
    docs = [corpus.read(r) for r in corpus.documents("val")]
    encoded = codec.encode_many(docs)
    assert all(codec.decode(s) == d for s, d in zip(encoded, docs))
    n_bytes, n_symbols = sum(map(len, docs)), sum(map(len, encoded))
    assert n_bytes / n_symbols > 2.0


def test_fixed_point_m1_agrees_with_the_float_transformer(codec):
    """FixedPointM1 mirrors Transformer.forward by hand: on the same weights its byte distributions must match
    the float model's within the fixed-point tolerance, so a change to attention (or any block) that the
    mirror does not follow fails here instead of silently hurting compression."""
    from proxylm.model.config import ModelConfig
    from proxylm.model.transformer import Transformer

    rep = Representation.bytes_only()
    model = Transformer(ModelConfig(**codec.model_config), rep.vocab_size, rep.raw_vocab_size).eval()
    model.load_state_dict(codec.weights)
    m1 = codec.m1
    text = b"".join(json_sources())
    windows = [text[i:i + m1.max_len - 1] for i in (0, 1000, 4000, 7777)]  # (4 windows, T - 1 bytes)
    data = torch.tensor([list(w) for w in windows], dtype=torch.int64)  # (B, T-1)
    B, T1 = data.shape
    with torch.no_grad():  # the float model reads <bos> + the bytes; logits over the 256 byte ids only
        ids = torch.cat([torch.full((B, 1), rep.bos_id), data + rep.raw_offset], dim=1)  # (B, T)
        float_logits = model.logits(model(ids))[..., rep.raw_offset:rep.raw_offset + 256].double()  # (B, T, 256)
    cache = m1.new_cache(B)
    m1.reset_lanes(cache, torch.arange(B))
    fixed = [m1.start_logits.expand(B, 256)]
    for t in range(T1):
        fixed.append(m1.step(cache, data[:, t], torch.full((B,), t + 1)))
    fixed_logits = torch.stack(fixed, dim=1)  # (B, T, 256)
    p_float = torch.softmax(float_logits, -1)
    p_fixed = torch.softmax(fixed_logits, -1)
    total_variation = 0.5 * (p_float - p_fixed).abs().sum(-1)  # (B, T)
    assert float(total_variation.max()) < 0.01, float(total_variation.max())  # measured 0.0009
    # what the coder pays: bits per byte under either model agree closely
    nll = lambda logits: -torch.log_softmax(logits[:, :-1], -1).gather(-1, data[..., None]).mean()  # noqa: E731
    assert abs(float(nll(float_logits) - nll(fixed_logits))) / math.log(2) < 0.02
    assert float((fixed_logits.argmax(-1) == float_logits.argmax(-1)).double().mean()) > 0.95
