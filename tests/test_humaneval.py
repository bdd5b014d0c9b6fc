"""HumanEval: problems, programs, pass@k, completions scoring, generation with a fake model, resume.

    .venv/bin/python -m pytest tests/test_humaneval.py -q
"""

import argparse
import gzip
import json
from math import comb
from types import SimpleNamespace

import pytest

from helpers import batched, write_jsonl

import proxylm.tasks.codegen as generate_module  # where generate_batch() is called
from proxylm.cli.tasks import add_humaneval_args, run_humaneval_cli
from proxylm.tasks import datasets
from proxylm.tasks import humaneval as he
from proxylm.tasks import results
from proxylm.tasks.sandbox import Limits, Sandbox

FEW = 10   # problems in the quick end-to-end tests


@pytest.fixture(scope="module")
def problems():
    return datasets.load_problems()


def _cli(argv):
    parser = argparse.ArgumentParser()
    add_humaneval_args(parser)
    return parser.parse_args(argv)


# ---- problems and programs ----

def test_load_problems_from_package(problems):
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0"
    assert all(k in problems[0] for k in datasets.REQUIRED_FIELDS)
    assert datasets.default_problems_path().name == "HumanEval.jsonl.gz"


def test_load_problems_any_file(tmp_path, problems):
    plain = write_jsonl(tmp_path / "p.jsonl", problems[:3])
    packed = tmp_path / "p.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert datasets.load_problems(plain) == problems[:3] == datasets.load_problems(packed)
    assert datasets.load_problems(plain, limit=2) == problems[:2]
    broken = write_jsonl(tmp_path / "bad.jsonl", [{"task_id": "x", "prompt": ""}])
    with pytest.raises(ValueError, match="lacks"):
        datasets.load_problems(broken)


def test_truncate_at_stop():
    assert results.truncate_at_stop("    return 1\n\ndef other():\n") == "    return 1\n"
    assert results.truncate_at_stop("    x = 1\nif __name__:\n") == "    x = 1"
    assert results.truncate_at_stop("    return 1\n```\n") == "    return 1"
    assert results.truncate_at_stop("    return 1\n    # fine\n") == "    return 1\n    # fine\n"   # indented: kept
    assert results.truncate_at_stop("no stop") == "no stop"


def test_build_program(problems):
    p = problems[0]
    prog = he.build_program(p, "    return False\n")
    assert prog == p["prompt"] + "    return False\n" + "\n" + p["test"] + "\n" + "check(has_close_elements)"


def test_sample_seeds_are_stable_and_distinct():
    assert results.sample_seed(0, "HumanEval/1", 0) == results.sample_seed(0, "HumanEval/1", 0)
    seeds = {results.sample_seed(s, t, i) for s in (0, 1) for t in ("A", "B") for i in range(3)}
    assert len(seeds) == 12 and all(0 <= x < 2 ** 32 for x in seeds)


# ---- pass@k ----

@pytest.mark.parametrize("n,c,k,expected", [
    (1, 0, 1, 0.0), (1, 1, 1, 1.0), (10, 1, 1, 0.1), (10, 3, 1, 0.3),
    (10, 3, 2, 1 - 21 / 45),            # 1 - C(7,2)/C(10,2)
    (10, 0, 10, 0.0), (10, 1, 10, 1.0), (5, 4, 2, 1.0),   # n - c < k: every k-subset has a pass
    (20, 2, 10, 1 - comb(18, 10) / comb(20, 10)),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert results.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_combinatorics():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert results.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    with pytest.raises(ValueError):
        results.pass_at_k(3, 1, 4)


def test_summarize_reports_available_k():
    recs = [{"task_id": t, "passed": i < p, "status": "passed" if i < p else "failed"}
            for t, p in (("a", 3), ("b", 0)) for i in range(10)]
    s = results.summarize(recs)
    assert s["pass@1"] == pytest.approx((0.3 + 0.0) / 2)
    assert s["pass@10"] == pytest.approx(0.5) and "pass@100" not in s
    assert (s["passed"], s["total"], s["n_samples"], s["samples_passed"]) == (1, 2, 10, 3)
    assert s["statuses"] == {"failed": 17, "passed": 3}


# ---- scoring completions ----

def test_canonical_solutions_all_pass(problems, tmp_path):
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                                for p in problems])
    s = he.evaluate_humaneval(completions_path=comps, progress=False)
    assert (s["passed"], s["total"], s["pass@1"]) == (164, 164, 1.0), s["statuses"]


def test_empty_completions_fail(problems, tmp_path):
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": p["task_id"], "completion": ""} for p in problems[:FEW]])
    s = he.evaluate_humaneval(completions_path=comps, limit=FEW, progress=False)
    assert (s["passed"], s["total"], s["pass@1"]) == (0, FEW, 0.0)


