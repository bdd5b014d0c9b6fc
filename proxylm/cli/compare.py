"""`proxylm compare`: the compute-matched comparison of byte, token and proxy models.

    proxylm compare --preset quickstart --out runs/quickstart --sample "def fibonacci(n):"
    proxylm compare --preset demo --out runs/compare-demo --seeds 2
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from proxylm.assemble import load_run
from proxylm.compare import MODELS, PRESETS, compare
from proxylm.core.io import print_json
from proxylm.eval.generate import generate


def cmd_compare(args) -> int:
    preset = dataclasses.replace(PRESETS[args.preset])
    if args.models:
        preset.models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in preset.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.budget_flops:
        preset.budget_flops = args.budget_flops
    if args.size:
        preset.size = args.size
    report = compare(preset, Path(args.out), args.corpus, args.eval_corpus, args.seeds, args.overrides, args.quiet)
    print((Path(args.out) / "results.md").read_text())
    if report["bytes_flops_to_match_proxy"] is not None:
        print(f"RESULT bytes_flops_to_match_proxy {report['bytes_flops_to_match_proxy']:.4f}")
    if args.sample:
        sample_from(Path(args.out), report, args.sample, args.sample_bytes)
    if args.json:
        print_json({k: report[k] for k in ("table", "bytes_flops_to_match_proxy", "bytes_reached_proxy_bpb", "plots")})
    return 0


def sample_from(out: Path, report: dict, prompt: str, max_bytes: int) -> None:
    """Greedy completion from the best proxy model (raw bytes in, raw bytes out)."""
    proxies = [m for m in report["table"] if m.startswith("proxy")] or list(report["table"])
    best = min(proxies, key=lambda m: report["table"][m]["bpb_val"])
    run_dir = next(r["run_dir"] for r in report["runs"] if r["model"] == best)
    run = load_run(run_dir)
    print(f"\n--- {best} (val BPB {report['table'][best]['bpb_val']:.4f}), greedy, raw bytes only ---")
    sys.stdout.write(prompt)
    generate(run.model, run.interface, prompt.encode(), max_bytes=max_bytes,
             on_bytes=lambda b: (sys.stdout.write(b.decode("utf-8", "replace")), sys.stdout.flush()))
    print("\n---")


def add_commands(sub) -> None:
    p = sub.add_parser("compare", help="compute-matched comparison of byte, token and proxy models")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out", required=True, help="output directory (re-run to resume)")
    p.add_argument("--corpus", help="training corpus (default: the configs' corpus, stdlib)")
    p.add_argument("--eval-corpus", help="second held-out corpus scored in full (e.g. code never trained on)")
    p.add_argument("--budget-flops", type=float, help="training FLOPs per model (default: the preset's)")
    p.add_argument("--size", help="backbone size: micro | tiny | gpu (default: the preset's)")
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every model")
    p.add_argument("--sample", metavar="PROMPT", help="at the end, a greedy completion from the best proxy model")
    p.add_argument("--sample-bytes", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_compare)
