"""One object that owns every id of the vocabulary.

Layout (the only place offsets are computed; model, loss, eval and export ask this object):

    [0, n_special)                       specials: <pad> <bos> <eos> <raw> </raw> <compressed> </compressed> + spares
    [raw_offset, raw_offset + 256)       raw bytes, id = raw_offset + byte
    [compressed_offset, ...)             compressed symbols of the codec (if any)
    ... padded up to a multiple of `pad_vocab_to`

A codec may declare `passthrough = 256`: its first 256 symbols are literal bytes (e.g. the neural codec's
passthrough bytes). Those always land on the raw-byte ids; only the remaining symbols get compressed ids.
With `separate_embedding=False` a byte-valued codec shares the raw-byte ids (only sentinels tell views apart).

    rep = Representation.for_codec(codec)           # or Representation.bytes_only()
    rep.vocab_size, rep.raw_ids(b"hi"), rep.save(run_dir / "representation.json")
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<raw>", "</raw>", "<compressed>", "</compressed>")
N_BYTES = 256


@dataclass(frozen=True)
class Representation:
    codec_name: str | None = None  # None: raw bytes only (byte baseline)
    codec_alphabet: int = 0  # number of distinct codec symbols
    codec_passthrough: int = 0  # leading codec symbols that are literal bytes (0 or 256)
    separate_embedding: bool = True  # compressed symbols get their own ids (else share raw-byte ids)
    n_spare: int = 9  # reserved spare specials (16 specials in all by default)
    pad_vocab_to: int = 64  # vocab rounded up for matmul-friendly shapes

    def __post_init__(self):
        if self.codec_passthrough not in (0, N_BYTES):
            raise ValueError(f"codec_passthrough must be 0 or 256, got {self.codec_passthrough}")
        if self.codec_passthrough > self.codec_alphabet:
            raise ValueError("codec_passthrough exceeds the codec alphabet")
        if not self.separate_embedding and self.codec_alphabet - self.codec_passthrough > N_BYTES \
                and self.codec_passthrough == 0:
            raise ValueError(
                f"codec '{self.codec_name}' has {self.codec_alphabet} symbols: only byte-valued codecs "
                "(<= 256 symbols) can share raw-byte ids; set separate_embedding=true")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def bytes_only(cls, **kw) -> "Representation":
        return cls(**kw)

    @classmethod
    def for_codec(cls, codec, separate_embedding: bool = True, **kw) -> "Representation":
        return cls(codec_name=codec.name, codec_alphabet=codec.alphabet_size,
                   codec_passthrough=codec.passthrough, separate_embedding=separate_embedding, **kw)

    # ---- special ids ----------------------------------------------------------------------------
    @property
    def n_special(self) -> int:
        return len(SPECIAL_TOKENS) + self.n_spare

    def special_id(self, token: str) -> int:
        return SPECIAL_TOKENS.index(token)

    pad_id = property(lambda self: SPECIAL_TOKENS.index("<pad>"))
    bos_id = property(lambda self: SPECIAL_TOKENS.index("<bos>"))
    eos_id = property(lambda self: SPECIAL_TOKENS.index("<eos>"))
    raw_start_id = property(lambda self: SPECIAL_TOKENS.index("<raw>"))
    raw_end_id = property(lambda self: SPECIAL_TOKENS.index("</raw>"))
    compressed_start_id = property(lambda self: SPECIAL_TOKENS.index("<compressed>"))
    compressed_end_id = property(lambda self: SPECIAL_TOKENS.index("</compressed>"))

    # ---- ranges ---------------------------------------------------------------------------------
    @property
    def raw_offset(self) -> int:
        return self.n_special

    @property
    def raw_vocab_size(self) -> int:
        """Ids below this are specials or raw bytes (the raw head's output size)."""
        return self.raw_offset + N_BYTES

    @property
    def compressed_offset(self) -> int:
        """Id of the first codec symbol that is not a passthrough byte."""
        if not self.separate_embedding and self.codec_passthrough == 0:
            return self.raw_offset
        return self.raw_vocab_size

    @property
    def n_compressed_ids(self) -> int:
        return self.codec_alphabet - self.codec_passthrough

    @property
    def used_vocab_size(self) -> int:
        return max(self.raw_vocab_size, self.compressed_offset + self.n_compressed_ids)

    @property
    def vocab_size(self) -> int:
        m = self.pad_vocab_to
        return (self.used_vocab_size + m - 1) // m * m

    # ---- mapping --------------------------------------------------------------------------------
    def raw_ids(self, data: bytes) -> np.ndarray:
        """(n,) int64 ids of raw bytes."""
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64) + self.raw_offset

    def compressed_ids(self, symbols: np.ndarray) -> np.ndarray:
        """Codec symbols (n,) -> ids (n,) int64."""
        s = np.asarray(symbols, dtype=np.int64)
        if s.size and (s.min() < 0 or s.max() >= self.codec_alphabet):
            raise ValueError(f"codec symbol out of range [0, {self.codec_alphabet})")
        p = self.codec_passthrough
        return np.where(s < p, s + self.raw_offset, s - p + self.compressed_offset)

    def symbols_from_compressed_ids(self, ids: np.ndarray) -> np.ndarray:
        """Inverse of compressed_ids (ids must all be codec ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        p = self.codec_passthrough
        if p:
            is_byte = (ids >= self.raw_offset) & (ids < self.raw_vocab_size)
            return np.where(is_byte, ids - self.raw_offset, ids - self.compressed_offset + p)
        return ids - self.compressed_offset

    def is_raw_byte(self, ids):
        """Mask of ids that are raw bytes (works for numpy arrays and torch tensors)."""
        return (ids >= self.raw_offset) & (ids < self.raw_vocab_size)

    def bytes_from_ids(self, ids) -> bytes:
        """Keep the raw-byte ids, drop everything else, return the bytes."""
        a = np.asarray(ids, dtype=np.int64)
        a = a[(a >= self.raw_offset) & (a < self.raw_vocab_size)]
        return (a - self.raw_offset).astype(np.uint8).tobytes()

    def raw_prompt_ids(self, prompt: bytes) -> np.ndarray:
        """What the model reads at inference: <bos><raw> + bytes (no closing sentinel)."""
        return np.concatenate([[self.bos_id, self.raw_start_id], self.raw_ids(prompt)]).astype(np.int64)

    def token_name(self, i: int) -> str:
        if i < len(SPECIAL_TOKENS):
            return SPECIAL_TOKENS[i]
        if i < self.n_special:
            return f"<spare_{i}>"
        if i < self.raw_vocab_size:
            return repr(bytes([i - self.raw_offset]))[1:]
        if i < self.compressed_offset + self.n_compressed_ids:
            return f"<c{i - self.compressed_offset}>"
        return "<unused>"

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["derived"] = {"vocab_size": self.vocab_size, "raw_offset": self.raw_offset,
                        "compressed_offset": self.compressed_offset, "raw_vocab_size": self.raw_vocab_size,
                        "specials": {t: i for i, t in enumerate(SPECIAL_TOKENS)}}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Representation":
        d = {k: v for k, v in d.items() if k != "derived"}
        return cls(**d)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "Representation":
        return cls.from_dict(json.loads(Path(path).read_text()))
