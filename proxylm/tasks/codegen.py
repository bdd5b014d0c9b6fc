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
tests (evalplus's "humaneval (base tests)" line). Output directory (samples.jsonl, summary.json, config.json;
resumable; proxylm/tasks/results.py): default RUN/eval/codegen-<benchmark>-<decoding>.
`eval humaneval` is this path with `--benchmark humaneval` and the original HumanEval harness's defaults
(`ORIGINAL_HUMANEVAL`: the prompt as it is, no indent fix, 1024 new bytes, RUN/eval/humaneval-<decoding>).
"""

from __future__ import annotations


import base64
import json
import pickle
from pathlib import Path

from proxylm.assemble import load_run
from proxylm.core.errors import UserError
from proxylm.eval.generate import generate_batch
from proxylm.tasks import results
from proxylm.tasks.datasets import BENCHMARKS, PLUS_MEMORY_MB, PLUS_TIMEOUT_S, load_benchmark
from proxylm.tasks.plus_check import MBPP_OUTPUT_NOT_NONE_TASKS
from proxylm.tasks.results import EVALPLUS, HUMANEVAL_STOPS, Harness
from proxylm.tasks.sandbox import Limits, Program, Sandbox, default_workers, sandbox_facts

MBPP_STOPS = tuple(s for s in HUMANEVAL_STOPS if s != "\ndef")
STOPS = {"humaneval": HUMANEVAL_STOPS, "humaneval+": HUMANEVAL_STOPS, "mbpp": MBPP_STOPS, "mbpp+": MBPP_STOPS}
DEFAULT_MAX_NEW_BYTES = EVALPLUS.max_new_bytes
GENERATION_BATCH = 8  # prompts decoded per forward (batched generation equals per-prompt, tested)
MIN_TIME_LIMIT, TIME_FACTOR = 1.0, 4.0   # evalplus DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR
PLUS_CHECK_SOURCE = (Path(__file__).parent / "plus_check.py").read_text(encoding="utf-8")


# ---- prompts, completions, solutions ----

def prompt_for(task: dict, harness: Harness = EVALPLUS) -> str:
    return task["prompt"].strip() + "\n" if harness.strip_prompt else task["prompt"]


def postprocess(text: str, stops, harness: Harness = EVALPLUS) -> str:
    """Cut at the first stop string; a line indented by exactly 3 spaces gets a 4th (reference post-processing)."""
    text = results.truncate_at_stop(text, stops)
    if not harness.fix_indent:
        return text
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
    outcomes = []
    for program in programs:
        outcomes.append(sandbox.run(program))
        if not outcomes[-1].passed:
            break
    last = outcomes[-1]
    return {"task_id": task["task_id"], "sample": sample, "completion": completion, "solution": solution,
            "sanitized": sanitized, "passed": last.passed and len(outcomes) == len(programs),
            "base_passed": outcomes[0].passed, "status": last.status,
            "result": last.status if last.passed else (("plus: " if len(outcomes) == 2 else "") + last.message)}


# ---- generation ----

def generate_in_batches(run, prompts: list[bytes], seeds: list[int], stop, max_bytes: int, temperature: float,
                        top_p: float, batch_size: int = GENERATION_BATCH):
    """Completions of `prompts`, yielded in order, `batch_size` rows per forward (speculative where exact):
    row i equals generate(prompts[i], seed=seeds[i]), and each batch is yielded as soon as it is decoded, so
    the sandbox runs the first completions while the model writes the next."""
    for start in range(0, len(prompts), batch_size):
        yield from generate_batch(run.model, run.interface, prompts[start:start + batch_size],
                                  max_bytes=max_bytes, temperature=temperature, top_p=top_p, stop=stop,
                                  seeds=seeds[start:start + batch_size], batch_size=batch_size)


def generated(run, tasks, n_samples, temperature, top_p, seed, max_new_bytes, stops, done, harness: Harness = EVALPLUS):
    """(task, sample, completion, solution) for every sample not in `done`, made lazily by `run`."""
    todo = [(task, sample) for task in tasks for sample in range(n_samples) if (task["task_id"], sample) not in done]
    prompts = [prompt_for(task, harness).encode("utf-8") for task, _ in todo]
    seeds = [results.sample_seed(seed, task["task_id"], sample) for task, sample in todo]
    outs = generate_in_batches(run, prompts, seeds, tuple(s.encode() for s in stops), max_new_bytes,
                               temperature, top_p)
    for (task, sample), out in zip(todo, outs):
        completion = postprocess(out.decode("utf-8", "replace"), stops, harness)
        yield task, sample, completion, prompt_for(task, harness) + completion


def generate_and_score(run, tasks: list[dict], sandbox, *, n_samples: int = 1, temperature: float = 0.0,
                       top_p: float = 1.0, seed: int = 0, max_new_bytes: int = DEFAULT_MAX_NEW_BYTES,
                       samples_path: Path | None = None, workers: int | None = None, progress: bool = True,
                       harness: Harness = EVALPLUS) -> list[dict]:
    """HumanEval-format tasks (task_id, prompt, test, entry_point) generated with `run` (.model, .interface) and
    executed by `sandbox` while the model keeps generating; every finished sample is appended to samples_path."""
    done = results.read_done(samples_path)
    tasks = [{**t, "kind": "check"} for t in tasks]
    sandboxes = {"check": sandbox}
    jobs = generated(run, tasks, n_samples, temperature, top_p, seed, max_new_bytes, HUMANEVAL_STOPS, done, harness)
    results.run_pipeline(jobs, lambda job: execute(*job, False, sandboxes), samples_path, done,
                         workers or default_workers(), progress, "generating")
    wanted = {(t["task_id"], s) for t in tasks for s in range(n_samples)}
    return [rec for key, rec in done.items() if key in wanted]


# ---- the evaluation ----

def _sandboxes(timeout_s: float | None):
    plain = Sandbox(Limits(timeout_s=timeout_s) if timeout_s else Limits())
    plus = Sandbox(Limits(timeout_s=timeout_s or PLUS_TIMEOUT_S, memory_mb=PLUS_MEMORY_MB))
    return {"check": plain, "asserts": plain, "diff": plus}


def evaluate_codegen(benchmark: str, run_dir=None, *, dataset=None, completions_path=None, n_samples: int = 1,
                     temperature: float = 0.0, top_p: float = 1.0, limit: int | None = None, out=None,
                     workers: int | None = None, timeout_s: float | None = None, seed: int = 0,
                     max_new_bytes: int | None = None, device: str = "cpu", dtype: str = "auto", progress: bool = True,
                     run=None, partial: bool = False, harness: Harness = EVALPLUS) -> dict:
    """Score completions (completions_path) or generate them with a run; returns the summary (benchmark,
    pass@1 [pass@10, pass@100], passed, total, missing_count, plus_tests, pass@1_base, ...), also written to
    out/. A completions file lacking some tasks is refused unless `partial` (then they count as failed).
    max_new_bytes None: the harness's."""

    if benchmark not in BENCHMARKS:
        raise UserError(f"--benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    max_new_bytes = max_new_bytes or harness.max_new_bytes
    results.check_request(completions_path, run or run_dir, n_samples, temperature)
    tasks, dataset_path = load_benchmark(benchmark, dataset, limit)
    items = results.read_completions(completions_path, tasks, solutions=True) if completions_path is not None else None
    missing = []
    if items is not None:
        missing = results.missing_tasks(items, tasks, completions_path, harness.tasks_word.format(benchmark=benchmark),
                                        partial, f"--limit/{harness.dataset_flag}")
    sandboxes = _sandboxes(timeout_s)
    sanitize = evalplus_sanitizer() if benchmark != "humaneval" else None
    plus = benchmark.endswith("+")
    if out is None and completions_path is None:
        name = harness.out_name.format(benchmark=benchmark.replace("+", "plus"),
                                       decoding=results.decoding_name(n_samples, temperature, top_p))
        out = Path(run_dir or run.run_dir) / "eval" / name
    out = Path(out) if out is not None else None
    config = {"benchmark": benchmark, "dataset": str(dataset_path), "limit": limit,
              "source": str(completions_path or run_dir or run.run_dir), "sanitizer": bool(sanitize),
              "timeouts_s": {k: s.limits.timeout_s for k, s in sandboxes.items()}}
    if completions_path is None:
        config.update({"n_samples": n_samples, "temperature": temperature, "top_p": top_p, "seed": seed,
                       "max_new_bytes": max_new_bytes})
    samples_path = results.open_results_dir(out, config)
    done = results.read_done(samples_path)
    if items is not None:
        jobs = [(t, s, c, sol) for t, s, c, sol in items if (t["task_id"], s) not in done]
        wanted = {(t["task_id"], s) for t, s, *_ in items}
    else:
        if run is None:
            run = load_run(run_dir, device, dtype, decoding=True)
        jobs = generated(run, tasks, n_samples, temperature, top_p, seed, max_new_bytes, STOPS[benchmark], done,
                         harness)
        wanted = {(t["task_id"], s) for t in tasks for s in range(n_samples)}

    def score(job) -> dict:
        task, sample, completion, solution = job
        code = solution if solution is not None else task["prompt"] + (completion or "")
        program, changed = make_solution(benchmark, code, task["entry_point"], sanitize)
        return execute(task, sample, completion, program, changed, sandboxes)

    # jobs generate lazily, inside run_pipeline: hold a LoadedRun's mixed-precision region around it
    with results.compute_region(run):
        results.run_pipeline(jobs, score, samples_path, done, workers or default_workers(), progress,
                             "executing" if items is not None else "generating")
    records = [rec for key, rec in done.items() if key in wanted]
    records += [{"task_id": t, "sample": 0, "completion": None, "passed": False, "base_passed": False,
                 "status": "missing", "result": "no completion in the file"} for t in missing]
    summary = {"benchmark": benchmark, **results.summarize(records), "plus_tests": plus}
    base = results.summarize([{**r, "passed": r.get("base_passed", r["passed"])} for r in records])
    summary.update({f"{k}_base": v for k, v in base.items() if k.startswith("pass@")})
    summary["passed_base"] = base["passed"]
    summary.update({"missing": missing, "missing_count": len(missing), "dataset": str(dataset_path),
                    harness.dataset_key: str(dataset_path),
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
        (out / results.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
