"""How well a codec compresses a set of documents, whether it round-trips, and how fast it is.

    proxylm codec stats --codec runs/codecs/bpe-4096 --corpus stdlib --split val --json

Keys of the result (a contract with external checks): bytes_per_symbol, roundtrip_failures, encode_mb_per_s,
decode_mb_per_s, documents, bytes, symbols, fallback_documents, passthrough_share.
Encoding is timed through `encode_many` in batches (the data pipeline's path); decoding one document at a time.
"""

from __future__ import annotations

import time

import numpy as np

from proxylm.codecs.base import Codec

ENCODE_BATCH = 64  # documents per encode_many call
MEGABYTE = 1e6


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most `limit` items spread over the whole list (a prefix of sorted paths would be one package)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise ValueError(f"--limit-docs must be positive, got {limit}")
    return [items[i * len(items) // limit] for i in range(limit)]


def codec_stats(codec: Codec, documents: list[bytes]) -> dict:
    """Compression (raw bytes per symbol over the encodable documents), failures and speed."""
    encoded: list[np.ndarray | None] = []
    start = time.perf_counter()
    for i in range(0, len(documents), ENCODE_BATCH):
        encoded += codec.encode_many(documents[i:i + ENCODE_BATCH])
    encode_s = time.perf_counter() - start

    n_bytes = n_symbols = n_passthrough = failures = fallbacks = 0
    decode_s = 0.0
    for data, symbols in zip(documents, encoded):
        if symbols is None:
            fallbacks += 1
            continue
        start = time.perf_counter()
        try:
            ok = codec.decode(symbols) == data
        except ValueError:
            ok = False
        decode_s += time.perf_counter() - start
        failures += not ok
        n_bytes += len(data)
        n_symbols += len(symbols)
        n_passthrough += int(np.count_nonzero(symbols < codec.passthrough))
    all_bytes = sum(len(d) for d in documents)
    return {
        "codec": codec.name,
        "alphabet_size": codec.alphabet_size,
        "documents": len(documents),
        "bytes": n_bytes,
        "symbols": n_symbols,
        "bytes_per_symbol": n_bytes / n_symbols if n_symbols else 0.0,
        "fallback_documents": fallbacks,
        "roundtrip_failures": failures,
        "passthrough_share": n_passthrough / n_symbols if n_symbols else 0.0,
        "encode_mb_per_s": _mb_per_s(all_bytes, encode_s),
        "decode_mb_per_s": _mb_per_s(n_bytes, decode_s),
    }


def _mb_per_s(n_bytes: int, seconds: float) -> float:
    return n_bytes / MEGABYTE / seconds if n_bytes and seconds > 0 else 0.0
