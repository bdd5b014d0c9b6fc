"""The output bridge (training only): raw-view positions where a codec symbol ends also predict the next symbol.

    bridge = OutputBridge(codec, rep, weight=0.5)          # model.output_bridge = weight; codec.symbol_bytes()
    model.output_bridge = bridge                           # (proxylm/assemble.py does this)
    out = model.loss(hidden, tokens, doc_ids)              # + weight * CE(head 0 at those positions, next symbol)

Each raw run of a window (consecutive raw-byte ids; `tokens` is the window's S+F ids) is encoded with the run's
codec, whose symbols say where they end (`symbol_bytes`: BPE and imported tokenizers). At the position of a
symbol's last byte the hidden state is scored, through head 0's rows of the compressed ids (the rows the
compressed view trains), on the compressed id of the symbol that follows; at `<raw>` the first symbol. So the
raw stream learns to speak the compressed view's vocabulary; inference never runs it.

A run cut by the window's start or end is encoded from the bytes the window holds (a cut UTF-8 character
dropped), and the pairs that touch the cut (the first symbol's end; the last symbol as a target) are left out:
those symbols may differ from the document's own. The added loss is `weight` x CE per bridged position, in the
same sum as the heads' losses (divided by the positions counted, heads.py); model/flops.py counts its head.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from proxylm.model.heads import LossOutput, chunked_cross_entropy


def _utf8_tail_cut(data: bytes) -> int:
    """Bytes to drop from the end so that no UTF-8 character is cut (0 when the last one is whole)."""
    for back in range(1, min(4, len(data)) + 1):
        c = data[-back]
        if c & 0xC0 != 0x80:  # a lead (or ASCII) byte: is its character complete?
            need = 1 if c < 0x80 else 2 if c >> 5 == 0b110 else 3 if c >> 4 == 0b1110 else 4 if c >> 3 == 0b11110 else 1
            return 0 if need <= back else back
    return 0


class OutputBridge:
    def __init__(self, codec, rep, weight: float):
        pieces = codec.symbol_bytes()
        if pieces is None:
            raise ValueError(f"codec {codec.name!r} cannot say where its symbols end (no symbol_bytes)")
        self.codec, self.rep, self.weight = codec, rep, float(weight)
        self.lengths = np.array([len(p) for p in pieces], dtype=np.int64)  # (alphabet,)
        self.skipped = 0  # runs the codec could not encode (counted, never silent: `stats`)

    def stats(self) -> dict:
        return {"bridge_runs_skipped": self.skipped}

    def pairs(self, tokens: np.ndarray, n_inputs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tokens (B, T) int64 -> (rows, cols, target ids) of the bridged positions (cols < n_inputs)."""
        rep = self.rep
        raw = (tokens >= rep.raw_offset) & (tokens < rep.raw_vocab_size)
        runs, datas = [], []
        for r in range(tokens.shape[0]):
            edges = np.flatnonzero(np.diff(np.r_[0, raw[r].astype(np.int8), 0]))
            for a, b in zip(edges[::2], edges[1::2]):
                opened = a > 0 and tokens[r, a - 1] == rep.raw_start_id  # the run starts the text
                cut_end = b == tokens.shape[1]
                data = (tokens[r, a:b] - rep.raw_offset).astype(np.uint8).tobytes()
                lead = 0 if opened else next((i for i, c in enumerate(data) if c & 0xC0 != 0x80), len(data))
                data = data[lead:]
                tail = _utf8_tail_cut(data) if cut_end else 0
                data = data[:len(data) - tail]
                if data:
                    runs.append((r, a + lead, opened, cut_end))
                    datas.append(data)
        rows, cols, targets = [], [], []
        encoded = self.codec.encode_many(datas) if datas else []
        for (r, start, opened, cut_end), data, sym in zip(runs, datas, encoded):
            if sym is None or len(sym) == 0:
                self.skipped += 1
                continue
            sym = np.asarray(sym, dtype=np.int64)
            ends = np.cumsum(self.lengths[sym])
            extra = int(ends[-1]) - len(data)  # a tokenizer's prepended space (SentencePiece-style)
            if extra < 0 or extra >= self.lengths[sym[0]]:
                self.skipped += 1
                continue
            last_byte = start + ends - extra - 1  # (n,) position of each symbol's last byte
            pos = list(last_byte[:-1])  # symbol i's end predicts symbol i+1
            nxt = list(sym[1:])
            if not opened and pos:
                pos, nxt = pos[1:], nxt[1:]  # a cut first symbol may not be the document's
            if cut_end and pos:
                pos, nxt = pos[:-1], nxt[:-1]  # nor a cut last one
            if opened:
                pos, nxt = [start - 1] + pos, [int(sym[0])] + nxt  # <raw> predicts the first symbol
            for p, s in zip(pos, nxt):
                if p < n_inputs:
                    rows.append(r)
                    cols.append(int(p))
                    targets.append(int(s))
        ids = rep.compressed_ids(np.asarray(targets, dtype=np.int64)) if targets else np.zeros(0, np.int64)
        return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), ids

    def add_loss(self, model, hidden: torch.Tensor, tokens: torch.Tensor, out: LossOutput) -> LossOutput:
        """hidden (B, S, D); tokens (B, S+F) -> `out` with weight x CE of the bridged positions added."""
        rows, cols, ids = self.pairs(tokens.cpu().numpy(), hidden.shape[1])
        dev = hidden.device
        h = hidden[torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)]  # (N_b, D)
        w = torch.full((len(ids),), self.weight, dtype=torch.float32, device=dev)
        s, nll = chunked_cross_entropy(h, model.output.weight, torch.from_numpy(ids).to(dev), w, model.cfg.ce_chunk)
        return dataclasses.replace(out, loss_sum=out.loss_sum + s, n_bridge_positions=torch.tensor(len(ids)),
                                   bridge_nll_sum=nll.sum())
