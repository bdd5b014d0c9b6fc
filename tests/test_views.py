"""Views: calibration, purity, schedule, layouts.   pytest tests/test_views.py"""

from __future__ import annotations

import numpy as np
import pytest

from proxylm.codecs.base import CannotEncode, Codec
from proxylm.codecs.gzip_codec import GzipCodec
from proxylm.data.config import MIX_MODES, ScheduleConfig, ViewsConfig
from proxylm.core.representation import Representation
from proxylm.data.views import (COMPRESSED, LAYOUTS, RAW, Decision, calibrated_probability, decide, decode_view,
                                expected_compressed_share, render, render_fitted, room_after, schedule_at,
                                split_views)

PAIRING_MODES = [m for m in MIX_MODES if m not in ("vanilla", "sentinel")]


class HalfCodec(Codec):
    """Tiny test codec: two bytes -> one symbol (b0 * 256 + b1; a trailing odd byte -> 65536 + b).
    Raises CannotEncode on invalid UTF-8, as BPE does."""

    name = "half"

    @property
    def alphabet_size(self) -> int:
        return 65536 + 256

    def encode(self, data: bytes) -> np.ndarray:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CannotEncode(str(e))
        a = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        even = a[: len(a) // 2 * 2].reshape(-1, 2)
        out = even[:, 0] * 256 + even[:, 1]
        return np.concatenate([out, 65536 + a[len(a) // 2 * 2:]])

    def decode(self, symbols) -> bytes:
        s = np.asarray(symbols, dtype=np.int64)
        tail = s[-1:] if len(s) and s[-1] >= 65536 else s[:0]
        body = s[: len(s) - len(tail)]
        out = np.stack([body // 256, body % 256], axis=1).reshape(-1)
        return np.concatenate([out, tail - 65536]).astype(np.uint8).tobytes()


KEYS = [f"docs/file_{i}.py" for i in range(10_000)]


def _share(rate: float, mode: str, seed: int = 0, epoch: int = 0):
    n_comp = n_views = n_pairs = 0
    for k in KEYS:
        d = decide(seed, k, epoch, rate, mode)
        n_comp += d.views.count(COMPRESSED)
        n_views += len(d.views)
        n_pairs += d.paired
    return n_comp / n_views, n_pairs / len(KEYS)


@pytest.mark.parametrize("mode", MIX_MODES)
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.4, 0.5, 0.75, 0.9, 1.0])
def test_compressed_view_share_equals_rate(mode, rate):
    assert expected_compressed_share(rate, mode) == pytest.approx(rate)
    share, _ = _share(rate, mode)
    tol = 4 * np.sqrt(max(rate * (1 - rate), 1e-12) / len(KEYS)) + 1e-12  # ~4 sigma
    assert abs(share - rate) <= tol, (mode, rate, share)


def test_pair_fractions_match_reference_examples():
    assert calibrated_probability(0.4) == pytest.approx(2 / 3)
    assert calibrated_probability(0.9) == pytest.approx(8 / 9)
    _, pairs = _share(0.4, "translation_random")
    assert pairs == pytest.approx(2 / 3, abs=0.02)  # reference 2.4: 2/3 of documents are pairs at 0.4
    _, pairs = _share(0.9, "parallel_random")
    assert pairs == pytest.approx(1 / 9, abs=0.02)
    _, pairs = _share(0.5, "translation_raw_compressed")
    assert pairs == 1.0


@pytest.mark.parametrize("mode,orders", [
    ("translation_random", {"raw+compressed", "compressed+raw"}),
    ("parallel_random", {"raw|compressed", "compressed|raw"}),
    ("translation_raw_compressed", {"raw+compressed"}), ("translation_compressed_raw", {"compressed+raw"}),
    ("parallel_raw_compressed", {"raw|compressed"}), ("parallel_compressed_raw", {"compressed|raw"}),
])
def test_pair_orders(mode, orders):
    layouts = [decide(0, k, 0, 0.5, mode).layout for k in KEYS[:2000]]
    assert set(layouts) == orders
    if len(orders) == 2:
        assert np.mean([lay.startswith(RAW) for lay in layouts]) == pytest.approx(0.5, abs=0.05)


def test_decisions_are_pure_and_depend_on_seed_and_epoch():
    a = [decide(3, k, 1, 0.6, "translation_random") for k in KEYS[:500]]
    assert a == [decide(3, k, 1, 0.6, "translation_random") for k in KEYS[:500]]
    assert a != [decide(4, k, 1, 0.6, "translation_random") for k in KEYS[:500]]
    assert a != [decide(3, k, 2, 0.6, "translation_random") for k in KEYS[:500]]
    # a higher rate only turns more documents compressed (same uniforms)
    lo = [decide(0, k, 0, 0.3, "sentinel").layout for k in KEYS[:500]]
    hi = [decide(0, k, 0, 0.8, "sentinel").layout for k in KEYS[:500]]
    assert all(h == COMPRESSED for lay, h in zip(lo, hi) if lay == COMPRESSED)
    assert all(not d.sentinels for d in (decide(0, k, 0, 0.5, "vanilla") for k in KEYS[:50]))
    with pytest.raises(ValueError):
        decide(0, "k", 0, 0.5, "parallel_raw_random")


def test_schedule_values():
    v = ViewsConfig(codec="gzip", rate=0.9, mode="sentinel",
                    schedule=ScheduleConfig(enabled=True, warmup_frac=0.2, initial_rate=0.4,
                                            warmup_mode="translation_random", decay_frac=0.1, final_rate=0.5,
                                            final_mode="parallel_random"))
    T = 100
    assert schedule_at(v, 0, T) == (0.4, "translation_random")
    assert schedule_at(v, 10, T) == (pytest.approx(0.65), "translation_random")
    assert schedule_at(v, 19, T)[1] == "translation_random"
    assert schedule_at(v, 20, T) == (0.9, "sentinel")
    assert schedule_at(v, 89, T) == (0.9, "sentinel")
    assert schedule_at(v, 90, T) == (pytest.approx(0.86), "parallel_random")
    assert schedule_at(v, 99, T) == (pytest.approx(0.5), "parallel_random")
    assert schedule_at(v, 5000, T) == (pytest.approx(0.5), "parallel_random")
    off = ViewsConfig(codec="gzip", rate=0.7, mode="translation_random")
    assert schedule_at(off, 0, None) == (0.7, "translation_random")
    with pytest.raises(ValueError):
        schedule_at(v, 0, None)


def _payload_ranges_ok(r, rep):
    ids, comp = r.ids, r.is_compressed
    assert ids.dtype == np.int64 and comp.dtype == bool and len(r.nbytes) == len(ids)
    assert (ids[comp] >= rep.raw_offset).all()  # compressed payload is never a special
    assert not np.isin(ids[comp], [rep.bos_id, rep.eos_id]).any()


@pytest.mark.parametrize("codec", [GzipCodec(6), HalfCodec()], ids=["gzip", "half"])
@pytest.mark.parametrize("layout,sentinels", [(lay, True) for lay in LAYOUTS] + [(RAW, False), (COMPRESSED, False)])
def test_layouts_render_and_decode(codec, layout, sentinels):
    rep = Representation.for_codec(codec)
    data = "def f(x):\n    return x + 1  # é\n".encode()
    d = Decision.from_layout(layout, sentinels)
    r = render(d, data, codec, rep)
    _payload_ranges_ok(r, rep)
    ids = r.ids.tolist()
    n_docs = 2 if "|" in layout else 1
    assert ids.count(rep.bos_id) == n_docs and ids.count(rep.eos_id) == n_docs
    assert ids[0] == rep.bos_id and ids[-1] == rep.eos_id
    if n_docs == 2:  # parallel: <bos> V1 <eos><bos> V2 <eos>
        k = ids.index(rep.eos_id)
        assert ids[k + 1] == rep.bos_id
    starts = {RAW: rep.raw_start_id, COMPRESSED: rep.compressed_start_id}
    if sentinels:
        first = d.views[0]
        assert ids[1] == starts[first]
        views = split_views(r.ids, rep)
    else:
        assert rep.raw_start_id not in ids and rep.compressed_start_id not in ids
        views = split_views(r.ids, rep, d)
    assert [name for name, _ in views] == list(d.views)
    for name, payload in views:
        assert decode_view(name, payload, rep, codec) == data
    assert int(r.is_compressed.sum()) == sum(len(p) for name, p in views if name == COMPRESSED)
    # byte counts: every view stands for the whole document
    assert int(r.nbytes.sum()) == len(data) * len(d.views)
    assert int(r.nbytes[r.is_compressed].sum()) == len(data) * d.views.count(COMPRESSED)


def test_vanilla_rate_one_is_plain_token_stream():
    codec = HalfCodec()
    rep = Representation.for_codec(codec)
    data = b"hello world!"
    r = render(decide(0, "k", 0, 1.0, "vanilla"), data, codec, rep)
    assert r.ids.tolist() == [rep.bos_id, *rep.compressed_ids(codec.encode(data)).tolist(), rep.eos_id]


@pytest.mark.parametrize("mode", ["sentinel", "translation_random", "parallel_random", "vanilla"])
def test_codec_failure_falls_back_to_raw(mode):
    codec = HalfCodec()
    rep = Representation.for_codec(codec)
    data = b"caf\xe9 not utf-8"
    d = decide(0, "k", 0, 1.0 if mode in ("sentinel", "vanilla") else 0.5, mode)
    assert d.needs_codec
    r = render(d, data, codec, rep)
    assert r.fallback and r.decision.layout == RAW and r.decision.sentinels == d.sentinels
    assert rep.bytes_from_ids(r.ids) == data and not r.is_compressed.any()


# ---- translation pairs cut to fit windows (views.fit_pairs) ------------------------------------------------
@pytest.mark.parametrize("codec", [GzipCodec(6), HalfCodec()], ids=["gzip", "half"])
@pytest.mark.parametrize("room", [64, 37, 5])
def test_fitted_pairs_fit_their_windows_and_align(codec, room):
    rep = Representation.for_codec(codec)
    data = "".join(f"def f{i}(x):\n    return x * {i}  # é\n" for i in range(60)).encode()
    S = 64
    parts = render_fitted(Decision.from_layout("compressed+raw"), data, codec, rep, seq_len=S, room=room)
    assert len(parts) > 5 and parts[0].span[0] == 0 and parts[-1].span[1] == len(data)
    for a, b in zip(parts, parts[1:]):
        assert a.span[1] == b.span[0]  # consecutive, nothing dropped or repeated
    left = room
    for p in parts:
        piece = data[p.span[0]:p.span[1]]
        views = split_views(p.rendered.ids, rep)
        if p.filler:
            assert [n for n, _ in views] == [RAW] and rep.bytes_from_ids(views[0][1]) == piece
        else:  # piece i of compressed beside piece i of raw, the whole pair inside the window's room
            assert [n for n, _ in views] == [COMPRESSED, RAW]
            assert all(decode_view(n, v, rep, codec) == piece for n, v in views)
            assert len(p.rendered.ids) <= left
        left = room_after(left, len(p.rendered.ids), S)
    assert sum(not p.filler for p in parts) > sum(p.filler for p in parts)


def test_fitted_pairs_only_cut_translation_pairs():
    codec, data = HalfCodec(), b"x = 1\n" * 100
    rep = Representation.for_codec(codec)
    for layout in ("raw", "compressed", "raw|compressed"):
        (part,) = render_fitted(Decision.from_layout(layout), data, codec, rep, seq_len=32, room=32)
        assert part.span == (0, len(data)) and part.rendered.ids.tolist() == \
            render(Decision.from_layout(layout), data, codec, rep).ids.tolist()
    (part,) = render_fitted(Decision.from_layout("raw+compressed"), b"caf\xe9", codec, rep, seq_len=32, room=32)
    assert part.rendered.fallback  # cannot encode: the raw view of the whole piece


def test_loader_pairs_never_straddle_a_window(tmp_path):
    """Every translation pair the loader packs lies inside one window: no window starts in the middle of
    a pair (a document continued from the previous window never holds both views)."""
    from proxylm.data.config import DataConfig
    from proxylm.data.loader import TrainLoader

    for i in range(12):
        (tmp_path / f"m{i}.py").write_text("".join(f"value_{i}_{j} = {j} * 3\n" for j in range(40 + 9 * i)))
    codec = HalfCodec()
    rep = Representation.for_codec(codec)
    S = 48
    loader = TrainLoader(DataConfig(corpus=str(tmp_path), val_fraction=0.0, seq_len=S, batch_size=2),
                         ViewsConfig(codec="half", rate=0.4, mode="translation_random"), rep, codec, total_steps=10)
    opens = {rep.raw_start_id, rep.compressed_start_id}
    n_pairs = 0
    for step in range(60):
        tokens = loader.next_batch(step).tokens[:, :S].numpy()
        for row in tokens:
            first_bos = np.flatnonzero(row == rep.bos_id)
            head = row[: first_bos[0]] if len(first_bos) else row
            both = {rep.raw_end_id, rep.compressed_end_id} <= set(head.tolist()) or opens <= set(head.tolist())
            assert not both, "a translation pair was cut by a window edge"
            for a in first_bos:  # pairs that start in this window
                doc = row[a:].tolist()
                n_pairs += opens <= set(doc[: doc.index(rep.eos_id)] if rep.eos_id in doc else doc)
    stats = loader.stats()
    assert n_pairs > 20 and stats["pair_parts"] > stats["pair_documents"] > 0
    # accounting: each view's bytes once; pairs put their bytes in both views, fillers only in raw
    assert stats["raw_view_bytes"] + stats["compressed_view_bytes"] >= stats["text_bytes"]
    assert stats["raw_view_bytes"] <= stats["text_bytes"]


def test_batch_accounting_counts_each_view_once(tmp_path):
    """raw-view bytes = raw payload inputs (one byte each), compressed-view bytes = the text behind the
    compressed inputs, compressed symbols = compressed inputs; a pair's text is in each view's count once."""
    from proxylm.data.config import DataConfig
    from proxylm.data.loader import TrainLoader

    for i in range(8):
        (tmp_path / f"m{i}.py").write_text("".join(f"name_{i}_{j} = {j}\n" for j in range(30 + 7 * i)))
    codec = HalfCodec()
    rep = Representation.for_codec(codec)
    loader = TrainLoader(DataConfig(corpus=str(tmp_path), val_fraction=0.0, seq_len=40, batch_size=2),
                         ViewsConfig(codec="half", rate=0.4, mode="translation_random"), rep, codec, total_steps=10)
    totals = np.zeros(3, dtype=np.int64)
    for step in range(30):
        b = loader.next_batch(step)
        inputs = b.inputs.numpy()
        raw_payload = int(rep.is_raw_byte(inputs).sum())
        assert b.raw_bytes - b.compressed_bytes == raw_payload
        assert b.compressed_symbols == int(b.is_compressed.sum())
        assert b.compressed_bytes >= b.compressed_symbols  # HalfCodec: about two bytes per symbol
        totals += [raw_payload, b.compressed_bytes, b.compressed_symbols]
    stats = loader.stats()
    assert stats["pair_documents"] > 0 and totals[1] > 0
    # the stream read at least what was consumed, counted the same way
    assert stats["raw_view_bytes"] >= totals[0] and stats["compressed_view_bytes"] >= totals[1]
