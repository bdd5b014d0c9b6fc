"""Source editing for the perturbations: edits on character offsets, a parsed text, the perturbation registry."""

from __future__ import annotations

import ast
import io
import random
import tokenize
from dataclasses import dataclass, field
from typing import Callable

FAMILIES = ("format", "rename", "docstring", "syntax")
PARTIAL_FAMILIES = ("format", "syntax")   # ReCode: code perturbations act on partial code
DEFAULT_SEEDS = 5
LAYOUT_RATE = 0.3    # share of eligible line ends that get a layout change
SITE_RATE = 0.5      # share of eligible code sites rewritten / names renamed
WORD_RATE = 0.1      # share of docstring words changed
NEW_INDENTS = ("  ", "        ")   # indent_width picks one of these


# ============================== source editing ==============================

@dataclass(frozen=True, order=True)
class Edit:
    start: int   # character offsets into the text
    end: int
    text: str


def apply_edits(text: str, edits) -> str:
    """Apply non-overlapping edits (overlapping later ones are dropped)."""
    out, pos = [], 0
    for e in sorted(edits):
        if e.start < pos:
            continue
        out.append(text[pos:e.start])
        out.append(e.text)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def non_overlapping(edits) -> list[Edit]:
    chosen, pos = [], -1
    for e in sorted(edits):
        if e.start >= pos and not (chosen and e.start == e.end == chosen[-1].start == chosen[-1].end):
            chosen.append(e)
            pos = max(e.end, e.start + (e.start == e.end))
    return chosen


class Source:
    """One text with its tokens, AST and offset helpers (ast columns are UTF-8 bytes, ours characters)."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.line_starts = [0]
        for line in self.lines:
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        self.tree = ast.parse(text)
        self._in_fstring = {id(n) for js in ast.walk(self.tree) if isinstance(js, ast.JoinedStr)
                            for n in ast.walk(js)}

    def offset(self, row: int, col: int) -> int:
        return self.line_starts[row - 1] + col

    def ast_offset(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.line_starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))

    def span(self, node) -> tuple[int, int]:
        return (self.ast_offset(node.lineno, node.col_offset), self.ast_offset(node.end_lineno, node.end_col_offset))

    def segment(self, node) -> str:
        a, b = self.span(node)
        return self.text[a:b]

    def in_fstring(self, node) -> bool:   # f-string inner positions are unreliable before Python 3.12
        return id(node) in self._in_fstring

    def indent_of(self, lineno: int) -> str:
        line = self.lines[lineno - 1]
        return line[:len(line) - len(line.lstrip(" \t"))]

    def docstring_nodes(self) -> list[ast.Constant]:
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    found.append(first.value)
        return found

    def string_spans(self) -> list[tuple[int, int]]:
        return [(self.offset(*t.start), self.offset(*t.end)) for t in self.tokens if t.type == tokenize.STRING]


def _pick(rng: random.Random, items: list, rate: float) -> list:
    """A random subset, each item with probability `rate`, never empty when items exist."""
    if not items:
        return []
    chosen = [x for x in items if rng.random() < rate]
    return chosen or [rng.choice(items)]


# ============================== perturbations ==============================

@dataclass
class Change:
    edits: list                                          # on prompt + canonical solution
    test_edits: list = field(default_factory=list)       # on the test code
    entry_point: str | None = None                       # a renamed entry point


@dataclass(frozen=True)
class Perturbation:
    family: str
    name: str
    fn: Callable
    keeps_valid: bool = True    # the perturbed complete text still parses (checked with ast.parse)
    randomized: bool = True     # False: every seed gives the same text, so only seed 0 is used


REGISTRY: dict[str, list[Perturbation]] = {f: [] for f in FAMILIES}


def perturbation(family: str, keeps_valid: bool = True, randomized: bool = True):
    def register(fn):
        REGISTRY[family].append(Perturbation(family, fn.__name__, fn, keeps_valid, randomized))
        return fn
    return register
