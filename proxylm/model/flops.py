"""FLOPs a training step spends (for MFU and compute-matched comparisons).

    f = training_flops(cfg, rep.vocab_size, rep.raw_vocab_size, batch=8, seq_len=512, n_raw_positions=n_raw)

What is counted (a multiply-add = 2 FLOPs; a matmul (m, k) @ (k, n) = 2 m k n):
  * every linear of every layer, per position: q, k, v, o, gate, up, down (k, v at n_kv_heads width);
  * attention, per layer and sequence: scores Q K^T = 2 S S (n_heads head_dim) and the weighted sum of values,
    the same again, i.e. 2 * 2 * S * S * n_heads * head_dim. This is the dense S x S work that SDPA with a
    boolean mask does (the CPU path); flash (is_causal) and FlexAttention kernels skip fully masked blocks and
    do about half of it, so for them this is an upper bound;
  * the heads: every main head (2 D V) at every position, the raw heads (2 D raw_vocab_size) only at the
    `n_raw_positions` positions where they run (proxylm/model/heads.py);
  * the output bridge (model/bridge.py): head 0 (2 D V) again at the `n_bridge_positions` it scores;
  * input features (model/features.py: input bridge, hashed n-grams): the add of each extra embedding row,
    D per row and position (the lookups themselves are gathers);
  * backward = 2 x forward, so training = 3 x forward.
Not counted: the embedding lookup (a gather, 0 FLOPs), norms, RoPE, softmax, SiLU, residual adds, the loss
itself, and the head forward recomputed by the checkpointed chunked CE (model FLOPs, as MFU counts them).
"""

from __future__ import annotations

from proxylm.model.config import ModelConfig

FLOPS_PER_MAC = 2  # one multiply-add
BACKWARD_FACTOR = 2  # backward costs twice the forward (grads w.r.t. inputs and weights)


def layer_linear_flops_per_position(cfg: ModelConfig) -> int:
    """Forward FLOPs of one layer's linears for one position."""
    d, q_width, kv_width, f = cfg.dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.hidden_dim
    macs = d * q_width + 2 * d * kv_width + q_width * d + 3 * d * f  # q, k+v, o, gate+up+down
    return FLOPS_PER_MAC * macs


def attention_flops_per_sequence(cfg: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs of one layer's attention (scores + values, dense S x S) for one sequence."""
    q_width = cfg.n_heads * cfg.head_dim
    return 2 * FLOPS_PER_MAC * seq_len * seq_len * q_width


def feature_rows(cfg: ModelConfig) -> int:
    """Extra embedding rows added to each input (model/features.py)."""
    return len(cfg.ngram_sizes) + (cfg.input_bridge != "none")


def forward_flops(cfg: ModelConfig, vocab_size: int, raw_vocab_size: int, batch: int, seq_len: int,
                  n_raw_positions: int = 0, n_bridge_positions: int = 0) -> float:
    """Forward FLOPs of one step over `batch` sequences of `seq_len` positions (see the module docstring).
    n_raw_positions: positions (over the whole batch) where the raw heads run; ignored without raw heads.
    n_bridge_positions: positions the output bridge scores."""
    positions = batch * seq_len
    trunk = cfg.n_layers * (positions * layer_linear_flops_per_position(cfg)
                            + batch * attention_flops_per_sequence(cfg, seq_len))
    main_heads = positions * cfg.n_pred_heads * FLOPS_PER_MAC * cfg.dim * vocab_size
    raw_heads = n_raw_positions * cfg.n_raw_heads * FLOPS_PER_MAC * cfg.dim * raw_vocab_size
    bridge = n_bridge_positions * FLOPS_PER_MAC * cfg.dim * vocab_size
    features = positions * feature_rows(cfg) * cfg.dim
    return float(trunk + main_heads + raw_heads + bridge + features)


def training_flops(cfg: ModelConfig, vocab_size: int, raw_vocab_size: int, batch: int, seq_len: int,
                   n_raw_positions: int = 0, n_bridge_positions: int = 0) -> float:
    """Forward + backward FLOPs of one training step (3 x forward_flops)."""
    return (1 + BACKWARD_FACTOR) * forward_flops(cfg, vocab_size, raw_vocab_size, batch, seq_len,
                                                 n_raw_positions, n_bridge_positions)
