"""The one check of a number that enters from outside (a flag, a config key, a JSONL field).

    check_number(value, "train.lr", kind=float, low=0)   # raises UserError("train.lr=nan: not a finite number")

Finite (no NaN, no infinity: 1e400 reads as infinity), of the right type (an int is no float's problem,
a bool is no int), integers within 64 bits (torch, numpy and file offsets hold no more; floats may be large,
a FLOP budget of 1e21 is one), inside [low, high] where given. Used by proxylm/cli/args.py (every numeric flag), proxylm/config.py (every numeric key) and
proxylm/core/records.py (JSONL fields).
"""

from __future__ import annotations

import math

from proxylm.core.errors import UserError

INT_LIMIT = 2 ** 63 - 1


def number_problem(value, kind=float, low: float | None = None, high: float | None = None) -> str:
    """'' when `value` is a finite `kind` within [low, high] and 64 bits, else what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a{'n integer' if kind is int else ' number'} ({type(value).__name__})"
    if kind is int and not isinstance(value, int):
        return "not an integer"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if isinstance(value, int) and abs(value) > INT_LIMIT:   # floats may be large (a FLOP budget of 1e21)
        return "out of range (at most 2**63 - 1 in size)"
    if low is not None and value < low:
        return f"must be >= {low}" + (f" and <= {high}" if high is not None else "")
    if high is not None and value > high:
        return f"must be <= {high}" + (f" and >= {low}" if low is not None else "")
    return ""


def check_number(value, where: str, kind=float, low: float | None = None, high: float | None = None):
    """`value`, or UserError "<where>=<value>: <problem>"."""
    problem = number_problem(value, kind, low, high)
    if problem:
        raise UserError(f"{where}={value!r}: {problem}")
    return value