def test_completions_cli_json(problems, tmp_path, capsys):
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"] if i % 2 == 0 else "    return None\n"}
            for i, p in enumerate(problems[:4])]
    comps = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    assert run_humaneval_cli(_cli(["--completions", str(comps), "--limit", "4", "--json", "--out", str(out),
                                      "--workers", "2"])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["pass@1"], summary["passed"], summary["total"], summary["n_samples"]) == (0.5, 2, 4, 1)
    lines = [json.loads(x) for x in (out / results.SAMPLES_FILE).read_text().splitlines()]
    assert {(r["task_id"], r["sample"]) for r in lines} == {(p["task_id"], 0) for p in problems[:4]}
    assert all({"completion", "passed", "status", "result"} <= set(r) for r in lines)
    assert json.loads((out / results.SUMMARY_FILE).read_text())["pass@1"] == 0.5


def test_cli_needs_run_or_completions():
    with pytest.raises(ValueError):
        run_humaneval_cli(_cli(["--json"]))


def test_scoring_resumes(problems, tmp_path, monkeypatch):
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                                for p in problems[:3]])
    out = tmp_path / "out"
    first = he.evaluate_humaneval(completions_path=comps, limit=3, out=out, progress=False)

    def no_execution(self, program):
        raise AssertionError("a finished sample was executed again")

    monkeypatch.setattr(Sandbox, "run", no_execution)
    again = he.evaluate_humaneval(completions_path=comps, limit=3, out=out, progress=False)
    assert again["pass@1"] == first["pass@1"] == 1.0
    assert len((out / results.SAMPLES_FILE).read_text().splitlines()) == 3


# ---- generating with a run (fake model) ----

class FakeGenerate:
    """Stands in for proxylm.eval.generate.generate: canonical solution + junk after a stop string."""

    def __init__(self, problems, broken=()):
        self.by_prompt = {p["prompt"].encode(): p for p in problems}
        self.broken = set(broken)
        self.calls = []

    def __call__(self, model, interface, prompt, max_bytes, temperature, top_p, stop, seed):
        p = self.by_prompt[prompt]
        self.calls.append((p["task_id"], seed))
        body = "    return None\n" if p["task_id"] in self.broken else p["canonical_solution"]
        return (body + "\ndef unrelated():\n    raise SystemExit\n").encode()


def test_generation_scoring_and_resume(problems, tmp_path, monkeypatch):
    fake = FakeGenerate(problems, broken={problems[1]["task_id"]})
    monkeypatch.setattr(generate_module, "generate_batch", batched(fake))
    run = SimpleNamespace(model=None, interface=None, run_dir=tmp_path, step=7)
    kw = dict(run=run, limit=3, n_samples=2, temperature=0.8, top_p=0.95, seed=1, out=tmp_path / "he",
              timeout_s=Limits().timeout_s, progress=False)
    s = he.evaluate_humaneval(**kw)
    assert (s["passed"], s["total"], s["n_samples"]) == (2, 3, 2)
    assert s["pass@1"] == pytest.approx(2 / 3) and s["step"] == 7
    assert sorted(fake.calls) == sorted((p["task_id"], results.sample_seed(1, p["task_id"], i))
                                        for p in problems[:3] for i in range(2))
    fake.calls.clear()
    assert he.evaluate_humaneval(**kw)["pass@1"] == pytest.approx(2 / 3)
    assert fake.calls == []   # everything was already in samples.jsonl
    with pytest.raises(ValueError, match="other settings"):
        he.evaluate_humaneval(**{**kw, "temperature": 0.5})


def test_greedy_rejects_many_samples(tmp_path):
    run = SimpleNamespace(model=None, interface=None, run_dir=tmp_path)
    with pytest.raises(ValueError, match="temperature"):
        he.evaluate_humaneval(run=run, n_samples=5, temperature=0.0)


def test_always_equal_result_does_not_pass(problems, tmp_path):
    """A wrong solution returning an object equal to everything (issue 13) fails, the canonical one passes."""
    p = problems[0]
    evil = "    class Yes:\n        __eq__ = lambda self, other: True\n        __bool__ = lambda self: True\n    return Yes()\n"
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": p["task_id"], "completion": evil},
                                                {"task_id": p["task_id"], "completion": p["canonical_solution"]}])
    s = he.evaluate_humaneval(completions_path=comps, limit=1, out=tmp_path / "o", progress=False)
    assert (s["samples_passed"], s["samples_total"]) == (1, 2)


def test_partial_completions_refused_or_scored_out_of_all(problems, tmp_path, capsys):
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                                for p in problems[:2]])
    with pytest.raises(ValueError, match="2 of the 5 problems.*--partial"):
        he.evaluate_humaneval(completions_path=comps, limit=5, progress=False)
    assert run_humaneval_cli(_cli(["--completions", str(comps), "--limit", "5", "--partial", "--json"])) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["passed"], s["total"], s["pass@1"], s["missing_count"]) == (2, 5, 0.4, 3)
    assert s["statuses"] == {"missing": 3, "passed": 2}
    assert run_humaneval_cli(_cli(["--completions", str(comps), "--limit", "5", "--partial"])) == 0
    assert "3 of 5 problems had no completion" in capsys.readouterr().out
