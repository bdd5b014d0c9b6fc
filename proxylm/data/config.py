"""Configs of the data pipeline: where documents come from, and which views they become."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxylm.codecs.options import CodecOptions
from proxylm.core.errors import require
from proxylm.data.modes import MIX_MODES, mix_mode  # noqa: F401  (MIX_MODES: the valid names)
from proxylm.data.splits import check_setting as check_splits


@dataclass
class DataConfig:
    corpus: str = "stdlib"  # "stdlib" | folder | file | glob (JSONL[.gz|.zst], parquet, arrow, text) | saved dataset
    glob: str = "**/*.py"  # files to read when `corpus` is a folder; several: "**/*.py,**/*.js"; all: "**/*"
    val_fraction: float = 0.05  # share of documents (by path hash) held out as validation
    max_doc_bytes: int = 1_000_000  # longer documents are cut into pieces of at most this size
    seq_len: int = 512  # symbols per packed window (model context)
    batch_size: int = 8  # windows per micro-batch (per rank)
    shuffle: bool = True  # per-epoch document order is a pure function of (seed, epoch)
    # documents (pieces) read ahead and drawn from at random (proxylm/data/shuffle.py), so the consecutive pieces
    # of one file spread over many batches; memory: at most 64 MB of documents (shuffle.MAX_BUFFER_BYTES); 0: none
    shuffle_buffer: int = 8192
    seed: int = 0
    text_field: str = "text"  # JSONL / parquet / dataset field holding the text ("text": falls back to "content")
    exclude: str = ""  # files of a folder or glob corpus to leave out, e.g. "**/tests/**,**/*.min.js"
    num_workers: int = 0  # background processes reading and encoding documents (0: in the training process)
    codec_sample_bytes: int = 50_000_000  # train text a codec is trained on, sampled over the corpus (0: all)
    # named splits (a saved DatasetDict): auto | hash | TRAIN:VAL | TRAIN (proxylm/data/splits.py; README "Splits")
    splits: str = "auto"

    def __post_init__(self):
        check_splits(self.splits)
        require(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        require(self.shuffle_buffer >= 0, "shuffle_buffer", self.shuffle_buffer, "must be >= 0 (0: no buffer)")
        require(self.codec_sample_bytes >= 0, "codec_sample_bytes", self.codec_sample_bytes, "must be >= 0 (0: all)")
        require(bool(self.text_field), "text_field", self.text_field, "must name a field (default: text)")
        require(0.0 <= self.val_fraction < 1.0, "val_fraction", self.val_fraction, "must be in [0, 1)")
        require(self.seq_len >= 2, "seq_len", self.seq_len, "must be >= 2")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(self.max_doc_bytes >= 1, "max_doc_bytes", self.max_doc_bytes, "must be >= 1")
        require(bool(self.corpus), "corpus", self.corpus, "must name a corpus (stdlib, a .jsonl, a folder, a glob)")
        require(bool(self.glob), "glob", self.glob, "must be a file pattern such as **/*.py")


@dataclass
class ScheduleConfig:
    """Rate and mode over three phases, as fractions of the run's optimizer steps.

    warm-up: rate ramps linearly initial_rate -> rate with `warmup_mode`; steady: `rate` with the
    views' `mode`; decay (last `decay_frac`): rate ramps to `final_rate` with `final_mode`.
    """

    enabled: bool = False
    warmup_frac: float = 0.2
    initial_rate: float = 0.4
    warmup_mode: str = "translation_random"
    decay_frac: float = 0.0
    final_rate: float = 0.9
    final_mode: str = "sentinel"

    def __post_init__(self):
        mix_mode(self.warmup_mode, "views.schedule.warmup_mode")
        mix_mode(self.final_mode, "views.schedule.final_mode")
        if self.warmup_frac < 0 or self.decay_frac < 0 or self.warmup_frac + self.decay_frac > 1:
            raise ValueError("warmup_frac and decay_frac must be >= 0 and sum to <= 1")
        for key in ("initial_rate", "final_rate"):
            require(0.0 <= getattr(self, key) <= 1.0, key, getattr(self, key), "must be in [0, 1]")


@dataclass
class ViewsConfig:
    codec: str | None = None  # None: raw bytes only; else a codec name (bpe, bpe-bytes, gzip, neural, ...)
    codec_dir: str | None = None  # trained codec directory; default: a cache dir derived from the options
    precomputed: str | None = None  # shards from `proxylm codec encode` (neural): views read, never computed
    codec_options: CodecOptions = field(default_factory=CodecOptions)  # per-codec sections (codecs/options.py)
    separate_embedding: bool = True  # compressed symbols get their own ids
    rate: float = 0.0  # share of compressed views (steady state)
    mode: str = "sentinel"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0  # per-document decisions = f(seed, document id, epoch)
    # translation pairs cut into sub-pieces whose two views fit the window they are packed into
    # (views.render_fitted); false: one pair per piece, whatever its length
    fit_pairs: bool = True

    def __post_init__(self):
        mix_mode(self.mode)
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")
        if self.rate > 0 and self.codec is None:
            raise ValueError("rate > 0 needs a codec (views.codec=bpe, gzip, ...)")
