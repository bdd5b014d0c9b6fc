"""Model config: a Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, no biases, untied head).

The vocabulary size is never configured here: it comes from the run's Representation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (no GQA)
    ffn_dim: int | None = None  # None: 8/3 * dim rounded up to a multiple of 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096  # RoPE table size (positions restart per document)
    n_pred_heads: int = 1  # head k (0-based) predicts the symbol k+1 ahead, over the full vocabulary
    n_raw_heads: int = 0  # extra raw-byte heads (reference section 3.3), predicting beyond the main heads
    init_std: float = 0.02  # normal(0, init_std) for every weight matrix (embedding and heads included)
    depth_scaled_init: bool = True  # residual output projections (attention o, mlp down): std / sqrt(2 n_layers)
    attention: str = "auto"  # auto | sdpa | flex  (auto: flex on CUDA, sdpa with a mask on CPU)
    ce_chunk: int = 2048  # positions per chunk in the chunked cross-entropy

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} must be divisible by n_heads {self.n_heads}")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be divisible by n_kv_heads")
        if self.n_pred_heads < 1 or self.n_raw_heads < 0:
            raise ValueError("n_pred_heads must be >= 1 and n_raw_heads >= 0")
        if self.attention not in ("auto", "sdpa", "flex"):
            raise ValueError("attention must be auto, sdpa or flex")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_dim or (int(8 * self.dim / 3) + 63) // 64 * 64

    @property
    def n_future(self) -> int:
        """Targets needed per position: main heads + raw heads."""
        return self.n_pred_heads + self.n_raw_heads
