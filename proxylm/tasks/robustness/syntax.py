"""Perturbations of the code (syntax family): semantics-preserving rewrites found with ast."""

from __future__ import annotations

import ast
import re
import tokenize

from .source import LAYOUT_RATE, SITE_RATE, Change, Edit, Source, _pick, non_overlapping, perturbation
from .text import variables

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
            def wrap(n):
                return f"({src.segment(n)})" if isinstance(n, low) else src.segment(n)

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
