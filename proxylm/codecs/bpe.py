"""Byte-level BPE views, trained with HF `tokenizers`.

    proxylm codec train bpe --corpus stdlib --vocab-size 4096 --out runs/codecs/bpe-4096
    proxylm codec train bpe-bytes --corpus stdlib --vocab-size 4096 --gray --out runs/codecs/bpe-bytes-gray

`bpe`        symbols are the token ids (alphabet = vocab size).
`bpe-bytes`  every token id written as `width = ceil(ceil(log2 V) / 8)` big-endian bytes (alphabet 256);
             with `gray`, the id is replaced by the Gray code of its rank when all tokens are sorted by their
             bytes, so tokens with neighbouring surface strings get codes one bit apart.

Both are lossless on valid UTF-8 (ByteLevel pre-tokenizer, no normalizer, every one of the 256 bytes in the
initial alphabet); other input raises `CannotEncode`. Decoding goes through our own id -> bytes table, not the
tokenizer's decoder, because the latter replaces partial UTF-8 sequences with U+FFFD.

An imported tokenizer (`proxylm codec import`, proxylm/codecs/imported.py) is a BpeCodec too, with a `Surface`
saying how its tokens spell bytes (ByteLevel characters, or SentencePiece's "▁" for a space and <0xNN>
byte-fallback tokens), whether the tokenizer prepends a space, and `verify`: every encoding is decoded and
compared, and a document that does not come back raises CannotEncode (counted, emitted raw).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from proxylm.codecs.base import CannotEncode, Codec, register_codec
from proxylm.codecs.bits import BITS_PER_BYTE, BYTE_VALUES

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_VOCAB_SIZE = 4096


def byte_level_chars() -> dict[str, int]:
    """The ByteLevel pre-tokenizer's printable stand-in for each byte (GPT-2's `bytes_to_unicode`), inverted.

    `tokenizers` applies this map but does not expose it; tests check it against the library's alphabet.
    Printable Latin-1 bytes stand for themselves; the other 68 bytes map to U+0100 onwards in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(BYTE_VALUES) if b not in printable]
    chars = {chr(b): b for b in printable}
    chars.update({chr(BYTE_VALUES + i): b for i, b in enumerate(others)})
    return chars


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@dataclass(frozen=True)
class Surface:
    """How token strings stand for bytes, and what the tokenizer adds around a text."""

    byte_level: bool = True  # ByteLevel: each character is one byte (GPT-2 map); else UTF-8 text
    byte_fallback: bool = False  # <0xNN> tokens are the byte NN
    space: str = ""  # a character standing for a space (SentencePiece "▁"), or ""
    strip_space: bool = False  # the tokenizer prepends a space to a text: decode drops one leading space
    double_space: bool = False  # ... unless the text already starts with one: encode adds one then
    verify: bool = False  # decode every encoding and refuse (CannotEncode) what does not come back

    def token_bytes(self, token: str) -> bytes:
        m = _BYTE_FALLBACK.fullmatch(token) if self.byte_fallback else None
        if m:
            return bytes([int(m.group(1), 16)])
        if self.byte_level:
            chars = _BYTE_LEVEL_CHARS
            if all(c in chars for c in token):
                return bytes(chars[c] for c in token)
            return token.encode("utf-8")  # an added token written as plain text
        if self.space:
            token = token.replace(self.space, " ")
        return token.encode("utf-8", "surrogatepass")


