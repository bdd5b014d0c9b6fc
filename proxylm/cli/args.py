"""Typed command-line numbers: a bad value is refused by argparse in one line, before any work.

    p.add_argument("--batch-size", type=at_least(1), default=8)   # "argument --batch-size: 0 is not >= 1"
"""

from __future__ import annotations

import argparse


def at_least(low: int, kind=int, note: str = ""):
    """An argparse `type` accepting numbers >= low (`note` is appended to the message, e.g. "0: all")."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not >= {low}{f' ({note})' if note else ''}")
        return value

    parse.__name__ = f"{kind.__name__} >= {low}"
    return parse


def in_range(low: float, high: float, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    parse.__name__ = f"{kind.__name__} in [{low}, {high}]"
    return parse


def add_dtype_flag(p: argparse.ArgumentParser, decoding: bool = False) -> None:
    """`--dtype auto|float32|bfloat16` for the verbs that run a model (auto: bfloat16 where it is native,
    float32 for decoding)."""
    auto = ("float32: bfloat16 greedy decoding is not batch-invariant" if decoding else
            "bfloat16 autocast where the device computes it natively, e.g. a CPU with avx512_bf16 or AMX; "
            "float32 elsewhere")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help=f"compute dtype (default auto: {auto})")


def threads_arg(p: argparse.ArgumentParser) -> None:
    """`--threads N` on a verb that computes; the verb calls proxylm.core.threads.set_threads(args.threads)."""
    from proxylm.core.threads import THREADS_HELP

    p.add_argument("--threads", type=at_least(0, note="0: the default policy"), default=0, help=THREADS_HELP)
