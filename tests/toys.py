"""Toy codecs and models shared by the generation tests (test_generate.py, test_speculative.py)."""

import numpy as np
import torch

from proxylm.codecs.base import CannotEncode, Codec
from proxylm.core.representation import Representation
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer

REP = Representation.bytes_only()


class PairCodec(Codec):
    """b"ab" -> symbol 256, any other byte -> itself (a codec with one compressed symbol); with refuse=True
    it cannot encode inputs containing 0xff (a codec that fails on some documents)."""

    name = "pair-test"

    def __init__(self, refuse: bool = False):
        self.refuse = refuse

    @property
    def alphabet_size(self) -> int:
        return 257

    def encode(self, data: bytes) -> np.ndarray:
        if self.refuse and b"\xff" in data:
            raise CannotEncode("0xff")
        out, i = [], 0
        while i < len(data):
            two = data[i:i + 2] == b"ab"
            out.append(256 if two else data[i])
            i += 2 if two else 1
        return np.array(out, dtype=np.int64)

    def decode(self, symbols) -> bytes:
        return b"".join(b"ab" if s == 256 else bytes([s]) for s in np.asarray(symbols).tolist())


def random_model(rep=REP, n_pred=1, n_raw=0, std=0.3, max_seq_len=96, seed=0) -> Transformer:
    """A random dim-32 model (2 layers, GQA 4/2 heads) with n_pred main heads and n_raw raw heads."""
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=max_seq_len, init_std=std,
                      n_pred_heads=n_pred, n_raw_heads=n_raw)
    return Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).eval()
