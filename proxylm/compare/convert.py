"""The conversion study: is a token model's knowledge worth more to a byte model through proxy compression?

    proxylm compare --preset convert --out runs/convert train.dtype=bfloat16 train.threads=1
    report = convert_study(CONVERT_PRESETS["convert"], Path("runs/convert"))

Per seed: a proxylm `tokens` model trained at the quickstart's budget T (the token model one already owns),
then an added budget X (several points) spent on each arm, all scored on the same held-out raw bytes:

* bytes:        a byte model from scratch at X            (equal added FLOPs)
* bytes+T:      a byte model from scratch at X + T        (equal total FLOPs: the token model's cost counted)
* naive:        the token model converted with raw bytes only (bytes-<size> config), fine-tuned at X
* proxy:        the token model converted with its own tokenizer as the proxy (proxy-convert-<size>), at X
* proxy-paper:  the same conversion with the paper's schedule instead (proxy-bpe-<size>: rate 0.4 -> 0.9 warm-up,
                then 0.9, a raw-byte head), at the X points in `paper_at` only: what the conversion schedule buys

Conversion is `train.init_from=<the tokens run>` (proxylm/convert.py). Arms on one seed share the data order and
the view coin flips, so they are compared on per-seed differences (95% t-intervals). RESULT lines:
convert_gap (proxy - bytes at the largest X), convert_vs_naive (proxy - naive at the largest X),
convert_flops_to_match (the share of the byte model's FLOPs at the largest X that proxy conversion needs to reach
its BPB, from proxy's final BPB over the X points, log-interpolated), each with its interval. The translation
probe (proxylm/eval/translation.py) runs on every proxy-converted model. Re-running resumes or reuses runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from proxylm.compare.runs import check_reusable, run_one
from proxylm.compare.stats import flops_to_reach, mean_interval
from proxylm.core.errors import UserError

ARMS = ("bytes", "bytes+T", "naive", "proxy", "proxy-paper")
PROBE_FILE = "translation_probe.json"


@dataclasses.dataclass
class ConvertPreset:
    size: str  # config suffix: micro | tiny | gpu
    token_budget: float  # the token model's training FLOPs (T)
    added: list[float]  # added budgets X, ascending
    eval_bytes: int
    evals_per_run: int = 4
    seeds: int = 3
    probe_pairs: int = 24  # translation probe pairs per proxy-converted model
    paper_at: list[float] = dataclasses.field(default_factory=list)  # X points that also train proxy-paper


CONVERT_PRESETS = {
    # T = the quickstart's budget; 1 token model + 5 distinct byte budgets + 3 naive + 3 proxy runs per seed: 54e12
    # FLOPs a seed, about 12 minutes a seed on 2 quiet cores at the quickstart's measured speed
    # (+ 6e12 for proxy-paper): 60e12 a seed, about 13 minutes a seed
    "convert": ConvertPreset("tiny", 4.5e12, [1.5e12, 3e12, 6e12], eval_bytes=30_000, seeds=3, paper_at=[6e12]),
    "convert-smoke": ConvertPreset("micro", 2e10, [1e10, 2e10], eval_bytes=4_000, evals_per_run=2, seeds=1,
                                   probe_pairs=4, paper_at=[2e10]),
}


def _flops_name(f: float) -> str:
    return f"{f:.3g}".replace("+", "")


def plan(p: ConvertPreset, out: Path, seeds: int, extra: list[str]) -> list[tuple[str, float, int, object, Path]]:
    """[(arm, added FLOPs X (T for the token model), seed, cfg, run_dir)] in training order, so that an interrupted
    study already has what matters most: first the token model and the core arms (bytes, naive, proxy) at the
    largest X on every seed (the RESULT lines' point), then the core arms at the other X (the curve), then the
    secondary arms (bytes+T, proxy-paper)."""
    from proxylm.config import load_config

    def job(arm, family, budget, x, seed, run_name, more=()):
        settings = [f"train.max_flops={budget}", "train.max_steps=1000000", f"train.seed={seed}",
                    f"eval.max_bytes={p.eval_bytes}", f"train.evals_per_run={p.evals_per_run}",
                    f"data.seed={seed}", f"views.seed={seed}", f"name={run_name}", *more]
        cfg = load_config(f"{family}-{p.size}", settings + list(extra))
        return (arm, x, seed, cfg, out / f"seed{seed}" / run_name)

    def arm_job(arm, x, seed):
        if arm.startswith("bytes"):
            budget = x + p.token_budget if arm == "bytes+T" else x
            return job(arm, "bytes", budget, x, seed, f"bytes-{_flops_name(budget)}")
        family = {"naive": "bytes", "proxy": "proxy-convert", "proxy-paper": "proxy-bpe"}[arm]
        return job(arm, family, x, x, seed, f"{arm}-{_flops_name(x)}",
                   [f"train.init_from={out / f'seed{seed}' / 'tokens'}"])

    top, rest = p.added[-1], p.added[:-1]
    jobs = []
    for seed in range(seeds):
        jobs.append(job("tokens", "tokens", p.token_budget, p.token_budget, seed, "tokens"))
        jobs += [arm_job(arm, top, seed) for arm in ("bytes", "naive", "proxy")]
    jobs += [arm_job(arm, x, seed) for seed in range(seeds) for x in rest for arm in ("bytes", "naive", "proxy")]
    jobs += [arm_job(arm, x, seed) for seed in range(seeds) for x in p.added
             for arm in ("bytes+T", *(["proxy-paper"] if x in p.paper_at else []))]
    return jobs


def convert_study(p: ConvertPreset, out: Path, seeds: int | None = None, extra: list[str] = (), quiet: bool = False,
                  retrain: bool = False, report_only: bool = False) -> dict:
    """Train what is missing (or nothing, `report_only`), probe, report; writes results.md/.json and the PNG."""
    from proxylm.compare.driver import finished_result
    from proxylm.eval.bpb import read_eval_docs

    seeds = seeds or p.seeds
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(p, out, seeds, list(extra))
    for _, _, _, cfg, run_dir in jobs:
        check_reusable(cfg, run_dir, retrain and not report_only)
    cfg0 = jobs[0][3]
    eval_sets = {"val": read_eval_docs(cfg0.data.corpus, "val", cfg0.data, cfg0.eval.max_bytes)}
    results, seen = [], {}
    for arm, x, seed, cfg, run_dir in jobs:
        if run_dir in seen:  # a byte budget shared by two X points (bytes at X == bytes+T at another X)
            r = seen[run_dir]
        else:
            r = finished_result(cfg, run_dir) if report_only else run_one(cfg.name, cfg, run_dir, eval_sets, quiet)
            seen[run_dir] = r
        if r is None:
            continue
        r = {**r, "arm": arm, "added": x, "seed": seed}
        if arm.startswith("proxy"):
            r["probe"] = _probe(run_dir, eval_sets["val"], p.probe_pairs)
        results.append(r)
    if not results:
        raise UserError(f"{out}: no run of the conversion study has finished yet; run without --report-only")
    report = build_report(p, results, seeds)
    report["planned_runs"], report["finished_runs"] = len(jobs), len(results)
    report["partial"] = len(results) < len(jobs)
    (out / "results.md").write_text(markdown(report))
    report["plots"] = [str(plot(report, out / "convert_curve.png"))]
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _probe(run_dir: Path, docs: list[bytes], pairs: int) -> dict:
    """The translation probe of a proxy-converted model (cached beside the run)."""
    from proxylm.assemble import load_run
    from proxylm.eval.translation import translation_probe

    path = run_dir / PROBE_FILE
    if path.exists():
        return json.loads(path.read_text())
    run = load_run(run_dir)
    # 64-byte pieces (the probe's default) where a pair of them fits the window; smaller in small windows
    r = translation_probe(run, docs, limit=pairs, piece_bytes=max(8, min(64, run.cfg.data.seq_len // 3)))
    path.write_text(json.dumps(r, indent=2) + "\n")
    return r


# ---- statistics -----------------------------------------------------------------------------------------------
def _by(results: list[dict]) -> dict[tuple[str, float], dict[int, dict]]:
    g: dict = {}
    for r in results:
        g.setdefault((r["arm"], r["added"]), {})[r["seed"]] = r
    return g


def _paired(g, a: str, b: str, x: float) -> dict | None:
    ra, rb = g.get((a, x), {}), g.get((b, x), {})
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    diffs = [ra[s]["bpb"]["val"] - rb[s]["bpb"]["val"] for s in seeds]
    m, lo, hi = mean_interval(diffs)
    verdict = ("one seed: cannot tell" if len(diffs) < 2 else "within noise" if lo <= 0 <= hi
               else "better" if m < 0 else "worse")
    return {"a": a, "b": b, "added": x, "seeds": seeds, "diffs": diffs, "mean": m, "low": lo, "high": hi,
            "verdict": verdict}


def flops_to_match(g, xs: list[float]) -> dict | None:
    """Per seed: added FLOPs proxy conversion needs (its final BPB over the X points, log-interpolated) to reach
    the from-scratch byte model's BPB at the largest X, over that X. `reached` false: a lower bound (proxy never
    got there); `early` true: an upper bound (proxy at the smallest X was already better)."""
    x_top = xs[-1]
    per_seed = []
    for s in sorted(g.get(("bytes", x_top), {})):
        pts = [(x, g[("proxy", x)][s]["bpb"]["val"]) for x in xs if s in g.get(("proxy", x), {})]
        if len(pts) < len(xs):
            continue
        target = g[("bytes", x_top)][s]["bpb"]["val"]
        needed = flops_to_reach(pts, target)
        per_seed.append({"seed": s, "ratio": (needed if needed is not None else x_top) / x_top,
                         "reached": needed is not None, "early": pts[0][1] <= target})
    if not per_seed:
        return None
    m, lo, hi = mean_interval([math.log(p["ratio"]) for p in per_seed])
    return {"ratio": math.exp(m), "low": math.exp(lo) if lo > -math.inf else 0.0,
            "high": math.exp(hi) if hi < math.inf else math.inf, "reached": all(p["reached"] for p in per_seed),
            "early": any(p["early"] for p in per_seed), "per_seed": per_seed, "added": x_top}


def build_report(p: ConvertPreset, results: list[dict], seeds: int) -> dict:
    g = _by(results)
    xs = [x for x in p.added if any((a, x) in g for a in ARMS)]
    table = []
    for x in xs:
        for arm in ARMS:
            runs = g.get((arm, x), {})
            if runs:
                v = [runs[s]["bpb"]["val"] for s in sorted(runs)]
                table.append({"arm": arm, "added": x, "flops": statistics.mean(r["flops"] for r in runs.values()),
                              "bpb": statistics.mean(v), "spread": (max(v) - min(v)) / 2, "per_seed": v,
                              "seeds": sorted(runs)})
    tokens = g.get(("tokens", p.token_budget), {})
    pairs = [d for x in xs for d in (_paired(g, "proxy", "bytes", x), _paired(g, "proxy", "bytes+T", x),
                                     _paired(g, "proxy", "naive", x), _paired(g, "naive", "bytes", x),
                                     _paired(g, "proxy", "proxy-paper", x)) if d]
    complete = [x for x in xs if _paired(g, "proxy", "bytes", x) and _paired(g, "proxy", "naive", x)]
    top = complete[-1] if complete else None
    probes = [{"arm": r["arm"], "added": r["added"], "seed": r["seed"], **r["probe"]} for r in results if r.get("probe")]
    return {"preset": dataclasses.asdict(p), "seeds": seeds, "table": table, "pairs": pairs, "runs": results,
            "token_model": {"bpb": [tokens[s]["bpb"]["val"] for s in sorted(tokens)],
                            "flops": [tokens[s]["flops"] for s in sorted(tokens)]},
            "convert_gap": _paired(g, "proxy", "bytes", top) if top else None,
            "convert_vs_naive": _paired(g, "proxy", "naive", top) if top else None,
            "convert_flops_to_match": flops_to_match(g, xs[:xs.index(top) + 1]) if top else None,
            "probes": probes}


def _interval(d: dict) -> str:
    if math.isinf(d["low"]) or math.isinf(d["high"]):
        return f"{len(d['seeds'])} seed(s): no interval"
    return f"95% interval {d['low']:+.4f} .. {d['high']:+.4f}, {len(d['seeds'])} seeds"


def result_lines(report: dict) -> list[str]:
    lines = []
    for key in ("convert_gap", "convert_vs_naive"):
        d = report[key]
        if d:
            lines.append(f"RESULT {key} {d['mean']:.4f} ({_interval(d)}; added {d['added']:.3g} FLOPs; {d['verdict']})")
    m = report["convert_flops_to_match"]
    if m:
        bound = "" if m["reached"] and not m["early"] else (" (a lower bound: not reached)" if not m["reached"]
                                                           else " (an upper bound: reached at the smallest X)")
        iv = ("no interval" if m["high"] == math.inf or len(m["per_seed"]) < 2
              else f"95% interval {m['low']:.3f} .. {m['high']:.3f}")
        lines.append(f"RESULT convert_flops_to_match {m['ratio']:.4f} ({iv}, {len(m['per_seed'])} seed(s); of the byte "
                     f"model's {m['added']:.3g} FLOPs{bound})")
    return lines


def markdown(report: dict) -> str:
    p = report["preset"]
    tok = report["token_model"]
    lines = [f"# Conversion study ({p['size']} backbone, token model at {p['token_budget']:.3g} FLOPs, "
             f"{report['seeds']} seed(s))", ""]
    if tok["bpb"]:
        lines += [f"Token model (the start): val BPB {statistics.mean(tok['bpb']):.4f} (per seed "
                  f"{', '.join(f'{v:.4f}' for v in tok['bpb'])})", ""]
    lines += ["| added FLOPs X | arm | FLOPs trained | val BPB (mean ± half-range) | per seed |", "|---|---|---|---|---|"]
    for row in report["table"]:
        lines.append(f"| {row['added']:.3g} | {row['arm']} | {row['flops']:.3g} | {row['bpb']:.4f} ± "
                     f"{row['spread']:.4f} | {', '.join(f'{v:.4f}' for v in row['per_seed'])} |")
    lines += ["", "Paired differences (BPB, negative: the first is better):", ""]
    for d in report["pairs"]:
        lines.append(f"- X={d['added']:.3g}: {d['a']} - {d['b']} = {d['mean']:+.4f} ({_interval(d)}; {d['verdict']}; "
                     f"per seed {', '.join(f'{v:+.4f}' for v in d['diffs'])})")
    if report["probes"]:
        lines += ["", "Translation probe on the proxy-converted models (held-out pairs, bits per raw byte):", "",
                  "| arm | X | seed | raw alone | raw given compressed | compressed -> raw exact | raw -> compressed exact |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["probes"]:
            lines.append(f"| {r['arm']} | {r['added']:.3g} | {r['seed']} | {r['bpb_raw_alone']:.4f} | "
                         f"{r['bpb_raw_given_compressed']:.4f} | {r['exact_match_compressed_to_raw']:.1%} | "
                         f"{r['exact_match_raw_to_compressed']:.1%} |")
    lines += [""] + result_lines(report)
    if report.get("partial"):
        lines += ["", f"Partial: {report['finished_runs']} of {report['planned_runs']} planned runs finished."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """BPB against added FLOPs per arm (mean over seeds, bars: the seeds' range); the token model's BPB dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in ARMS:
        rows = [r for r in report["table"] if r["arm"] == arm]
        if rows:
            xs = [r["added"] for r in rows]
            ys = [r["bpb"] for r in rows]
            err = [[r["bpb"] - min(r["per_seed"]) for r in rows], [max(r["per_seed"]) - r["bpb"] for r in rows]]
            label = {"bytes+T": "bytes from scratch at X + token model FLOPs", "bytes": "bytes from scratch at X",
                     "naive": "naive conversion (raw bytes only)", "proxy": "proxy conversion",
                     "proxy-paper": "proxy conversion, the paper's schedule"}[arm]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    if report["token_model"]["bpb"]:
        ax.axhline(statistics.mean(report["token_model"]["bpb"]), ls=":", c="gray", label="token model (start)")
    ax.set_xscale("log")
    ax.set_xlabel("added training FLOPs X")
    ax.set_ylabel("validation raw-byte BPB")
    ax.set_title(f"Converting a token model ({report['preset']['size']}; up to {report['seeds']} seeds a point)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
