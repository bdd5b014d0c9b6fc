"""The KV cache of generation: keys and values of every layer, one document per row, rows of their own lengths.

    cache = model.new_kv_cache(batch_size=1)       # proxylm/model/transformer.py
    h = model(prompt_ids, kv_cache=cache)          # prefill; the cache advances by the prompt's length
    cache.set_lengths([n + 1 + accepted])          # roll back rejected speculative positions
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for generation, preallocated to `max_len` positions; one document per
    row, each row with its own length (batched and speculative decoding).

        cache = KVCache(n_layers, batch_size=1, max_len=4096)   # or model.new_kv_cache()
        model(ids, kv_cache=cache)          # row b writes at cache.lengths[b]; then every length grows by S
        cache.set_lengths([n0, n1])         # rollback: positions past a row's length are dropped
        cache.keep_rows([1]); cache.copy_row(0, other_cache)   # batch compaction / refilling a row

    Row b's new positions are lengths[b] .. lengths[b]+S-1 (RoPE positions too) and they see its keys
    0 .. lengths[b]+i; what lies beyond a row's length (rejected drafts, a shorter row's padding) is never
    attended to and is overwritten by the next write. Buffers are allocated at the first write of each
    layer, with that layer's dtype and device (so autocast works)."""

    def __init__(self, n_layers: int, batch_size: int, max_len: int):
        self.batch_size, self.max_len = batch_size, max_len
        self.lengths = [0] * batch_size  # filled positions per row
        self.k: list[torch.Tensor | None] = [None] * n_layers  # each (B, kv_heads, max_len, hd)
        self.v: list[torch.Tensor | None] = [None] * n_layers
        # (B, max_len) tensors indexed like the keys that follow rows and rollbacks (input features' ids)
        self.row_buffers: dict[str, torch.Tensor] = {}

    @property
    def pos(self) -> int:
        """The longest row's length (every row's length when they agree, e.g. batch size 1)."""
        return max(self.lengths, default=0)

    @property
    def uniform(self) -> bool:
        return min(self.lengths, default=0) == self.pos

    def positions(self, S: int, device) -> torch.Tensor:
        """(B, S) int64: the positions of S new ids in each row."""
        return torch.tensor(self.lengths, device=device).unsqueeze(1) + torch.arange(S, device=device)

    def visible(self, S: int, device) -> torch.Tensor:
        """(B, 1, S, pos+S) bool: new query i of row b sees key j iff j <= lengths[b] + i."""
        q = self.positions(S, device)  # (B, S)
        return (torch.arange(self.pos + S, device=device) <= q.unsqueeze(-1)).unsqueeze(1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """k, v (B, kv_heads, S, hd) of the new positions -> keys/values (B, kv_heads, pos+S, hd)."""
        B, n_kv, S, hd = k.shape
        end = self.pos + S
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        if self.k[layer] is None:
            self.k[layer] = k.new_zeros(B, n_kv, self.max_len, hd)
            self.v[layer] = v.new_zeros(B, n_kv, self.max_len, hd)
        if self.uniform:
            start = self.pos
            self.k[layer][:, :, start:end] = k
            self.v[layer][:, :, start:end] = v
        else:  # each row writes at its own length: one index_copy_ into the flattened buffer
            flat = self._write_index(n_kv, S, k.device)  # (B*kv_heads*S,)
            self.k[layer].view(-1, hd).index_copy_(0, flat, k.reshape(-1, hd))
            self.v[layer].view(-1, hd).index_copy_(0, flat, v.reshape(-1, hd))
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def _write_index(self, n_kv: int, S: int, device) -> torch.Tensor:
        """(B*n_kv*S,) the rows of the (B*n_kv*max_len, hd) view that new position s of row b, kv head h goes to,
        in (b, h, s) order; the same for every layer of one forward, so built once."""
        key = (tuple(self.lengths), n_kv, S, device)
        if getattr(self, "_index_key", None) != key:
            B = len(self.lengths)
            head_start = (torch.arange(B, device=device).view(B, 1, 1) * n_kv
                          + torch.arange(n_kv, device=device).view(1, n_kv, 1)) * self.max_len  # (B, n_kv, 1)
            self._index_key = key
            self._index = (head_start + self.positions(S, device).unsqueeze(1)).view(-1)
        return self._index

    def advance(self, n: int) -> None:
        self.lengths = [n_b + n for n_b in self.lengths]

    def set_lengths(self, lengths: list[int]) -> None:
        """Roll rows back (or forward over positions already written): row b keeps positions < lengths[b]."""
        if len(lengths) != len(self.lengths) or any(not 0 <= n <= self.max_len for n in lengths):
            raise ValueError(f"lengths {lengths} do not fit {len(self.lengths)} rows of {self.max_len}")
        self.lengths = [int(n) for n in lengths]

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every other row (rows stay in the given order)."""
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t[torch.as_tensor(rows, device=t.device)]
        for name, t in self.row_buffers.items():
            self.row_buffers[name] = t[torch.as_tensor(rows, device=t.device)]
        self.lengths = [self.lengths[r] for r in rows]
        self.batch_size = len(rows)

    def copy_row(self, row: int, src: "KVCache", src_row: int = 0) -> None:
        """Make row `row` a copy of `src`'s row `src_row` (e.g. a prompt prefilled alone)."""
        n = src.lengths[src_row]
        if n > self.max_len:
            raise ValueError(f"a row of {n} positions does not fit max_len {self.max_len}")
        for store, src_store in ((self.k, src.k), (self.v, src.v)):
            for i, t in enumerate(src_store):
                if t is None:
                    continue
                if store[i] is None:
                    store[i] = t.new_zeros(self.batch_size, t.shape[1], self.max_len, t.shape[3])
                store[i][row, :, :n] = t[src_row, :, :n]
        for name, t in src.row_buffers.items():
            if name not in self.row_buffers:
                self.row_buffers[name] = t.new_full((self.batch_size, self.max_len), -1)
            self.row_buffers[name][row, :n] = t[src_row, :n]
        self.lengths[row] = n

    def reset(self) -> None:
        self.lengths = [0] * self.batch_size
