"""TrainLoader: batch contract, exact resume, epochs, determinism, sharding, stats.

    pytest tests/test_loader.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import alive

from proxylm.data.config import DataConfig, ScheduleConfig, ViewsConfig
from proxylm.data.corpus import open_corpus
from proxylm.data.loader import TrainLoader
from proxylm.data.stream import unit_order
from proxylm.data.packing import doc_ids_from_tokens
from proxylm.core.representation import Representation
from proxylm.data.views import decode_view, split_views
from test_views import HalfCodec

pytestmark = pytest.mark.filterwarnings("ignore::proxylm.data.corpus.CorpusWarning")

CODEC = HalfCodec()
REP = Representation.for_codec(CODEC)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(24):
        n = int(rng.integers(5, 160))
        (d / f"m{i:02d}.py").write_text("".join(f"x{i}_{j} = {j} * 2  # é\n" for j in range(n // 10 + 1))[:n] + "\n")
    (d / "latin1.py").write_bytes(b"s = 'caf\xe9'\n" * 5)  # not UTF-8: HalfCodec cannot encode it -> raw
    return d


def _cfgs(corpus_dir, seq_len=32, batch_size=3, seed=0, shuffle_buffer=64, **views):
    data = DataConfig(corpus=str(corpus_dir), val_fraction=0.0, seq_len=seq_len, batch_size=batch_size, seed=seed,
                      shuffle_buffer=shuffle_buffer)
    v = {"codec": "half", "rate": 0.6, "mode": "translation_random", **views}
    return data, ViewsConfig(**v)


def _loader(corpus_dir, n_future=2, total_steps=40, workers=0, rank=0, world_size=1, **kw):
    data, views = _cfgs(corpus_dir, **kw)
    data.num_workers = workers
    return TrainLoader(data, views, REP, CODEC, total_steps=total_steps, n_future=n_future, rank=rank,
                       world_size=world_size)


def _same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("tokens", "doc_ids", "positions", "is_compressed")) \
        and a.raw_bytes == b.raw_bytes


def test_batch_contract(corpus_dir):
    loader = _loader(corpus_dir, n_future=3)
    for step in range(5):
        b = loader.next_batch(step)
        B, S, F = 3, 32, 3
        assert b.tokens.shape == (B, S + F) and b.doc_ids.shape == (B, S + F)
        assert b.positions.shape == (B, S) and b.is_compressed.shape == (B, S)
        assert b.tokens.dtype == torch.int64 and b.doc_ids.dtype == torch.int64 and b.is_compressed.dtype == torch.bool
        assert int(b.tokens.max()) < REP.vocab_size and int(b.tokens.min()) >= 0
        assert np.array_equal(b.doc_ids.numpy(), doc_ids_from_tokens(b.tokens.numpy(), REP.bos_id))
        assert (b.positions[b.inputs == REP.bos_id] == 0).all()
        assert torch.equal(b.is_compressed, b.inputs >= REP.compressed_offset)


def test_raw_bytes_counts_input_symbols(corpus_dir):
    loader = _loader(corpus_dir, rate=0.0, mode="sentinel")
    for step in range(4):
        b = loader.next_batch(step)
        assert b.raw_bytes == int(REP.is_raw_byte(b.inputs).sum())


SCHEDULED = {"rate": 0.9, "mode": "sentinel",
             "schedule": ScheduleConfig(enabled=True, warmup_frac=0.5, initial_rate=0.4,
                                        warmup_mode="translation_random", decay_frac=0.25, final_rate=0.6,
                                        final_mode="parallel_random")}


@pytest.mark.parametrize("views", [SCHEDULED, {"mode": "parallel_random", "rate": 0.5},
                                   {"mode": "vanilla", "rate": 0.5}], ids=["scheduled", "parallel", "vanilla"])
def test_resume_equals_uninterrupted(corpus_dir, views):
    steps = 40
    full = _loader(corpus_dir, **views)
    ref = [full.next_batch(s) for s in range(steps)]
    assert full.epoch >= 1  # the run crosses an epoch boundary
    for cut in (1, 9, 23):
        a = _loader(corpus_dir, **views)
        for s in range(cut):
            a.next_batch(s)
        state = json.loads(json.dumps(a.state_dict()))  # through JSON, as in a checkpoint
        assert any(r["offset"] > 0 for r in state["rows"])  # resumes mid-document
        b = _loader(corpus_dir, **views)  # fresh corpus object too
        b.load_state_dict(state)
        for s in range(cut, steps):
            assert _same(b.next_batch(s), ref[s]), (cut, s)
        assert b.stats() == full.stats()


def test_resume_rejects_a_different_stream(corpus_dir):
    a = _loader(corpus_dir)
    a.next_batch(0)
    with pytest.raises(ValueError, match="batch_size"):
        _loader(corpus_dir, batch_size=2).load_state_dict(a.state_dict())


def _documents_of_stream(loader, steps):
    """Decode the complete documents of a one-row stream: [(views' bytes...)] in stream order."""
    S = loader.data_cfg.seq_len
    ids = np.concatenate([loader.next_batch(s).tokens[0, :S].numpy() for s in range(steps)])
    bos = np.flatnonzero(ids == REP.bos_id)
    docs = []
    for a, b in zip(bos, bos[1:]):
        views = split_views(ids[a:b], REP)
        docs.append(tuple(decode_view(name, p, REP, CODEC) for name, p in views))
    return docs


@pytest.mark.parametrize("mode", ["sentinel", "translation_random", "parallel_random"])
def test_stream_holds_every_document_once_per_epoch(corpus_dir, mode):
    loader = _loader(corpus_dir, batch_size=1, rate=0.5, mode=mode, shuffle_buffer=0)  # the stream's own order
    units = loader.stream.units
    corpus = loader.corpus
    docs = _documents_of_stream(loader, 250)
    if mode == "parallel_random":  # a pair is two documents: merge them back for the check
        merged, i = [], 0
        while i < len(docs):
            if i + 1 < len(docs) and docs[i] == docs[i + 1]:
                merged.append(docs[i] + docs[i + 1])
                i += 2
            else:
                merged.append(docs[i])
                i += 1
        docs = merged
    expected = [d.data for e in range(3) for j in unit_order(units, 0, e, True)
                for d in corpus.iter_unit(units[j], "train")]
    if mode == "translation_random":  # a pair is cut into sub-pieces that fit windows: join them back
        assert all(len(set(d)) == 1 for d in docs)  # both views of each sub-piece are the same bytes
        joined, i = [], 0
        for want in expected:
            text = b""
            while i < len(docs) and len(text) < len(want):
                text += docs[i][0]
                i += 1
            if len(text) < len(want):
                break
            joined.append((text,))
        docs = joined
    n = len(docs)
    assert n > len(units) + 5  # into the second epoch
    for got, want in zip(docs, expected[:n]):
        assert all(v == want for v in got)  # every view of it decodes to the document


def test_determinism(corpus_dir):
    run = lambda **kw: [_loader(corpus_dir, **kw).next_batch(s) for s in range(6)]  # noqa: E731
    a, b = run(), run()
    assert all(_same(x, y) for x, y in zip(a, b))
    c = run(seed=1)  # other document order
    assert not all(_same(x, y) for x, y in zip(a, c))
    d_data, d_views = _cfgs(corpus_dir)
    d_views.seed = 5  # other views, same order
    d = TrainLoader(d_data, d_views, REP, CODEC, total_steps=40, n_future=2)
    assert not all(_same(x, d.next_batch(s)) for s, x in enumerate(a))


def test_epoch_order_is_a_pure_permutation(corpus_dir):
    units = open_corpus(str(corpus_dir), DataConfig(val_fraction=0.0)).split_units("train")
    o0 = unit_order(units, 0, 0, True)
    assert sorted(o0.tolist()) == list(range(len(units)))
    assert np.array_equal(o0, unit_order(units, 0, 0, True))
    assert not np.array_equal(o0, unit_order(units, 0, 1, True))
    assert np.array_equal(unit_order(units, 0, 3, shuffle=False), np.arange(len(units)))


def _epoch_keys(loader) -> list[str]:
    """Keys of the documents one epoch of a loader's stream hands out."""
    keys, stream = [], loader.doc_stream  # the unit order, before the shuffle buffer
    while True:
        item = stream.next()
        if item.epoch > 0:
            return keys
        keys.append(item.key)


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_ranks_partition_the_corpus(corpus_dir, world_size):
    """Units dealt to ranks (or, with few units per rank, strided parts of every unit): each document once."""
    all_keys = [d.key for d in open_corpus(str(corpus_dir), DataConfig(val_fraction=0.0)).iter_documents("train")]
    keys = [k for r in range(world_size) for k in _epoch_keys(_loader(corpus_dir, rank=r, world_size=world_size))]
    assert sorted(keys) == sorted(all_keys) and len(set(keys)) == len(keys)


def test_workers_give_the_in_process_stream(corpus_dir):
    """2 workers x 2 ranks: each rank's batches are those of its in-process loader (order independent of workers)."""
    for rank in range(2):
        plain = _loader(corpus_dir, rank=rank, world_size=2)
        forked = _loader(corpus_dir, rank=rank, world_size=2, workers=2)
        try:
            for s in range(30):
                assert _same(plain.next_batch(s), forked.next_batch(s)), (rank, s)
            assert forked.stats() == plain.stats()
        finally:
            forked.close()


def test_resume_with_workers_equals_uninterrupted(corpus_dir):
    full = _loader(corpus_dir, workers=2, world_size=2, rank=1)
    ref = [full.next_batch(s) for s in range(30)]
    full.close()
    a = _loader(corpus_dir, workers=2, world_size=2, rank=1)
    for s in range(11):
        a.next_batch(s)
    state = json.loads(json.dumps(a.state_dict()))
    a.close()
    b = _loader(corpus_dir, workers=2, world_size=2, rank=1)
    b.load_state_dict(state)
    try:
        for s in range(11, 30):
            assert _same(b.next_batch(s), ref[s]), s
    finally:
        b.close()
    c = _loader(corpus_dir, workers=0, world_size=2, rank=1)  # and the number of workers may change on resume
    c.load_state_dict(state)
    assert all(_same(c.next_batch(s), ref[s]) for s in range(11, 30))


def test_workers_die_with_their_parent(corpus_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_loader import _loader
from pathlib import Path
L = _loader(Path({str(corpus_dir)!r}), workers=2)
L.next_batch(0)
print(" ".join(str(p.pid) for p in L.doc_stream._procs), flush=True)
time.sleep(60)
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def test_stats(corpus_dir):
    loader = _loader(corpus_dir, rate=0.7, mode="translation_random", batch_size=4)
    for s in range(60):
        loader.next_batch(s)
    st = loader.stats()
    json.dumps(st)
    assert st["documents"] > 50 and st["epoch"] >= 1
    n_views = st["raw_documents"] + st["compressed_documents"] + 2 * st["pair_documents"]
    assert st["compressed_views"] + st["raw_views"] == n_views
    assert st["compressed_view_share"] == pytest.approx(0.7, abs=0.15)
    assert 0 < st["compressed_symbol_share"] < st["compressed_view_share"]  # compressed views are shorter
    assert st["symbols_per_byte"]["raw"] == 1.0 and st["symbols_per_byte"]["compressed"] == pytest.approx(0.5, abs=0.05)
    assert st["fallback_raw"] > 0 and st["corpus_problems"]["invalid_utf8"] == 1


def test_needs_codec_and_total_steps(corpus_dir):
    data, views = _cfgs(corpus_dir)
    with pytest.raises(ValueError, match="codec"):
        TrainLoader(data, views, Representation.bytes_only(), None)
    with pytest.raises(ValueError, match="total_steps"):
        TrainLoader(data, ViewsConfig(**{"codec": "half", **SCHEDULED}), REP, CODEC, total_steps=None)


def _data_cli(argv):
    import argparse

    from proxylm.cli import data as cli

    p = argparse.ArgumentParser()
    cli.add_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_show_and_manifest(corpus_dir, tmp_path, capsys):
    assert _data_cli(["data", "show", f"data.corpus={corpus_dir}", "views.codec=gzip", "views.rate=0.5",
                      "views.mode=translation_random", "data.seq_len=64", "data.batch_size=2", "--windows", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== window") == 3 and "<bos>" in out and "\"compressed_view_share\"" in out
    assert "<raw>" in out or "<compressed>" in out
    man = tmp_path / "m.json"
    assert _data_cli(["data", "manifest", "--corpus", str(corpus_dir), "--split", "all", "--out", str(man)]) == 0
    m = json.loads(man.read_text())
    assert m["n_documents"] == 25 and all(len(d["sha256"]) == 64 for d in m["documents"])


def test_format_ids_shows_views():
    from proxylm.cli.data import format_ids
    from proxylm.data.views import Decision, render

    r = render(Decision.from_layout("raw+compressed"), b"hi there", CODEC, REP)
    text = format_ids(r.ids, r.is_compressed, REP, codec=CODEC)
    assert text.startswith("<bos><raw>hi there</raw><compressed>") and text.endswith("</compressed><eos>")


# ---- the shuffle buffer ---------------------------------------------------------------------------------
def test_shuffle_buffer_draws_every_document_and_spreads_the_pieces_of_a_file(corpus_dir):
    from proxylm.data.shuffle import ShuffleBuffer
    from proxylm.data.stream import DocStream

    corpus = open_corpus(str(corpus_dir), DataConfig(val_fraction=0.0, max_doc_bytes=64))
    inner = [it.key for it, _ in zip(iter(DocStream(corpus, "train").next, None), range(400))]
    buf = ShuffleBuffer(DocStream(corpus, "train"), size=16, seed=0)
    drawn = [buf.next().key for _ in range(300)]
    # a permutation with bounded displacement: the first n drawn are among the first n + size read
    for n in (50, 150, 300):
        assert not Counter(drawn[:n]) - Counter(inner[:n + 16])
    assert drawn != inner[:300]
    # consecutive pieces of one file ("f.py#0", "f.py#1") rarely stay neighbours
    def file_of(key):
        return key.rsplit("#", 1)[0]

    same_file_neighbours = lambda keys: sum(file_of(a) == file_of(b) for a, b in zip(keys, keys[1:]))  # noqa: E731
    assert same_file_neighbours(drawn) < same_file_neighbours(inner[:300]) / 3
    other_seed = ShuffleBuffer(DocStream(corpus, "train"), size=16, seed=1)
    assert [other_seed.next().key for _ in range(300)] != drawn


def test_resume_with_a_shuffle_buffer_equals_uninterrupted(corpus_dir):
    full = _loader(corpus_dir, shuffle_buffer=8)
    ref = [full.next_batch(s) for s in range(25)]
    a = _loader(corpus_dir, shuffle_buffer=8)
    for s in range(9):
        a.next_batch(s)
    state = json.loads(json.dumps(a.state_dict()))
    assert len(state["stream"]["buffer"]) == 8
    b = _loader(corpus_dir, shuffle_buffer=8)
    b.load_state_dict(state)
    assert all(_same(b.next_batch(s), ref[s]) for s in range(9, 25))
    with pytest.raises(ValueError, match="shuffle_buffer"):
        _loader(corpus_dir, shuffle_buffer=4).load_state_dict(state)


def test_the_shuffle_buffer_holds_at_most_one_epoch(corpus_dir):
    loader = _loader(corpus_dir, shuffle_buffer=100_000)  # far more than the corpus holds
    loader.next_batch(0)
    n_docs = len(list(loader.corpus.iter_documents("train")))
    assert n_docs <= len(loader.stream.buffer) <= n_docs + 1 and loader.stream.epoch <= 1
