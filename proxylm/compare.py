"""The paper's headline as one command: models trained at the same FLOP budget, scored on raw bytes.

    proxylm compare --preset smoke --out runs/compare-smoke            # minutes
    proxylm compare --preset demo --out runs/compare-demo              # ~25 min on 2 quiet CPU cores; --budget-flops for longer
    proxylm compare --preset gpu --out runs/compare-gpu                # one GPU
    proxylm compare --preset demo --models bytes,proxy-bpe --seeds 2 --eval-corpus ~/code --out runs/c

Every model shares one backbone (the preset's size) and one training-FLOP budget, counted exactly as
the trainer counts it (`train.max_flops`). Each is then scored on the same held-out raw bytes
(raw-byte BPB; the token baseline through its tokenizer, over the same bytes), and on a second
corpus with `--eval-corpus`. Writes `results.json`, `results.md` and PNG plots into --out, and prints
`RESULT bytes_flops_to_match_proxy <ratio>`: the FLOPs the byte baseline needs to reach proxy-BPE's
final BPB, over proxy-BPE's FLOPs (below 1: the byte model got there first). An interrupted compare
resumes: finished models are skipped, unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

from proxylm.core.io import atomic_write

# model name -> (config family, overrides). The family's `-<size>` config is the base.
MODELS: dict[str, tuple[str, list[str]]] = {
    "bytes": ("bytes", []),
    "bytes-mbp": ("bytes", ["model.n_pred_heads=8"]),  # the reference's multi-byte prediction baseline
    "tokens": ("tokens", []),
    "proxy-bpe": ("proxy-bpe", []),
    "proxy-bpe-bytes": ("proxy-bpe-bytes", []),
    "proxy-neural": ("proxy-neural", []),
    "proxy-gzip": ("proxy-gzip", []),
    "proxy-bpe-nowarmup": ("proxy-bpe", ["views.schedule.enabled=false"]),
    "proxy-bpe-alwayspair": ("proxy-bpe", ["views.schedule.enabled=false", "views.mode=translation_random"]),
    "proxy-bpe-rate0.5": ("proxy-bpe", ["views.rate=0.5"]),
    "proxy-bpe-rate0.75": ("proxy-bpe", ["views.rate=0.75"]),
    # BPE ids can only share embedding rows with raw bytes when written as bytes: the token-byte
    # proxy with compressed bytes on the raw-byte ids (the reference's "no separate embedding").
    "proxy-bpe-shared-embedding": ("proxy-bpe-bytes", ["views.separate_embedding=false"]),
    # our own idea: the rate decays to 0 over the last 20% of steps, so the model ends on raw bytes
    "proxy-bpe-cooldown": ("proxy-bpe", ["views.schedule.decay_frac=0.2", "views.schedule.final_rate=0.0",
                                         "views.schedule.final_mode=sentinel"]),
}

ALL_MODELS = list(MODELS)


@dataclasses.dataclass
class Preset:
    size: str  # base config suffix: micro | tiny | gpu
    budget_flops: float
    models: list[str]
    eval_bytes: int  # held-out raw bytes scored per model
    evals_per_run: int = 8
    overrides: list[str] = dataclasses.field(default_factory=list)


# Periodic evals are forward passes over eval_bytes (twice over, with stride seq_len/2): keep their
# cost a small fraction of the training budget.
PRESETS = {
    # the README's main job: the headline trio at about 3 minutes each on 2 CPU cores
    "quickstart": Preset("tiny", 6e12, ["bytes", "tokens", "proxy-bpe"], eval_bytes=30_000, evals_per_run=4),
    "smoke": Preset("micro", 1.5e11, ["bytes", "tokens", "proxy-bpe", "proxy-gzip"], eval_bytes=20_000,
                    evals_per_run=4),
    "demo": Preset("tiny", 8e12, ALL_MODELS, eval_bytes=40_000, evals_per_run=6),
    "gpu": Preset("gpu", 3e17, ALL_MODELS, eval_bytes=5_000_000),
}


def model_config(name: str, preset: Preset, seed: int, corpus: str | None, extra: list[str]):
    """The run config of one model: its family's config at the preset's size, at the preset's budget.

    eval.max_bytes is the preset's, so the trainer's periodic evals score the same held-out bytes as
    the final table.
    """
    from proxylm.config import load_config

    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    family, overrides = MODELS[name]
    size, budget, eval_bytes, evals_per_run = preset.size, preset.budget_flops, preset.eval_bytes, preset.evals_per_run
    settings = [f"train.max_flops={budget}", "train.max_steps=1000000", f"train.seed={seed}",
                f"eval.max_bytes={eval_bytes}", f"train.evals_per_run={evals_per_run}",
                f"data.seed={seed}", f"views.seed={seed}", f"name={name}"]
    if corpus:
        settings.append(f"data.corpus={corpus}")
    return load_config(f"{family}-{size}", overrides + settings + list(extra))


def bpb_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(FLOPs, validation BPB) pairs from the periodic evals in metrics.jsonl."""
    points = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "val_bpb" in rec:
                points.append((rec["flops"], rec["val_bpb"]))
    return points


