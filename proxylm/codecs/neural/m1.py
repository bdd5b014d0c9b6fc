"""M1, the neural codec's byte model, run at coding time in exact fixed point so that encoder and decoder agree
bit for bit. M1 is proxylm's own Transformer, trained with proxylm's Trainer by proxylm/prepare/m1.py; here it is
read from its state dict alone (this layer imports no model or trainer).

    m1 = FixedPointM1(model_config, weights)     # (or FixedPointM1(model_config, weights, tables) with the tables saved)
    cache = m1.new_cache(n_lanes=512)
    m1.reset_lanes(cache, lanes)                 # window start: the <bos> token's keys/values at position 0
    logits = m1.step(cache, token_ids, positions)   # (B, 256) float64 byte logits, exact grid values

Exact inference (`FixedPointM1`): float results of a matmul or a sum depend on the summation order, which CPU
kernels choose by batch shape, thread count and SIMD width; a single flipped ulp before quantisation would
desynchronise the decoder. So every reduction is exact, and everything else is elementwise:
  * linear layers are W8A8: int8 weights (per output channel scale) times int8 activations (per row scale
    amax/127), accumulated in int32 (`torch._int_mm`, or a float64 matmul of the same integers: every partial sum
    is an integer below 2^24, so both are exact and equal);
  * attention scores are int8 query x int8 key dot products (per head scales) summed in int32; softmax weights
    are integers from an exp table and values integers on a fixed grid, so the softmax and value sums are int32
    sums; the RMSNorm statistic is a sum of integers (inputs on a fixed grid) in float64: all exact in any order;
  * the rest is float32 elementwise IEEE operations that are correctly rounded (+, -, *, /, sqrt, round) or
    table lookups (exp, sigmoid, RoPE cos/sin; the tables are saved with the codec).
The result is bit-identical for any batch composition, lane order, thread count and (IEEE) CPU; tests check
the batch invariance. What the grids cost in bits per byte against the float32 model: BENCHMARKS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from proxylm.core.representation import N_BYTES, Representation

# ---- fixed-point grids (see module docstring); exactness bounds are checked in FixedPointM1.__init__ -------
INT8_MAX = 127  # linear layers: int8 weights and activations, symmetric
TINY = 1e-30  # floor of an int8 scale
V_FRAC_BITS = 8  # attention values: multiples of 2^-8, |v| <= 2^6 (integers <= 2^14)
V_MAX_BITS = 6
ATTN_EXP_BITS = 10  # attention weights: integers exp(-z) * 2^10 (so sum_j e_j v_j < 2^31 for <= 128 keys)
NORM_FRAC_BITS = 12  # RMSNorm statistic: x on a 2^-12 grid, |x| <= 2^9 (squares <= 2^42; larger x saturate)
NORM_MAX_BITS = 9
EXP_FRAC_BITS = 10  # exp(-z) looked up at z on a 2^-10 grid ...
EXP_RANGE = 16  # ... for z in [0, 16) (exp(-16) * 2^20 rounds to 0) ...
EXP_OUT_BITS = 20  # ... as integers round(exp(-z) * 2^20)
SIGMOID_FRAC_BITS = 10  # sigmoid(g) looked up at g on a 2^-10 grid, g clamped to [-16, 16]
SIGMOID_RANGE = 16
TABLE_FRAC_BITS = 30  # sigmoid and RoPE tables: multiples of 2^-30
EXACT_LIMIT_BITS = 53  # float64 represents every integer below 2^53
FLOAT32_EXACT_BITS = 24  # ... float32 every integer below 2^24


# ---- exact fixed-point inference ----------------------------------------------------------------------------
def build_tables(head_dim: int, rope_theta: float, max_len: int) -> dict[str, torch.Tensor]:
    """Lookup tables of the fixed-point forward (float64). Saved with the codec, so a machine whose libm rounds
    one entry differently still decodes what another encoded."""
    grid = 2.0 ** TABLE_FRAC_BITS
    z = torch.arange(EXP_RANGE << EXP_FRAC_BITS, dtype=torch.float64) / (1 << EXP_FRAC_BITS)
    g = torch.arange(-SIGMOID_RANGE << SIGMOID_FRAC_BITS, (SIGMOID_RANGE << SIGMOID_FRAC_BITS) + 1,
                     dtype=torch.float64) / (1 << SIGMOID_FRAC_BITS)
    inv_freq = 1.0 / rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq  # (max_len, hd/2)
    angles = torch.cat([angles, angles], dim=1)  # (max_len, hd): rotate-half layout, as the Transformer
    return {"exp": torch.round(torch.exp(-z) * (1 << EXP_OUT_BITS)),
            "sigmoid": torch.round(torch.sigmoid(g) * grid) / grid,
            "cos": torch.round(torch.cos(angles) * grid) / grid,
            "sin": torch.round(torch.sin(angles) * grid) / grid}


def _to_grid(x: torch.Tensor, frac_bits: int, max_bits: int) -> torch.Tensor:
    """float64 integers round(x * 2^frac) clamped to |.| <= 2^(frac+max)."""
    limit = float(2 ** (frac_bits + max_bits))
    return torch.round(x.double() * 2.0 ** frac_bits).clamp_(-limit, limit)


def _int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float32 -> (int8 (..., K), scale (..., 1) float32) with x ~ int8 * scale, scale = amax / 127.
    (|x * 127 / amax| <= 127 up to rounding, so no clamp is needed; a zero row stays zero.)"""
    peak = x.abs().amax(-1, keepdim=True).clamp_(min=TINY)
    return torch.round(x * (INT8_MAX / peak)).to(torch.int8), peak / INT8_MAX


