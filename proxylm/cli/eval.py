"""Evaluation verbs: `proxylm eval bpb|humaneval|robustness|translation` and `proxylm generate`.

    proxylm eval bpb runs/proxy-bpe-tiny --corpus stdlib --split val --json
    proxylm eval translation runs/compare-demo/proxy-bpe --limit 64
    proxylm generate runs/proxy-bpe-tiny --prompt "def fib(n):" --max-bytes 200
    proxylm generate runs/bytes-mbp --prompt "def fib(n):" --prompt "import os" --no-speculative --json
"""

from __future__ import annotations

import argparse
import os
import sys

from proxylm.cli.args import add_dtype_flag, at_least, in_range, threads_arg


def _check_window_memory(seq_len: int, batch_size: int, vocab_size: int) -> None:
    """Before any reading: refuse a window whose logits alone (batch x seq_len x vocab float32) need more than
    half of this machine's memory (`--seq-len 1000000000` asked for 256 GB after a minute of encoding)."""
    import os

    from proxylm.core.errors import UserError

    need = batch_size * seq_len * vocab_size * 4
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have // 2:
        raise UserError(f"--seq-len {seq_len} with --batch-size {batch_size}: the logits alone need "
                        f"{need / 2**30:.1f} GiB, over half of this machine's {have / 2**30:.1f} GiB; "
                        f"use a smaller --seq-len or --batch-size")


def cmd_bpb(args) -> int:
    from proxylm.core.io import print_json
    from proxylm.eval.bpb import evaluate_bpb, read_eval_docs
    from proxylm.assemble import load_run
    from proxylm.core.device import pick_device
    from proxylm.core.errors import UserError

    device = pick_device(args.device)
    run = load_run(args.run, device, args.dtype)
    seq_len = args.seq_len or run.cfg.eval.window(run.cfg.data.seq_len)
    if seq_len < 2:
        raise UserError(f"--seq-len {seq_len}: must be >= 2")
    stride = args.stride or run.cfg.eval.stride_for(seq_len)
    if stride > seq_len:
        raise UserError(f"--stride {stride} (or the run's eval.stride): must be <= the window ({seq_len})")
    _check_window_memory(seq_len, args.batch_size, run.interface.rep.vocab_size)
    corpus = args.corpus or run.cfg.data.corpus
    docs = read_eval_docs(corpus, args.split, run.cfg.data, args.max_bytes)
    with run.compute():
        result = evaluate_bpb(run.model, run.interface, docs, seq_len, stride, args.batch_size, device)
    result.update({"run": str(args.run), "step": run.step, "corpus": corpus, "split": args.split, "dtype": run.dtype})
    if args.json:
        print_json(result)
    else:
        print(f"{args.run} (step {run.step}) on {corpus}/{args.split}: {result['bpb']:.4f} bits per byte "
              f"over {result['bytes']} bytes ({result['documents']} documents)")
    return 0


def cmd_translation(args) -> int:
    from proxylm.assemble import load_run
    from proxylm.core.device import pick_device
    from proxylm.core.errors import UserError
    from proxylm.core.io import print_json
    from proxylm.eval.bpb import read_eval_docs
    from proxylm.eval.translation import check_translatable, format_result, translation_probe

    if args.limit < 1 or args.piece_bytes < 0:
        raise UserError(f"--limit must be >= 1 and --piece-bytes >= 0 (got {args.limit}, {args.piece_bytes})")
    device = pick_device(args.device)
    run = load_run(args.run, device, args.dtype)
    check_translatable(run)  # before reading any text
    docs = read_eval_docs(args.corpus or run.cfg.data.corpus, args.split, run.cfg.data, args.max_bytes)
    with run.compute():
        result = translation_probe(run, docs, args.limit, args.piece_bytes, greedy=not args.no_greedy, device=device)
    result.update({"corpus": args.corpus or run.cfg.data.corpus, "split": args.split, "dtype": run.dtype})
    if args.json:
        print_json(result)
    else:
        print(format_result(result))
    return 0


def shell_bytes(text: str) -> bytes:
    """The bytes the shell passed: argv is decoded with surrogateescape, so invalid UTF-8 comes back intact."""
    return os.fsencode(text)


def check_generation_room(run, prompt: bytes, max_bytes: int, flag: str = "--max-bytes") -> None:
    """Refuse an output budget the context cannot hold, instead of silently cutting the prompt to its last ids."""
    from proxylm.core.errors import UserError

    context = run.model.cfg.max_seq_len
    n_prompt = len(run.interface.prompt_ids(prompt))
    if n_prompt + max_bytes > context:
        room = context - n_prompt
        hint = f"use {flag} <= {room}" if room >= 1 else "shorten the prompt"
        raise UserError(f"{flag} {max_bytes}: the prompt takes {n_prompt} of the model's {context} positions "
                        f"(model.max_seq_len), leaving {max(room, 0)} for output; {hint}")


