"""Tables and plots of a comparison: `results.md` and PNGs in the output folder.

    write_markdown(report, out / "results.md")
    write_plots(report, out)                 # bpb_vs_flops.png, final_bpb.png (+ scaling_*.png)
"""

from __future__ import annotations

import math
from pathlib import Path


def _mb(x) -> str:
    return "—" if x is None else f"{x / 1e6:.3f}"


def _int(x) -> str:
    return "—" if x is None else f"{x:.0f}"


def _bpb_cell(row: dict, set_name: str) -> str:
    cell = f"{row[f'bpb_{set_name}']:.4f}"
    return cell + (f" ± {row[f'bpb_{set_name}_std']:.4f}" if row["seeds"] > 1 else "")


def model_table(table: dict) -> list[str]:
    """One row per model: BPB (mean ± stdev over seeds) per eval set, compute and the honest accounting:
    view decisions (pieces read), paired pieces, raw-view and compressed-view bytes of the inputs (each
    once; a pair's text is in both columns) and compressed symbols."""
    sets = [k[4:] for k in next(iter(table.values())) if k.startswith("bpb_") and not k.endswith(("_std", "_seeds"))]
    head = ("| model | seeds | " + " | ".join(f"BPB {s}" for s in sets)
            + " | per-seed BPB val | train FLOPs | budget use "
            "| steps | decisions | paired | raw-view MB | compressed-view MB | compressed symbols |")
    lines = [head, "|" + "---|" * (len(sets) + 11)]
    for model, row in sorted(table.items(), key=lambda kv: kv[1]["bpb_val"]):
        per_seed = ", ".join(f"{v:.3f}" for v in row["bpb_val_seeds"])
        lines.append(f"| {model} | {row['seeds']} | " + " | ".join(_bpb_cell(row, s) for s in sets)
                     + f" | {per_seed} | {row['flops']:.3g} | {row['flops'] / row['budget_flops']:.1%} "
                     f"| {row['steps']:.0f} | {_int(row.get('decisions'))} | {_int(row.get('paired_documents'))} "
                     f"| {_mb(row.get('raw_view_bytes'))} | {_mb(row.get('compressed_view_bytes'))} "
                     f"| {_int(row.get('compressed_symbols'))} |")
    return lines


def ablation_table(ablations: list[dict]) -> list[str]:
    if not ablations:
        return []
    lines = ["", "Each model against its reference, on the seeds both have (BPB difference; below 0: better; "
             "95% t-interval of the mean of the per-seed differences):", "",
             "| model | reference | mean difference | 95% interval | per seed | verdict |", "|---|---|---|---|---|---|"]
    for d in ablations:
        interval = "—" if math.isinf(d["low"]) else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
        lines.append(f"| {d['model']} | {d['reference']} | {d['mean']:+.4f} | {interval} | "
                     + ", ".join(f"{x:+.3f}" for x in d["diffs"]) + f" | {d['verdict']} |")
    return lines


def headline_lines(h: dict | None) -> list[str]:
    if not h:
        return []
    def bound(p):
        return " (upper bound)" if p.get("early") else "" if p["reached"] else " (lower bound)"

    seeds = ", ".join(f"{p['ratio']:.3f}{bound(p)}" for p in h["per_seed"])
    bounded = all(p.get("early") or not p["reached"] for p in h["per_seed"])  # no seed has a measured value
    interval = "" if math.isinf(h["high"]) or bounded else f", 95% interval [{h['low']:.3f}, {h['high']:.3f}]"
    text = f"bytes_flops_to_match_proxy = {h['ratio']:.3f}{interval} (per seed: {seeds})"
    if not h["reached"]:
        text += "; a lower bound where the byte baseline never reached proxy-BPE's final BPB within its budget"
    if h.get("early"):
        text += ("; an upper bound where the byte baseline was already better than proxy-BPE's final BPB at its "
                 "first evaluation (the proxy is worth at most this fraction of its compute)")
    return ["", text]


def write_markdown(report: dict, path: Path) -> None:
    lines = []
    if report.get("partial"):
        lines += [f"**Partial**: {report['finished_runs']} of {report['planned_runs']} planned runs have finished; "
                  "re-run the same command without --report-only to complete it (it resumes).", ""]
    scaling = report.get("scaling")
    if scaling:
        for size in scaling["sizes"]:
            if not report["tables"].get(size["name"]):
                lines += [f"### {size['name']}: no model finished yet", ""]
                continue
            lines += [f"### {size['name']} ({size['non_embedding_params'] / 1e6:.3g}M non-embedding parameters, "
                      f"{size['budget_flops']:.3g} FLOPs)", ""]
            lines += model_table(report["tables"][size["name"]])
            lines += ablation_table([a for a in report["ablations"] if a.get("size") == size["name"]])
            lines.append("")
        lines += scaling_lines(scaling)
    else:
        lines += model_table(report["table"])
        lines += ablation_table(report["ablations"])
    sample = report.get("unigram_sample_bytes")
    fit = f"fit on at most {sample / 1e6:g} MB sampled over the training split" if sample else "fit on the training split"
    lines += ["", f"Reference: a unigram byte model ({fit}) scores {report['unigram_bpb_val']:.4f} BPB on val."]
    worse = sorted(m for m, row in report["table"].items() if row["bpb_val"] > report["unigram_bpb_val"])
    if worse:
        lines += ["", f"**Worse than the unigram byte model**: {', '.join(worse)} (it predicts bytes worse than their "
                  "frequencies alone: undertrained at this budget, or broken)."]
    if report.get("val_scope"):
        lines += ["", report["val_scope"] + "."]
    lines += headline_lines(report.get("headline"))
    if report.get("bridges"):
        from proxylm.compare.bridges import markdown_lines
        lines += markdown_lines(report["bridges"])
    lines += code_lines(report["runs"])
    path.write_text("\n".join(lines) + "\n")