def _int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 (M, K) @ int8 (K, N) -> exact int32 sums as float32 (K * 127^2 < 2^24, checked by the caller)."""
    if hasattr(torch, "_int_mm"):
        return torch._int_mm(a, b).float()
    return (a.double() @ b.double()).float()  # the same integers, every partial sum exact: identical result


class _Int8Linear:
    """x @ W.T for one or more weights sharing the input (fused: one quantisation, one matmul), as W8A8 with
    exact integer accumulation (module docstring) -> one (M, out_i) float32 tensor per weight."""

    def __init__(self, *weights: torch.Tensor):
        w = torch.cat([t.detach().float() for t in weights])  # (sum out, in)
        if w.shape[1] * INT8_MAX ** 2 >= 2 ** FLOAT32_EXACT_BITS:
            raise ValueError(f"in_features {w.shape[1]} too large for exact int8 accumulation")
        wq, scale = _int8_rows(w)
        self.wt = wq.t().contiguous()  # (in, sum out) int8
        self.col_scale = scale.view(1, -1)  # (1, sum out)
        self.splits = [t.shape[0] for t in weights]

    def __call__(self, x: torch.Tensor):
        xq, row_scale = _int8_rows(x)
        y = _int_matmul(xq, self.wt) * row_scale * self.col_scale
        return y if len(self.splits) == 1 else y.split(self.splits, dim=-1)


@dataclass
class LaneCache:
    """Keys/values of every layer for many independent windows (lanes); per layer k (B, T, Hkv, hd) int16 holding
    int8 values, with k_scale (B, T, Hkv) float32, and v (B, T, Hkv, hd) int32 integers of the value grid (the
    dtypes the products want, so gathering needs no conversion); lane b's window occupies positions 0..(its
    position)."""

    k: list[torch.Tensor]
    k_scale: list[torch.Tensor]
    v: list[torch.Tensor]

    @property
    def n_lanes(self) -> int:
        return self.k[0].shape[0]

    def select(self, lanes: torch.Tensor) -> "LaneCache":
        """A cache holding only `lanes` (compaction when lanes run dry)."""
        return LaneCache([t[lanes] for t in self.k], [t[lanes] for t in self.k_scale], [t[lanes] for t in self.v])


def _take(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[idx] along dim 0 (index_select on the flattened index: several times faster than advanced indexing)."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, *table.shape[1:])


def _ranges(lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated aranges: lengths (B,) -> (sum,) [0..l0-1, 0..l1-1, ...]."""
    ends = torch.cumsum(lengths, 0)
    return torch.arange(int(ends[-1])) - torch.repeat_interleave(ends - lengths, lengths)


class _Shape:
    """The ModelConfig fields the fixed-point forward reads, from its dict (the derived sizes follow
    proxylm/model/config.py: head_dim = dim / n_heads, kv_heads = n_kv_heads or n_heads)."""

    def __init__(self, c: dict):
        self.dim, self.n_layers, self.n_heads = c["dim"], c["n_layers"], c["n_heads"]
        self.kv_heads = c.get("n_kv_heads") or self.n_heads
        self.head_dim = self.dim // self.n_heads
        self.norm_eps, self.rope_theta, self.max_seq_len = c["norm_eps"], c["rope_theta"], c["max_seq_len"]


