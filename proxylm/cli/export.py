"""`proxylm export RUN --out DIR`: a transformers-loadable checkpoint (LlamaForCausalLM + byte tokenizer).

    proxylm export runs/proxy-bpe-tiny --out exports/proxy-bpe-tiny --dtype bfloat16
"""

from __future__ import annotations

from proxylm.core.io import print_json


def cmd_export(args) -> int:
    from proxylm.export import export_run  # torch: imported by the command, not by `--help`

    summary = export_run(args.run, args.out, dtype=args.dtype, force=args.force)
    if args.json:
        print_json(summary)
    else:
        bpb = f", val bpb {summary['val_bpb']:.4f}" if summary["val_bpb"] is not None else ""
        print(f"exported {summary['run']} (step {summary['step']}, {summary['params']} parameters, "
              f"{summary['dtype']}{bpb}) to {summary['out']}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="write a transformers-loadable checkpoint (Llama + byte tokenizer)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16 (proxylm/export.py DTYPES)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_export, command="export")
