"""Numbers of a comparison: per-model mean and spread over seeds, paired per-seed differences, the
headline ratio with an interval, and the saturating power-law fit of the scaling study.

    table = aggregate(results)                          # {model: {"bpb_val", "bpb_val_std", ...}}
    d = paired_difference(results, "proxy-bpe-rate0.5", "proxy-bpe")   # per seed, mean, 95% interval, verdict
    fit = fit_power_law(flops, bpb)                     # bpb = E + A * (flops / 1e12) ** -alpha
    slope = gap_trend(params, gaps)                     # change in gap per doubling of model size

The noise of a proxy run is mostly its own view coin flips (which documents are raw), and variants run
on the same seed share them: so an ablation is judged on the per-seed differences to its reference, not
on the two models' separate spreads. "within noise" means the 95% t-interval of the mean difference
contains 0; with one seed nothing can be judged.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

# two-sided 95% Student t quantiles by degrees of freedom (scipy-free)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    if df < 1:
        return math.inf
    return _T95.get(df) or _T95[max(k for k in _T95 if k <= df)] if df <= 30 else 1.96


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean (infinite with one value)."""
    m = statistics.mean(values)
    if len(values) < 2:
        return m, -math.inf, math.inf
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


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


def group(results: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """{(size, model): {seed: result}}."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for r in results:
        out.setdefault((r.get("size", ""), r["model"]), {})[r.get("seed", 0)] = r
    return out


def _mean(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.mean(values) if values else None


def aggregate(results: list[dict], size: str | None = None) -> dict[str, dict]:
    """Per model (of one size): mean and spread (stdev over seeds) of each eval set's BPB, and the
    accounting (means over seeds)."""
    table = {}
    for (sz, model), by_seed in group(results).items():
        if size is not None and sz != size:
            continue
        runs = [by_seed[s] for s in sorted(by_seed)]
        row = {"seeds": len(runs), "flops": _mean(runs, "flops"), "budget_flops": runs[0]["budget_flops"],
               "steps": _mean(runs, "steps"), "raw_bytes_seen": _mean(runs, "raw_bytes_seen")}
        for key in ("raw_view_bytes", "compressed_view_bytes", "compressed_symbols", "decisions",
                    "paired_documents", "non_embedding_params"):
            row[key] = _mean(runs, key)
        for set_name in runs[0]["bpb"]:
            values = [r["bpb"][set_name] for r in runs]
            row[f"bpb_{set_name}"] = statistics.mean(values)
            row[f"bpb_{set_name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"bpb_{set_name}_seeds"] = values
        table[model] = row
    return table


def paired_difference(results: list[dict], model: str, reference: str, size: str = "",
                      set_name: str = "val") -> dict | None:
    """BPB(model) - BPB(reference) on each seed both have; mean, 95% interval and a verdict."""
    g = group(results)
    a, b = g.get((size, model), {}), g.get((size, reference), {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s]["bpb"][set_name] - b[s]["bpb"][set_name] for s in seeds]
    m, lo, hi = mean_interval(diffs)
    if len(diffs) < 2:
        verdict = "one seed: cannot tell"
    elif lo <= 0 <= hi:
        verdict = "within noise"
    else:
        verdict = "better" if m < 0 else "worse"
    return {"model": model, "reference": reference, "seeds": seeds, "diffs": diffs, "mean": m, "low": lo,
            "high": hi, "verdict": verdict}


def headline(results: list[dict], size: str = "") -> dict | None:
    """Per seed: FLOPs the byte baseline needs to reach proxy-BPE's final validation BPB, over proxy-BPE's
    FLOPs (a lower bound, `reached` false, when the byte curve never gets there; an upper bound, `early`
    true, when the byte model was already as good at its first evaluation: the curve has no earlier point
    to interpolate from). Mean, 95% interval of the mean of log ratios (the ratio is multiplicative), and
    the per-seed values."""
    g = group(results)
    byte, proxy = g.get((size, "bytes"), {}), g.get((size, "proxy-bpe"), {})
    per_seed = []
    for s in sorted(set(byte) & set(proxy)):
        curve, target = byte[s]["curve"], proxy[s]["bpb"]["val"]
        needed = flops_to_reach(curve, target)
        ratio = (needed if needed is not None else byte[s]["flops"]) / proxy[s]["flops"]
        per_seed.append({"seed": s, "ratio": ratio, "reached": needed is not None,
                         "early": bool(curve) and curve[0][1] <= target})
    if not per_seed:
        return None
    logs = [math.log(p["ratio"]) for p in per_seed]
    m, lo, hi = mean_interval(logs)
    return {"ratio": math.exp(m), "low": math.exp(lo) if lo > -math.inf else 0.0,
            "high": math.exp(hi) if hi < math.inf else math.inf,
            "reached": all(p["reached"] for p in per_seed), "early": any(p["early"] for p in per_seed),
            "per_seed": per_seed}


# ---- scaling: saturating power law ----------------------------------------------------------------------
FLOPS_UNIT = 1e12


def fit_power_law(flops, bpb, alphas=None) -> dict | None:
    """Least-squares fit of bpb = E + A * (flops / 1e12) ** -alpha with E >= 0, A >= 0: for each alpha on a
    grid the problem is linear in (E, A); the best alpha is refined on a finer grid around it. Needs >= 3
    points at >= 2 distinct FLOPs. Returns {"E", "A", "alpha", "rmse"}."""
    x = np.asarray(flops, dtype=np.float64) / FLOPS_UNIT
    y = np.asarray(bpb, dtype=np.float64)
    if len(x) < 3 or len(np.unique(x)) < 2:
        return None

    def solve(alpha):
        z = x ** -alpha
        M = np.stack([np.ones_like(z), z], axis=1)
        (E, A), *_ = np.linalg.lstsq(M, y, rcond=None)
        if E < 0:  # clamp at the boundary: fit A alone through the origin
            E, A = 0.0, float(z @ y / (z @ z))
        if A < 0:
            E, A = float(y.mean()), 0.0
        rss = float(((E + A * z - y) ** 2).sum())
        return rss, float(E), float(A)

    grid = np.geomspace(0.01, 3.0, 200) if alphas is None else np.asarray(alphas)
    best = min((solve(a) + (a,) for a in grid), key=lambda t: t[0])
    fine = np.linspace(best[3] * 0.95, best[3] * 1.05, 41)
    rss, E, A, alpha = min((solve(a) + (a,) for a in fine), key=lambda t: t[0])
    return {"E": E, "A": A, "alpha": float(alpha), "rmse": math.sqrt(rss / len(x))}


def power_law(fit: dict, flops) -> np.ndarray:
    return fit["E"] + fit["A"] * (np.asarray(flops, dtype=np.float64) / FLOPS_UNIT) ** -fit["alpha"]


def crossover(fit_proxy: dict, fit_bytes: dict, start: float, stop: float = 1e26) -> float | None:
    """The first FLOPs in [start, stop] at which the proxy's fitted curve is at or below the byte curve
    (log-spaced scan, then bisection); None when it never is in that range."""
    grid = np.geomspace(start, stop, 400)
    gap = power_law(fit_proxy, grid) - power_law(fit_bytes, grid)
    below = np.flatnonzero(gap <= 0)
    if not len(below):
        return None
    k = int(below[0])
    if k == 0:
        return float(grid[0])
    lo, hi = math.log(grid[k - 1]), math.log(grid[k])
    for _ in range(60):
        mid = (lo + hi) / 2
        g = power_law(fit_proxy, [math.exp(mid)])[0] - power_law(fit_bytes, [math.exp(mid)])[0]
        lo, hi = (lo, mid) if g <= 0 else (mid, hi)
    return math.exp(hi)


def gap_trend(params, gaps) -> dict | None:
    """Least-squares line gap = a + slope * log2(params): `slope` is the change in the proxy-minus-bytes gap
    per doubling of model size; with the slope's standard error and, where the line reaches 0 (slope of
    the opposite sign to the gap), the size at which it would."""
    x = np.log2(np.asarray(params, dtype=np.float64))
    y = np.asarray(gaps, dtype=np.float64)
    if len(np.unique(x)) < 2:
        return None
    slope, a = np.polyfit(x, y, 1)
    resid = y - (a + slope * x)
    se = math.inf
    if len(x) > 2:
        se = math.sqrt(float((resid ** 2).sum()) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    zero = None
    if slope != 0 and (-a / slope) > x.max():
        zero = float(2 ** (-a / slope))
    return {"slope": float(slope), "slope_se": se, "intercept": float(a), "zero_at_params": zero}
