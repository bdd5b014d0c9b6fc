"""Packing invariants: every token an input once, targets line up, doc ids and positions across windows.

    pytest tests/test_packing.py
"""

from __future__ import annotations

import numpy as np
import pytest

from proxylm.data.packing import Packer, doc_ids_from_tokens, positions_in_document

BOS, EOS = 1, 2


def _random_docs(rng, n_docs, max_len):
    """Rendered-like documents: <bos> body <eos>, some of them two documents (parallel pairs)."""
    docs = []
    for _ in range(n_docs):
        body = rng.integers(16, 300, size=int(rng.integers(0, max_len)))
        doc = np.concatenate([[BOS], body, [EOS]])
        if rng.random() < 0.2:
            doc = np.concatenate([doc, [BOS], body[: len(body) // 2], [EOS]])
        docs.append(doc.astype(np.int64))
    return docs


def _reference(stream):
    """Global doc index (one per <bos>) and in-document position of each stream token."""
    doc = np.cumsum(stream == BOS) - 1
    pos = np.zeros(len(stream), dtype=np.int64)
    for i in range(1, len(stream)):
        pos[i] = 0 if stream[i] == BOS else pos[i - 1] + 1
    return doc, pos


@pytest.mark.parametrize("seq_len,n_future", [(1, 1), (7, 1), (16, 3), (64, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_windows_cover_stream_exactly(seq_len, n_future, seed):
    rng = np.random.default_rng(seed)
    docs = _random_docs(rng, 60, max_len=3 * seq_len + 5)
    p = Packer(seq_len, n_future, BOS)
    windows = []
    for i, d in enumerate(docs):
        p.push(d, np.zeros(len(d), bool), np.ones(len(d), np.int32), tag={"i": i})
        while p.available() >= seq_len + n_future:
            windows.append(p.pop_window())
    stream = np.concatenate(docs)
    ref_doc, ref_pos = _reference(stream)
    S, F = seq_len, n_future
    assert len(windows) == (len(stream) - F) // S
    inputs = np.concatenate([w.tokens[:S] for w in windows])
    assert np.array_equal(inputs, stream[: len(inputs)])  # each token is an input exactly once, in order
    for i, w in enumerate(windows):
        lo = i * S
        assert w.tokens.shape == (S + F,) and w.doc_ids.shape == (S + F,) and w.positions.shape == (S,)
        for k in range(F):  # head k's targets are the stream k+1 ahead, also across window edges
            assert np.array_equal(w.tokens[k + 1: S + k + 1], stream[lo + k + 1: lo + S + k + 1])
        g = ref_doc[lo: lo + S + F]
        assert np.array_equal(w.doc_ids, g - g[0])  # same document <=> same id, first document is 0
        assert np.array_equal(w.positions, ref_pos[lo: lo + S])  # continued across windows
        assert w.raw_bytes == S
        eos = np.flatnonzero(w.tokens == EOS)
        eos = eos[eos > 0]
        assert np.array_equal(w.doc_ids[eos], w.doc_ids[eos - 1])  # <eos> belongs to its document
    # state: the buffered documents from the head on, and the head's offset inside the first one
    st = p.state_dict()
    tail = np.concatenate([docs[t["i"]] for t in st["tags"]])[st["offset"]:]
    assert np.array_equal(tail, stream[len(inputs):])


def test_restore_from_state_continues_identically():
    rng = np.random.default_rng(3)
    docs = _random_docs(rng, 40, max_len=50)
    S, F = 16, 2

    def run(packer, it, n):
        out = []
        while len(out) < n:
            if packer.available() >= S + F:
                out.append(packer.pop_window())
            else:
                i = next(it)
                packer.push(docs[i], np.zeros(len(docs[i]), bool), np.ones(len(docs[i]), np.int32), tag={"i": i})
        return out

    full = run(Packer(S, F, BOS), iter(range(len(docs))), 30)
    p = Packer(S, F, BOS)
    it = iter(range(len(docs)))
    first = run(p, it, 11)
    st = p.state_dict()
    q = Packer(S, F, BOS)
    for j, t in enumerate(st["tags"]):
        d = docs[t["i"]]
        q.push(d, np.zeros(len(d), bool), np.ones(len(d), np.int32), tag=t, skip=st["offset"] if j == 0 else 0)
    rest = run(q, iter(range(st["tags"][-1]["i"] + 1, len(docs))), 19)
    for a, b in zip(full, first + rest):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.doc_ids, b.doc_ids)


def test_helpers_and_errors():
    ids = np.array([BOS, 5, 6, EOS, BOS, 7, EOS])
    assert positions_in_document(ids, BOS).tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert doc_ids_from_tokens(np.array([[5, EOS, BOS, 6], [BOS, 5, EOS, BOS]]), BOS).tolist() == \
        [[0, 0, 1, 1], [0, 0, 0, 1]]
    p = Packer(4, 1, BOS)
    with pytest.raises(ValueError):
        p.push(np.array([5, 6]), np.zeros(2, bool), np.ones(2, np.int32))
    with pytest.raises(RuntimeError):
        p.pop_window()


def test_max_position_shifts_continued_documents_only():
    S, F, M = 8, 1, 20
    long_doc = np.concatenate([[BOS], np.arange(16, 16 + 100), [EOS]]).astype(np.int64)
    short = np.array([BOS, 30, 31, EOS], dtype=np.int64)
    p, q = Packer(S, F, BOS), Packer(S, F, BOS, max_position=M)
    for d in (long_doc, short, long_doc):
        for packer in (p, q):
            packer.push(d, np.zeros(len(d), bool), np.ones(len(d), np.int32))
    while p.available() >= S + F:
        a, b = p.pop_window(), q.pop_window()
        assert np.array_equal(a.tokens, b.tokens) and b.positions.max() < M
        first = a.doc_ids[:S] == 0
        shift = a.positions[first] - b.positions[first]
        assert (shift == shift[0]).all()  # one constant per document and window: RoPE distances unchanged
        if a.tokens[0] == BOS or a.positions[0] + S <= M:
            assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.positions[~first], b.positions[~first])  # documents starting here untouched
    with pytest.raises(ValueError):
        Packer(S, F, BOS, max_position=S)
