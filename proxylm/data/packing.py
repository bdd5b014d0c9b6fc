"""Packing: rendered documents back to back, cut into windows of seq_len inputs + n_future extra targets.

    p = Packer(seq_len=512, n_future=2, bos_id=rep.bos_id)
    p.push(rendered.ids, rendered.is_compressed, rendered.nbytes, tag={"key": ...})
    while p.available() >= p.window_len:
        w = p.pop_window()     # w.tokens (S+F,), w.doc_ids (S+F,), w.positions (S,), ...

Window i holds stream tokens [i*S, i*S + S + F): the next window starts where the previous one's inputs
ended, so every token is an input exactly once and head k's target for input t is token t+k+1, also
across window edges (the last F tokens of a window are the first F of the next). No padding, no
truncation, nothing lost.

With `max_position` > 0, a document continuing from an earlier window has its positions in this window
shifted down by a multiple of (max_position - seq_len) so that all positions stay < max_position (a RoPE
table's size). That is exact for RoPE: attention never leaves a window, and within one window a document's
positions all move by the same constant, so every query-key distance is unchanged.

Doc ids count <bos> tokens from the window start: a document starts at its <bos>, its <eos> belongs to it
(the next <bos> opens the next one), and the window's first (possibly continued) document is 0.
Positions restart at 0 on each <bos>; they are computed per rendered document when it is pushed, so a
document continuing from the previous window continues its positions.

State: the tags of the buffered documents (from the one holding the next window's first token) and the
offset of that token in it. The caller re-renders those documents from their tags to resume exactly
(`restore`); tags are JSON-serializable dicts that carry everything the re-rendering needs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Window:
    tokens: np.ndarray  # (S+F,) int64: inputs tokens[:S]; head k's targets tokens[k+1 : S+k+1]
    doc_ids: np.ndarray  # (S+F,) int64: 0 for the first document in the window, +1 at each <bos>
    positions: np.ndarray  # (S,) int64: position of each input inside its document
    is_compressed: np.ndarray  # (S,) bool: input is a compressed payload symbol
    raw_bytes: int  # raw text bytes the S inputs stand for
    compressed_bytes: int = 0  # of raw_bytes, those behind compressed payload symbols


def doc_ids_from_tokens(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """(..., L) -> (..., L) int64 document index along the last axis, 0 for the first document."""
    c = np.cumsum(tokens == bos_id, axis=-1)
    return c - c[..., :1]


def positions_in_document(ids: np.ndarray, bos_id: int) -> np.ndarray:
    """(n,) ids of whole rendered documents (starting with <bos>) -> (n,) int64 positions (0 at each <bos>)."""
    idx = np.arange(len(ids), dtype=np.int64)
    last_bos = np.maximum.accumulate(np.where(ids == bos_id, idx, 0))
    return idx - last_bos


class _Chunk:
    __slots__ = ("ids", "is_compressed", "nbytes", "positions", "tag")

    def __init__(self, ids, is_compressed, nbytes, positions, tag):
        self.ids, self.is_compressed, self.nbytes, self.positions, self.tag = ids, is_compressed, nbytes, positions, tag


class Packer:
    def __init__(self, seq_len: int, n_future: int, bos_id: int, max_position: int = 0):
        if seq_len < 1 or n_future < 1:
            raise ValueError("seq_len and n_future must be >= 1")
        if max_position and max_position <= seq_len:
            raise ValueError(f"max_position {max_position} must exceed seq_len {seq_len}")
        self.seq_len, self.n_future, self.bos_id, self.max_position = seq_len, n_future, bos_id, max_position
        self.window_len = seq_len + n_future
        self._chunks: deque[_Chunk] = deque()
        self._head = 0  # offset of the next window's first token in _chunks[0]
        self._available = 0

    def available(self) -> int:
        """Tokens buffered from the next window's first token on."""
        return self._available

    def push(self, ids: np.ndarray, is_compressed: np.ndarray, nbytes: np.ndarray, tag: dict | None = None,
             skip: int = 0) -> None:
        """Append one rendered document (must start with <bos>); `skip` drops its first tokens (resume)."""
        if len(ids) == 0:
            return
        if ids[0] != self.bos_id:
            raise ValueError("a rendered document must start with <bos>")
        if not 0 <= skip < len(ids):
            raise ValueError(f"skip {skip} outside a document of {len(ids)} tokens")
        if skip and self._chunks:
            raise ValueError("skip is only allowed for the first buffered document")
        self._chunks.append(_Chunk(ids, is_compressed, nbytes, positions_in_document(ids, self.bos_id), tag))
        if skip:
            self._head = skip
        self._available += len(ids) - skip

    def pop_window(self) -> Window:
        """The next window; advances by seq_len tokens (the last n_future stay for the next window)."""
        S, L = self.seq_len, self.window_len
        if self._available < L:
            raise RuntimeError(f"need {L} buffered tokens, have {self._available}")
        toks, comp, nb, pos = [], [], [], []
        need, off = L, self._head
        for c in self._chunks:  # gather L tokens without consuming
            take = min(need, len(c.ids) - off)
            sl = slice(off, off + take)
            toks.append(c.ids[sl])
            comp.append(c.is_compressed[sl])
            nb.append(c.nbytes[sl])
            pos.append(c.positions[sl])
            need -= take
            off = 0
            if not need:
                break
        tokens = np.concatenate(toks)
        positions = np.concatenate(pos)[:S]
        if self.max_position and positions[0] + S > self.max_position:  # only a continued first document
            period = self.max_position - S
            first_doc = np.cumsum(tokens[:S] == self.bos_id) == 0
            positions = np.where(first_doc, positions - positions[0] // period * period, positions)
        is_compressed = np.concatenate(comp)[:S]
        nbytes = np.concatenate(nb)[:S]
        raw_bytes = int(nbytes.sum())
        compressed_bytes = int(nbytes[is_compressed].sum())
        # advance by S: drop the documents whose tokens were all inputs
        adv = S
        while adv:
            c = self._chunks[0]
            left = len(c.ids) - self._head
            if adv >= left:
                adv -= left
                self._chunks.popleft()
                self._head = 0
            else:
                self._head += adv
                adv = 0
        self._available -= S
        return Window(tokens, doc_ids_from_tokens(tokens, self.bos_id), positions, is_compressed, raw_bytes,
                      compressed_bytes)

    # ---- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"tags": [tag of each buffered document], "offset": first token's offset in the first one}."""
        return {"tags": [c.tag for c in self._chunks], "offset": self._head}

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._available = 0