def flops_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """First FLOPs at which the curve reaches `target` BPB, log-linearly interpolated; None if never."""
    prev = None
    for flops, bpb in curve:
        if bpb <= target:
            if prev is None or prev[1] == bpb:
                return flops
            (f0, b0) = prev
            frac = (b0 - target) / (b0 - bpb)
            return math.exp(math.log(f0) + frac * (math.log(flops) - math.log(f0)))
        prev = (flops, bpb)
    return None


def run_one(name: str, cfg, run_dir: Path, eval_sets: dict[str, list[bytes]], quiet: bool) -> dict:
    """Train (or resume, or skip if finished) one model and score it on every eval set."""
    from proxylm.eval.bpb import evaluate_bpb
    from proxylm.assemble import load_run
    from proxylm.train.checkpoint import list_checkpoints
    from proxylm.assemble import build_trainer

    done = run_dir / "compare_result.json"
    if done.exists():
        result = json.loads(done.read_text())
        print(f"[compare] {name}: finished earlier, skipped", file=sys.stderr)
        return result
    print(f"[compare] {name}: training to {cfg.train.max_flops:.3g} FLOPs", file=sys.stderr)
    summary = build_trainer(cfg, run_dir, resume=bool(list_checkpoints(run_dir)), quiet=quiet).fit()
    # "val" is the trainer's own final eval (same documents); other sets are scored here
    scores = {"val": {"bpb": summary["val_bpb"], "bytes": sum(map(len, eval_sets["val"]))}}
    extra_sets = {k: v for k, v in eval_sets.items() if k != "val"}
    if extra_sets:
        run = load_run(run_dir)
        seq_len = cfg.eval.seq_len or cfg.data.seq_len
        for set_name, docs in extra_sets.items():
            r = evaluate_bpb(run.model, run.interface, docs, seq_len, cfg.eval.stride or seq_len // 2,
                             cfg.eval.batch_size)
            scores[set_name] = {"bpb": r["bpb"], "bytes": r["bytes"]}
    result = {"model": name, "run_dir": str(run_dir), "flops": summary["flops"], "steps": summary["steps"],
              "symbols": summary["symbols"], "raw_bytes_seen": summary["raw_bytes"],
              "elapsed_s": summary["elapsed_s"], "budget_flops": cfg.train.max_flops,
              "bpb": {k: v["bpb"] for k, v in scores.items()}, "eval_bytes": {k: v["bytes"] for k, v in scores.items()},
              "curve": bpb_curve(run_dir)}
    atomic_write(done, json.dumps(result, indent=2) + "\n")
    return result


