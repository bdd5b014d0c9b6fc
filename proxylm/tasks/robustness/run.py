"""Running a robustness evaluation: greedy generation + sandboxed execution, BPB of every text, reports."""

from __future__ import annotations

import json
from pathlib import Path

from proxylm.assemble import load_run
from proxylm.eval.bpb import evaluate_bpb
from proxylm.tasks.codegen import generate_and_score
from proxylm.train.config import EvalConfig
from proxylm.tasks.datasets import load_problems
from proxylm.tasks.humaneval import DEFAULT_MAX_NEW_BYTES
from proxylm.tasks.results import ORIGINAL_HUMANEVAL, compute_region, open_results_dir
from proxylm.tasks.sandbox import Limits, Sandbox

from .metrics import _bits, markdown_table, summarize_robustness
from .source import DEFAULT_SEEDS, FAMILIES, PARTIAL_FAMILIES
from .variants import _prompt_key, make_variants, nominal_variant

GENERATIONS_FILE, BPB_FILE = "generations.jsonl", "bpb.jsonl"
SUMMARY_JSON, SUMMARY_MD = "robustness.json", "robustness.md"


def _exec_all(run, variants: list[dict], out: Path | None, sandbox, max_new_bytes: int, workers, progress) -> dict:
    """key -> record for every distinct prompt, greedy; resumable through generations.jsonl."""
    samples_path = out / GENERATIONS_FILE if out else None
    distinct = {}
    for v in variants:
        distinct.setdefault(_prompt_key(v), v)
    # generate_and_score speaks HumanEval problems; the key doubles as task_id, sample 0
    problems = [{"task_id": k, "prompt": v["prompt"], "test": v["test"], "entry_point": v["entry_point"]}
                for k, v in distinct.items()]
    records = generate_and_score(run, problems, sandbox, n_samples=1, temperature=0.0, top_p=1.0,
                                 max_new_bytes=max_new_bytes, samples_path=samples_path, workers=workers,
                                 progress=progress, harness=ORIGINAL_HUMANEVAL)
    return {r["task_id"]: r for r in records}


def _bpb_all(run, texts: list[str], seq_len: int, batch_size: int, device, progress: bool) -> dict:
    """text -> {nats, bytes}, one evaluate_bpb call per distinct text."""
    from tqdm import tqdm

    out = {}
    for text in tqdm(sorted(set(texts)), desc="bpb", disable=not progress, leave=False):
        r = evaluate_bpb(run.model, run.interface, [text.encode("utf-8")], seq_len, EvalConfig().stride_for(seq_len),
                         batch_size, device)
        out[text] = {"nats": r["nats"], "bytes": r["bytes"]}
    return out


def run_robustness(run_dir=None, *, problems_path=None, families=FAMILIES, seeds: int = DEFAULT_SEEDS,
                   limit: int | None = None, execute: bool = True, bpb: bool = True, out=None,
                   workers: int | None = None, timeout_s: float | None = None,
                   max_new_bytes: int | None = None, seq_len: int = 0, batch_size: int = 0, device: str = "cpu", dtype: str = "auto",
                   progress: bool = True, run=None) -> dict:
    """Perturb, generate greedily, execute, measure BPB; returns {"rows": [...], settings...} and writes
    out/robustness.json + out/robustness.md."""

    if not execute and not bpb:
        raise ValueError("nothing to do: both execution and BPB are off")
    problems = load_problems(problems_path, limit)
    variants = make_variants(problems, families, seeds)
    if run is None:
        run = load_run(run_dir, device, dtype, decoding=True)
    out = Path(out) if out else Path(run_dir or run.run_dir) / "eval" / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    results = None
    if execute:
        nominals = [nominal_variant(p, partial) for p in problems
                    for partial in {f in PARTIAL_FAMILIES for f in families}]
        to_run = nominals + [v for v in variants if v["applied"] and v["valid"]]
        limits = Limits(timeout_s=timeout_s) if timeout_s else Limits()
        max_new_bytes = max_new_bytes or DEFAULT_MAX_NEW_BYTES
        # generations are keyed by prompt, so --limit/--seeds/--families may change between reruns; these may not
        open_results_dir(out, {"run": str(run_dir or run.run_dir), "max_new_bytes": max_new_bytes,
                       "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb})
        with compute_region(run):
            results = _exec_all(run, to_run, out, Sandbox(limits), max_new_bytes, workers, progress)
    scores = None
    if bpb:
        cfg = getattr(run, "cfg", None)
        e = getattr(cfg, "eval", None) or EvalConfig()
        seq_len = seq_len or e.window(cfg.data.seq_len)
        batch_size = batch_size or e.batch_size
        texts = [t for v in variants if v["valid"] for t in (v["text"], v["clean_text"])]
        with compute_region(run):
            scores = _bpb_all(run, texts, seq_len, batch_size, device, progress)
        with open(out / BPB_FILE, "w", encoding="utf-8") as f:   # BPB of each perturbed text vs its clean text
            for v in variants:
                if v["valid"] and v["text"] != v["clean_text"]:
                    clean, pert = scores[v["clean_text"]], scores[v["text"]]
                    f.write(json.dumps({"task_id": v["task_id"], "family": v["family"], "perturbation":
                                        v["perturbation"], "seed": v["seed"], "bytes": pert["bytes"],
                                        "bpb": _bits(pert) / pert["bytes"], "clean_bytes": clean["bytes"],
                                        "clean_bpb": _bits(clean) / clean["bytes"]}) + "\n")
    summary = summarize_robustness(problems, variants, results, scores)
    summary.update({"run": str(run_dir or run.run_dir), "step": getattr(run, "step", None), "problems": len(problems),
                    "families": list(families), "seeds": seeds, "executed": execute, "bpb": bpb,
                    "out": str(out)})
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / SUMMARY_MD).write_text(markdown_table(summary))
    return summary
