"""The paper's code benchmarks (HumanEval, HumanEval+, MBPP, MBPP+) on raw bytes, every candidate in the sandbox.

    proxylm eval codegen runs/proxy-bpe-tiny --benchmark humaneval+ --json          # greedy pass@1
    proxylm eval codegen RUN --benchmark mbpp+ --dataset MbppPlus-v0.2.0.jsonl.gz --limit 20
    proxylm eval codegen RUN --benchmark humaneval+ --n-samples 20 --temperature 0.2 --top-p 0.95
    proxylm eval codegen --benchmark humaneval+ --completions samples.jsonl [--partial] --json

Datasets: proxylm/tasks/datasets.py (local files only; a missing one is a UserError naming the URL and path).
Prompt (paper 3.5, evalplus's direct completion): task prompt .strip() + "\n", given to the run's interface
as raw bytes (byte and proxy models: `<bos><raw>` + bytes; token baselines: their tokenizer). The continuation is
cut at the reference's stop strings (HumanEval/HumanEval+: \nclass \ndef \n# \n@ \nprint \nif \n```; MBPP/MBPP+:
the same without \ndef) and lines indented by exactly 3 spaces get a 4th, as the reference's post-processing.
Solution = prompt + completion; for the evalplus benchmarks (humaneval+, mbpp, mbpp+) it then goes through
evalplus.sanitize (entry point and what it uses) when evalplus is installed, as the reference does; without
it the solution runs as it is (summary "sanitizer": "none"). A completions file holds {task_id, completion}
(appended to the dataset prompt, as evalplus does) or {task_id, solution} (a whole program), optional sample.
Tests, each in its own sandboxed process (proxylm/tasks/sandbox):
  humaneval   the original check(candidate), as `eval humaneval`
  mbpp        the task's asserts (test_imports + test_list)
  humaneval+, mbpp+   base_input, then (only if those pass) plus_input, against the canonical solution with
              evalplus's comparison rules and per-input time limits (proxylm/tasks/plus_check.py)
pass@k: unbiased (Chen et al.) over `passed` (plus: base and plus tests), and "pass@k_base" over the base
tests (evalplus's "humaneval (base tests)" line). Output directory as `eval humaneval` (samples.jsonl,
summary.json, config.json; resumable): default RUN/eval/codegen-<benchmark>-<decoding>.
"""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

from proxylm.assemble import load_run
from proxylm.core.errors import UserError
from proxylm.core.records import int_field, read_jsonl_records, str_field
from proxylm.tasks import humaneval as he
from proxylm.tasks.datasets import BENCHMARKS, load_benchmark
from proxylm.tasks.plus_check import MBPP_OUTPUT_NOT_NONE_TASKS
from proxylm.tasks.sandbox import Limits, Program, Sandbox, default_workers, sandbox_facts

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
MBPP_STOPS = tuple(s for s in HUMANEVAL_STOPS if s != "\ndef")
STOPS = {"humaneval": HUMANEVAL_STOPS, "humaneval+": HUMANEVAL_STOPS, "mbpp": MBPP_STOPS, "mbpp+": MBPP_STOPS}
DEFAULT_MAX_NEW_BYTES = 2048     # the reference's new-token limit for raw_sentinel prompts
PLUS_TIMEOUT_S = 60.0            # wall clock per base/plus program (evalplus: EVALPLUS_TIMEOUT_PER_TASK 60 s)
PLUS_MEMORY_MB = 4096            # evalplus's default EVALPLUS_MAX_MEMORY_BYTES
MIN_TIME_LIMIT, TIME_FACTOR = 1.0, 4.0   # evalplus DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR
PLUS_CHECK_SOURCE = (Path(__file__).parent / "plus_check.py").read_text(encoding="utf-8")


# ---- prompts, completions, solutions ----

def prompt_for(task: dict) -> str:
    return task["prompt"].strip() + "\n"


def postprocess(text: str, stops) -> str:
    """Cut at the first stop string; a line indented by exactly 3 spaces gets a 4th (reference post-processing)."""
    text = he.truncate_at_stop(text, stops)
    return "\n".join(" " + line if line.startswith("   ") and not line.startswith("    ") else line
                     for line in text.split("\n"))


def evalplus_sanitizer():
    """evalplus.sanitize.sanitize(code, entrypoint), or None when evalplus (and tree-sitter) is not installed."""
    try:
        from evalplus.sanitize import sanitize
    except ImportError:
        return None
    return sanitize


def make_solution(benchmark: str, code: str, entry_point: str | None, sanitize) -> tuple[str, bool]:
    """(the program to run, whether the sanitizer changed it)."""
    if benchmark == "humaneval" or sanitize is None:
        return code, False
    try:
        new = sanitize(code, entry_point)
    except Exception:   # as the reference: a solution the sanitizer cannot handle runs unchanged
        return code, False
    return new, new != code


# ---- programs ----

