"""Model config: a Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, no biases, untied head).

The vocabulary size is never configured here: it comes from the run's Representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxylm.core.errors import require


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
    # auto | sdpa | flex (auto: flex on CUDA, sdpa on CPU; flex on a CPU: evaluation only, training is refused;
    # proxylm/model/attention.py)
    attention: str = "auto"
    ce_chunk: int = 2048  # positions per chunk in the chunked cross-entropy
    # the input embedding of a compressed id = its own row + the mean of the rows of the raw bytes it stands for
    # (codecs whose symbols stand for bytes one by one: bpe), so a compressed view is read through raw-byte
    # embeddings that raw text trains too; raw and special ids are unchanged
    compose_embedding: bool = False
    # bridges between the views (proxylm/model/features.py, model/bridge.py; off by default):
    input_bridge: str = "none"  # none | shared | own: + the row of the longest codec symbol ending at each raw byte
    output_bridge: float = 0.0  # > 0: weight of the auxiliary loss where a codec symbol ends (training only)
    ngram_sizes: list[int] = field(default_factory=list)  # hashed byte n-gram embeddings (BLT-style), e.g. [3, 4, 5]
    ngram_buckets: int = 4096  # rows of each n-gram table

    def __post_init__(self):
        for key in ("dim", "n_layers", "n_heads", "n_pred_heads", "ce_chunk"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        require(self.n_raw_heads >= 0, "n_raw_heads", self.n_raw_heads, "must be >= 0")
        for key in ("n_kv_heads", "ffn_dim"):
            v = getattr(self, key)
            require(v is None or v >= 1, key, v, "must be >= 1 (or null for the default)")
        require(self.dim % self.n_heads == 0, "dim", self.dim, f"must be divisible by n_heads ({self.n_heads})")
        require(self.head_dim % 2 == 0, "dim", self.dim,
                f"dim / n_heads = {self.head_dim} must be even (RoPE rotates pairs of channels)")
        require(self.n_kv_heads is None or self.n_heads % self.n_kv_heads == 0, "n_heads", self.n_heads,
                f"must be divisible by n_kv_heads ({self.n_kv_heads})")
        require(self.max_seq_len >= 2, "max_seq_len", self.max_seq_len, "must be >= 2")
        for key in ("norm_eps", "rope_theta"):
            require(getattr(self, key) > 0, key, getattr(self, key), "must be > 0")
        require(self.init_std >= 0, "init_std", self.init_std, "must be >= 0")
        require(self.input_bridge in ("none", "shared", "own"), "input_bridge", self.input_bridge,
                "must be none, shared (the compressed ids' rows) or own (a table of its own)")
        require(self.output_bridge >= 0, "output_bridge", self.output_bridge, "must be >= 0 (0: off)")
        require(all(n >= 1 for n in self.ngram_sizes), "ngram_sizes", self.ngram_sizes, "must all be >= 1")
        require(self.ngram_buckets >= 1, "ngram_buckets", self.ngram_buckets, "must be >= 1")
        require(self.attention in ("auto", "sdpa", "flex"), "attention", self.attention, "must be auto, sdpa or flex")

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
