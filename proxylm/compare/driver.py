"""The comparison itself: every model of a preset at every size and seed, checked, trained, scored, reported.

    report = compare(PRESETS["smoke"], Path("runs/cmp"), seeds=2)

Order: seed-major (all sizes and models of seed 0, then seed 1, ...), so an interrupted study already has
a complete first seed to report; re-running resumes (finished models are reused when their settings are
the same, unfinished ones resume from their checkpoints). Every run directory is checked against its
requested settings before any training starts (runs.check_reusable).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from proxylm.compare import stats
from proxylm.compare.figures import write_html, write_plots
from proxylm.compare.report import write_markdown
from proxylm.compare.presets import MODELS, REFERENCE, Preset, Size, model_config
from proxylm.compare.runs import (RESULT_FILE, check_reusable, fingerprint, non_embedding_params, run_one,
                                  same_settings)
from proxylm.core.errors import UserError

PROXY_FAMILIES = ("proxy-bpe", "proxy-bpe-tuned")
RESULT_NAMES = {"proxy-bpe": "proxy_gap_trend", "proxy-bpe-tuned": "proxy_gap_trend_tuned"}
UNIGRAM_SAMPLE_BYTES = 10_000_000  # the unigram reference's training text: a sample spread over the train split


def run_dir_for(out: Path, preset: Preset, size: Size, model: str, seed: int) -> Path:
    base = out / size.name if preset.scaling else out
    return base / (model if seed == 0 else f"{model}-seed{seed}")


def plan(preset: Preset, out: Path, seeds: int, corpus: str | None, extra: list[str]):
    """[(size, model, seed, cfg, run_dir)] in training order (seed-major)."""
    return [(size, model, seed, model_config(model, preset, size, seed, corpus, list(extra)),
             run_dir_for(out, preset, size, model, seed))
            for seed in range(seeds) for size in preset.sizes for model in preset.models]


def finished_result(cfg, run_dir: Path) -> dict | None:
    """The saved result of a model finished with cfg's settings, or None."""
    done = run_dir / RESULT_FILE
    if not done.exists() or not same_settings(cfg, run_dir):
        return None
    return {**json.loads(done.read_text()), "fingerprint": fingerprint(cfg)}


