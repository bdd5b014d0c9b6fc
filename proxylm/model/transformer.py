"""A Llama-architecture decoder (RMSNorm, RoPE rotate-half, GQA, SwiGLU, no biases, untied head) with extra
prediction heads, document-masked attention and a KV cache.

    model = Transformer(ModelConfig(dim=256, n_layers=4), rep.vocab_size, rep.raw_vocab_size)
    S = batch.positions.shape[1]
    hidden = model(batch.tokens[:, :S], positions=batch.positions, doc_ids=batch.doc_ids[:, :S])  # (B, S, D)
    out = model.loss(hidden, batch.tokens, batch.doc_ids)          # LossOutput (proxylm/model/heads.py)
    (out.loss_sum / out.weight_sum).backward()
    logits = model.logits(hidden)                                   # (B, S, V) float32, head 0

Generation (one document per row, each row with its own length; see proxylm/eval/generate.py):
    cache = model.new_kv_cache(batch_size=1)
    h = model(prompt_ids, kv_cache=cache)          # prefill, positions 0..n-1; the cache advances by n
    h = model(next_id.view(1, 1), kv_cache=cache)  # one step at position n
    h = model(ids_k.view(1, k), kv_cache=cache)    # k positions at once (speculative verification)
    cache.set_lengths([n + 1 + accepted])          # roll back the rejected positions

Weights are named so they map 1:1 onto transformers' LlamaForCausalLM (proxylm/model/hf.py). Attention (masks and
backends) lives in proxylm/model/attention.py, the KV cache in proxylm/model/kv_cache.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from proxylm.model import attention
from proxylm.core.representation import N_BYTES
from proxylm.model.config import ModelConfig
from proxylm.model.features import InputFeatures
from proxylm.model.heads import LossOutput, multi_head_loss
from proxylm.model.kv_cache import KVCache

def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """doc_ids (B, S) -> positions (B, S) restarting at 0 wherever the document id changes.

    A document that continues from an earlier window also starts at 0 here; pass the loader's positions
    to continue counting instead."""
    B, S = doc_ids.shape
    idx = torch.arange(S, device=doc_ids.device).expand(B, S)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, S)
    return idx - start_idx


class RMSNorm(nn.Module):
    """As transformers' LlamaRMSNorm: normalise in fp32, cast back, then scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """(head_dim/2,) fp32 inverse frequencies, as HF Llama."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor):
    """positions (B, S) -> cos, sin (B, S, hd) fp32 in the rotate-half layout (frequencies repeated twice).

    Computed from the positions on every forward (as HF Llama does), so there is no table to outgrow:
    a document that continues across many packed windows keeps counting its positions."""
    freqs = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # (B, S, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (B, S, hd)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """x (B, H, S, hd); cos, sin (B, 1, S, hd) in x's dtype."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, self.n_heads * self.hd, bias=False)
        self.k = nn.Linear(cfg.dim, self.n_kv * self.hd, bias=False)
        self.v = nn.Linear(cfg.dim, self.n_kv * self.hd, bias=False)
        self.o = nn.Linear(self.n_heads * self.hd, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, kv_cache: KVCache | None):
        B, S, _ = x.shape
        q = self.q(x).view(B, S, self.n_heads, self.hd).transpose(1, 2)  # (B, H, S, hd)
        k = self.k(x).view(B, S, self.n_kv, self.hd).transpose(1, 2)  # (B, Hkv, S, hd)
        v = self.v(x).view(B, S, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, Hkv, pos+S, hd)
        gqa = self.n_kv != self.n_heads  # kv head j serves query heads j*rep .. (j+1)*rep-1, as HF repeat_kv
        y = mask.attend(q, k, v, gqa)  # mask: attention.Mask, the backend and its mask of this batch
        return self.o(y.transpose(1, 2).reshape(B, S, self.n_heads * self.hd))  # (B, S, D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, raw_vocab_size: int):
        super().__init__()
        if raw_vocab_size > vocab_size:
            raise ValueError(f"raw_vocab_size {raw_vocab_size} exceeds vocab_size {vocab_size}")
        self.cfg, self.vocab_size, self.raw_vocab_size = cfg, vocab_size, raw_vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, vocab_size, bias=False)  # head 0: next symbol
        # head k (k >= 1) predicts the symbol k+1 ahead over the full vocabulary
        self.pred_heads = nn.ModuleList(nn.Linear(cfg.dim, vocab_size, bias=False)
                                        for _ in range(cfg.n_pred_heads - 1))
        # raw head j predicts the symbol n_pred_heads+j+1 ahead over ids < raw_vocab_size, at raw positions only
        self.raw_heads = nn.ModuleList(nn.Linear(cfg.dim, raw_vocab_size, bias=False)
                                       for _ in range(cfg.n_raw_heads))
        # (hd/2,) derived from the config, not saved
        self.register_buffer("rope_inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta), persistent=False)
        # cfg.compose_embedding: the raw ids behind each id, CSR (set_composition; derived from the codec, not saved)
        for name in ("compose_start", "compose_count", "compose_raw"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
        # ---- hook: input features of raw bytes (model/features.py); None when all are off ----
        self.features = (InputFeatures(cfg, raw_offset=raw_vocab_size - N_BYTES)
                         if cfg.input_bridge != "none" or cfg.ngram_sizes else None)
        self.output_bridge = None  # model/bridge.py OutputBridge (training only), set by assemble.new_model
        self.init_weights()

    # ---- init ---------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """normal(0, init_std) for the embedding, every projection and every head; norms 1. The residual
        output projections (attention `o`, mlp `down`) use init_std / sqrt(2 * n_layers) when
        cfg.depth_scaled_init (GPT-2 style: keeps the residual stream's variance independent of depth).
        Also rebuilds the RoPE frequencies (e.g. after materialising a model built on the meta device)."""
        cfg = self.cfg
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers) if cfg.depth_scaled_init else cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("attn.o.weight", "mlp.down.weight")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, cfg.init_std)
        self.rope_inv_freq.copy_(rope_inv_freq(cfg.head_dim, cfg.rope_theta, device=self.rope_inv_freq.device))

    # ---- input embedding ----------------------------------------------------------------------
    def set_composition(self, raw_ids_of: dict[int, list[int]]) -> None:
        """Compose the input embedding of each id in raw_ids_of (model id -> the raw-byte ids it stands for)
        as its own row plus the mean of those rows (cfg.compose_embedding)."""
        count = torch.zeros(self.vocab_size, dtype=torch.long)
        for i, raw in raw_ids_of.items():
            count[i] = len(raw)
        device = self.embed.weight.device
        self.compose_count = count.to(device)  # (V,) 0: the id's row alone
        self.compose_start = (count.cumsum(0) - count).to(device)  # (V,) into compose_raw
        flat = [r for i in range(self.vocab_size) for r in raw_ids_of.get(i, ())]
        self.compose_raw = torch.tensor(flat, dtype=torch.long, device=device)  # (sum(count),) raw ids

    def _byte_means(self, ids: torch.Tensor) -> torch.Tensor | None:
        """ids (N,) -> (N, D) mean raw-byte embedding behind each id (0 for raw and special ids); None when no
        id has bytes behind it."""
        n = self.compose_count[ids]  # (N,)
        total = int(n.sum())
        if total == 0:
            return None
        offsets = n.cumsum(0) - n  # (N,) where each id's bag starts
        within = torch.arange(total, device=ids.device) - offsets.repeat_interleave(n)
        raw = self.compose_raw[self.compose_start[ids].repeat_interleave(n) + within]  # (total,)
        weight = (1.0 / n.clamp(min=1)).to(self.embed.weight.dtype).repeat_interleave(n)
        return F.embedding_bag(raw, self.embed.weight, offsets, mode="sum", per_sample_weights=weight)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, S) -> input embeddings (B, S, D)."""
        x = self.embed(ids)
        if self.compose_count.numel():
            means = self._byte_means(ids.reshape(-1))
            if means is not None:
                x = x + means.view_as(x).to(x.dtype)
        return x

    def input_embedding_table(self) -> torch.Tensor:
        """(V, D): the input embedding of every id, composition included (what an export writes)."""
        table = self.embed.weight
        if self.compose_count.numel():
            means = self._byte_means(torch.arange(self.vocab_size, device=table.device))
            if means is not None:
                table = table + means
        return table

    # ---- forward ------------------------------------------------------------------------------
    def new_kv_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.cfg.n_layers, batch_size, max_len or self.cfg.max_seq_len)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, S) -> final-normed hidden (B, S, D).

        positions (B, S): RoPE positions (restarting per document); default: derived from doc_ids, or
        0..S-1 (continuing from kv_cache.pos with a cache).
        doc_ids (B, S) or (B, S+F) (only the first S columns are used): attention stays inside documents.
        kv_cache: append these positions to the cache and attend to everything cached (one document per row;
        doc_ids are not allowed with a cache)."""
        B, S = ids.shape
        past = kv_cache.pos if kv_cache is not None else 0
        ragged = kv_cache is not None and not kv_cache.uniform  # rows of different lengths
        if doc_ids is not None:
            if kv_cache is not None:
                raise ValueError("kv_cache holds one document per row: pass doc_ids=None")
            doc_ids = doc_ids[:, :S]
        if positions is None:
            if doc_ids is not None:
                positions = positions_from_doc_ids(doc_ids)
            elif ragged:
                positions = kv_cache.positions(S, ids.device)  # (B, S)
            else:
                positions = torch.arange(past, past + S, device=ids.device).expand(B, S)
        x = self.embed_ids(ids)  # (B, S, D)
        if self.features is not None:  # hook: model/features.py (reads the ids before these from the cache)
            x = x + self.features(ids, doc_ids, kv_cache, shared=self.embed.weight).to(x.dtype)
        cos, sin = rope_cos_sin(positions, self.rope_inv_freq)
        cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)  # (B, 1, S, hd)
        if kv_cache is None:  # a full window: the backend model.attention asks for
            mask = attention.window_mask(self.cfg.attention, doc_ids, S, ids.device)
        elif past == 0 or (S == 1 and not ragged):  # a prefill, or one new position that sees everything cached
            mask = attention.cache_mask(None, causal=S > 1)
        else:  # several new positions, or rows of different lengths: query i of row b sees keys 0 .. len_b+i
            mask = attention.cache_mask(kv_cache.visible(S, ids.device))  # (B, 1, S, past+S)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(S)
        return self.norm(x)

    # ---- heads --------------------------------------------------------------------------------
    def logits(self, hidden: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, S, D) -> head-0 logits (B, S, V) float32; with ids (n,) only those columns (B, S, n)
        (generation: the ids it may emit, e.g. 258 of a proxy model's thousands)."""
        return self.head_logits(ids)(hidden)

    def head_logits(self, ids: torch.Tensor | None = None):
        """-> a function hidden (B, S, D) -> head-0 logits (B, S, n) float32 over ids (n,) (default all), with
        head 0's rows of those ids gathered once (a decoding loop calls it every forward)."""
        weight = self.output.weight if ids is None else self.output.weight[ids]  # (n, D)

        def logits(hidden: torch.Tensor) -> torch.Tensor:
            # float32 even under autocast: bfloat16 logits (8-bit mantissa) tie often, so greedy decoding would
            # depend on how many rows a forward had, and BPB would be rounded
            with torch.autocast(hidden.device.type, enabled=False):
                return F.linear(hidden.float(), weight.float())

        return logits

    def main_head_weights(self) -> list[torch.Tensor]:
        return [self.output.weight] + [h.weight for h in self.pred_heads]

    def loss(self, hidden: torch.Tensor, tokens: torch.Tensor, doc_ids: torch.Tensor) -> LossOutput:
        """hidden (B, S, D) from forward; tokens, doc_ids (B, S+F), F >= n_pred_heads + n_raw_heads.
        Chunked CE over cfg.ce_chunk positions; weighting in proxylm/model/heads.py."""
        out = multi_head_loss(hidden, tokens, doc_ids, self.main_head_weights(),
                              [h.weight for h in self.raw_heads], self.raw_vocab_size, self.cfg.ce_chunk)
        if self.output_bridge is not None:  # hook: model/bridge.py (auxiliary loss where codec symbols end)
            out = self.output_bridge.add_loss(self, hidden, tokens, out)
        return out

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non_embedding drops the embedding table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n
