"""gzip view: deterministic gzip bytes (mtime 0), one independent stream per document.

Known not to transfer (paper section 2.3): small edits change the output unpredictably.
"""

from __future__ import annotations

import gzip

import numpy as np

from proxylm.codecs.base import Codec, register_codec
from proxylm.core.representation import N_BYTES


def check_level(level: int) -> None:
    """zlib's compression levels: 0 (stored) .. 9 (best)."""
    if not 0 <= level <= 9:
        raise ValueError(f"gzip level must be in 0..9, got {level}")


@register_codec
class GzipCodec(Codec):
    name = "gzip"

    def __init__(self, level: int = 9):
        check_level(level)
        self.level = level

    @property
    def alphabet_size(self) -> int:
        return N_BYTES

    def encode(self, data: bytes) -> np.ndarray:
        out = gzip.compress(data, compresslevel=self.level, mtime=0)
        return np.frombuffer(out, dtype=np.uint8).astype(np.int64)

    def decode(self, symbols) -> bytes:
        return gzip.decompress(np.asarray(symbols, dtype=np.uint8).tobytes())

    def config(self) -> dict:
        return {"level": self.level}
