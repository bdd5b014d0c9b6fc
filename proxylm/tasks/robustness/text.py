"""Perturbations of the text: format (layout), rename (entry point, variables), docstring (typos, case)."""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import random
import re
import tokenize

from .source import (LAYOUT_RATE, NEW_INDENTS, SITE_RATE, WORD_RATE, Change, Edit, Source, _pick,
                     perturbation)

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
