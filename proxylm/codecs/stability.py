"""Does a small edit of the text make a small change of the compressed view? (paper section 2.3)

    proxylm codec stability --codec runs/codecs/bpe-4096 --codec gzip --corpus stdlib --split val --json

For every document (a window of it, see below) and every edit family, a seeded edit is applied and both
versions are encoded; the score is the Levenshtein distance between the two symbol sequences divided by the
longer one's length (0 = unchanged, 1 = nothing in common). Families:

    delete      remove 1..max_chars consecutive characters
    insert      insert 1..max_chars random printable ASCII characters
    replace     overwrite 1..max_chars characters with different random ones
    whitespace  add 1..max_chars spaces at the start of a random line (an indentation change)

Bounded cost: each comparison uses a window of `window_chars` characters of the document (random start) with
the edit inside its middle half, so both sides of the edit have context; and the distance first strips the
common prefix and suffix (exact), so only the changed middle goes through the O(n*m) dynamic programme.
Edits are a pure function of (seed, document key, family, trial): every codec sees the same edits.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from proxylm.codecs.base import Codec
from proxylm.core.hashing import stable_hash64

EDIT_FAMILIES = ("delete", "insert", "replace", "whitespace")
INSERT_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " "
DEFAULT_WINDOW_CHARS = 512
DEFAULT_MAX_CHARS = 3


def _strip_common_ends(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the shared prefix and suffix (the edit distance of what is left is the same)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    prefix = int(differ[0]) if differ.size else n
    a, b = a[prefix:], b[prefix:]
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[len(a) - n:][::-1] != b[len(b) - n:][::-1])
    suffix = int(differ[0]) if differ.size else n
    return a[:len(a) - suffix], b[:len(b) - suffix]


def levenshtein(a, b) -> int:
    """Edit distance (unit insert/delete/substitute) between two integer sequences.

    Row-by-row DP over the shorter sequence, each row vectorised over the longer one: within a row,
    D[j] = min_k<=j (T[k] + j - k) where T is the row without insertions, i.e. a running minimum of T - j.
    """
    a, b = _strip_common_ends(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    if len(a) < len(b):
        a, b = b, a  # loop over the shorter (b), vectorise over the longer (a)
    if len(b) == 0:
        return len(a)
    columns = np.arange(len(a) + 1)  # (m+1,)
    row = columns.copy()  # distances from the empty prefix of b
    for i, symbol in enumerate(b, start=1):
        best_without_insert = np.empty_like(row)
        best_without_insert[0] = i
        best_without_insert[1:] = np.minimum(row[:-1] + (a != symbol), row[1:] + 1)  # substitute | delete
        row = np.minimum.accumulate(best_without_insert - columns) + columns  # then any run of inserts
    return int(row[-1])


# ---- edits ---------------------------------------------------------------------------------------------
def _random_chars(rng: np.random.Generator, n: int, avoid: str = "") -> str:
    out = []
    for k in range(n):
        choices = [c for c in INSERT_ALPHABET if c != (avoid[k] if k < len(avoid) else None)]
        out.append(choices[rng.integers(len(choices))])
    return "".join(out)


def apply_edit(text: str, family: str, rng: np.random.Generator, lo: int, hi: int,
               max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """`text` with one edit of `family` at a position in [lo, hi) (clipped to the text)."""
    n_chars = int(rng.integers(1, max_chars + 1))
    hi = max(lo + 1, min(hi, len(text)))
    pos = int(rng.integers(lo, hi))
    if family == "delete":
        return text[:pos] + text[pos + n_chars:]
    if family == "insert":
        return text[:pos] + _random_chars(rng, n_chars) + text[pos:]
    if family == "replace":
        old = text[pos:pos + n_chars]
        return text[:pos] + _random_chars(rng, len(old), avoid=old) + text[pos + len(old):]
    if family == "whitespace":
        line_starts = [i for i in range(lo, hi) if i == 0 or text[i - 1] == "\n"]
        at = line_starts[rng.integers(len(line_starts))] if line_starts else pos
        return text[:at] + " " * n_chars + text[at:]
    raise ValueError(f"unknown edit family '{family}'; valid: {', '.join(EDIT_FAMILIES)}")


@dataclass(frozen=True)
class EditPair:
    family: str
    before: bytes
    after: bytes


def make_edit_pairs(documents: list[tuple[str, bytes]], families=EDIT_FAMILIES, trials: int = 1,
                    window_chars: int = DEFAULT_WINDOW_CHARS, max_chars: int = DEFAULT_MAX_CHARS,
                    seed: int = 0) -> tuple[list[EditPair], int]:
    """Edited windows of (key, bytes) documents; also how many documents were skipped (not UTF-8 / empty)."""

    for family in families:
        if family not in EDIT_FAMILIES:
            raise ValueError(f"unknown edit family '{family}'; valid: {', '.join(EDIT_FAMILIES)}")
    pairs, skipped = [], 0
    for key, data in documents:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if not text:
            skipped += 1
            continue
        for family_index, family in enumerate(families):
            for trial in range(trials):
                rng = np.random.default_rng([seed, stable_hash64(key), family_index, trial])
                start = int(rng.integers(max(1, len(text) - window_chars + 1)))
                window = text[start:start + window_chars]
                quarter = len(window) // 4
                edited = apply_edit(window, family, rng, quarter, len(window) - quarter, max_chars)
                pairs.append(EditPair(family, window.encode("utf-8"), edited.encode("utf-8")))
    return pairs, skipped


def stability(codec: Codec, pairs: list[EditPair]) -> dict:
    """Per family: mean and median normalised distance, mean raw distance (symbols), pairs, fallbacks."""
    before = codec.encode_many([p.before for p in pairs])
    after = codec.encode_many([p.after for p in pairs])
    scores: dict[str, list[tuple[float, int]]] = {}
    fallbacks: dict[str, int] = {}
    for pair, a, b in zip(pairs, before, after):
        if a is None or b is None:
            fallbacks[pair.family] = fallbacks.get(pair.family, 0) + 1
            continue
        distance = levenshtein(a, b)
        scores.setdefault(pair.family, []).append((distance / max(len(a), len(b), 1), distance))
    out = {}
    for family in dict.fromkeys(p.family for p in pairs):
        values = np.array(scores.get(family, []), dtype=np.float64).reshape(-1, 2)  # (n, [normalised, raw])
        out[family] = {
            "mean": float(values[:, 0].mean()) if len(values) else None,
            "median": float(np.median(values[:, 0])) if len(values) else None,
            "mean_symbols_changed": float(values[:, 1].mean()) if len(values) else None,
            "pairs": len(values),
            "fallbacks": fallbacks.get(family, 0),
        }
    return out
