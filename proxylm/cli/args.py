"""Typed command-line numbers: a bad value is refused by argparse in one line, before any work.

    p.add_argument("--batch-size", type=at_least(1), default=8)   # "argument --batch-size: 0 is not >= 1"

Every number that enters through a flag is checked here, once: `harden_numbers(parser)` (called by
build_parser on the whole `proxylm` parser, so flags added later are covered too) gives every flag typed
`int` or `float` the checks of `number`: finite (no nan, inf, 1e400), integers within 64 bits, and a
declared range: `at_least`/`in_range`, or `>= 0` for a bare int/float (every such flag is a count, a size,
a seed or a fraction). tests/test_numbers.py sweeps every numeric flag with nan, +-inf, 0, -1, 1e400, 2**70.
"""

from __future__ import annotations

import argparse

from proxylm.core.numbers import number_problem

DEFAULT_LOW = 0           # the range of a bare `type=int` / `type=float` flag


def number(kind=int, low: float | None = None, high: float | None = None, note: str = ""):
    """An argparse `type`: a finite `kind` (int or float) in [low, high] (None: unbounded on that side,
    within INT_LIMIT for ints); `note` is appended to a range message (e.g. "0: all")."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        problem = number_problem(value, kind)   # finite, within 64 bits: the check every entry point shares
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r} is {problem.replace('must be', 'not')}")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise argparse.ArgumentTypeError(f"{value} is not >= {low}{f' ({note})' if note else ''}")
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]{f' ({note})' if note else ''}")
        return value

    parse.kind, parse.low, parse.high = kind, low, high
    parse.__name__ = (f"{kind.__name__} >= {low}" if high is None else f"{kind.__name__} in [{low}, {high}]")
    return parse


def at_least(low: int, kind=int, note: str = ""):
    """An argparse `type` accepting finite numbers >= low."""
    return number(kind, low, None, note)


def in_range(low: float, high: float, kind=float):
    return number(kind, low, high)


def numeric_actions(parser: argparse.ArgumentParser, path: tuple = ()):
    """(command path, action) for every flag or positional of `parser` and its sub-commands that takes a
    number: typed int/float, typed by `number`, or with a numeric default."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_actions(sub, path + (name,))
            continue
        t = action.type
        numeric_default = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
        if t in (int, float) or getattr(t, "kind", None) in (int, float) or (
                numeric_default and t is None and action.nargs != 0 and not action.const):
            yield path, action


def harden_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every numeric flag of `parser` (sub-commands included) the checks of `number`."""
    for _, action in numeric_actions(parser):
        t = action.type
        if t in (int, float):
            action.type = number(t, DEFAULT_LOW)
        elif t is None:   # a numeric default but no type: the value would stay a string
            kind = float if isinstance(action.default, float) else int
            action.type = number(kind, DEFAULT_LOW)


def add_dtype_flag(p: argparse.ArgumentParser, decoding: bool = False) -> None:
    """`--dtype auto|float32|bfloat16` for the verbs that run a model (auto: bfloat16 where it is native,
    float32 for decoding)."""
    auto = ("float32: bfloat16 decoding measured no faster on the CPU" if decoding else
            "bfloat16 autocast where the device computes it natively, e.g. a CPU with avx512_bf16 or AMX; "
            "float32 elsewhere")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help=f"compute dtype (default auto: {auto})")


def threads_arg(p: argparse.ArgumentParser) -> None:
    """`--threads N` on a verb that computes; the verb calls proxylm.core.threads.set_threads(args.threads)."""
    from proxylm.core.threads import THREADS_HELP

    p.add_argument("--threads", type=at_least(0, note="0: the default policy"), default=0, help=THREADS_HELP)
