"""ReCode-style perturbations and robustness metrics.

    .venv/bin/python -m pytest tests/test_robustness.py -q
    .venv/bin/python -m pytest tests/test_robustness.py -q -m slow    # canonical solutions under every variant
"""

import ast
import json
import math
from types import SimpleNamespace

import pytest

from helpers import batched

import proxylm.tasks.robustness.run as bpb_module  # where evaluate_bpb() is called
import proxylm.tasks.codegen as generate_module  # where generate_batch() is called
from proxylm.tasks import robustness as rb
from proxylm.tasks.datasets import load_problems
from proxylm.tasks.humaneval import build_program
from proxylm.tasks.sandbox import Sandbox
from proxylm.train.config import EvalConfig

FEW = 4   # problems in the quick execution checks


@pytest.fixture(scope="module")
def problems():
    return load_problems()


TOY = {
    "task_id": "Toy/0", "entry_point": "count_small",
    "prompt": ('def count_small(xs, limit):\n'
               '    """Count the values below the limit.\n'
               '    >>> count_small([1, 5, 2], 3)\n'
               '    2\n'
               '    """\n'),
    "canonical_solution": ("    total = 0\n"
                           "    for i in range(len(xs)):\n"
                           "        if not xs[i] < limit:\n"
                           "            pass\n"
                           "        else:\n"
                           "            total += 1\n"
                           "    n = 0\n"
                           "    n = n + total\n"
                           "    return n\n"),
    "test": "def check(candidate):\n    assert candidate([1, 5, 2], 3) == 2\n    assert candidate([], 3) == 0\n",
}


def _variant(name, seed=0, problem=TOY):
    p = next(p for f in rb.FAMILIES for p in rb.REGISTRY[f] if p.name == name)
    return rb.perturb(problem, p, seed)


def test_every_family_has_perturbations():
    assert set(rb.FAMILIES) == {"format", "rename", "docstring", "syntax"}
    assert all(rb.REGISTRY[f] for f in rb.FAMILIES)
    with pytest.raises(ValueError):
        rb.perturbations(["nonsense"])


def test_deterministic_and_seed_dependent(problems):
    some = problems[:20]
    a, b = rb.make_variants(some, seeds=2), rb.make_variants(some, seeds=2)
    assert a == b
    by_seed = {}
    for v in a:
        by_seed.setdefault((v["base_task_id"], v["perturbation"]), []).append(v["text"])
    randomized = {p.name for p in rb.perturbations() if p.randomized}
    differs = {name for (_, name), texts in by_seed.items() if len(set(texts)) > 1}
    assert differs <= randomized   # deterministic ones really are
    # where there are many sites, another seed gives another text
    assert {"newline_insert", "trailing_whitespace", "indent_width", "entry_point", "typos", "case"} <= differs


def test_all_variants_parse_where_claimed(problems):
    variants = rb.make_variants(problems, seeds=1)
    claimed = [v for v in variants if v["keeps_valid"]]
    bad = [v["task_id"] for v in claimed if not v["valid"]]
    assert bad == []
    for v in claimed[::7]:
        ast.parse(v["text"])
        ast.parse(v["test"])
        assert v["prompt"] + v["canonical_solution"] == v["text"]
    applied = {(v["family"], v["perturbation"]) for v in variants if v["applied"]}
    assert applied == {(p.family, p.name) for p in rb.perturbations()}   # each one does something somewhere


