"""The comparison's figures and its self-contained HTML page (written beside results.md).

    paths = write_plots(report, out)        # bpb_vs_flops.png (every seed: mean and band), final_bpb.png (+ scaling)
    write_html(report, out / "results.md", paths, out / "results.html")   # tables + inline base64 PNGs

bpb_vs_flops.png: per model, the mean over seeds of the i-th evaluation (FLOPs and BPB) as a line and the lowest to
highest seed as a band. final_bpb.png: the final BPB per model with its value and seed spread, the unigram byte
model's BPB as a dashed line (a model right of it is worse than predicting byte frequencies), and each model's
verdict against its reference.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from proxylm.compare.report import _log_x, _save, scaling_plots


def seed_curves(results: list[dict], size: str = "") -> dict[str, tuple[list, list, list, list, int]]:
    """{model: (flops, mean BPB, lowest, highest, seeds)} over the evaluations every seed of it has."""
    by_model: dict[str, list] = {}
    for r in results:
        if r.get("curve") and (r.get("size") or "") == size:
            by_model.setdefault(r["model"], []).append(r["curve"])
    out = {}
    for model, curves in by_model.items():
        n = min(map(len, curves))
        xs = [sum(c[i][0] for c in curves) / len(curves) for i in range(n)]
        ys = [[c[i][1] for c in curves] for i in range(n)]
        out[model] = (xs, [sum(y) / len(y) for y in ys], [min(y) for y in ys], [max(y) for y in ys], len(curves))
    return out


def verdicts(report: dict, size: str = "") -> dict[str, str]:
    """{model: "better/worse/within noise than REF"}, plus a flag for models worse than the unigram byte model."""
    out = {a["model"]: f"{a['verdict']} vs {a['reference']}" for a in report.get("ablations", [])
           if (a.get("size") or "") == size}
    unigram = report.get("unigram_bpb_val")
    table = report["tables"][size] if report.get("scaling") else report["table"]
    for model, row in table.items():
        if unigram is not None and row["bpb_val"] > unigram:
            out[model] = (out.get(model, "") + "; " if model in out else "") + "WORSE THAN UNIGRAM"
    return out


def write_plots(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    sizes = [s["name"] for s in report["scaling"]["sizes"]] if report.get("scaling") else [""]
    fig, ax = plt.subplots(figsize=(8, 5))
    i = 0
    for size in sizes:
        for model, (xs, mean, lo, hi, n) in sorted(seed_curves(report["runs"], size).items()):
            color = f"C{i % 10}"
            i += 1
            label = f"{model}{f' {size}' if size else ''} ({n} seed{'s' if n > 1 else ''})"
            ax.plot(xs, mean, marker="o", markersize=3, label=label, color=color)
            if n > 1:
                ax.fill_between(xs, lo, hi, alpha=0.2, color=color, lw=0)
    if report.get("unigram_bpb_val") is not None:
        ax.axhline(report["unigram_bpb_val"], color="k", ls="--", lw=0.8, label="unigram byte model")
    _log_x(ax, "training FLOPs", "validation raw-byte BPB",
           "Validation BPB against training compute (mean over seeds; band: lowest to highest seed)", fontsize=6, ncol=2)
    paths.append(_save(fig, out / "bpb_vs_flops.png", plt))

    table = report["table"]
    top = sizes[-1] if report.get("scaling") else ""
    notes = verdicts(report, top)
    models = sorted(table, key=lambda m: table[m]["bpb_val"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(models) + 1.8))
    values = [table[m]["bpb_val"] for m in models]
    ax.barh(models, values, xerr=[table[m]["bpb_val_std"] for m in models], color="tab:blue", alpha=0.8)
    for y, m in enumerate(models):
        row = table[m]
        text = f" {row['bpb_val']:.3f}" + (f" ± {row['bpb_val_std']:.3f}" if row["seeds"] > 1 else "")
        text += f"  [{notes[m]}]" if m in notes else ""
        ax.text(row["bpb_val"] + row["bpb_val_std"], y, text, va="center", fontsize=7,
                color="tab:red" if "UNIGRAM" in notes.get(m, "") else "black")
    if report.get("unigram_bpb_val") is not None:
        ax.axvline(report["unigram_bpb_val"], color="k", ls="--", lw=0.8,
                   label=f"unigram byte model {report['unigram_bpb_val']:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [report.get("unigram_bpb_val") or 0]) * 1.6)
    ax.set_xlabel("final validation raw-byte BPB (lower is better; bars: stdev over seeds)")
    ax.set_title(f"Final BPB at equal training FLOPs{f' ({top})' if top else ''}")
    paths.append(_save(fig, out / "final_bpb.png", plt))
    if report.get("scaling"):
        paths += scaling_plots(report, out, plt)
    return paths


# ---- results.html -------------------------------------------------------------------------------------------
def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def markdown_to_html(md: str) -> str:
    """The subset results.md uses: pipe tables, ### headings, - items, **bold**, `code`, paragraphs."""
    out, table, items = [], [], []

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(\s*-+\s*\|)+", r.strip())]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.startswith("### "):
            out.append(f"<h3>{_inline(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def write_html(report: dict, markdown: Path, plots: list[Path], path: Path) -> Path:
    """One file with everything: the tables of results.md and the plots as inline base64 PNGs."""
    figures = "\n".join(f'<figure><img alt="{html.escape(p.name)}" src="data:image/png;base64,'
                        f'{base64.b64encode(Path(p).read_bytes()).decode()}"><figcaption>{html.escape(p.name)}'
                        "</figcaption></figure>" for p in plots)
    title = f"proxylm compare: preset {report['preset'].get('size', '')}, {report['seeds']} seed(s)"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
            "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>\n{markdown_to_html(markdown.read_text())}\n{figures}\n</body></html>\n")
    path.write_text(page)
    return path
