"""Fixed "bits-and-bytes" views: the same bytes cut into symbols of another width (no training).

    halfbyte   each byte -> 2 symbols of 4 bits (high nibble first)      alphabet 16
    doublebit  each byte -> 4 symbols of 2 bits (most significant first) alphabet 4
    bit        each byte -> 8 symbols of 1 bit  (most significant first) alphabet 2
    doublebyte pairs of bytes -> one 16-bit symbol (big-endian)           alphabet 65536 + 256

    proxylm codec stats --codec halfbyte --corpus stdlib --split val

Odd-length input under `doublebyte`: the final lone byte b becomes the symbol 65536 + b. It can only be
the last symbol, so a stream decodes to exactly the input length (the reference implementation padded
with 0x00 instead, which loses the length). All work is vectorised with numpy.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from proxylm.codecs.base import Codec, register_codec
from proxylm.core.representation import N_BYTES as BYTE_VALUES

BITS_PER_BYTE = 8


def _as_symbols(symbols, alphabet_size: int) -> np.ndarray:
    """(n,) int64 copy of `symbols`; ValueError if any is outside [0, alphabet_size)."""
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if s.size and (s.min() < 0 or s.max() >= alphabet_size):
        raise ValueError(f"symbol out of range [0, {alphabet_size})")
    return s


class SubByteCodec(Codec):
    """Each byte becomes BITS_PER_BYTE / bits_per_symbol symbols, most significant first."""

    bits_per_symbol: int

    @property
    def alphabet_size(self) -> int:
        return 1 << self.bits_per_symbol

    @property
    def symbols_per_byte(self) -> int:
        return BITS_PER_BYTE // self.bits_per_symbol

    @cached_property
    def _symbols_of_byte(self) -> np.ndarray:
        """(256, symbols_per_byte) int64: row b holds the symbols of byte b, most significant first."""
        shifts = np.arange(self.symbols_per_byte - 1, -1, -1) * self.bits_per_symbol  # (k,)
        return (np.arange(BYTE_VALUES)[:, None] >> shifts[None, :]) & (self.alphabet_size - 1)

    def encode(self, data: bytes) -> np.ndarray:
        byte_values = np.frombuffer(data, dtype=np.uint8)  # (n,)
        return self._symbols_of_byte[byte_values].reshape(-1)  # (n * k,) one gather, no arithmetic per symbol

    def decode(self, symbols) -> bytes:
        s = _as_symbols(symbols, self.alphabet_size)
        if s.size % self.symbols_per_byte:
            raise ValueError(f"{self.name}: {s.size} symbols is not a multiple of {self.symbols_per_byte}")
        place_values = self.alphabet_size ** np.arange(self.symbols_per_byte - 1, -1, -1)  # (k,)
        return (s.reshape(-1, self.symbols_per_byte) @ place_values).astype(np.uint8).tobytes()


@register_codec
class HalfByteCodec(SubByteCodec):
    name = "halfbyte"
    bits_per_symbol = 4


@register_codec
class DoubleBitCodec(SubByteCodec):
    name = "doublebit"
    bits_per_symbol = 2


@register_codec
class BitCodec(SubByteCodec):
    name = "bit"
    bits_per_symbol = 1


@register_codec
class DoubleByteCodec(Codec):
    """Big-endian byte pairs as 16-bit symbols; a lone final byte b is the symbol PAIR_VALUES + b."""

    name = "doublebyte"
    PAIR_VALUES = BYTE_VALUES * BYTE_VALUES  # symbols [0, 65536) are byte pairs; [65536, 65792) lone bytes

    @property
    def alphabet_size(self) -> int:
        return self.PAIR_VALUES + BYTE_VALUES

    def encode(self, data: bytes) -> np.ndarray:
        byte_values = np.frombuffer(data, dtype=np.uint8).astype(np.int64)  # (n,)
        n_pairs = byte_values.size // 2
        pairs = byte_values[: 2 * n_pairs].reshape(n_pairs, 2)  # (n_pairs, 2)
        symbols = pairs[:, 0] * BYTE_VALUES + pairs[:, 1]  # (n_pairs,)
        if byte_values.size % 2:
            symbols = np.append(symbols, self.PAIR_VALUES + byte_values[-1])
        return symbols

    def decode(self, symbols) -> bytes:
        s = _as_symbols(symbols, self.alphabet_size)
        is_lone = s >= self.PAIR_VALUES
        if is_lone[:-1].any():
            raise ValueError("doublebyte: a lone-byte symbol (>= 65536) may only be the last symbol")
        tail = bytes([s[-1] - self.PAIR_VALUES]) if s.size and is_lone[-1] else b""
        pairs = s[: s.size - len(tail)]
        out = np.stack([pairs >> BITS_PER_BYTE, pairs & (BYTE_VALUES - 1)], axis=1)  # (n_pairs, 2)
        return out.astype(np.uint8).tobytes() + tail