def new_byte_level_tokenizer() -> Tokenizer:
    """Untrained byte-level BPE: no normalizer (lossless), no prefix space (so decode(encode(x)) == x)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _texts_as_str(texts: Iterable[bytes]) -> Iterable[str]:
    """Training text: documents that are not valid UTF-8 are skipped (they never get a BPE view)."""
    for data in texts:
        try:
            yield data.decode("utf-8") if isinstance(data, bytes) else str(data)
        except UnicodeDecodeError:
            continue


def _utf8_or_raise(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CannotEncode(f"input is not valid UTF-8 ({e.reason} at byte {e.start})") from None


_BYTE_LEVEL_CHARS = byte_level_chars()


@register_codec
class BpeCodec(Codec):
    name = "bpe"
    roundtrip_check = True  # a run checks the round trip on a sample at start (prepare/codec_cache.py check_lossless)

    def __init__(self, tokenizer: Tokenizer, surface: Surface | None = None):
        self.tokenizer = tokenizer
        self.surface = surface or Surface()
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        if surface is None and sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError("BPE vocabulary ids must be exactly 0..V-1")
        # token_bytes[i]: the bytes token i stands for (what decode emits for it); b"" for ids no token has
        # (an imported tokenizer's dropped special tokens)
        self.token_bytes: list[bytes] = [b""] * (max(vocab.values()) + 1)
        for token, token_id in vocab.items():
            self.token_bytes[token_id] = self.surface.token_bytes(token)

    # ---- training -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[bytes], vocab_size: int = DEFAULT_VOCAB_SIZE,
              show_progress: bool = False) -> "BpeCodec":
        """Learn merges on `texts` (invalid UTF-8 skipped). Fewer tokens than asked if the text runs out."""
        if vocab_size < BYTE_VALUES:
            raise ValueError(f"BPE vocab_size must be >= {BYTE_VALUES} (one token per byte), got {vocab_size}")
        tokenizer = new_byte_level_tokenizer()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=show_progress,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(_texts_as_str(texts), trainer)
        return cls(tokenizer)

    # ---- codec ----------------------------------------------------------------------------------
    @property
    def alphabet_size(self) -> int:
        return len(self.token_bytes)

    def symbol_bytes(self) -> list[bytes]:
        return self.token_bytes

    def _text(self, data: bytes) -> str:
        text = _utf8_or_raise(data)
        return " " + text if self.surface.double_space and text.startswith(" ") else text

    def encode_unchecked(self, data: bytes) -> np.ndarray:
        """The tokenizer's ids, not compared with the input (import checks use this)."""
        return np.asarray(self.tokenizer.encode(self._text(data), add_special_tokens=False).ids, dtype=np.int64)

    def encode(self, data: bytes) -> np.ndarray:
        ids = self.encode_unchecked(data)
        if self.surface.verify and self.decode(ids) != data:
            raise CannotEncode("the tokenizer does not give these bytes back")
        return ids

    def encode_many(self, datas: list[bytes]) -> list[np.ndarray | None]:
        """Batch encode (parallel in Rust, no offsets); None for inputs that are not valid UTF-8."""
        texts: list[str | None] = []
        for data in datas:
            try:
                texts.append(self._text(data))
            except CannotEncode:
                texts.append(None)
        valid = [t for t in texts if t is not None]
        encodings = iter(self.tokenizer.encode_batch_fast(valid, add_special_tokens=False))
        out = [None if t is None else np.asarray(next(encodings).ids, dtype=np.int64) for t in texts]
        if self.surface.verify:
            out = [None if ids is None or self.decode(ids) != data else ids for ids, data in zip(out, datas)]
        return out

    @cached_property
    def _decode_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All token bytes back to back (total,) uint8, and each token's start (V,) and length (V,)."""
        lengths = np.array([len(b) for b in self.token_bytes], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        return np.frombuffer(b"".join(self.token_bytes), dtype=np.uint8), starts, lengths

    def decode(self, symbols) -> bytes:
        ids = np.asarray(symbols, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.alphabet_size):
            raise ValueError(f"bpe: token id out of range [0, {self.alphabet_size})")
        table, starts, lengths = self._decode_table
        out_lengths = lengths[ids]  # (n,)
        out_starts = np.cumsum(out_lengths) - out_lengths  # where each token's bytes go in the output
        # byte j of the output comes from table[starts[id] + (j - out_start of that token)]
        index = np.arange(out_lengths.sum()) + np.repeat(starts[ids] - out_starts, out_lengths)
        out = table[index].tobytes()
        return out[1:] if self.surface.strip_space and out.startswith(b" ") else out

    # ---- persistence ----------------------------------------------------------------------------
    def config(self) -> dict:
        if self.surface == Surface():
            return {"vocab_size": self.alphabet_size}
        return {"vocab_size": self.alphabet_size, "surface": asdict(self.surface)}

    def _save_files(self, directory: Path) -> None:
        self.tokenizer.save(str(directory / TOKENIZER_FILE))

    @classmethod
    def from_config(cls, directory: Path, config: dict) -> "BpeCodec":
        path = Path(directory) / TOKENIZER_FILE
        if not path.exists():
            raise FileNotFoundError(f"{directory}: missing {TOKENIZER_FILE}; train the codec again")
        surface = Surface(**config["surface"]) if "surface" in config else None
        codec = cls(Tokenizer.from_file(str(path)), surface)
        if codec.alphabet_size != config.get("vocab_size", codec.alphabet_size):
            raise ValueError(f"{directory}: {TOKENIZER_FILE} has {codec.alphabet_size} tokens, "
                             f"codec.json says {config['vocab_size']}")
        return codec

    def __repr__(self) -> str:
        return f"BpeCodec(vocab_size={self.alphabet_size})"


def id_width(n_tokens: int) -> int:
    """Bytes per token id: ceil(ceil(log2 V) / 8), at least 1."""
    return max(1, -(-(n_tokens - 1).bit_length() // BITS_PER_BYTE))


def gray_code(rank: np.ndarray) -> np.ndarray:
    """Binary reflected Gray code: consecutive ranks differ in exactly one bit."""
    return rank ^ (rank >> 1)


@register_codec
class BpeBytesCodec(Codec):
    name = "bpe-bytes"
    roundtrip_check = True

    def __init__(self, tokens: BpeCodec, gray: bool = False):
        self.tokens = tokens
        self.gray = gray
        n_tokens = tokens.alphabet_size
        self.width = id_width(n_tokens)
        if gray:
            # rank of each token when sorted by its bytes (stable; token bytes are distinct anyway)
            order = sorted(range(n_tokens), key=tokens.token_bytes.__getitem__)
            rank = np.empty(n_tokens, dtype=np.int64)
            rank[order] = np.arange(n_tokens)
            self.code_of_id = gray_code(rank)  # (V,)
        else:
            self.code_of_id = np.arange(n_tokens, dtype=np.int64)  # (V,)
        self._codes_sorted = np.sort(self.code_of_id)  # (V,) for the inverse lookup
        self._ids_by_sorted_code = np.argsort(self.code_of_id)  # (V,)
        # right shifts that pick each big-endian byte of a code, most significant first
        self._shifts = np.arange(self.width - 1, -1, -1, dtype=np.int64) * BITS_PER_BYTE  # (width,)

    @classmethod
    def train(cls, texts: Iterable[bytes], vocab_size: int = DEFAULT_VOCAB_SIZE, gray: bool = False,
              show_progress: bool = False) -> "BpeBytesCodec":
        return cls(BpeCodec.train(texts, vocab_size=vocab_size, show_progress=show_progress), gray=gray)

    @property
    def alphabet_size(self) -> int:
        return BYTE_VALUES

    def _ids_to_bytes(self, ids: np.ndarray) -> np.ndarray:
        codes = self.code_of_id[ids]  # (n,)
        return ((codes[:, None] >> self._shifts[None, :]) & (BYTE_VALUES - 1)).reshape(-1)  # (n * width,)

    def encode(self, data: bytes) -> np.ndarray:
        return self._ids_to_bytes(self.tokens.encode(data))

    def encode_many(self, datas: list[bytes]) -> list[np.ndarray | None]:
        return [None if ids is None else self._ids_to_bytes(ids) for ids in self.tokens.encode_many(datas)]

    def decode(self, symbols) -> bytes:
        s = np.asarray(symbols, dtype=np.int64).reshape(-1)
        if s.size and (s.min() < 0 or s.max() >= BYTE_VALUES):
            raise ValueError("bpe-bytes: symbol out of byte range [0, 256)")
        if s.size % self.width:
            raise ValueError(f"bpe-bytes: {s.size} bytes is not a multiple of the token width {self.width}")
        codes = (s.reshape(-1, self.width) << self._shifts[None, :]).sum(axis=1)  # (n_tokens,)
        pos = np.minimum(np.searchsorted(self._codes_sorted, codes), len(self._codes_sorted) - 1)
        unknown = self._codes_sorted[pos] != codes
        if unknown.any():
            raise ValueError(f"bpe-bytes: code {int(codes[unknown][0])} is not a token")
        return self.tokens.decode(self._ids_by_sorted_code[pos])

    def config(self) -> dict:
        return {**self.tokens.config(), "gray": self.gray}

    def _save_files(self, directory: Path) -> None:
        self.tokens._save_files(directory)

    @classmethod
    def from_config(cls, directory: Path, config: dict) -> "BpeBytesCodec":
        tokens = BpeCodec.from_config(directory, {k: v for k, v in config.items() if k in ("vocab_size", "surface")})
        return cls(tokens, gray=bool(config.get("gray", False)))

    def __repr__(self) -> str:
        return f"BpeBytesCodec(vocab_size={self.tokens.alphabet_size}, gray={self.gray}, width={self.width})"
