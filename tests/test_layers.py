"""The README's layer list is true: every import (inside functions too) goes from a layer to one above it in the
list, or stays inside its layer; no cycles; nothing below the CLI imports it; codecs/ imports only core/.
The graph is built as ../shared/tools/import_graph.py builds it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxylm"


def readme_layers() -> list[str]:
    """Layer names in README order: 'core', 'codecs', ..., 'assemble', ..., 'cli'."""
    text = (ROOT / "README.md").read_text()
    block = text.split("The layers, each importing only those above it", 1)[1].split("```", 2)[1]
    return [re.sub(r"\.py$", "", m.strip("/")) for m in re.findall(r"^proxylm/(\S+)", block, re.M)]


def modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> proxylm modules it imports (the longest existing prefix of each imported name)."""
    mods = modules()

    def resolve(name):
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    edges = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [base + "." + a.name for a in node.names] + [base]
            for n in names:
                r = resolve(n) if n.startswith("proxylm") else None
                if r and r != m and not (m.startswith(r + ".") and mods[r].name == "__init__.py"):
                    edges[m].add(r)
    return edges


def layer_of(module: str) -> str | None:
    """'proxylm.codecs.neural.m1' -> 'codecs'; 'proxylm.assemble' -> 'assemble'; the root package -> None."""
    parts = module.split(".")
    if len(parts) == 1:
        return None  # proxylm/__init__.py: the version only, readable from every layer
    return "cli" if parts[1] == "__main__" else parts[1]


def test_readme_lists_every_layer():
    layers = readme_layers()
    assert layers[0] == "core" and layers[-1] == "cli" and len(set(layers)) == len(layers), layers
    present = {layer_of(m) for m in modules()} - {None}
    assert present == set(layers), f"in the package but not the README: {present - set(layers)}; " \
                                   f"in the README but not the package: {set(layers) - present}"


def test_every_import_goes_up_the_readme_layer_list():
    order = {name: i for i, name in enumerate(readme_layers())}
    wrong = []
    for m, targets in import_graph().items():
        for t in targets:
            a, b = layer_of(m), layer_of(t)
            if b is not None and a != b and (a is None or order[b] > order[a]):
                wrong.append(f"{m} ({a}) imports {t} ({b})")
    assert not wrong, "imports against the README's layer order:\n" + "\n".join(sorted(wrong))


def test_codecs_import_only_core():
    graph = import_graph()
    outside = sorted(f"{m} -> {t}" for m, ts in graph.items() if layer_of(m) == "codecs"
                     for t in ts if layer_of(t) not in ("codecs", "core"))
    assert not outside, outside


def test_no_import_cycles():
    graph = import_graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, cycles