def test_partial_setting(problems):
    p = problems[0]
    cut = rb.partial_cut(p)
    lines = p["canonical_solution"].splitlines(keepends=True)
    assert (p["prompt"] + p["canonical_solution"])[:cut] == p["prompt"] + "".join(lines[:len(lines) // 2])
    assert rb.nominal_variant(p, partial=True)["prompt"].startswith(p["prompt"])
    assert rb.nominal_variant(p, partial=False)["prompt"] == p["prompt"]
    assert _variant("tab_indent", problem=p)["partial"] and not _variant("typos", problem=p)["partial"]


def _rewrite(name, seed=0, problem=TOY):
    """The perturbation on the complete text, before the partial-code cut."""
    p = next(p for f in rb.FAMILIES for p in rb.REGISTRY[f] if p.name == name)
    text = problem["prompt"] + problem["canonical_solution"]
    change = p.fn(rb.Source(text), rb._rng(seed, p.family, p.name, problem["task_id"]),
                  {"entry_point": problem["entry_point"], "test": problem["test"]})
    return rb.apply_edits(text, rb.non_overlapping(change.edits))


def test_syntax_rewrites_on_toy():
    full = _rewrite
    assert any("total = total + 1" in full("aug_assign", s) or "n += total" in full("aug_assign", s)
               for s in range(4))
    assert any("limit > xs[i]" in full("compare_swap", s) for s in range(4))
    assert any("while i < len(xs):" in full("for_while", s) and "        i += 1\n" in full("for_while", s)
               for s in range(4))
    swapped = full("if_swap")
    assert "if xs[i] < limit:\n            total += 1\n        else:\n            pass\n" in swapped
    for name in ("aug_assign", "compare_swap", "for_while", "if_swap", "dead_code", "var_rename"):
        assert full(name) != TOY["prompt"] + TOY["canonical_solution"], name
        ast.parse(full(name))


def test_edit_across_the_cut_is_dropped():
    v = _variant("for_while")   # the loop starts in the first half of the solution and ends in the second
    assert v["prompt"] == rb.nominal_variant(TOY, partial=True)["prompt"]
    assert v["text"] == v["clean_text"] and not v["applied"]


def test_format_rewrites_on_toy():
    assert "\n\tfor i in range(len(xs)):\n\t\tif" in _variant("tab_indent")["text"]
    widths = {_variant("indent_width", s)["text"].split("\n")[5][:3] for s in range(6)}
    assert widths <= {"  t", "   "} and len(widths) == 2
    assert "\n\n" in _variant("newline_insert")["text"].split('"""')[-1]


def test_rename_reaches_tests_and_check():
    v = _variant("entry_point", seed=3)
    new = v["entry_point"]
    assert new != "count_small" and new.isidentifier()
    assert f"def {new}(xs, limit)" in v["prompt"] and f">>> {new}([1, 5, 2], 3)" in v["prompt"]
    assert "count_small(" not in v["prompt"].replace(new, "NEW") and build_program(v, "").endswith(f"check({new})")
    w = _variant("variables", seed=1)
    assert w["text"] != w["clean_text"] and "def count_small(" in w["text"]


def test_docstring_only_touches_docstrings():
    for name in ("typos", "case"):
        for seed in range(3):
            v = _variant(name, seed)
            code_clean = v["clean_text"].split('"""')[::2]
            code_pert = v["text"].split('"""')[::2]
            assert code_clean == code_pert                          # code outside the docstring unchanged
            assert ">>> count_small([1, 5, 2], 3)\n    2\n" in v["text"]   # doctest lines kept


def test_canonical_passes_under_variants_quick(problems):
    variants = [v for v in rb.make_variants(problems[:FEW] + [TOY], seeds=1)
                if v["valid"] and v["text"] != v["clean_text"]]
    results = Sandbox().run_many([build_program(v, v["canonical_solution"]) for v in variants], progress=False)
    failed = [(v["task_id"], r.message) for v, r in zip(variants, results) if not r.passed]
    assert failed == []


@pytest.mark.slow
def test_canonical_passes_under_every_variant(problems):
    variants = [v for v in rb.make_variants(problems, seeds=2) if v["valid"] and v["text"] != v["clean_text"]]
    results = Sandbox().run_many([build_program(v, v["canonical_solution"]) for v in variants], progress=False)
    failed = [(v["task_id"], r.status, r.message) for v, r in zip(variants, results) if not r.passed]
    assert failed == []


# ---- metrics ----

def test_robustness_metrics_arithmetic():
    nominal = {"a": True, "b": True, "c": False, "d": True}
    variants = {"a": [True, True], "b": [True, False], "c": [True, True], "d": []}
    m = rb.robustness_metrics(nominal, variants)
    assert m["nominal"] == 0.75
    assert m["robust"] == 0.75              # a, c (every variant passes), d (no variant: nominal)
    assert m["drop"] == pytest.approx(0.0)
    assert m["perturbed"] == pytest.approx(5 / 6)
    assert m["attack_success"] == pytest.approx(1 / 3)   # b of the three nominal passes
    m = rb.robustness_metrics({"a": True, "b": True}, {"a": [False], "b": [True]})
    assert (m["nominal"], m["robust"], m["drop"]) == (1.0, 0.5, 0.5)
    assert rb.robustness_metrics({"a": False}, {"a": [False]})["drop"] == 0.0


def test_bpb_metrics_arithmetic():
    ln2 = math.log(2)
    pairs = [({"nats": 8 * ln2, "bytes": 4}, {"nats": 12 * ln2, "bytes": 4}),
             ({"nats": 2 * ln2, "bytes": 1}, {"nats": 3 * ln2, "bytes": 2})]
    m = rb.bpb_metrics(pairs)
    assert m["bpb_clean"] == pytest.approx(10 / 5) and m["bpb_perturbed"] == pytest.approx(15 / 6)
    assert m["bpb_ratio"] == pytest.approx(1.25) and m["bits_ratio"] == pytest.approx(1.5)


def test_summary_on_fake_results(problems):
    ps = problems[:2]
    variants = rb.make_variants(ps, families=("docstring",), seeds=1)
    results = {rb._prompt_key(rb.nominal_variant(p, False)): {"passed": True} for p in ps}
    for v in variants:   # the first problem breaks under every docstring perturbation
        results[rb._prompt_key(v)] = {"passed": v["base_task_id"] != ps[0]["task_id"]}
    rows = {r["perturbation"]: r for r in rb.summarize_robustness(ps, variants, results, None)["rows"]}
    assert rows["all"]["nominal"] == 1.0 and rows["all"]["robust"] == 0.5 and rows["all"]["drop"] == 0.5
    assert "| docstring | all |" in rb.markdown_table({"rows": list(rows.values())})


# ---- end to end with a fake run ----

def test_run_robustness_end_to_end(problems, tmp_path, monkeypatch):
    ps = problems[:2]
    families = ("docstring", "syntax")
    everything = [rb.nominal_variant(p, partial) for p in ps for partial in (False, True)]
    everything += rb.make_variants(ps, families, seeds=1)
    rest = {v["prompt"].encode(): v["canonical_solution"] for v in everything}

    def fake_generate(model, interface, prompt, max_bytes, temperature, top_p, stop, seed):
        broken = b"Reurn" in prompt or prompt != prompt.lower() and b"RETURN" in prompt
        return b"    return None\n" if broken else rest[prompt].encode()

    def fake_bpb(model, interface, docs, seq_len, stride, batch_size, device="cpu"):
        text = docs[0]
        return {"bpb": 1.0, "bytes": len(text), "nats": math.log(2) * (len(text) + text.count(b"\t"))}

    monkeypatch.setattr(generate_module, "generate_batch", batched(fake_generate))
    monkeypatch.setattr(bpb_module, "evaluate_bpb", fake_bpb)
    run = SimpleNamespace(model=None, interface=None, run_dir=tmp_path, step=3,
                          cfg=SimpleNamespace(eval=EvalConfig(seq_len=64, batch_size=2),
                                              data=SimpleNamespace(seq_len=64)))
    s = rb.run_robustness(run=run, families=families, seeds=1, limit=2, out=tmp_path / "rob", progress=False)
    rows = {(r["family"], r["perturbation"]): r for r in s["rows"]}
    assert rows[("syntax", "all")]["nominal"] == 1.0 and rows[("syntax", "all")]["robust"] == 1.0
    assert rows[("syntax", "all")]["bpb_ratio"] == pytest.approx(1.0)
    assert rows[("docstring", "all")]["nominal"] == 1.0
    assert [x["seed"] for x in rows[("syntax", "all")]["per_seed"]] == [0]
    per_text = [json.loads(x) for x in (tmp_path / "rob" / rb.BPB_FILE).read_text().splitlines()]
    assert per_text and all(r["clean_bpb"] == pytest.approx(1.0) for r in per_text)
    assert (tmp_path / "rob" / rb.SUMMARY_MD).read_text().startswith("| family |")
    assert json.loads((tmp_path / "rob" / rb.SUMMARY_JSON).read_text())["rows"] == json.loads(json.dumps(s["rows"]))
    n_lines = len((tmp_path / "rob" / rb.GENERATIONS_FILE).read_text().splitlines())

    def no_generation(*a, **k):
        raise AssertionError("a finished prompt was generated again")

    monkeypatch.setattr(generate_module, "generate_batch", batched(no_generation))
    again = rb.run_robustness(run=run, families=families, seeds=1, limit=2, out=tmp_path / "rob", progress=False)
    assert again["rows"] == s["rows"]
    assert len((tmp_path / "rob" / rb.GENERATIONS_FILE).read_text().splitlines()) == n_lines


def test_export_is_a_humaneval_file(tmp_path, problems):
    path = tmp_path / "perturbed.jsonl"
    n = rb.export_variants(path, families=("format",), seeds=1, limit=3)
    exported = load_problems(path)
    assert len(exported) == n and {"base_task_id", "family", "seed"} <= set(exported[-1])
    results = Sandbox().run_many([build_program(p, p["canonical_solution"]) for p in exported], progress=False)
    assert all(r.passed for r in results)
