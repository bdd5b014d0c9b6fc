"""Extra input features of raw bytes, added to their input embedding: the input bridge and hashed byte n-grams.

    feats = InputFeatures(cfg, raw_offset=rep.raw_offset)                   # model.ngram_sizes: hashed n-grams
    feats.set_vocabulary(codec.symbol_bytes(), rows, own_table=False)       # model.input_bridge: the trie
    x = embed(ids) + feats(ids, doc_ids=doc_ids, kv_cache=None, shared=embed.weight)   # (B, S, D)

Both are pure functions of the raw bytes at positions <= t of the same raw run (consecutive raw-byte ids of one
document inside the model's context: a sentinel, a compressed id, <bos> or a window edge ends a run), so they
never look ahead, need no encoder at inference and work with a KV cache (the ids of every cached position are
kept beside the keys, `KVCache.row_buffers`, and follow its rollbacks, row drops and row copies):

* **Input bridge** (`model.input_bridge`; a deviation from the paper, whose models keep no codec table): the
  longest codec symbol whose bytes end at byte t (a trie over the vocabulary's byte strings, reversed, walked
  back from t; no merges, no encoder) adds an embedding row: `shared` = the model's own row of that compressed
  id (the row the compressed view trains), `own` = a separate table with a row per symbol (a byte model: the
  same table, trained only from raw bytes). The trie is saved with the model (persistent buffers).
* **Hashed n-grams** (`model.ngram_sizes`, `model.ngram_buckets`; as BLT): for each n, the n bytes ending at t
  (all in one raw run) hash (a polynomial hash mod a prime) into a table of `ngram_buckets` rows of its own.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from proxylm.core.representation import N_BYTES

HASH_PRIME = 2_147_483_647  # 2^31 - 1: h * HASH_BASE stays far inside int64
HASH_BASE = 257
HISTORY = "ids"  # the KVCache row buffer holding the ids of every cached position


def build_trie(pieces: list[bytes]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Trie of the reversed byte strings: (keys (E,) sorted node*256+byte, child (E,), terminal (N,) symbol index
    or -1, depth = the longest piece). A byte string several symbols share ends at the lowest symbol index."""
    edges: dict[int, int] = {}
    terminal = [-1]
    depth = 0
    for sym, piece in enumerate(pieces):
        if not piece:
            continue
        depth = max(depth, len(piece))
        node = 0
        for b in reversed(piece):
            key = node * N_BYTES + b
            if key not in edges:
                edges[key] = len(terminal)
                terminal.append(-1)
            node = edges[key]
        if terminal[node] < 0:
            terminal[node] = sym
    keys = sorted(edges)
    return (torch.tensor(keys, dtype=torch.long), torch.tensor([edges[k] for k in keys], dtype=torch.long),
            torch.tensor(terminal, dtype=torch.long), depth)


def context_windows(ids: torch.Tensor, doc_ids: torch.Tensor | None, length: int, kv_cache=None) -> torch.Tensor:
    """ids (B, S) -> (B, S, length): column j holds the id j positions back (j = 0: the id itself), -1 outside
    the document or the context. With a KV cache the earlier ids come from the cache's history (and these
    ids are written to it at the positions the cache gives them)."""
    B, S = ids.shape
    back = torch.arange(length, device=ids.device)  # (L,)
    if kv_cache is not None:
        hist = kv_cache.row_buffers.get(HISTORY)
        if hist is None:
            hist = torch.full((B, kv_cache.max_len), -1, dtype=torch.long, device=ids.device)
            kv_cache.row_buffers[HISTORY] = hist
        q = kv_cache.positions(S, ids.device)  # (B, S) before the cache advances
        hist.scatter_(1, q, ids)
        idx = q.unsqueeze(-1) - back  # (B, S, L)
        win = hist.gather(1, idx.clamp(min=0).view(B, -1)).view(B, S, length)
        return win.masked_fill(idx < 0, -1)
    pad = torch.nn.functional.pad(ids, (length - 1, 0), value=-1)
    win = pad.unfold(1, length, 1).flip(-1)  # (B, S, L), column 0 = position t
    if doc_ids is not None:
        dpad = torch.nn.functional.pad(doc_ids[:, :S], (length - 1, 0), value=-2)
        same = dpad.unfold(1, length, 1).flip(-1) == doc_ids[:, :S].unsqueeze(-1)
        win = win.masked_fill(~same, -1)
    return win


