"""`eval codegen`: the four benchmarks on fixtures the tests write in each real file format (HumanEval JSONL,
HumanEvalPlus JSONL.gz, sanitized-mbpp.json / mbpp.jsonl, MbppPlus JSONL), offline.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_codegen.py
"""

import argparse
import json
from types import SimpleNamespace

import pytest

from helpers import batched, write_jsonl

import proxylm.tasks.codegen as generate_module  # where generate_batch() is called
from proxylm.cli import main
from proxylm.cli.tasks import add_codegen_args, run_codegen_cli
from proxylm.core.errors import UserError
from proxylm.tasks import codegen as cg
from proxylm.tasks import datasets as ds
from proxylm.tasks import results
from proxylm.tasks import plus_check

HE_IDS = ("HumanEval/0", "HumanEval/2", "HumanEval/32")
PLUS_INPUTS = {   # task -> (base_input, plus_input, atol)
    "HumanEval/0": ([[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]], [[[1.0, 1.05], 0.1], [[], 1.0]], 0),
    "HumanEval/2": ([[3.5], [1.33]], [[123.456], [0.0001]], 0),
    "HumanEval/32": ([[[1, 2]], [[-6, 11, -6, 1]]], [[[2, -4]], [[5, 0, -1, 0.5]]], 1e-4),
}
MBPP = [   # (number, description, canonical code, asserts, base_input, plus_input)
    (2, "Write a function to find the shared elements from the given two lists.",
     "def similar_elements(test_tup1, test_tup2):\n  return tuple(set(test_tup1) & set(test_tup2))\n",
     ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
      "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
     [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]], [[[11, 12, 14, 13], [17, 15, 14, 13]], [[], [1]]]),
    (3, "Write a python function to identify non-prime numbers.",
     "import math\ndef is_not_prime(n):\n    if n == 1:\n        return True\n    for i in range(2, int(math.sqrt(n)) + 1):\n"
     "        if n % i == 0:\n            return True\n    return False\n",
     ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"],
     [[2], [10], [35]], [[1], [97], [7919], [7917]]),
    (787, "Write a function that matches a string that has an a followed by three 'b'.",
     "import re\ndef text_match_three(text):\n        patterns = 'ab{3}?'\n        return re.search(patterns,  text)\n",
     ["assert not text_match_three(\"ac\")", "assert not text_match_three(\"dc\")", "assert text_match_three(\"abbbba\")"],
     [["ac"], ["dc"], ["abbbba"]], [["caacabbbba"], ["abbb"], ["xyz"]]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One fixture file per benchmark, in the format of the real one."""
    d = tmp_path_factory.mktemp("codegen-data")
    problems = {p["task_id"]: p for p in ds.load_problems()}
    he_rows = [problems[t] for t in HE_IDS]
    plus_rows = [{**{k: problems[t][k] for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test")},
                  "contract": "", "base_input": b, "plus_input": p, "atol": a}
                 for t, (b, p, a) in PLUS_INPUTS.items()]
    mbpp_plus = [{"task_id": f"Mbpp/{n}", "prompt": ds.mbpp_prompt(desc, asserts[0]), "entry_point":
                  ds.mbpp_entry_point(asserts[0]), "canonical_solution": code, "contract": "", "assertion":
                  "\n".join(asserts), "base_input": b, "plus_input": p, "atol": 0} for n, desc, code, asserts, b, p in MBPP]
    sanitized = [{"source_file": "x", "task_id": n, "prompt": desc, "code": code, "test_imports": [],
                  "test_list": asserts} for n, desc, code, asserts, _, _ in MBPP]
    (d / "sanitized-mbpp.json").write_text(json.dumps(sanitized))
    return {"humaneval": write_jsonl(d / "HumanEval.jsonl", he_rows),
            "humaneval+": write_jsonl(d / "HumanEvalPlus-v0.1.10.jsonl.gz", plus_rows, gz=True),
            "mbpp": d / "sanitized-mbpp.json",
            "mbpp+": write_jsonl(d / "MbppPlus-v0.2.0.jsonl", mbpp_plus)}


def canonical(tasks):
    return [{"task_id": t["task_id"], "completion": t["canonical_solution"]} for t in tasks]


def score(tmp_path, benchmark, files, rows, **kw):
    comps = write_jsonl(tmp_path / f"c-{benchmark.replace('+', 'p')}.jsonl", rows)
    return cg.evaluate_codegen(benchmark, dataset=files[benchmark], completions_path=comps, progress=False, **kw)


def by_sample(out_dir):
    return {(r["task_id"], r["sample"]): r for r in map(json.loads, (out_dir / results.SAMPLES_FILE).open())}


# ---- datasets ----

@pytest.mark.parametrize("benchmark", ds.BENCHMARKS)
def test_loaders_read_each_format(files, benchmark):
    tasks, path = ds.load_benchmark(benchmark, files[benchmark])
    assert len(tasks) == 3 and path == files[benchmark]
    assert {t["kind"] for t in tasks} == {"humaneval": {"check"}, "mbpp": {"asserts"}}.get(benchmark, {"diff"})
    if benchmark.startswith("mbpp"):
        assert [t["entry_point"] for t in tasks] == ["similar_elements", "is_not_prime", "text_match_three"]
        assert tasks[0]["prompt"].startswith('"""\nWrite a function') and "assert set(" in tasks[0]["prompt"]
    if benchmark == "mbpp+":   # Mbpp/2 takes tuples: JSON lists are converted as evalplus does
        assert tasks[0]["base_input"][0] == [(3, 4, 5, 6), (5, 7, 4, 10)]


def test_full_mbpp_jsonl_and_bad_files(tmp_path):
    full = write_jsonl(tmp_path / "mbpp.jsonl", [{"task_id": n, "text": desc, "code": code, "test_setup_code": "",
                                                   "test_list": a, "challenge_test_list": []}
                                                  for n, desc, code, a, _, _ in MBPP])
    tasks = ds.load_mbpp(full)
    assert [t["task_id"] for t in tasks] == ["Mbpp/2", "Mbpp/3", "Mbpp/787"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "prompt": "x"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: task HumanEval/0 lacks entry_point"):
        ds.load_benchmark("humaneval+", bad)
    bad.write_text('\n{"task_id": "HumanEval/0"}\nnot json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:3: not JSON"):
        ds.load_benchmark("humaneval+", bad)


@pytest.mark.parametrize("benchmark", ["humaneval+", "mbpp", "mbpp+"])
def test_missing_dataset_names_url_and_path(benchmark, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.delenv("MBPP_OVERRIDE_PATH", raising=False)
    url, name, _ = ds.release(benchmark)
    with pytest.raises(UserError) as e:
        ds.find_dataset(benchmark)
    assert url in str(e.value) and str(tmp_path / "evalplus" / name) in str(e.value) and "--dataset" in str(e.value)
    # the CLI says it in one line before touching the (here nonexistent) run
    assert main(["eval", "codegen", str(tmp_path / "no-run"), "--benchmark", benchmark]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and url in err
    # found where evalplus would find it: its cache, then the override variable
    (tmp_path / "evalplus").mkdir()
    (tmp_path / "evalplus" / name).write_text("")
    assert ds.find_dataset(benchmark) == tmp_path / "evalplus" / name


def test_override_variable_and_missing_override(tmp_path, monkeypatch, files):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(files["mbpp+"]))
    assert ds.find_dataset("mbpp+") == files["mbpp+"]
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "gone.jsonl"))
    with pytest.raises(UserError, match="MBPP_OVERRIDE_PATH"):
        ds.find_dataset("mbpp+")


# ---- scoring: canonical, wrong, hostile ----

@pytest.mark.parametrize("benchmark", ds.BENCHMARKS)
def test_canonical_solutions_pass(files, benchmark, tmp_path):
    tasks, _ = ds.load_benchmark(benchmark, files[benchmark])
    s = score(tmp_path, benchmark, files, canonical(tasks), out=tmp_path / "o")
    assert (s["benchmark"], s["pass@1"], s["passed"], s["total"], s["missing_count"]) == (benchmark, 1.0, 3, 3, 0)
    assert s["plus_tests"] is benchmark.endswith("+") and s["pass@1_base"] == 1.0
    if benchmark.endswith("+"):   # both the base and the plus programs ran
        assert all(r["result"] == "passed" and r["base_passed"] for r in by_sample(tmp_path / "o").values())


def test_plus_tests_catch_what_base_tests_miss(files, tmp_path):
    rows = [{"task_id": "HumanEval/2", "completion": "    return number - int(number) if number < 100 else 0.0\n"},
            {"task_id": "HumanEval/2", "completion": "    return number % 1.0 + 1e-9\n"},    # within atol 1e-6
            {"task_id": "HumanEval/2", "completion": "    return number % 1.0 + 1e-3\n"},
            {"task_id": "HumanEval/32", "completion": "    return 0.5\n"},   # the root of 1 + 2x is -0.5
            {"task_id": "HumanEval/32", "completion": "    return -0.5 if xs == [1, 2] else 1.0\n"},   # base only
            {"task_id": "HumanEval/0", "completion": "    return False\n"}]
    s = score(tmp_path, "humaneval+", files, rows, out=tmp_path / "o")
    r = by_sample(tmp_path / "o")
    plus_only = r[("HumanEval/2", 0)]
    assert (plus_only["base_passed"], plus_only["passed"]) == (True, False)
    assert plus_only["result"].startswith("plus: AssertionError: plus input 0: wrong output")
    assert r[("HumanEval/2", 1)]["passed"] and not r[("HumanEval/2", 2)]["passed"]
    assert not r[("HumanEval/32", 0)]["passed"] and r[("HumanEval/32", 1)]["base_passed"]
    assert not r[("HumanEval/32", 1)]["passed"] and not r[("HumanEval/0", 0)]["base_passed"]
    assert s["samples_passed"] == 1 and s["passed_base"] == 2


def test_mbpp_plus_oracles_and_input_types(files, tmp_path):
    rows = [{"task_id": "Mbpp/2", "completion": "def similar_elements(a, b):\n    assert type(a) is tuple\n"
                                                "    return sorted(set(a) & set(b), reverse=True)\n"},   # set equality
            {"task_id": "Mbpp/787", "completion": "import re\ndef text_match_three(text):\n"
                                                  "    return 'abbb' in text\n"},                     # bool vs not None
            {"task_id": "Mbpp/3", "completion": "def is_not_prime(n):\n    return n % 2 == 0\n"}]
    s = score(tmp_path, "mbpp+", files, rows, out=tmp_path / "o")
    r = by_sample(tmp_path / "o")
    assert r[("Mbpp/2", 0)]["passed"] and r[("Mbpp/787", 0)]["passed"]
    assert r[("Mbpp/3", 0)]["base_passed"] is False and s["passed"] == 2


HOSTILE = {
    "rmtree": "    import shutil\n    shutil.rmtree({precious!r})\n    return 0\n",
    "write": "    open({precious!r} + '/owned', 'w').write('x')\n    return 0\n",
    "fork": "    import os\n    os.fork()\n    return 0\n",
    "socket": "    import socket\n    socket.create_connection(('127.0.0.1', 9))\n    return 0\n",
    "loop": "    while True:\n        pass\n    return 0\n",
    "stubborn": "    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n"
                "            pass\n    return 0\n",
}


def test_hostile_solutions_are_contained(files, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("data")
    body = {k: v.format(precious=str(precious)) for k, v in HOSTILE.items()}
    rows = [{"task_id": "Mbpp/3", "solution": "def is_not_prime(n):\n" + b} for b in body.values()]
    s = score(tmp_path, "mbpp+", files, rows, out=tmp_path / "o", timeout_s=4, partial=True)
    r = by_sample(tmp_path / "o")
    assert s["samples_passed"] == 0 and (precious / "keep").read_text() == "data"
    assert not (precious / "owned").exists()
    statuses = {name: r[("Mbpp/3", i)] for i, name in enumerate(body)}
    assert "over its time limit" in statuses["loop"]["result"]         # the per-input limit (1 s) stopped it
    # the limit is the judge's (its own alarm, in its own process): a loop that eats signals cannot stop it
    assert "over its time limit" in statuses["stubborn"]["result"]
    assert all(statuses[k]["status"] == "failed" for k in ("rmtree", "write", "fork", "socket"))


def test_partial_completions(files, tmp_path, capsys):
    tasks, _ = ds.load_benchmark("mbpp", files["mbpp"])
    comps = write_jsonl(tmp_path / "c.jsonl", canonical(tasks)[:2])
    with pytest.raises(UserError, match="2 of the 3 mbpp tasks.*--partial"):
        cg.evaluate_codegen("mbpp", dataset=files["mbpp"], completions_path=comps, progress=False)
    parser = argparse.ArgumentParser()
    add_codegen_args(parser)
    argv = ["--benchmark", "mbpp", "--dataset", str(files["mbpp"]), "--completions", str(comps), "--partial"]
    assert run_codegen_cli(parser.parse_args(argv + ["--json"])) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["passed"], s["total"], s["missing_count"], s["plus_tests"]) == (2, 3, 1, False)
    assert s["pass@1"] == pytest.approx(2 / 3) and s["missing"] == ["Mbpp/787"]
    assert run_codegen_cli(parser.parse_args(argv)) == 0
    assert "1 of 3 tasks had no completion and count as failed" in capsys.readouterr().out


# ---- generation with a run (fake model) ----

def test_generation_prompt_stops_and_indent(files, tmp_path, monkeypatch):
    """The prompt is the stripped task prompt + newline; MBPP keeps a second def, HumanEval cuts it;
    3-space indents get a 4th space; seeds as `eval humaneval`."""
    calls = []
    he_tasks = {t["prompt"].strip() + "\n": t for t in ds.load_benchmark("humaneval+", files["humaneval+"])[0]}
    mb_tasks = {t["prompt"].strip() + "\n": t for t in ds.load_benchmark("mbpp+", files["mbpp+"])[0]}

    def fake(model, interface, prompt, max_bytes, temperature, top_p, stop, seed):
        calls.append((prompt.decode(), stop, seed))
        if prompt.decode() in he_tasks:
            body = he_tasks[prompt.decode()]["canonical_solution"].replace("\n    ", "\n   ")   # 3-space lines
            return (body + "\ndef unrelated():\n    raise SystemExit\n").encode()
        t = mb_tasks[prompt.decode()]
        return (t["canonical_solution"] + "\ndef helper():\n    return 1\n\nprint(helper())\n").encode()

    monkeypatch.setattr(generate_module, "generate_batch", batched(fake))
    run = SimpleNamespace(model=None, interface=None, run_dir=tmp_path, step=3)
    s = cg.evaluate_codegen("humaneval+", dataset=files["humaneval+"], run=run, progress=False)
    assert s["pass@1"] == 1.0 and s["step"] == 3 and s["out"].endswith("codegen-humanevalplus-greedy")
    assert all(stop == tuple(x.encode() for x in cg.HUMANEVAL_STOPS) for _, stop, _ in calls)
    assert calls[0][2] == results.sample_seed(0, "HumanEval/0", 0)
    rec = by_sample(tmp_path / "eval" / "codegen-humanevalplus-greedy")[("HumanEval/0", 0)]
    assert "unrelated" not in rec["completion"] and "\n   " not in rec["completion"].replace("\n    ", "")
    calls.clear()
    s = cg.evaluate_codegen("mbpp+", dataset=files["mbpp+"], run=run, progress=False)
    assert s["pass@1"] == 1.0 and b"\ndef" not in calls[0][1]
    rec = by_sample(tmp_path / "eval" / "codegen-mbppplus-greedy")[("Mbpp/2", 0)]
    assert "def helper" in rec["completion"] and "print" not in rec["completion"]


def test_without_evalplus(files, tmp_path, monkeypatch, capsys):
    """evalplus absent: MBPP+ inputs through proxylm's mirror of its converter, solutions unsanitized (said)."""
    import sys

    for name in ("evalplus", "evalplus.sanitize", "evalplus.data", "evalplus.data.mbpp"):
        monkeypatch.setitem(sys.modules, name, None)   # `import evalplus...` now raises ImportError
    assert cg.evalplus_sanitizer() is None
    tasks, _ = ds.load_benchmark("mbpp+", files["mbpp+"])
    assert tasks[0]["base_input"][0] == [(3, 4, 5, 6), (5, 7, 4, 10)]
    comps = write_jsonl(tmp_path / "c.jsonl", canonical(tasks))
    parser = argparse.ArgumentParser()
    add_codegen_args(parser)
    args = parser.parse_args(["--benchmark", "mbpp+", "--dataset", str(files["mbpp+"]), "--completions", str(comps)])
    assert run_codegen_cli(args) == 0
    out = capsys.readouterr().out
    assert "mbpp+ (base + plus tests): pass@1 1.000" in out and "solutions ran unsanitized" in out


# ---- agreement with evalplus where it is installed ----

def test_conversions_and_oracles_mirror_evalplus():
    mbpp = pytest.importorskip("evalplus.data.mbpp", reason="evalplus is not installed (see the README)")
    oracle = pytest.importorskip("evalplus.eval._special_oracle")
    assert set(plus_check.MBPP_OUTPUT_SET_EQ_TASKS) == set(oracle.MBPP_OUTPUT_SET_EQ_TASKS)
    assert set(plus_check.MBPP_OUTPUT_NOT_NONE_TASKS) == set(oracle.MBPP_OUTPUT_NOT_NONE_TASKS)
    samples = {2: [[[1, 2], [3]]], 63: [[[[1, 2], [3, 4]]]], 75: [[[[1, 2]], 3]], 106: [[[1], [2, 3]]],
               115: [[[[1], [], [2]]]], 124: [["1.5", "(1+2j)"]], 250: [[[1, 2], 3]], 252: [["(1+2j)"]],
               259: [[[[1, 2]], [[3, 4]]]], 278: [[[1, [2, 3], 4]]], 307: [[[1, 2], 3, 4]],
               722: [[{"a": [1, 2]}, 5, 6]], 580: [[[1, [2, [3]]], 4]], 7: [["abc"]]}
    for n, inputs in samples.items():
        mine = ds._MBPP_CONVERSIONS.get(n, lambda x: x)(json.loads(json.dumps(inputs)))
        theirs = mbpp.mbpp_deserialize_inputs(f"Mbpp/{n}", json.loads(json.dumps(inputs)))
        assert repr(mine) == repr(theirs), n


def test_evalplus_sanitizer_drops_trailing_statements(files, tmp_path):
    if cg.evalplus_sanitizer() is None:
        pytest.skip("evalplus is not installed (see the README)")
    tasks, _ = ds.load_benchmark("mbpp", files["mbpp"])
    rows = [{"task_id": t["task_id"], "completion": t["canonical_solution"] + "\nassert False\nprint('x')\n"}
            for t in tasks]
    s = score(tmp_path, "mbpp", files, rows)
    assert (s["pass@1"], s["sanitizer"], s["sanitized_count"]) == (1.0, "evalplus", 3)


# ---- the real files, where this machine has them (never downloaded) ----

@pytest.mark.slow
@pytest.mark.parametrize("benchmark,expected", [("humaneval+", 164), ("mbpp+", 378)])
def test_real_dataset_canonical_solutions_all_pass(benchmark, expected, tmp_path):
    """With HumanEvalPlus-v0.1.10 / MbppPlus-v0.2.0 in evalplus's cache (or the override variable), every
    canonical solution passes its base and plus tests."""
    try:
        tasks, path = ds.load_benchmark(benchmark)
    except UserError as e:
        pytest.skip(str(e))
    comps = write_jsonl(tmp_path / "c.jsonl", canonical(tasks))
    s = cg.evaluate_codegen(benchmark, dataset=path, completions_path=comps, progress=False, out=tmp_path / "o")
    failed = [r["task_id"] for r in by_sample(tmp_path / "o").values() if not r["passed"]]
    assert (s["passed"], s["total"], failed) == (expected, expected, [])