def code_lines(runs: list[dict]) -> list[str]:
    """A warning when the results were trained by several versions of proxylm's code (or by one too old to
    say): the numbers may then differ for reasons other than the settings."""
    versions: dict[str, list[str]] = {}
    for r in runs:
        versions.setdefault(r.get("code") or "unrecorded", []).append(f"{r.get('size') or ''}/{r['model']}"
                                                                    f"-seed{r.get('seed', 0)}".lstrip("/"))
    if len(versions) < 2:
        return []
    parts = "; ".join(f"{v}: {len(names)} run(s)" + (f" ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                                                   if len(names) < len(runs) / 2 else "")
                      for v, names in sorted(versions.items(), key=lambda kv: -len(kv[1])))
    return ["", f"**Note**: these results were trained by {len(versions)} versions of proxylm's code ({parts}). "
            "Re-run with --retrain into a new --out to train every model with one version."]


def scaling_lines(s: dict) -> list[str]:
    lines = ["Fits of final val BPB against training FLOPs, per family: BPB = E + A (FLOPs / 1e12)^-alpha", "",
             "| family | E | A | alpha | rmse | points |", "|---|---|---|---|---|---|"]
    for fam, f in s["fits"].items():
        if f:
            lines.append(f"| {fam} | {f['E']:.3f} | {f['A']:.3f} | {f['alpha']:.3f} | {f['rmse']:.4f} "
                         f"| {f['points']} |")
        else:
            lines.append(f"| {fam} | — | — | — | — | too few points |")
    lines += ["", "Proxy minus bytes (final val BPB, mean ± stdev of the per-seed differences):", "",
              "| size | non-embedding params | " + " | ".join(s["gaps"]) + " |", "|---|---|" + "---|" * len(s["gaps"])]
    for i, size in enumerate(s["sizes"]):
        cells = []
        for fam in s["gaps"]:
            g = s["gaps"][fam][i]
            cells.append("—" if g is None else f"{g['mean']:+.3f} ± {g['std']:.3f} ({g['n']} seeds)")
        lines.append(f"| {size['name']} | {size['non_embedding_params'] / 1e6:.3g}M | " + " | ".join(cells) + " |")
    lines.append("")
    for fam, t in s["trends"].items():
        if t is None:
            lines.append(f"- {fam}: too few sizes finished for a trend.")
            continue
        se = "" if math.isinf(t["slope_se"]) else f" ± {t['slope_se']:.3f}"
        lines.append(f"- {fam}: the gap changes by {t['slope']:+.4f}{se} BPB per doubling of model size. "
                     + s["crossover_text"][fam])
    return lines


def _log_x(ax, xlabel: str, ylabel: str, title: str, **legend) -> None:
    """Label a plot over a log x axis, with a legend and a light grid."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(**{"fontsize": 8, **legend})
    ax.grid(alpha=0.3)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, paths = report["runs"], []
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        if r.get("seed", 0) == 0 and r["curve"]:
            xs, ys = zip(*r["curve"])
            label = r["model"] + (f" {r['size']}" if r.get("size") and report.get("scaling") else "")
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    _log_x(ax, "training FLOPs", "validation raw-byte BPB", "Validation BPB against training compute (seed 0)",
           fontsize=6, ncol=2)
    paths.append(_save(fig, out / "bpb_vs_flops.png", plt))

    table = report["table"]
    models = sorted(table, key=lambda m: table[m]["bpb_val"])
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(models) + 1.5))
    ax.barh(models, [table[m]["bpb_val"] for m in models], xerr=[table[m]["bpb_val_std"] for m in models],
            color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("final validation raw-byte BPB (lower is better; bars: stdev over seeds)")
    ax.set_title("Final BPB at equal training FLOPs")
    paths.append(_save(fig, out / "final_bpb.png", plt))
    if report.get("scaling"):
        paths += scaling_plots(report, out, plt)
    return paths


def scaling_plots(report: dict, out: Path, plt) -> list[Path]:
    import numpy as np

    from proxylm.compare.stats import power_law

    s = report["scaling"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5))
    for i, (fam, pts) in enumerate(s["points"].items()):
        color = f"C{i}"
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, color=color, s=14, label=fam)
        fit = s["fits"].get(fam)
        if fit:
            grid = np.geomspace(min(xs) / 2, max(xs) * 30, 100)
            ax.plot(grid, power_law(fit, grid), color=color, lw=1)
    _log_x(ax, "training FLOPs", "final validation raw-byte BPB",
           "Final BPB per size and seed, saturating power-law fits")
    params = [sz["non_embedding_params"] for sz in s["sizes"]]
    for i, (fam, gaps) in enumerate(s["gaps"].items()):
        pts = [(p, g["mean"], g["std"]) for p, g in zip(params, gaps) if g is not None]
        if pts:
            xs, ys, es = zip(*pts)
            bx.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{fam} − bytes", color=f"C{i + 2}")
    bx.axhline(0, color="k", lw=0.8)
    _log_x(bx, "non-embedding parameters", "BPB gap (proxy − bytes; below 0: the proxy wins)",
           "The proxy's gap against model size")
    return [_save(fig, out / "scaling.png", plt)]