def diff_program(task: dict, solution: str, which: str, min_time_limit: float = MIN_TIME_LIMIT,
                 time_factor: float = TIME_FACTOR) -> Program:
    """The solution, then plus_check.py's rules on the task's `which` ("base" | "plus") inputs. The inputs
    travel as a pickle inside the test text (tuples, sets and complex numbers survive; read before the
    solution runs). No context: the tests call the solution's own entry point, never the prompt's stub."""
    blob = base64.b64encode(pickle.dumps(task[f"{which}_input"], protocol=4)).decode("ascii")
    ep = task["entry_point"]
    call = (f"\nimport base64 as _b64, pickle as _pickle\n"
            f"check_inputs(globals()[{ep!r}], dataset={task['dataset']!r}, entry_point={ep!r},\n"
            f"             canonical_src={task['prompt'] + task['canonical_solution']!r},\n"
            f"             inputs=_pickle.loads(_b64.b64decode({blob!r})), atol={float(task['atol'])!r},\n"
            f"             label={which!r}, min_time_limit={min_time_limit!r}, time_factor={time_factor!r})\n")
    return Program(solution, PLUS_CHECK_SOURCE + call, ep,
                   opaque_results=task["dataset"] == "mbpp" and ep in MBPP_OUTPUT_NOT_NONE_TASKS)


def programs_for(task: dict, solution: str) -> list[Program]:
    """The programs a solution must all pass, in order (the later ones run only if the earlier pass)."""
    if task["kind"] == "check":
        return [Program(solution, task["test"] + "\n" + f"check({task['entry_point']})", task["entry_point"],
                        context=task["prompt"])]
    if task["kind"] == "asserts":
        ep = task["entry_point"]
        # not-None tasks return e.g. re.Match objects: they reach the tests as wire.Opaque (not None, equal to nothing)
        return [Program(solution, task["test"], ep, opaque_results=ep in MBPP_OUTPUT_NOT_NONE_TASKS)]
    return [diff_program(task, solution, "base"), diff_program(task, solution, "plus")]


def execute(task: dict, sample: int, completion: str | None, solution: str, sanitized: bool, sandboxes) -> dict:
    """Run a solution's programs (base before plus) and make its samples.jsonl record."""
    sandbox = sandboxes[task["kind"]]
    programs = programs_for(task, solution)
    results = []
    for program in programs:
        results.append(sandbox.run(program))
        if not results[-1].passed:
            break
    last = results[-1]
    return {"task_id": task["task_id"], "sample": sample, "completion": completion, "solution": solution,
            "sanitized": sanitized, "passed": last.passed and len(results) == len(programs),
            "base_passed": results[0].passed, "status": last.status,
            "result": last.status if last.passed else (("plus: " if len(results) == 2 else "") + last.message)}


# ---- completions made elsewhere ----

def read_samples(path, tasks: list[dict]) -> list[tuple[dict, int, str | None, str | None]]:
    """(task, sample, completion, solution) from a JSONL of {task_id, completion | solution[, sample]}."""
    by_id = {t["task_id"]: t for t in tasks}
    counts: dict[str, int] = {}
    items = []
    for where, rec in read_jsonl_records(path):
        if "task_id" not in rec or not ("completion" in rec or "solution" in rec):
            raise UserError(f"{where}: needs task_id and completion (or solution)")
        task_id = str_field(rec, "task_id", where)
        completion = str_field(rec, "completion", where, default=None, nullable=True)
        solution = str_field(rec, "solution", where, default=None, nullable=True)
        if task_id not in by_id:
            continue
        sample = int_field(rec, "sample", where, low=0, default=counts.get(task_id, 0))
        counts[task_id] = max(counts.get(task_id, 0), sample + 1)
        items.append((by_id[task_id], sample, completion, solution))
    return items


# ---- the evaluation ----

