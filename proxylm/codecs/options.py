"""Per-codec options: one dataclass per codec, all under `views.codec_options` in a run config.

    views:
      codec: bpe-bytes
      codec_options:
        bpe_bytes: {vocab_size: 4096, gray: true}
        neural: {window_bits: 16, m1: {steps: 2000, dim: 96}}

`CodecOptions.for_codec(name)` gives the keyword arguments the codec is trained (or built) with; they are
also part of the codec's cache key (proxylm/prepare/codec_cache.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from proxylm.codecs.gzip_codec import check_level
from proxylm.core.representation import N_BYTES as BYTE_VALUES


@dataclass
class BpeOptions:
    vocab_size: int = 4096  # tokens, the 256 single bytes included

    def __post_init__(self):
        if self.vocab_size < BYTE_VALUES:
            raise ValueError(f"vocab_size must be >= {BYTE_VALUES} (one token per byte), got {self.vocab_size}")


@dataclass
class BpeBytesOptions(BpeOptions):
    gray: bool = False  # Gray-coded rank instead of the plain id


@dataclass
class GzipOptions:
    level: int = 9

    def __post_init__(self):
        check_level(self.level)


@dataclass
class M1Options:
    """Size and training of M1. Defaults: 0.39M parameters, 2000 steps of 64 crops of 32 bytes (4M bytes); what
    they give and cost on stdlib, and the sizes tried: BENCHMARKS.md, "Neural codec"."""

    dim: int = 96
    n_layers: int = 3
    n_heads: int = 3
    steps: int = 2000
    batch_size: int = 64  # crops per optimizer step
    lr: float = 3e-3
    warmup_steps: int = 100
    seed: int = 0
    threads: int = 1  # torch threads while training (0: torch's default; on a busy machine more can be far slower)
    device: str = "cpu"  # cpu | cuda | auto (the codec runs on CPU either way)
    held_out_every: int = 50  # every N-th training document is held out for M1's own evaluation

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "steps", "batch_size", "held_out_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"m1.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"m1.dim {self.dim} must be a multiple of m1.n_heads {self.n_heads}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.threads < 0:
            raise ValueError("m1.lr must be > 0, m1.warmup_steps and m1.threads >= 0")


@dataclass
class NeuralOptions:
    window_bits: int = 16  # bits per equal-information window symbol
    max_window_bytes: int = 0  # 0: the coder's default for window_bits
    m1: M1Options = field(default_factory=M1Options)

    def __post_init__(self):
        if not 2 <= self.window_bits <= 24:
            raise ValueError(f"window_bits must be in 2..24, got {self.window_bits}")
        if self.max_window_bytes < 0:
            raise ValueError(f"max_window_bytes must be >= 0, got {self.max_window_bytes}")

    def training_kwargs(self) -> dict:
        """Only what differs from the defaults, so `codec train neural` and a run's automatic training with the
        same settings find the same cached codec."""
        default, out = NeuralOptions(), {}
        for k in ("window_bits", "max_window_bytes"):
            if getattr(self, k) != getattr(default, k):
                out[k] = getattr(self, k)
        out.update({k: v for k, v in asdict(self.m1).items() if v != getattr(default.m1, k)})
        return out


@dataclass
class CodecOptions:
    """One section per codec that takes options; a codec's own section is used, the others ignored."""

    bpe: BpeOptions = field(default_factory=BpeOptions)
    bpe_bytes: BpeBytesOptions = field(default_factory=BpeBytesOptions)
    gzip: GzipOptions = field(default_factory=GzipOptions)
    neural: NeuralOptions = field(default_factory=NeuralOptions)

    @staticmethod
    def section(codec_name: str) -> str | None:
        """Field of CodecOptions holding `codec_name`'s options (None: the codec takes none)."""
        name = codec_name.replace("-", "_")
        return name if name in {f.name for f in fields(CodecOptions)} else None

    def for_codec(self, codec_name: str | None) -> dict:
        """Keyword arguments `codec_name` is trained or built with."""
        section = self.section(codec_name) if codec_name else None
        if section is None:
            return {}
        options = getattr(self, section)
        return options.training_kwargs() if isinstance(options, NeuralOptions) else asdict(options)


def codec_options_for(codec_name: str, **values) -> CodecOptions:
    """CodecOptions with `values` set in `codec_name`'s section (e.g. codec_options_for("bpe", vocab_size=512))."""
    section = CodecOptions.section(codec_name)
    if section is None and values:
        raise ValueError(f"codec '{codec_name}' takes no options, got {', '.join(values)}")
    opts = CodecOptions()
    if values:
        setattr(opts, section, replace(getattr(opts, section), **values))
    return opts
