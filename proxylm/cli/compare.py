"""`proxylm compare`: the compute-matched comparison of byte, token and proxy models.

    proxylm compare --preset quickstart --out runs/quickstart --sample "def fibonacci(n):"
    proxylm compare --preset demo --out runs/compare-demo --seeds 3
    proxylm compare --preset scaling --out runs/scaling
    proxylm compare --preset convert --out runs/convert      # a token model converted to bytes (compare/convert.py)
    proxylm compare --preset demo --out runs/compare-demo train.lr=0.003 --retrain   # settings changed
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from proxylm.compare import MODELS, PRESETS, compare, result_lines
from proxylm.compare.presets import SCALING_SIZES
from proxylm.core.errors import UserError
from proxylm.core.io import print_json
from proxylm.cli.args import threads_arg

SAMPLE_MODELS = ("bytes", "tokens")  # beside the best proxy model


def cmd_convert_study(args) -> int:
    """`--preset convert`: the conversion study (proxylm/compare/convert.py)."""
    from proxylm.compare.convert import CONVERT_PRESETS, convert_study

    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    for flag in ("models", "budget_flops", "size", "sample", "eval_corpus"):
        if getattr(args, flag):
            raise UserError(f"--{flag.replace('_', '-')}: not taken by the conversion study (preset {args.preset}); "
                            "its arms and budgets are in proxylm/compare/convert.py, key=value overrides apply to all")
    out = Path(args.out)
    extra = ([f"data.corpus={args.corpus}"] if args.corpus else []) + list(args.overrides)
    report = convert_study(CONVERT_PRESETS[args.preset], out, args.seeds, extra, args.quiet,
                           retrain=args.retrain, report_only=args.report_only)
    print((out / "results.md").read_text())
    if args.json:
        print_json({k: report[k] for k in ("table", "pairs", "convert_gap", "convert_vs_naive",
                                           "convert_flops_to_match", "probes", "plots", "partial") if k in report})
    return 0


def cmd_compare(args) -> int:
    from proxylm.compare.convert import CONVERT_PRESETS

    if args.preset in CONVERT_PRESETS:
        return cmd_convert_study(args)
    preset = dataclasses.replace(PRESETS[args.preset])
    if args.models:
        preset.models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in preset.models if m not in MODELS]
        if unknown:
            raise UserError(f"--models: unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.budget_flops:
        if preset.scaling:
            raise UserError(f"--budget-flops: preset '{args.preset}' has one budget per size; edit the sizes in "
                            "proxylm/compare/presets.py or use a one-size preset")
        preset.budget_flops = args.budget_flops
    if args.size:
        if preset.scaling:
            raise UserError(f"--size: preset '{args.preset}' trains several sizes; use a one-size preset")
        preset.size = args.size
    if args.sizes:  # a subset of the preset's sizes, or the CPU scaling study's
        names = [n.strip() for n in args.sizes.split(",") if n.strip()]
        known = {s.name: s for s in [*SCALING_SIZES, *preset.scaling]}
        if not preset.scaling or any(n not in known for n in names):
            raise UserError(f"--sizes {args.sizes}: preset '{args.preset}' takes sizes among {', '.join(known)}"
                            if preset.scaling else f"--sizes: preset '{args.preset}' has one size; use --size")
        preset.scaling = [known[n] for n in names]
    out = Path(args.out)
    overrides = list(args.overrides or []) + ([f"train.threads={args.threads}"] if args.threads else [])
    report = compare(preset, out, args.corpus, args.eval_corpus, args.seeds, overrides, args.quiet,
                     retrain=args.retrain, report_only=args.report_only)
    if not args.json:  # --json: one JSON object on stdout and nothing else
        print((out / "results.md").read_text())
        for line in result_lines(report):
            print(line)
    samples = sample_side_by_side(report, args.sample, args.sample_bytes, show=not args.json) if args.sample else None
    if args.json:
        keys = ("table", "bytes_flops_to_match_proxy", "bytes_reached_proxy_bpb", "plots", "seeds", "headline",
                "ablations", "scaling", "bridges", "partial", "planned_runs", "finished_runs", "val_scope", "html",
                "unigram_bpb_val")
        extra = {"results": result_lines(report)}
        if samples is not None:
            extra["samples"] = samples
        print_json({**{k: report[k] for k in keys if k in report}, **extra})
    return 0


def sample_side_by_side(report: dict, prompt: str, max_bytes: int, width: int = 40, show: bool = True) -> dict:
    """Greedy completions (raw bytes in, raw bytes out) of the byte model, the token model and the best
    proxy model (seed 0, the largest size), printed in columns (`show`); returns {model: prompt + completion}."""
    from proxylm.assemble import load_run
    from proxylm.eval.generate import generate

    table = report["table"]
    proxies = [m for m in table if m.startswith("proxy")]
    chosen = [m for m in SAMPLE_MODELS if m in table]
    if proxies:
        chosen.append(min(proxies, key=lambda m: table[m]["bpb_val"]))
    top = report["runs"][-1].get("size", "")
    texts = {}
    for m in chosen:
        run_dir = next(r["run_dir"] for r in report["runs"] if r["model"] == m and r.get("seed", 0) == 0
                       and r.get("size", "") == top)
        run = load_run(run_dir, decoding=True)
        with run.compute():
            out = generate(run.model, run.interface, prompt.encode(), max_bytes=max_bytes)
        texts[m] = (prompt.encode() + out).decode("utf-8", "replace")
    if not show:
        return texts
    columns = []
    for m in chosen:
        lines = [f"{m} (val BPB {table[m]['bpb_val']:.3f})", "-" * width]
        for raw_line in texts[m].expandtabs(4).split("\n"):
            lines += textwrap.wrap(raw_line, width, drop_whitespace=False, replace_whitespace=False) or [""]
        columns.append(lines)
    print(f"\nGreedy completions of {prompt!r} ({max_bytes} bytes, seed 0), side by side:\n")
    for row in range(max(map(len, columns))):
        print(" | ".join((col[row] if row < len(col) else "").ljust(width) for col in columns).rstrip())
    # blank columns are not a display bug: a small model's completion is often whitespace
    print("\nThe completions as written (Python repr, first 70 characters):")
    for m in chosen:
        print(f"  {m:>16}: {texts[m][len(prompt):][:70]!r}")
    print()
    return texts


def add_commands(sub) -> None:
    p = sub.add_parser("compare", help="compute-matched comparison of byte, token and proxy models")
    from proxylm.compare.convert import CONVERT_PRESETS

    p.add_argument("--preset", choices=sorted([*PRESETS, *CONVERT_PRESETS]), default="demo")
    p.add_argument("--out", required=True, help="output directory (re-run to resume)")
    p.add_argument("--corpus", help="training corpus (default: the configs' corpus, stdlib)")
    p.add_argument("--eval-corpus", help="second held-out corpus scored in full (e.g. code never trained on)")
    p.add_argument("--budget-flops", type=float, help="training FLOPs per model (default: the preset's)")
    p.add_argument("--size", help="backbone size: micro | tiny | gpu (default: the preset's)")
    p.add_argument("--sizes", help="sizes of a several-size preset: its own or the scaling study's (e.g. d32x2,tiny)")
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per model (default: the preset's: " +
                   ", ".join(f"{k} {v.seeds}" for k, v in sorted(PRESETS.items())) + ")")
    p.add_argument("--retrain", action="store_true",
                   help="retrain models whose run directory holds a run with other settings (moved aside)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the models finished so far (an interrupted study's partial results), "
                        "every seed found on disk unless --seeds says otherwise")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every model")
    p.add_argument("--sample", metavar="PROMPT", help="at the end, greedy completions of the byte, token and best "
                   "proxy models, side by side")
    p.add_argument("--sample-bytes", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true")
    threads_arg(p)  # also given to every run as train.threads (when > 0; not a result setting)
    p.set_defaults(func=cmd_compare)
