"""`proxylm train CONFIG [key=value ...] [--out RUN_DIR]` and `proxylm resume RUN_DIR`.

    proxylm train proxy-bpe-tiny                         # shipped config by name, run dir runs/proxy-bpe-tiny
    proxylm train my.yaml train.max_steps=20 --out runs/x
    proxylm resume runs/x                                # continues exactly where the last checkpoint was
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from proxylm.cli.args import at_least, threads_arg
from proxylm.core import rundir


def _sample(run_dir: Path, prompt: str, max_bytes: int) -> None:
    from proxylm.cli.eval import check_generation_room, shell_bytes
    from proxylm.eval.generate import generate
    from proxylm.assemble import load_run

    run = load_run(run_dir)
    data = shell_bytes(prompt)
    check_generation_room(run, data, max_bytes, "--sample-bytes")
    print("\n--- sample (greedy, raw bytes in, raw bytes out) ---", flush=True)
    sys.stdout.buffer.write(data)
    generate(run.model, run.interface, data, max_bytes=max_bytes,
             on_bytes=lambda b: (sys.stdout.buffer.write(b), sys.stdout.flush()))
    print("\n---")


def _report(summary: dict, args) -> None:
    from proxylm.core.io import print_json

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if args.json:
        print_json(summary)
    else:
        print(f"run: {summary['run_dir']}\nsteps: {summary['steps']}  FLOPs: {summary['flops']:.3e}  "
              f"raw bytes seen: {summary['raw_bytes']}\nvalidation raw-byte BPB: {summary['val_bpb']:.4f}"
              + (f" over {summary['val_covers']}" if summary.get("val_covers") else ""))
    if args.sample:
        _sample(Path(summary["run_dir"]), args.sample, args.sample_bytes)


def print_config(cfg) -> int:
    import yaml

    from proxylm.config import to_dict

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def with_threads(args) -> list[str]:
    """The overrides, with `--threads N` (N > 0) as train.threads=N."""
    overrides = list(args.overrides or [])
    return overrides + [f"train.threads={args.threads}"] if getattr(args, "threads", 0) else overrides


def clear_run_dir(run_dir: Path) -> None:
    """--overwrite: remove everything but the lock this process holds (removing the lock file would let a
    second process lock a fresh one)."""
    from proxylm.core.rundir import LOCK

    for p in run_dir.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def cmd_train(args) -> int:
    from contextlib import nullcontext

    from proxylm.assemble import build_trainer, check_run_dir_path
    from proxylm.core.rundir import RunLock, remove_if_unused
    from proxylm.config import load_config
    from proxylm.train.checkpoint import list_checkpoints

    cfg = load_config(args.config, with_threads(args))
    if args.print_config:
        return print_config(cfg)
    run_dir = Path(args.out or Path("runs") / cfg.name)
    check_run_dir_path(run_dir)
    created = not run_dir.exists()
    was_empty = created or (run_dir.is_dir() and not any(run_dir.iterdir()))   # an empty --out: left empty on error
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 locks and clears for all ranks
    with RunLock(run_dir) if main_rank else nullcontext():  # before looking inside: another process may write it
        try:
            if list_checkpoints(run_dir):
                if not args.overwrite:
                    raise ValueError(f"{run_dir} already holds a run; `proxylm resume {run_dir}` continues it, "
                                     "--overwrite starts again, --out picks another directory")
                if main_rank:
                    clear_run_dir(run_dir)
            elif main_rank and ((run_dir / rundir.CONFIG).exists() or (run_dir / rundir.METRICS).exists()):
                # a run stopped before its first checkpoint: nothing to resume; its metrics would mix in
                print(f"{run_dir} holds a run with no checkpoint (stopped before its first save); starting it "
                      "again from scratch", file=sys.stderr)
                clear_run_dir(run_dir)
            trainer = build_trainer(cfg, run_dir, quiet=args.quiet)
        except BaseException:
            if was_empty and main_rank:
                remove_if_unused(run_dir, keep_dir=not created)
            raise
        summary = trainer.fit()
        trainer.run_lock.release()
    _report(summary, args)
    return 0


def cmd_resume(args) -> int:
    from proxylm.config import load_config
    from proxylm.assemble import build_trainer

    run_dir = Path(args.run_dir)
    if not rundir.is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {rundir.CONFIG})")
    cfg = load_config(str(run_dir / rundir.CONFIG), with_threads(args))
    if args.print_config:
        return print_config(cfg)
    trainer = build_trainer(cfg, run_dir, resume=True, quiet=args.quiet, reset_optimizer=args.reset_optimizer,
                            accept_changed_data=args.accept_changed_data)
    summary = trainer.fit()
    trainer.run_lock.release()
    _report(summary, args)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object with the run summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sample", metavar="PROMPT", help="after training, print a greedy completion of PROMPT")
    p.add_argument("--sample-bytes", type=at_least(1), default=200)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults, YAML and overrides merged) as YAML and stop: nothing runs")
    threads_arg(p)  # also given to the run as train.threads (when > 0)


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (shipped name or YAML path)")
    p.add_argument("config", help="shipped config name (e.g. proxy-bpe-tiny) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.max_steps=20 model.dim=128")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a run from its latest checkpoint",
                       description="Continue a run exactly where its latest good checkpoint left off (same data order "
                                   "and losses as an uninterrupted run).")
    p.add_argument("run_dir", help="the run directory (holds config.yaml and checkpoints/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. train.max_steps=400 to extend a finished run (only train.*, eval.*, "
                        "model.attention, model.ce_chunk may change)")
    p.add_argument("--reset-optimizer", action="store_true",
                   help="resume from the newest good weights with a fresh optimizer (when the optimizer state "
                        "is missing or damaged; otherwise resume falls back to the previous good checkpoint)")
    p.add_argument("--accept-changed-data", action="store_true",
                   help="resume although corpus files changed since the checkpoint (size or modification time); "
                        "the changed units are named in the log and recorded in resume.jsonl")
    _common(p)
    p.set_defaults(func=cmd_resume)