def compare(preset: Preset, out: Path, corpus: str | None = None, eval_corpus: str | None = None,
            seeds: int | None = None, extra: list[str] = (), quiet: bool = False, retrain: bool = False,
            report_only: bool = False) -> dict:
    """Train what is missing and report. `report_only`: train nothing, report the models finished so far
    (the report says how many of the planned runs that is: `partial`)."""
    from proxylm.eval.bpb import read_eval_docs, unigram_bpb

    if report_only and not seeds:  # every seed on disk, not the preset's default count
        seeds = max(preset.seeds, seeds_on_disk(out, preset))
    seeds = seeds or preset.seeds
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(preset, out, seeds, corpus, extra)
    for _, _, _, cfg, run_dir in jobs:  # settings first: refuse before any training
        check_reusable(cfg, run_dir, retrain and not report_only)
    any_cfg = jobs[0][3]
    # the bytes the trainer's final eval scores (assemble.ValidationBPB.final: eval.final_max_bytes, or the periodic
    # evals' eval.max_bytes when that is no smaller; the presets set both)
    e = any_cfg.eval
    bound = e.max_bytes if e.final_max_bytes and e.max_bytes and e.final_max_bytes <= e.max_bytes else e.final_max_bytes
    eval_sets = {"val": read_eval_docs(any_cfg.data.corpus, "val", any_cfg.data, bound)}
    train_sample = read_eval_docs(any_cfg.data.corpus, "train", any_cfg.data, UNIGRAM_SAMPLE_BYTES)
    unigram = unigram_bpb(train_sample, eval_sets["val"])
    if eval_corpus:
        eval_sets["extra"] = read_eval_docs(eval_corpus, "all", any_cfg.data, any_cfg.eval.max_bytes)
    results = []
    for size, model, seed, cfg, run_dir in jobs:
        r = finished_result(cfg, run_dir) if report_only else run_one(model, cfg, run_dir, eval_sets, quiet)
        if r is None:
            continue
        r.update({"seed": seed, "size": size.name if preset.scaling else ""})
        results.append(r)
    if not results:
        raise UserError(f"{out}: no model of preset {preset.models} has finished yet; run without --report-only")
    report = build_report(preset, results, eval_sets, unigram, seeds)
    report["planned_runs"], report["finished_runs"] = len(jobs), len(results)
    report["partial"] = len(results) < len(jobs)
    report["val_scope"] = val_scope(any_cfg, eval_sets["val"])
    if preset.analysis == "bridges":  # compare/bridges.py: gaps per size, the translation probe, parameters
        from proxylm.compare import bridges
        report["bridges"] = bridges.analyse(preset, results, eval_sets["val"])
    write_markdown(report, out / "results.md")
    plots = write_plots(report, out)
    report["plots"] = [str(p) for p in plots]
    report["html"] = str(write_html(report, out / "results.md", plots, out / "results.html"))
    (out / "results.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def seeds_on_disk(out: Path, preset: Preset) -> int:
    """1 + the highest seed with a finished result under `out` (run dirs MODEL and MODEL-seedN), 0 if none."""
    found = 0
    for size in preset.sizes:
        base = out / size.name if preset.scaling else out
        for model in preset.models:
            for d in [base / model, *base.glob(f"{model}-seed*")]:
                tail = d.name[len(model):]
                if (d / RESULT_FILE).exists() and (tail == "" or tail[len("-seed"):].isdigit()):
                    found = max(found, 1 + (int(tail[len("-seed"):]) if tail else 0))
    return found


def val_scope(cfg, docs: list[bytes]) -> str:
    """Which validation bytes the table's val BPB covers, in words (the bound included)."""
    from proxylm.data.corpus import open_corpus
    from proxylm.startup import validation_facts

    facts = validation_facts(open_corpus(cfg.data.corpus, cfg.data))
    n = sum(map(len, docs))
    split = (f"{'about ' if not facts['exact'] else ''}{facts['bytes']:,}-byte" if facts["bytes"] >= 0 else "")
    bound = cfg.eval.final_max_bytes
    return (f"BPB val covers {n:,} raw bytes ({len(docs)} documents or pieces) sampled over the {split} val split "
            f"({facts['how']}), the same bytes for every model; bound eval.final_max_bytes={bound} "
            f"(eval.max_bytes={cfg.eval.max_bytes}); `proxylm eval bpb RUN --split val` scores the whole split")


def _json_default(x):
    return None if isinstance(x, float) and math.isinf(x) else str(x)


def _ablations(results: list[dict], models: list[str], size: str, references: dict | None = None) -> list[dict]:
    out = []
    for m in models:
        ref = (references or {}).get(m, REFERENCE.get(m))
        if ref in models:
            d = stats.paired_difference(results, m, ref, size)
            if d:
                out.append({**d, "size": size})
    return out


def build_report(preset: Preset, results: list[dict], eval_sets: dict, unigram: float, seeds: int) -> dict:
    sizes = [s.name if preset.scaling else "" for s in preset.sizes]
    tables = {s: stats.aggregate(results, s) for s in sizes}
    top = [s for s in sizes if tables[s]][-1]  # the largest size with a finished model
    head = stats.headline(results, top)
    report = {"preset": dataclasses.asdict(preset), "seeds": seeds,
              "eval_sets": {k: sum(map(len, v)) for k, v in eval_sets.items()},
              "table": tables[top], "runs": results, "unigram_bpb_val": unigram,
              "unigram_sample_bytes": UNIGRAM_SAMPLE_BYTES,
              "ablations": [a for s in sizes for a in _ablations(results, preset.models, s, preset.references)],
              "headline": head,
              "bytes_flops_to_match_proxy": head["ratio"] if head else None,
              "bytes_reached_proxy_bpb": head["reached"] if head else None,
              # the byte baseline beat proxy-BPE's final BPB already at its first evaluation: the ratio is a bound
              "bytes_flops_to_match_proxy_is_upper_bound": head["early"] if head else None}
    if preset.scaling:
        report["tables"] = tables
        report["scaling"] = scaling_analysis(preset, results)
    return report


def scaling_analysis(preset: Preset, results: list[dict]) -> dict:
    """Per family: (FLOPs, final BPB) points of every size and seed and their power-law fit; per proxy
    family and size: the gap to bytes (per-seed differences); its trend per doubling of model size; the
    extrapolated crossover compute of the fits."""
    g = stats.group(results)
    sizes = []
    for size in preset.sizes:
        cfg = model_config("bytes", preset, size, 0, None, [])
        sizes.append({"name": size.name, "budget_flops": size.budget_flops,
                      "non_embedding_params": non_embedding_params(cfg)})
    points, fits = {}, {}
    for fam in preset.models:
        pts = [(r["flops"], r["bpb"]["val"]) for s in sizes for r in g.get((s["name"], fam), {}).values()]
        points[fam] = pts
        n_sizes = sum(1 for s in sizes if g.get((s["name"], fam)))  # one size: every point at one budget, no curve
        fit = stats.fit_power_law(*zip(*pts)) if len(pts) >= 3 and n_sizes >= 2 else None
        fits[fam] = {**fit, "points": len(pts)} if fit else None
    gaps, trends, crossovers, text = {}, {}, {}, {}
    largest = max((p[0] for pts in points.values() for p in pts), default=0.0)
    for fam in (f for f in PROXY_FAMILIES if f in preset.models and "bytes" in preset.models):
        per_size = []
        for s in sizes:
            d = stats.paired_difference(results, fam, "bytes", s["name"])
            per_size.append(None if d is None else {"mean": d["mean"], "n": len(d["diffs"]),
                                                    "std": statistics.stdev(d["diffs"]) if len(d["diffs"]) > 1 else 0.0,
                                                    "diffs": d["diffs"]})
        gaps[fam] = per_size
        xs = [s["non_embedding_params"] for s, gp in zip(sizes, per_size) if gp for _ in gp["diffs"]]
        ys = [v for gp in per_size if gp for v in gp["diffs"]]
        trends[fam] = stats.gap_trend(xs, ys)
        cross = stats.crossover(fits[fam], fits["bytes"], largest) if fits.get(fam) and fits.get("bytes") else None
        crossovers[fam] = cross
        text[fam] = (_crossover_text(trends[fam], cross, largest) if fits.get(fam) and fits.get("bytes")
                     else "No fit yet: too few finished points for an extrapolation.")
    return {"sizes": sizes, "points": points, "fits": fits, "gaps": gaps, "trends": trends,
            "crossover_flops": crossovers, "crossover_text": text}


def _crossover_text(trend: dict | None, cross: float | None, largest: float) -> str:
    if cross is not None:
        return (f"The fitted curves cross at {cross:.3g} FLOPs ({cross / largest:.3g}x the largest budget here); "
                "an extrapolation, not a measurement.")
    line = ""
    if trend and trend["zero_at_params"]:
        line = f" The gap's line would reach 0 at {trend['zero_at_params']:.3g} non-embedding parameters."
    return "No crossover in reach of the fit: the fitted curves do not meet below 1e26 FLOPs." + line


def result_lines(report: dict) -> list[str]:
    """The RESULT lines a comparison prints."""
    lines = []
    if report["bytes_flops_to_match_proxy"] is not None:
        lines.append(f"RESULT bytes_flops_to_match_proxy {report['bytes_flops_to_match_proxy']:.4f}")
    if report.get("bridges"):
        from proxylm.compare import bridges
        lines += bridges.result_lines(report["bridges"])
    s = report.get("scaling")
    if s and not report.get("bridges"):  # the bridges preset's two sizes are not a scaling study: no trend lines
        for fam, t in s["trends"].items():
            suffix = RESULT_NAMES[fam][len("proxy_gap_trend"):]
            if t is not None:
                lines.append(f"RESULT {RESULT_NAMES[fam]} {t['slope']:.4f}")
            if not (s["fits"].get(fam) and s["fits"].get("bytes")):
                continue  # no fit, no extrapolation
            cross = s["crossover_flops"][fam]
            lines.append(f"RESULT proxy_crossover_flops{suffix} {cross:.4g}" if cross is not None
                         else f"RESULT proxy_crossover_flops{suffix} inf")
    return lines


__all__ = ["compare", "plan", "build_report", "result_lines", "MODELS"]