def _run_all(jobs, sandboxes, benchmark, sanitize, samples_path, done, workers, progress, desc) -> None:
    """jobs: iterable of (task, sample, completion, solution-or-None), made lazily (a generator may be
    generating them); every record is appended to samples_path as soon as it is scored."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from tqdm import tqdm


    pending = set()

    def harvest(block: bool) -> None:
        finished, _ = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in finished:
            pending.discard(fut)
            rec = fut.result()
            done[he._key(rec)] = rec
            he._append(samples_path, rec)

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for task, sample, completion, solution in tqdm(jobs, desc=desc, disable=not progress, leave=False):
            code = solution if solution is not None else task["prompt"] + (completion or "")
            program, changed = make_solution(benchmark, code, task["entry_point"], sanitize)
            pending.add(pool.submit(execute, task, sample, completion, program, changed, sandboxes))
            if pending:
                harvest(block=False)
        while pending:
            harvest(block=True)


def _generated(run, tasks, n_samples, temperature, top_p, seed, max_new_bytes, stops, done):
    todo = [(task, sample) for task in tasks for sample in range(n_samples) if (task["task_id"], sample) not in done]
    prompts = [prompt_for(task).encode("utf-8") for task, _ in todo]
    seeds = [he.sample_seed(seed, task["task_id"], sample) for task, sample in todo]
    outs = he.generate_in_batches(run, prompts, seeds, tuple(s.encode() for s in stops), max_new_bytes,
                                  temperature, top_p)
    for (task, sample), out in zip(todo, outs):
        completion = postprocess(out.decode("utf-8", "replace"), stops)
        yield task, sample, completion, prompt_for(task) + completion


def _sandboxes(timeout_s: float | None):
    plain = Sandbox(Limits(timeout_s=timeout_s) if timeout_s else Limits())
    plus = Sandbox(Limits(timeout_s=timeout_s or PLUS_TIMEOUT_S, memory_mb=PLUS_MEMORY_MB))
    return {"check": plain, "asserts": plain, "diff": plus}


def evaluate_codegen(benchmark: str, run_dir=None, *, dataset=None, completions_path=None, n_samples: int = 1,
                     temperature: float = 0.0, top_p: float = 1.0, limit: int | None = None, out=None,
                     workers: int | None = None, timeout_s: float | None = None, seed: int = 0,
                     max_new_bytes: int = DEFAULT_MAX_NEW_BYTES, device: str = "cpu", progress: bool = True,
                     run=None, partial: bool = False) -> dict:
    """Score completions (completions_path) or generate them with a run; returns the summary (benchmark,
    pass@1 [pass@10, pass@100], passed, total, missing_count, plus_tests, pass@1_base, ...), also written to
    out/. A completions file lacking some tasks is refused unless `partial` (then they count as failed)."""

    if benchmark not in BENCHMARKS:
        raise UserError(f"--benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    he.check_request(completions_path, run or run_dir, n_samples, temperature)
    tasks, dataset_path = load_benchmark(benchmark, dataset, limit)
    items = read_samples(completions_path, tasks) if completions_path is not None else None
    missing = []
    if items is not None:
        covered = {t["task_id"] for t, *_ in items}
        missing = [t["task_id"] for t in tasks if t["task_id"] not in covered]
        if missing and not partial:
            raise UserError(f"{completions_path} has completions for {len(covered)} of the {len(tasks)} {benchmark} "
                            f"tasks ({len(missing)} missing, e.g. {missing[0]}); pass --partial to score the missing "
                            f"ones as failed, or --limit/--dataset to score fewer tasks")
    sandboxes = _sandboxes(timeout_s)
    sanitize = evalplus_sanitizer() if benchmark != "humaneval" else None
    plus = benchmark.endswith("+")
    if out is None and completions_path is None:
        name = benchmark.replace("+", "plus")
        out = Path(run_dir or run.run_dir) / "eval" / f"codegen-{name}-{he._decoding_name(n_samples, temperature, top_p)}"
    out = Path(out) if out is not None else None
    config = {"benchmark": benchmark, "dataset": str(dataset_path), "limit": limit,
              "source": str(completions_path or run_dir or run.run_dir), "sanitizer": bool(sanitize),
              "timeouts_s": {k: s.limits.timeout_s for k, s in sandboxes.items()}}
    if completions_path is None:
        config.update({"n_samples": n_samples, "temperature": temperature, "top_p": top_p, "seed": seed,
                       "max_new_bytes": max_new_bytes})
    try:
        samples_path = he.open_results_dir(out, config)
    except ValueError as e:
        raise UserError(str(e)) from None
    done = he.read_done(samples_path)
    if items is not None:
        jobs = [(t, s, c, sol) for t, s, c, sol in items if (t["task_id"], s) not in done]
        wanted = {(t["task_id"], s) for t, s, *_ in items}
    else:
        if run is None:
            run = load_run(run_dir, device)
        jobs = _generated(run, tasks, n_samples, temperature, top_p, seed, max_new_bytes, STOPS[benchmark], done)
        wanted = {(t["task_id"], s) for t in tasks for s in range(n_samples)}
    _run_all(jobs, sandboxes, benchmark, sanitize, samples_path, done, workers, progress,
             "executing" if items is not None else "generating")
    records = [rec for key, rec in done.items() if key in wanted]
    records += [{"task_id": t, "sample": 0, "completion": None, "passed": False, "base_passed": False,
                 "status": "missing", "result": "no completion in the file"} for t in missing]
    summary = {"benchmark": benchmark, **he.summarize(records), "plus_tests": plus}
    base = he.summarize([{**r, "passed": r.get("base_passed", r["passed"])} for r in records])
    summary.update({f"{k}_base": v for k, v in base.items() if k.startswith("pass@")})
    summary["passed_base"] = base["passed"]
    summary.update({"missing": missing, "missing_count": len(missing), "dataset": str(dataset_path),
                    "sanitizer": "evalplus" if sanitize else "none",
                    "sanitized_count": sum(bool(r.get("sanitized")) for r in records),
                    "out": str(out) if out else None, "timeouts_s": config["timeouts_s"],
                    "sandbox": sandbox_facts()})
    if completions_path is None:
        summary.update({"run": str(run_dir or run.run_dir), "step": getattr(run, "step", None),
                        "temperature": temperature, "top_p": top_p, "seed": seed, "max_new_bytes": max_new_bytes})
    else:
        summary["completions"] = str(completions_path)
    if out is not None:
        (out / he.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
