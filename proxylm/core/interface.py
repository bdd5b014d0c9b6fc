"""How text goes in and out of a trained model: prompts, scored sequences, allowed outputs, decoding.

    iface = interface_for(rep, codec, views_cfg)          # ByteInterface or TokenInterface
    ids = iface.prompt_ids(b"def add(a, b):")             # (n,) int64: what the model reads
    ids, counted, n_bytes = iface.score_ids(doc)          # for bits per byte
    allowed = iface.allowed_ids(model.vocab_size)         # (V,) bool: ids generation may emit
    text = iface.decode(generated_ids)                     # bytes, up to the first stop id

`score_ids` mask convention (both interfaces): `counted[i]` is True when the *target at position i*, i.e.
predicting ids[i] from ids[:i], is scored. counted[0] is always False (nothing precedes it). A BPB evaluator
feeds inputs ids[:-1], targets ids[1:] and sums the nll where counted[1:]; bits per byte = that sum / ln 2 /
n_bytes. Windows longer than the context are the evaluator's business.

ByteInterface: the proxy and byte models, read and written as raw bytes (paper 1.7): prompt
`<bos><raw>` + bytes with no closing sentinel; scored `<bos><raw>` + bytes + `</raw><eos>` with only raw-byte
targets counted (sentinels, <bos>, <eos> excluded), so counted.sum() == n_bytes; output restricted to raw bytes
plus the stop ids `</raw>`, `<eos>`.
TokenInterface: the vanilla token baseline (views.mode vanilla, rate 1): `<bos>` + codec ids; scored
`<bos>` + codec ids + `<eos>` with only codec-id targets counted; stop id `<eos>`.
"""

from __future__ import annotations

import numpy as np
import torch

from proxylm.core.errors import CannotEncode
from proxylm.core.representation import Representation


class ByteInterface:
    kind = "bytes"

    def __init__(self, rep: Representation):
        self.rep = rep
        self.stop_ids = (rep.raw_end_id, rep.eos_id)

    def prompt_ids(self, prompt: bytes) -> np.ndarray:
        """(n,) int64: <bos><raw> + bytes (no closing </raw>: the model continues the bytes)."""
        return self.rep.raw_prompt_ids(prompt)

    def score_ids(self, doc: bytes) -> tuple[np.ndarray, np.ndarray, int]:
        """-> ids (n,) int64 `<bos><raw> bytes </raw><eos>`, counted (n,) bool (the target at i counts; only
        raw bytes), n_bytes = len(doc)."""
        r = self.rep
        ids = np.concatenate([[r.bos_id, r.raw_start_id], r.raw_ids(doc), [r.raw_end_id, r.eos_id]])
        ids = ids.astype(np.int64)
        counted = r.is_raw_byte(ids)
        counted[0] = False
        return ids, counted, len(doc)

    def allowed_ids(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) bool: the raw-byte ids and the stop ids."""
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[self.rep.raw_offset:self.rep.raw_vocab_size] = True
        allowed[list(self.stop_ids)] = True
        return allowed

    def decode(self, ids) -> bytes:
        """The raw bytes among `ids` before the first stop id (other ids are dropped)."""
        return self.rep.bytes_from_ids(_before_stop(ids, self.stop_ids))


class TokenInterface:
    kind = "tokens"

    def __init__(self, rep: Representation, codec):
        if codec is None:
            raise ValueError("TokenInterface needs the run's codec")
        self.rep, self.codec = rep, codec
        self.stop_ids = (rep.eos_id,)
        # every codec symbol's id (passthrough symbols land on raw-byte ids)
        self._codec_ids = rep.compressed_ids(np.arange(codec.alphabet_size, dtype=np.int64))

    def _encode(self, data: bytes) -> np.ndarray:
        try:
            return self.rep.compressed_ids(self.codec.encode(data))
        except CannotEncode as e:
            raise ValueError(f"codec '{self.codec.name}' cannot encode this input ({e}); a token model "
                             "can only read text its codec encodes") from e

    def prompt_ids(self, prompt: bytes) -> np.ndarray:
        """(n,) int64: <bos> + codec ids of the prompt."""
        return np.concatenate([[self.rep.bos_id], self._encode(prompt)]).astype(np.int64)

    def score_ids(self, doc: bytes) -> tuple[np.ndarray, np.ndarray, int]:
        """-> ids (n,) int64 `<bos> codec ids <eos>`, counted (n,) bool (the target at i counts; only codec
        ids), n_bytes = len(doc). Raises ValueError when the codec cannot encode `doc`."""
        body = self._encode(doc)
        ids = np.concatenate([[self.rep.bos_id], body, [self.rep.eos_id]]).astype(np.int64)
        counted = np.zeros(len(ids), dtype=bool)
        counted[1:1 + len(body)] = True
        return ids, counted, len(doc)

    def allowed_ids(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) bool: every codec symbol's id and the stop ids."""
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[torch.from_numpy(self._codec_ids)] = True
        allowed[list(self.stop_ids)] = True
        return allowed

    def decode(self, ids) -> bytes:
        """codec.decode of the codec ids before the first stop id (specials are dropped). A codec whose
        partial streams do not decode (e.g. gzip) raises here until its stream is complete."""
        ids = _before_stop(ids, self.stop_ids)
        ids = ids[np.isin(ids, self._codec_ids)]
        return self.codec.decode(self.rep.symbols_from_compressed_ids(ids)) if len(ids) else b""


def _before_stop(ids, stop_ids) -> np.ndarray:
    a = np.asarray(ids, dtype=np.int64).reshape(-1)
    hits = np.flatnonzero(np.isin(a, stop_ids))
    return a[:hits[0]] if len(hits) else a


def interface_for(rep: Representation, codec, views_cfg) -> ByteInterface | TokenInterface:
    """TokenInterface for a vanilla token model (views_cfg.mode == "vanilla", rate 1.0, a codec); else the
    raw-byte ByteInterface (byte baseline and every proxy model)."""
    if codec is not None and views_cfg is not None and views_cfg.mode == "vanilla" and views_cfg.rate == 1.0:
        return TokenInterface(rep, codec)
    return ByteInterface(rep)
