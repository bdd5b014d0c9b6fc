"""Variants: the nominal and perturbed problems (ReCode partial-code setting), and their HumanEval export."""

from __future__ import annotations

import ast
import hashlib
import json
import random

from proxylm.tasks.datasets import load_problems

from . import syntax, text as text_perturbations  # noqa: F401  (importing them registers their perturbations)
from .source import (DEFAULT_SEEDS, FAMILIES, PARTIAL_FAMILIES, REGISTRY, Edit, Perturbation, Source, apply_edits,
                     non_overlapping)

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


def _prompt_key(v: dict) -> str:
    """Identical prompt + test + entry point give identical greedy results: generate and run once."""
    return hashlib.sha256(json.dumps([v["prompt"], v["test"], v["entry_point"]]).encode()).hexdigest()[:24]


def export_variants(path, problems_path=None, families=FAMILIES, seeds: int = DEFAULT_SEEDS,
                    limit: int | None = None) -> int:
    """Write nominal + applied, valid variants as a HumanEval-format JSONL (score with
    `proxylm eval humaneval --problems PATH --completions ...`). Returns the number of lines."""
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
