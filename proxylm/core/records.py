"""JSONL input read defensively: a per-line cap, and every field checked where it enters, naming file:line.

    for where, rec in read_jsonl_records(path):                  # where = "path:line"
        sample = int_field(rec, "sample", where, low=0, default=0)
        text = str_field(rec, "completion", where)

A line over MAX_LINE_BYTES is refused by its number without reading it whole (a 1 GB line would cost
several GB as a Python object); a line that is not JSON, or not an object, is refused the same way.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from proxylm.core.errors import UserError
from proxylm.core.numbers import number_problem

MAX_LINE_BYTES = 64 * 1024 * 1024   # the longest JSONL line read (a HumanEval+ task is under 10 MB)


def capped_lines(f, cap: int):
    """(line number, bytes) of a binary file; bytes is None for a line longer than `cap` (skipped unread)."""
    lineno = 0
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        lineno += 1
        if len(line) > cap and not line.endswith(b"\n"):
            while True:   # the rest of the long line, in pieces, dropped
                rest = f.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield lineno, None
            continue
        yield lineno, line


def read_jsonl_records(path, cap: int | None = None) -> list[tuple[str, dict]]:
    """(where, object) per non-blank line of a .jsonl or .jsonl.gz; UserError naming path:line otherwise."""
    path, cap = Path(path), cap or MAX_LINE_BYTES
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rb") as f:
        for lineno, line in capped_lines(f, cap):
            where = f"{path}:{lineno}"
            if line is None:
                raise UserError(f"{where}: a line over {cap} bytes; one JSON object per line is expected")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise UserError(f"{where}: not JSON ({str(e)[:100]}); one JSON object per line is expected") from None
            if not isinstance(rec, dict):
                raise UserError(f"{where}: a JSON {type(rec).__name__}, not an object")
            out.append((where, rec))
    return out


_MISSING = object()


def int_field(rec: dict, key: str, where: str, low: int | None = None, high: int | None = None, default=_MISSING):
    """rec[key] as a checked integer (an integral float such as 3.0 is taken as 3)."""
    value = rec.get(key, default)
    if value is _MISSING:
        raise UserError(f"{where}: field {key!r} is missing")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        value = int(value)
    problem = number_problem(value, int, low, high)
    if problem:
        raise UserError(f"{where}: field {key!r} = {json.dumps(value)[:40]}: {problem}")
    return value


def float_field(rec: dict, key: str, where: str, low: float | None = None, high: float | None = None,
                default=_MISSING):
    value = rec.get(key, default)
    if value is _MISSING:
        raise UserError(f"{where}: field {key!r} is missing")
    problem = number_problem(value, float, low, high)
    if problem:
        raise UserError(f"{where}: field {key!r} = {json.dumps(value)[:40]}: {problem}")
    return float(value)


def str_field(rec: dict, key: str, where: str, default=_MISSING, nullable: bool = False):
    value = rec.get(key, default)
    if value is _MISSING:
        raise UserError(f"{where}: field {key!r} is missing")
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: field {key!r} must be a string, got {json.dumps(value)[:40]}")
    return value
