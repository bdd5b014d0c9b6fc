"""Stable hashes: the same value on every machine, Python and run (every per-document decision is one).

    stable_hash64("split", "path/to/doc.py")    # 64-bit int
    stable_unit("views", seed, key, epoch)     # uniform float in [0, 1)
"""

from __future__ import annotations

import hashlib


def stable_hash64(*parts) -> int:
    """A 64-bit hash of the parts' string forms; same value on every machine, Python and run."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def stable_unit(*parts) -> float:
    """A uniform float in [0, 1) derived from the parts (53 bits, exact in a double)."""
    return (stable_hash64(*parts) >> 11) / float(1 << 53)
