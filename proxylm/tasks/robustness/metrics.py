"""Robustness metrics: pass@1 under perturbation (nominal, perturbed, robust, drop) and BPB degradation."""

from __future__ import annotations

import math

from .source import FAMILIES, PARTIAL_FAMILIES
from .variants import _prompt_key, nominal_variant

def robustness_metrics(nominal: dict[str, bool], variants: dict[str, list[bool]]) -> dict:
    """nominal: task -> passed on the clean prompt; variants: task -> results of its variants (a variant
    that changed nothing is given the nominal result by the caller). Tasks without variants count as
    robust exactly when nominal passes."""
    tasks = sorted(nominal)
    if not tasks:
        return {"nominal": 0.0, "perturbed": 0.0, "robust": 0.0, "drop": 0.0, "problems": 0, "variants": 0}
    nom = sum(nominal[t] for t in tasks) / len(tasks)
    robust = sum(all(variants.get(t) or [nominal[t]]) for t in tasks) / len(tasks)
    flat = [r for t in tasks for r in variants.get(t, [])]
    perturbed = sum(flat) / len(flat) if flat else nom
    broken = [t for t in tasks if nominal[t] and not all(variants.get(t) or [True])]
    return {"nominal": nom, "perturbed": perturbed, "robust": robust,
            "drop": (nom - robust) / nom if nom > 0 else 0.0,
            "attack_success": len(broken) / max(1, sum(nominal[t] for t in tasks)),
            "problems": len(tasks), "variants": len(flat)}


def _bits(score: dict) -> float:
    return score["nats"] / math.log(2)


def bpb_metrics(pairs: list[tuple[dict, dict]]) -> dict:
    """pairs of (clean, perturbed) evaluate_bpb results (nats, bytes): pooled BPB and ratios."""
    if not pairs:
        return {}
    clean_bits, pert_bits = sum(_bits(c) for c, _ in pairs), sum(_bits(p) for _, p in pairs)
    clean = clean_bits / sum(c["bytes"] for c, _ in pairs)
    pert = pert_bits / sum(p["bytes"] for _, p in pairs)
    return {"bpb_clean": clean, "bpb_perturbed": pert, "bpb_ratio": pert / clean if clean else float("nan"),
            "bits_ratio": pert_bits / clean_bits if clean_bits else float("nan")}


def summarize_robustness(problems: list[dict], variants: list[dict], results: dict | None,
                         bpb: dict | None) -> dict:
    """Per family and per perturbation: pass metrics (when results) and BPB metrics (when bpb)."""
    def nominal(partial: bool) -> dict[str, bool]:
        return {p["task_id"]: bool(results[_prompt_key(nominal_variant(p, partial))]["passed"]) for p in problems}

    groups: dict[tuple[str, str], list[dict]] = {}
    for v in variants:
        groups.setdefault((v["family"], "all"), []).append(v)
        groups.setdefault((v["family"], v["perturbation"]), []).append(v)
    def metrics(usable: list[dict], family: str) -> dict:
        out = {}
        if results is not None:
            nom = nominal(family in PARTIAL_FAMILIES)
            per_task: dict[str, list[bool]] = {}
            for v in usable:   # a variant that changed nothing in the prompt is the nominal prompt
                passed = bool(results[_prompt_key(v)]["passed"]) if v["applied"] else nom[v["base_task_id"]]
                per_task.setdefault(v["base_task_id"], []).append(passed)
            out.update(robustness_metrics(nom, per_task))
        if bpb is not None:
            changed = [v for v in usable if v["text"] != v["clean_text"] and v["text"] in bpb]
            out.update(bpb_metrics([(bpb[v["clean_text"]], bpb[v["text"]]) for v in changed]))
        return out

    rows = []
    for (family, name), vs in sorted(groups.items(), key=lambda kv: (FAMILIES.index(kv[0][0]), kv[0][1] != "all",
                                                                     kv[0][1])):
        usable = [v for v in vs if v["valid"] or not v.get("keeps_valid", True)]
        row = {"family": family, "perturbation": name, "variants": len(vs),
               "applied": sum(v["applied"] for v in vs), "invalid": len(vs) - len(usable), **metrics(usable, family)}
        if name == "all":   # one seed at a time (deterministic perturbations belong to every seed)
            seeds = sorted({v["seed"] for v in usable})
            row["per_seed"] = [{"seed": seed, **metrics([v for v in usable if v["seed"] == seed
                                                         or not v.get("randomized", True)], family)}
                               for seed in seeds]
        rows.append(row)
    return {"rows": rows}


def markdown_table(summary: dict) -> str:
    cols = [("family", "family"), ("perturbation", "perturbation"), ("variants", "variants"),
            ("applied", "applied"), ("nominal", "nominal"), ("perturbed", "perturbed"), ("robust", "robust"),
            ("drop", "drop"), ("bpb_clean", "BPB clean"), ("bpb_perturbed", "BPB pert."),
            ("bpb_ratio", "BPB ratio"), ("bits_ratio", "bits ratio")]
    cols = [(k, h) for k, h in cols if any(k in r for r in summary["rows"])]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in summary["rows"]:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