class InputFeatures(nn.Module):
    """The added input embeddings of raw bytes (module docstring). `rows` maps a symbol index to the model's
    embedding row (`shared`) or to a row of `own` (a byte model)."""

    def __init__(self, cfg, raw_offset: int):
        super().__init__()
        self.raw_offset = raw_offset
        self.ngram_sizes = list(cfg.ngram_sizes)
        self.ngram_buckets = cfg.ngram_buckets
        self.ngrams = nn.ModuleList(nn.Embedding(cfg.ngram_buckets, cfg.dim) for _ in self.ngram_sizes)
        self.mode = cfg.input_bridge  # none | shared | own
        self.own: nn.Embedding | None = None
        self.depth = 0
        # the trie travels with the model (checkpoints and exports): persistent buffers
        for name in ("trie_keys", "trie_child", "trie_terminal", "trie_rows"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long))

    def set_vocabulary(self, pieces: list[bytes], rows: list[int] | None, dim: int, init_std: float) -> None:
        """The codec's symbols (their bytes) and, for `shared`, each symbol's row of the model's embedding;
        `own` makes a table of len(pieces) rows, normal(0, init_std)."""
        keys, child, terminal, self.depth = build_trie(pieces)
        device = self.trie_keys.device
        self.trie_keys, self.trie_child, self.trie_terminal = keys.to(device), child.to(device), terminal.to(device)
        if self.mode == "own":
            self.own = nn.Embedding(len(pieces), dim).to(device)
            nn.init.normal_(self.own.weight, 0.0, init_std)
            rows = list(range(len(pieces)))
        self.trie_rows = torch.tensor(rows, dtype=torch.long, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the trie's size comes from the vocabulary: take the saved one's shape (set_vocabulary made the same)
        for name in ("trie_keys", "trie_child", "trie_terminal", "trie_rows"):
            t = state_dict.get(prefix + name)
            if t is not None and t.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(t, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def context(self) -> int:
        """Ids a feature at t reads: t and the context - 1 before it."""
        return max([self.depth, *self.ngram_sizes, 1])

    @property
    def n_rows(self) -> int:
        """Embedding rows added per position (model/flops.py counts their adds)."""
        return len(self.ngram_sizes) + (self.mode != "none")

    def longest_symbol(self, win: torch.Tensor) -> torch.Tensor:
        """win (N, L) ids (column 0 = t) -> (N,) index of the longest symbol ending at t, -1 where none."""
        N = win.shape[0]
        node = torch.zeros(N, dtype=torch.long, device=win.device)
        alive = torch.ones(N, dtype=torch.bool, device=win.device)
        best = torch.full((N,), -1, dtype=torch.long, device=win.device)
        last = self.trie_keys.numel() - 1
        for j in range(min(self.depth, win.shape[1])):
            b = win[:, j] - self.raw_offset
            alive = alive & (b >= 0) & (b < N_BYTES)
            key = node * N_BYTES + b.clamp(0, N_BYTES - 1)
            idx = torch.searchsorted(self.trie_keys, key).clamp(max=last)
            hit = alive & (self.trie_keys[idx] == key)
            node = torch.where(hit, self.trie_child[idx], node)
            alive = hit
            sym = self.trie_terminal[node]
            best = torch.where(hit & (sym >= 0), sym, best)
            if not bool(alive.any()):
                break
        return best

    def ngram_buckets_of(self, win: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """win (N, L) -> per n of ngram_sizes: (bucket (N,), valid (N,)) of the n bytes ending at t."""
        b = win - self.raw_offset
        raw = (b >= 0) & (b < N_BYTES)
        h = torch.zeros(win.shape[0], dtype=torch.long, device=win.device)
        ok = torch.ones(win.shape[0], dtype=torch.bool, device=win.device)
        out, want = [], {n: i for i, n in enumerate(self.ngram_sizes)}
        found = {}
        for j in range(max(self.ngram_sizes)):
            ok = ok & raw[:, j]
            h = (h * HASH_BASE + b[:, j].clamp(0, N_BYTES - 1) + 1) % HASH_PRIME
            if j + 1 in want:
                found[j + 1] = (h % self.ngram_buckets, ok)
        for n in self.ngram_sizes:
            out.append(found[n])
        return out

    def forward(self, ids: torch.Tensor, doc_ids: torch.Tensor | None = None, kv_cache=None,
                shared: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, S) -> (B, S, D) float: the sum of the added rows (0 where none applies). `shared`: the
        model's embedding weight (V, D), for input_bridge=shared."""
        B, S = ids.shape
        win = context_windows(ids, doc_ids, self.context, kv_cache).reshape(B * S, -1)  # (N, L)
        parts = []
        if self.mode != "none":
            if not self.trie_keys.numel():
                raise RuntimeError("model.input_bridge: no vocabulary; call model.features.set_vocabulary (assemble's "
                                   "new_model does) before the first forward")
            sym = self.longest_symbol(win)  # (N,)
            table = self.own.weight if self.mode == "own" else shared
            rows = self.trie_rows[sym.clamp(min=0)]
            parts.append(table[rows] * (sym >= 0).unsqueeze(-1).to(table.dtype))
        if self.ngram_sizes:
            for emb, (bucket, ok) in zip(self.ngrams, self.ngram_buckets_of(win)):
                parts.append(emb(bucket) * ok.unsqueeze(-1).to(emb.weight.dtype))
        if not parts:
            return torch.zeros(B, S, 1, device=ids.device)
        return torch.stack(parts).sum(0).view(B, S, -1)
