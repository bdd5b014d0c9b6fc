"""`proxylm plan CONFIG [key=value ...] [--gpus N] [--gpu-memory GiB] [--json]`: parameters, FLOPs, memory per
GPU under FSDP2, the largest micro-batch that fits and the step time, before renting a node (proxylm/plan.py).

    proxylm plan proxy-bpe-1.5b --gpus 8 --gpu-memory 80
    proxylm plan proxy-bpe-7b data.batch_size=4 --gpus 8 --gpu-memory 141 --json

A run that cannot fit is refused: exit status 1 and the reason (with --json: the plan with fits=false).
"""

from __future__ import annotations

import sys

from proxylm.cli.args import at_least, in_range

# the planner builds models (torch); these two defaults are restated here so that `--help` imports no torch
# (tests/test_cli_help.py checks they equal proxylm.plan's)
DEFAULT_MFU, H200_PEAK_TFLOPS = 0.4, 989.0


def cmd_plan(args) -> int:
    from proxylm.config import load_config
    from proxylm.core.io import print_json
    from proxylm.plan import format_plan, make_plan

    cfg = load_config(args.config, args.overrides)
    plan = make_plan(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory, mfu=args.mfu,
                     peak_tflops=args.peak_tflops)
    if args.json:
        print_json(plan)
    else:
        print(format_plan(plan))
    if not plan["fits"]:
        print(f"proxylm plan: error: {cfg.name} does not fit: {plan['reason']}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("plan", help="memory, FLOPs and step time of a run on N GPUs, before renting them")
    p.add_argument("config", help="config name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--gpus", type=at_least(1), default=1, help="GPUs (FSDP2 shards over all of them; default 1)")
    p.add_argument("--gpu-memory", type=in_range(1, 1e6), default=80.0, help="GiB per GPU (default 80)")
    p.add_argument("--mfu", type=in_range(0.01, 1.0), default=DEFAULT_MFU,
                   help=f"assumed model FLOPs utilisation for the step time (default {DEFAULT_MFU})")
    p.add_argument("--peak-tflops", type=in_range(1, 1e6), default=H200_PEAK_TFLOPS,
                   help=f"the GPU's dense bf16 peak (default {H200_PEAK_TFLOPS:g}: H100/H200 SXM)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_plan, command="plan")
