"""gzip view: deterministic gzip bytes (mtime 0), one independent stream per document.

Known not to transfer (paper section 2.3): small edits change the output unpredictably.
"""

from __future__ import annotations

import gzip

import numpy as np

from proxylm.codecs.base import Codec, register_codec


@register_codec
class GzipCodec(Codec):
    name = "gzip"

    def __init__(self, level: int = 9):
        if not 0 <= level <= 9:
            raise ValueError(f"gzip level must be in 0..9, got {level}")
        self.level = level

    @property
    def alphabet_size(self) -> int:
        return 256

    def encode(self, data: bytes) -> np.ndarray:
        out = gzip.compress(data, compresslevel=self.level, mtime=0)
        return np.frombuffer(out, dtype=np.uint8).astype(np.int64)

    def decode(self, symbols) -> bytes:
        return gzip.decompress(np.asarray(symbols, dtype=np.uint8).tobytes())

    def config(self) -> dict:
        return {"level": self.level}