def cmd_generate(args) -> int:
    """One --prompt streams its completion; several are decoded together (--batch-size rows per forward,
    prompt i seeded with --seed + i) and printed in order, each as `=== prompt i ===` + prompt + completion."""
    import time

    from proxylm.assemble import load_run
    from proxylm.core.device import pick_device
    from proxylm.core.io import print_json
    from proxylm.eval.generate import GenStats, generate, generate_batch

    run = load_run(args.run, pick_device(args.device), args.dtype, decoding=True)
    prompts = [shell_bytes(p) for p in args.prompt]
    for prompt in prompts:
        check_generation_room(run, prompt, args.max_bytes)
    stream = not args.json and len(prompts) == 1
    stats = GenStats()
    kw = dict(max_bytes=args.max_bytes, temperature=args.temperature, top_p=args.top_p,
              stop=tuple(shell_bytes(s) for s in args.stop), speculative=args.speculative, stats=stats)
    if args.lookup is not None:  # else the library's default (LOOKUP_DRAFTS)
        kw["lookup"] = args.lookup

    def on_bytes(b: bytes) -> None:
        sys.stdout.buffer.write(b)
        sys.stdout.flush()

    t0 = time.perf_counter()
    with run.compute():
        if len(prompts) == 1:
            if stream:
                sys.stdout.buffer.write(prompts[0])
            outs = [generate(run.model, run.interface, prompts[0], seed=args.seed,
                             on_bytes=on_bytes if stream else None, **kw)]
        else:
            outs = generate_batch(run.model, run.interface, prompts, seed=args.seed, batch_size=args.batch_size,
                                  **kw)
    seconds = time.perf_counter() - t0
    if stats.fallback:  # asked for with --speculative but impossible: say so, never silently
        also = f"; drafts copied from the context are (--lookup {stats.lookup})" if stats.lookup else ""
        print(f"note: speculative decoding with the heads' drafts not used: {stats.fallback}{also}", file=sys.stderr)
    info = {"speculative": stats.speculative, "speculative_fallback": stats.fallback or None,
            "forwards": stats.forwards, "kept_per_step": round(stats.as_dict()["kept_per_step"], 3),
            "dtype": run.dtype, "lookup": stats.lookup, "lookup_steps": stats.lookup_steps, "lookup_accepted": stats.lookup_accepted,
            "seconds": round(seconds, 3), "bytes_per_s": round(sum(map(len, outs)) / max(seconds, 1e-9), 1)}
    results = [{"prompt": p.decode("utf-8", "replace"), "completion": o.decode("utf-8", "replace"),
                "completion_bytes": len(o)} for p, o in zip(prompts, outs)]
    if args.json:
        print_json({**results[0], **info} if len(results) == 1 else {"results": results, **info})
    elif stream:
        print()
    else:
        for i, (p, o) in enumerate(zip(prompts, outs)):
            sys.stdout.buffer.write(f"=== prompt {i} ===\n".encode() + p + o + b"\n")
        sys.stdout.flush()
    return 0


def add_commands(sub) -> None:
    from proxylm.eval.settings import LOOKUP_DRAFTS

    ev = sub.add_parser("eval", help="evaluate a run on raw bytes").add_subparsers(dest="eval_command",
                                                                                    required=True)
    p = ev.add_parser("bpb", help="bits per byte on raw text")
    p.add_argument("run")
    p.add_argument("--corpus", help="stdlib | folder | text glob | .jsonl[.gz|.zst] | .parquet | .arrow | saved dataset (see README 'Your data'); default: the run's training corpus")
    p.add_argument("--split", default="val", choices=["train", "val", "all"])
    p.add_argument("--seq-len", type=at_least(0), default=0, help="window (0: the run's eval or training seq_len)")
    p.add_argument("--stride", type=at_least(0), default=0, help="default: the run's eval.stride, else seq_len // 2")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--max-bytes", type=at_least(0, note="0: all"), default=0,
                   help="score at most this many bytes (0: all)")
    p.add_argument("--device", default="auto")
    add_dtype_flag(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    threads_arg(p)
    p.set_defaults(func=cmd_bpb, command="eval bpb")

    from proxylm.cli.tasks import add_eval_commands

    add_eval_commands(ev)

    p = ev.add_parser("translation", help="does a proxy model translate between its views? (held-out pairs)")
    p.add_argument("run")
    p.add_argument("--corpus", help="stdlib | folder | text glob | .jsonl[.gz|.zst] | .parquet | .arrow | saved dataset (see README 'Your data'); default: the run's training corpus")
    p.add_argument("--split", default="val", choices=["train", "val", "all"])
    p.add_argument("--limit", type=int, default=64, help="pairs scored")
    p.add_argument("--piece-bytes", type=int, default=64, help="raw bytes per pair (0: as many as fit one window)")
    p.add_argument("--max-bytes", type=int, default=200_000, help="held-out text read (0: the whole split)")
    p.add_argument("--no-greedy", action="store_true", help="BPB only, no greedy translation")
    p.add_argument("--device", default="auto")
    add_dtype_flag(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    threads_arg(p)
    p.set_defaults(func=cmd_translation, command="eval translation")

    p = sub.add_parser("generate", help="generate raw bytes from a prompt (streams to the terminal)")
    p.add_argument("run")
    p.add_argument("--prompt", required=True, action="append",
                   help="repeatable: several prompts are decoded as a batch")
    p.add_argument("--max-bytes", type=at_least(1), default=256,
                   help="bytes to generate; must leave room for the prompt in the model's context")
    p.add_argument("--temperature", type=at_least(0.0, float), default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=in_range(1e-9, 1.0), default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i")
    p.add_argument("--speculative", action=argparse.BooleanOptionalAction, default=None,
                   help="draft with the model's extra heads and verify in one forward (default: on for greedy "
                        "decoding of a model with extra heads, where it is exact; --speculative also for sampling)")
    p.add_argument("--lookup", type=at_least(0), default=None,
                   help="greedy: at most this many drafts per forward copied from the context where its last ids "
                        f"occurred before (exact, any model; default {LOOKUP_DRAFTS}; 0: off; "
                        "--no-speculative turns it off too)")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="prompts decoded together (several --prompt)")
    p.add_argument("--device", default="auto")
    add_dtype_flag(p, decoding=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    threads_arg(p)
    p.set_defaults(func=cmd_generate)