class FixedPointM1:
    """M1's forward pass, one new byte per lane per call, exact (module docstring)."""

    def __init__(self, model_config: dict, weights: dict[str, torch.Tensor],
                 tables: dict[str, torch.Tensor] | None = None, max_len: int | None = None):
        """model_config: M1's ModelConfig as a dict (asdict); weights: its state dict (Transformer's key names)."""
        cfg = _Shape(model_config)
        self.cfg = cfg
        self.max_len = max_len or cfg.max_seq_len  # positions 0..max_len-1 (the <bos> at 0)
        rep = Representation.bytes_only()
        self.bos_id, self.byte_offset = rep.bos_id, rep.raw_offset
        self.tables = tables or build_tables(cfg.head_dim, cfg.rope_theta, self.max_len)
        if self.tables["cos"].shape[0] < self.max_len:
            raise ValueError("RoPE table shorter than the window")
        # exact integer sums: scores hd * 127^2, values T * 2^10 * 2^14 below 2^31; norm D * 2^42 below 2^53
        if (cfg.head_dim * INT8_MAX ** 2 >= 2 ** 31 or self.max_len * 2 ** (ATTN_EXP_BITS + V_FRAC_BITS + V_MAX_BITS)
                >= 2 ** 31 or cfg.dim * 2.0 ** (2 * (NORM_FRAC_BITS + NORM_MAX_BITS)) >= 2.0 ** EXACT_LIMIT_BITS):
            raise ValueError("model or window too large for exact fixed-point inference")
        f32 = lambda t: t.detach().float()  # noqa: E731
        self.exp = self.tables["exp"]  # float64 integers <= 2^20 (byte distributions, coder.py)
        self.attn_exp = (self.exp.long() >> (EXP_OUT_BITS - ATTN_EXP_BITS)).int()  # int32 <= 2^10
        self.sigmoid, self.cos, sin = f32(self.tables["sigmoid"]), f32(self.tables["cos"]), f32(self.tables["sin"])
        half = sin.shape[1] // 2
        self.signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=1)  # (max_len, hd)
        w = weights
        self.embed = f32(w["embed.weight"])  # (V, D)
        self.layers = []
        for i in range(cfg.n_layers):
            p = f"layers.{i}."
            self.layers.append({
                "attn_norm": f32(w[p + "attn_norm.weight"]), "mlp_norm": f32(w[p + "mlp_norm.weight"]),
                "qkv": _Int8Linear(*(w[p + f"attn.{n}.weight"] for n in "qkv")), "o": _Int8Linear(w[p + "attn.o.weight"]),
                "gate_up": _Int8Linear(w[p + "mlp.gate.weight"], w[p + "mlp.up.weight"]),
                "down": _Int8Linear(w[p + "mlp.down.weight"])})
        self.norm = f32(w["norm.weight"])
        self.output = _Int8Linear(w["output.weight"][self.byte_offset:self.byte_offset + N_BYTES])  # bytes only
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.eps = cfg.norm_eps
        self.attn_scale = 1.0 / math.sqrt(self.hd)
        start = self.new_cache(1)
        self.start_logits = self.step(start, torch.tensor([self.bos_id]), torch.tensor([0]), token_is_id=True)[0]
        self.start = LaneCache([t[0, 0].clone() for t in start.k], [t[0, 0].clone() for t in start.k_scale],
                               [t[0, 0].clone() for t in start.v])  # per layer: <bos> at position 0

    # ---- cache ----------------------------------------------------------------------------------------------
    def new_cache(self, n_lanes: int) -> LaneCache:
        shape = (n_lanes, self.max_len, self.n_kv, self.hd)
        n = self.cfg.n_layers
        return LaneCache([torch.zeros(shape, dtype=torch.int16) for _ in range(n)],
                         [torch.ones(shape[:3], dtype=torch.float32) for _ in range(n)],
                         [torch.zeros(shape, dtype=torch.int32) for _ in range(n)])

    def reset_lanes(self, cache: LaneCache, lanes: torch.Tensor) -> None:
        """Start a new window in `lanes`: position 0 holds <bos> (precomputed; its logits: start_logits)."""
        for i in range(self.cfg.n_layers):
            cache.k[i][lanes, 0] = self.start.k[i]
            cache.k_scale[i][lanes, 0] = self.start.k_scale[i]
            cache.v[i][lanes, 0] = self.start.v[i]

    # ---- pieces ---------------------------------------------------------------------------------------------
    def _rmsnorm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xs = _to_grid(x, NORM_FRAC_BITS, NORM_MAX_BITS)
        mean_square = (xs * xs).sum(-1, keepdim=True) * 2.0 ** (-2 * NORM_FRAC_BITS) / x.shape[-1]
        return x * (1.0 / torch.sqrt(mean_square + self.eps)).float() * weight

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, heads, hd) float32, positions (B,): x * cos + rotate_half(x) * sin, with rotate_half's sign folded
        into the sin table (rotate_half(x) * sin == roll(x, hd/2) * signed_sin)."""
        cos, sin = _take(self.cos, positions).unsqueeze(1), _take(self.signed_sin, positions).unsqueeze(1)
        return x * cos + x.roll(self.hd // 2, -1) * sin

    def _attention(self, q: torch.Tensor, cache: LaneCache, i: int, lane: torch.Tensor, key: torch.Tensor):
        """q (B, H, hd) float32 against layer i's cached keys/values: for every key a lane sees (its positions
        0..current), `lane` (P,) is the lane and `key` (P,) the row of the flattened (B * T) cache.
        -> (B, H * hd) float32, with every sum exact.

        Gathering the P = sum(n + 1) visible keys instead of a (B, T_max) masked block keeps the cost at the
        windows' mean length rather than the longest one."""
        B = q.shape[0]
        group = self.n_heads // self.n_kv
        q8, q_scale = _int8_rows(q)  # (B, H, hd) int8, (B, H, 1)
        kp = _take(cache.k[i].flatten(0, 1), key).unsqueeze(2)  # (P, Hkv, 1, hd) int16
        qp = _take(q8.view(B, self.n_kv, group, self.hd).short(), lane)  # (P, Hkv, rep, hd): heads grouped as HF
        dots = (qp * kp).sum(-1, dtype=torch.int32)  # (P, Hkv, rep) exact: |products| <= 127^2
        scores = dots.float() * _take(q_scale.view(B, self.n_kv, group), lane) \
            * _take(cache.k_scale[i].flatten(0, 1), key).unsqueeze(-1) * self.attn_scale  # (P, Hkv, rep) float32
        top = torch.full((B, self.n_kv, group), -math.inf)
        top = top.scatter_reduce(0, lane[:, None, None].expand_as(scores), scores, "amax")  # (B, Hkv, rep)
        z = (_take(top, lane) - scores) * 2.0 ** EXP_FRAC_BITS
        e = _take(self.attn_exp, torch.round(z).clamp_(max=len(self.exp) - 1).long())  # (P, Hkv, rep) int32 <= 2^10
        den = torch.zeros(B, self.n_kv, group, dtype=torch.int32).index_add_(0, lane, e)
        weighted = e.unsqueeze(-1) * _take(cache.v[i].flatten(0, 1), key).unsqueeze(2)  # (P, Hkv, rep, hd) < 2^24
        num = torch.zeros(B, self.n_kv, group, self.hd, dtype=torch.int32).index_add_(0, lane, weighted)
        out = num.double() / den.unsqueeze(-1).double() * 2.0 ** -V_FRAC_BITS
        return out.float().reshape(B, self.n_heads * self.hd)

    def _silu(self, g: torch.Tensor) -> torch.Tensor:
        half = SIGMOID_RANGE << SIGMOID_FRAC_BITS
        return g * _take(self.sigmoid, torch.round(g * 2.0 ** SIGMOID_FRAC_BITS).clamp_(-half, half).long() + half)

    # ---- one step -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, cache: LaneCache, tokens: torch.Tensor, positions: torch.Tensor,
             token_is_id: bool = False) -> torch.Tensor:
        """Feed one token per lane: tokens (B,) bytes 0..255 (or vocabulary ids with token_is_id) at positions
        (B,) >= 1; writes their keys/values there and returns the byte logits after them (B, 256) float64."""
        B, T = tokens.shape[0], self.max_len
        ids = tokens if token_is_id else tokens + self.byte_offset
        x = _take(self.embed, ids)  # (B, D) float32
        lanes = torch.arange(B)
        row = lanes * T + positions  # (B,) each lane's new row in the flattened (B * T) cache
        lane = torch.repeat_interleave(lanes, positions + 1)  # (P,) lane of every visible key
        key = lane * T + _ranges(positions + 1)  # (P,) its row in the flattened cache
        for i, layer in enumerate(self.layers):
            q, k, v = layer["qkv"](self._rmsnorm(x, layer["attn_norm"]))
            qk = self._rope(torch.cat([q, k], dim=1).view(B, self.n_heads + self.n_kv, self.hd), positions)
            q, k = qk[:, :self.n_heads], qk[:, self.n_heads:]
            k8, k_scale = _int8_rows(k)
            cache.k[i].flatten(0, 1).index_copy_(0, row, k8.short())
            cache.k_scale[i].flatten(0, 1).index_copy_(0, row, k_scale.squeeze(-1))
            v = _to_grid(v.view(B, self.n_kv, self.hd), V_FRAC_BITS, V_MAX_BITS).int()
            cache.v[i].flatten(0, 1).index_copy_(0, row, v)
            x = x + layer["o"](self._attention(q, cache, i, lane, key))
            gate, up = layer["gate_up"](self._rmsnorm(x, layer["mlp_norm"]))
            x = x + layer["down"](self._silu(gate) * up)
        return self.output(self._rmsnorm(x, self.norm)).double()  # (B, 256), exact float32 values