def aggregate(results: list[dict]) -> dict[str, dict]:
    """Per model: mean and spread (stdev over seeds) of each eval set's BPB."""
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    table = {}
    for model, runs in by_model.items():
        row = {"seeds": len(runs), "flops": statistics.mean(r["flops"] for r in runs),
               "budget_flops": runs[0]["budget_flops"], "steps": statistics.mean(r["steps"] for r in runs),
               "raw_bytes_seen": statistics.mean(r["raw_bytes_seen"] for r in runs)}
        for set_name in runs[0]["bpb"]:
            values = [r["bpb"][set_name] for r in runs]
            row[f"bpb_{set_name}"] = statistics.mean(values)
            row[f"bpb_{set_name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table[model] = row
    return table


def headline(results: list[dict]) -> tuple[float, bool] | None:
    """FLOPs the byte baseline needs to reach proxy-BPE's final validation BPB, over proxy-BPE's FLOPs.

    Seed 0 runs. If the byte curve never gets there within its budget the ratio is a lower bound
    (budget / proxy FLOPs), reported with `reached: false`.
    """
    first = {r["model"]: r for r in results if r.get("seed", 0) == 0}
    if "bytes" not in first or "proxy-bpe" not in first:
        return None
    proxy, byte = first["proxy-bpe"], first["bytes"]
    needed = flops_to_reach(byte["curve"], proxy["bpb"]["val"])
    return (needed if needed is not None else byte["flops"]) / proxy["flops"], needed is not None


def write_markdown(table: dict, path: Path, ratio, unigram: float) -> None:
    sets = [k[4:] for k in next(iter(table.values())) if k.startswith("bpb_") and not k.endswith("_std")]
    head = "| model | " + " | ".join(f"BPB {s}" for s in sets) + " | train FLOPs | budget use | steps | raw MB seen |"
    lines = [head, "|" + "---|" * (len(sets) + 5)]
    for model, row in sorted(table.items(), key=lambda kv: kv[1]["bpb_val"]):
        cells = [f"{row[f'bpb_{s}']:.4f}" + (f" ± {row[f'bpb_{s}_std']:.4f}" if row["seeds"] > 1 else "")
                 for s in sets]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {row['flops']:.3g} | "
                     f"{row['flops'] / row['budget_flops']:.1%} | {row['steps']:.0f} | {row['raw_bytes_seen'] / 1e6:.2f} |")
    lines += ["", f"Reference: a unigram byte model (fit on the training split) scores {unigram:.4f} BPB on val."]
    if ratio is not None:
        value, reached = ratio
        lines += ["", f"bytes_flops_to_match_proxy = {value:.3f}" + ("" if reached else
                  " (lower bound: the byte baseline never reached proxy-BPE's final BPB within its budget)")]
    path.write_text("\n".join(lines) + "\n")


def write_plots(results: list[dict], table: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        if r.get("seed", 0) == 0 and r["curve"]:
            xs, ys = zip(*r["curve"])
            ax.plot(xs, ys, marker="o", markersize=3, label=r["model"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation raw-byte BPB")
    ax.set_title("Validation BPB against training compute")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    curve_path = out / "bpb_vs_flops.png"
    fig.tight_layout()
    fig.savefig(curve_path, dpi=120)
    plt.close(fig)

    models = sorted(table, key=lambda m: table[m]["bpb_val"])
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(models) + 1.5))
    ax.barh(models, [table[m]["bpb_val"] for m in models],
            xerr=[table[m]["bpb_val_std"] for m in models], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("final validation raw-byte BPB (lower is better)")
    ax.set_title("Final BPB at equal training FLOPs")
    fig.tight_layout()
    bar_path = out / "final_bpb.png"
    fig.savefig(bar_path, dpi=120)
    plt.close(fig)
    return [curve_path, bar_path]


def compare(preset: Preset, out: Path, corpus: str | None = None, eval_corpus: str | None = None,
            seeds: int = 1, extra: list[str] = (), quiet: bool = False) -> dict:
    from proxylm.eval.bpb import read_eval_docs, unigram_bpb

    out.mkdir(parents=True, exist_ok=True)
    configs = {(m, s): model_config(m, preset, s, corpus, preset.overrides + list(extra))
               for m in preset.models for s in range(seeds)}
    any_cfg = next(iter(configs.values()))
    eval_sets = {"val": read_eval_docs(any_cfg.data.corpus, "val", any_cfg.data, preset.eval_bytes)}
    unigram = unigram_bpb(read_eval_docs(any_cfg.data.corpus, "train", any_cfg.data), eval_sets["val"])
    if eval_corpus:
        eval_sets["extra"] = read_eval_docs(eval_corpus, "all", any_cfg.data, preset.eval_bytes)
    results = []
    for (model, seed), cfg in configs.items():
        run_dir = out / (model if seeds == 1 else f"{model}-seed{seed}")
        r = run_one(model, cfg, run_dir, eval_sets, quiet)
        r["seed"] = seed
        results.append(r)
    table = aggregate(results)
    ratio = headline(results)
    write_markdown(table, out / "results.md", ratio, unigram)
    plots = write_plots(results, table, out)
    report = {"preset": dataclasses.asdict(preset), "eval_sets": {k: sum(map(len, v)) for k, v in eval_sets.items()},
              "table": table, "runs": results, "plots": [str(p) for p in plots],
              "unigram_bpb_val": unigram, "bytes_flops_to_match_proxy": ratio[0] if ratio else None,
              "bytes_reached_proxy_bpb": ratio[1] if ratio else None}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
