"""BPB on toy models whose probabilities are known exactly."""

import math

import numpy as np
import pytest
import torch

from proxylm.core.representation import Representation
from proxylm.eval.bpb import _windows, evaluate_bpb


class RawInterface:
    """Minimal raw-byte interface: <bos><raw> bytes </raw><eos>; counted[i]: token i counts as a target."""

    def __init__(self, rep):
        self.rep = rep

    def score_ids(self, doc):
        ids = np.concatenate([[self.rep.bos_id, self.rep.raw_start_id], self.rep.raw_ids(doc),
                              [self.rep.raw_end_id, self.rep.eos_id]])
        return ids, self.rep.is_raw_byte(ids), len(doc)


class UniformModel(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, ids, positions=None, doc_ids=None):
        return torch.zeros(*ids.shape, 1)

    def logits(self, hidden):
        return torch.zeros(*hidden.shape[:2], self.vocab)


class ByteTableModel(UniformModel):
    """p(byte b) = weights[b] over raw ids, everything else gets tiny mass; context-free."""

    def __init__(self, rep, probs):
        super().__init__(rep.vocab_size)
        logp = torch.full((rep.vocab_size,), -1e9)
        logp[rep.raw_offset:rep.raw_vocab_size] = torch.log(torch.as_tensor(probs, dtype=torch.float32))
        self.table = logp

    def logits(self, hidden):
        return self.table.expand(*hidden.shape[:2], -1).clone()


@pytest.mark.parametrize("seq_len, stride", [(8, 8), (8, 3), (64, 32), (5, 1)])
def test_uniform_model_gives_log2_vocab(seq_len, stride):
    rep = Representation.bytes_only()
    docs = [b"hello world", b"x", "caf\u00e9 \u2603".encode()]
    r = evaluate_bpb(UniformModel(rep.vocab_size), RawInterface(rep), docs, seq_len, stride, batch_size=3)
    assert r["bytes"] == sum(map(len, docs)) and r["targets"] == r["bytes"]
    assert r["bpb"] == pytest.approx(math.log2(rep.vocab_size), rel=1e-6)


def test_known_byte_distribution():
    rep = Representation.bytes_only()
    probs = np.full(256, 0.5 / 255)
    probs[ord("a")] = 0.5
    docs = [b"aab", b"ba"]
    r = evaluate_bpb(ByteTableModel(rep, probs), RawInterface(rep), docs, seq_len=4, stride=2)
    expected_bits = 3 * 1.0 + 2 * -math.log2(0.5 / 255)
    assert r["bpb"] == pytest.approx(expected_bits / 5, rel=1e-5)
    assert r["nats"] == pytest.approx(expected_bits * math.log(2), rel=1e-5)


@pytest.mark.parametrize("n, seq_len, stride", [(2, 4, 4), (10, 4, 4), (10, 4, 1), (37, 8, 5), (100, 16, 16)])
def test_every_target_scored_exactly_once(n, seq_len, stride):
    scored = []
    for start, first in _windows(n, seq_len, stride):
        last = min(start + seq_len, n - 1)
        assert first > start  # each target has at least its own predecessor as context
        scored += range(first, last + 1)
    assert scored == list(range(1, n))


def test_bad_stride():
    rep = Representation.bytes_only()
    with pytest.raises(ValueError, match="stride"):
        evaluate_bpb(UniformModel(rep.vocab_size), RawInterface(rep), [b"ab"], seq_len=4, stride=5)
