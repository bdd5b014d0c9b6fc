"""The Codec protocol: a lossless compressor whose output is a sequence of integer symbols.

    codec = load_codec("runs/codecs/bpe-4096")       # directory with codec.json (+ codec files)
    symbols = codec.encode(b"def f(): pass\\n")      # (n,) int64 numpy array, values in [0, alphabet_size)
    assert codec.decode(symbols) == b"def f(): pass\\n"

A codec that cannot represent an input (e.g. BPE on invalid UTF-8) raises `CannotEncode`; the data
pipeline then emits the raw view and counts it. Codecs are registered by name with `@register_codec`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from proxylm.core.errors import CannotEncode  # noqa: F401  (part of the codec protocol)
from proxylm.core.io import atomic_write

CODEC_FILE = "codec.json"


class Codec:
    name: ClassVar[str]
    passthrough: int = 0  # leading symbols that are literal bytes (see Representation)

    @property
    def alphabet_size(self) -> int:
        raise NotImplementedError

    def encode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def decode(self, symbols) -> bytes:
        raise NotImplementedError

    def symbol_bytes(self) -> list[bytes] | None:
        """The bytes each symbol stands for, when symbols decode one by one (BPE: a token's bytes); None when a
        symbol has no bytes of its own (arithmetic coding, gzip, BPE ids written as bytes)."""
        return None

    def encode_many(self, datas: list[bytes]) -> list[np.ndarray | None]:
        """Encode a batch of documents; None where this codec raises `CannotEncode` (the caller uses raw).

        Codecs with a faster batch path (e.g. BPE, parallel in Rust) override this loop.
        """
        out: list[np.ndarray | None] = []
        for data in datas:
            try:
                out.append(self.encode(data))
            except CannotEncode:
                out.append(None)
        return out

    # ---- persistence: codec.json holds {"name": ..., **config()}; subclasses may add files -------
    def config(self) -> dict:
        return {}

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        # codec.json last: its presence marks a complete codec
        atomic_write(directory / CODEC_FILE, json.dumps({"name": self.name, **self.config()}, indent=2) + "\n")
        return directory

    def _save_files(self, directory: Path) -> None:
        pass

    @classmethod
    def from_config(cls, directory: Path, config: dict) -> "Codec":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alphabet_size={self.alphabet_size})"


CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    CODECS[cls.name] = cls
    return cls


def codec_class(name: str) -> type[Codec]:
    import proxylm.codecs  # noqa: F401  (registers the built-in codecs)

    if name not in CODECS:
        raise ValueError(f"unknown codec '{name}'; known codecs: {', '.join(sorted(CODECS))}")
    return CODECS[name]


def load_codec(directory) -> Codec:
    directory = Path(directory)
    path = directory / CODEC_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a codec directory (no {CODEC_FILE}); "
                                f"make one with `proxylm codec train NAME --out {directory}`")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt codec file ({e}); delete the directory and train the codec again")
    name = config.pop("name")
    return codec_class(name).from_config(directory, config)
