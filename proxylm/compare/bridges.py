"""The `bridges` preset's analysis (issue 22): does a bridge between the views make the proxy pay?

    proxylm compare --preset bridges --out runs/bridges                    # 8 arms x 2 sizes x 3 seeds
    proxylm compare --preset bridges --out runs/bridges --sizes d32x2      # one size
    report["bridges"] = analyse(preset, results, val_docs)                 # compare/driver.py calls it

Per size: every arm against its reference (the byte arm with the same input features; presets.BRIDGE_REFERENCE),
paired per seed; the best proxy arm (lowest mean val BPB) and its gap to its reference (`proxy_bridge_gap`,
mean and 95% interval); where that gap is below 0, `bridge_flops_to_match`: the FLOPs the reference byte arm
needs to reach the proxy arm's final BPB, over the proxy's FLOPs, per seed from the byte arm's eval curve (as
`bytes_flops_to_match_proxy`; a lower bound when the byte arm never gets there). Parameters per arm (all, and
those the input features add) and the translation probe (eval/translation.py) of every proxy arm's seed-0 run,
saved beside the run (`translation.json`) so a re-run does not probe again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from proxylm.compare import stats

PROBE_FILE = "translation.json"
PROBE_PAIRS = 32  # held-out pieces per probe (as BENCHMARKS.md's probe table)
PROBE_BYTES = 64  # bytes per piece (fewer where a pair of them would not fit the run's window)


def _references(preset) -> dict:
    from proxylm.compare.presets import REFERENCE

    return {m: preset.references.get(m, REFERENCE.get(m)) for m in preset.models}


def is_proxy(model: str) -> bool:
    return model.startswith("proxy-")


def parameters(run_dir: Path) -> dict:
    """{"total", "features"}: every parameter of the trained model, and those of the added input features."""
    from proxylm.assemble import load_run

    model = load_run(run_dir).model
    feats = model.features
    return {"total": sum(p.numel() for p in model.parameters()),
            "features": sum(p.numel() for p in feats.parameters()) if feats is not None else 0}


def probe(run_dir: Path, docs: list[bytes]) -> dict:
    """The translation probe of one run, cached in run_dir/translation.json (keyed by the run's step)."""
    from proxylm.assemble import load_run
    from proxylm.eval.translation import translation_probe

    path = Path(run_dir) / PROBE_FILE
    run = load_run(run_dir)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("step") == run.step:
            return saved
    result = translation_probe(run, docs, limit=PROBE_PAIRS, piece_bytes=min(PROBE_BYTES, run.cfg.data.seq_len // 4))
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def flops_to_match(results: list[dict], proxy: str, reference: str, size: str) -> dict | None:
    """Per seed: FLOPs the reference byte arm needs to reach the proxy arm's final BPB / the proxy's FLOPs."""
    g = stats.group(results)
    byte, prox = g.get((size, reference), {}), g.get((size, proxy), {})
    per_seed = []
    for s in sorted(set(byte) & set(prox)):
        needed = stats.flops_to_reach(byte[s]["curve"], prox[s]["bpb"]["val"])
        per_seed.append({"seed": s, "ratio": (needed if needed is not None else byte[s]["flops"]) / prox[s]["flops"],
                         "reached": needed is not None})
    if not per_seed:
        return None
    m, lo, hi = stats.mean_interval([math.log(p["ratio"]) for p in per_seed])
    return {"ratio": math.exp(m), "low": math.exp(lo) if lo > -math.inf else 0.0,
            "high": math.exp(hi) if hi < math.inf else math.inf,
            "lower_bound": not all(p["reached"] for p in per_seed), "per_seed": per_seed}


def analyse(preset, results: list[dict], docs: list[bytes], probe_runs: bool = True) -> dict:
    refs = _references(preset)
    sizes = [s.name for s in preset.sizes]
    out = {"references": refs, "sizes": {}}
    for size in sizes:
        table = stats.aggregate(results, size)
        if not table:
            continue
        arms = {}
        for m in preset.models:
            if m not in table:
                continue
            row = {"bpb": table[m].get("bpb_val"), "seeds": table[m]["seeds"]}
            d = stats.paired_difference(results, m, refs[m], size) if refs.get(m) else None
            row["vs_reference"] = d
            seed0 = next((r for r in results if r["model"] == m and r.get("size", "") == size and r["seed"] == 0), None)
            if seed0 is not None:
                row["params"] = parameters(Path(seed0["run_dir"]))
                if probe_runs and is_proxy(m):
                    row["translation"] = probe(Path(seed0["run_dir"]), docs)
            arms[m] = row
        proxies = [m for m in arms if is_proxy(m) and arms[m]["vs_reference"] and arms[m]["bpb"] is not None]
        entry = {"arms": arms}
        if proxies:
            best = min(proxies, key=lambda m: arms[m]["bpb"])
            gap = arms[best]["vs_reference"]
            entry["best_proxy"] = best
            entry["gap"] = gap
            if gap["mean"] < 0:
                entry["flops_to_match"] = flops_to_match(results, best, gap["reference"], size)
        out["sizes"][size] = entry
    return out


def result_lines(a: dict) -> list[str]:
    lines = []
    for size, e in a["sizes"].items():
        g = e.get("gap")
        if g is None:
            continue
        lines.append(f"RESULT proxy_bridge_gap {g['mean']:.4f}  # {size}: {e['best_proxy']} - {g['reference']}, "
                     f"95% interval [{g['low']:.3f}, {g['high']:.3f}], {len(g['diffs'])} seeds, {g['verdict']}")
        f = e.get("flops_to_match")
        if f is not None:
            bound = " (a lower bound: the byte arm never reached it)" if f["lower_bound"] else ""
            lines.append(f"RESULT bridge_flops_to_match {f['ratio']:.4f}  # {size}{bound}")
    return lines


def _cell(x, fmt="{:+.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown_lines(a: dict) -> list[str]:
    lines = ["", "## Bridges: each arm against the byte arm with the same input features (paired per seed)", ""]
    for size, e in a["sizes"].items():
        header = ("| arm | BPB val | reference | diff | 95% interval | verdict | params | feature params | raw alone "
                  "| raw given comp | comp alone | comp given raw | exact c→r / r→c |")
        lines += [f"### {size}", "", header, "|---" * 13 + "|"]
        for m, row in e["arms"].items():
            d, p, t = row["vs_reference"], row.get("params") or {}, row.get("translation") or {}
            probe_cells = ([f"{t[k]:.3f}" for k in ("bpb_raw_alone", "bpb_raw_given_compressed", "bpb_compressed_alone",
                                                    "bpb_compressed_given_raw")]
                           + [f"{t['exact_match_compressed_to_raw']:.0%} / {t['exact_match_raw_to_compressed']:.0%}"]
                           if t else ["—"] * 5)
            lines.append(" | ".join([f"| {m}", _cell(row["bpb"], "{:.4f}"), d["reference"] if d else "—",
                                     _cell(d["mean"] if d else None), f"[{d['low']:+.3f}, {d['high']:+.3f}]" if d else "—",
                                     d["verdict"] if d else "—", str(p.get("total", "—")), str(p.get("features", "—")),
                                     *probe_cells]) + " |")
        if e.get("gap"):
            g = e["gap"]
            lines += ["", (f"Best proxy arm: {e['best_proxy']}, {g['mean']:+.4f} BPB against {g['reference']} "
                           f"[{g['low']:+.3f}, {g['high']:+.3f}] ({g['verdict']}).")]
        lines.append("")
    return lines
