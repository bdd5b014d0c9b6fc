"""The neural codec's part of `proxylm codec ...` (wired into proxylm/cli/codec.py with a few lines).

    proxylm codec train neural --corpus stdlib --out runs/codecs/neural-16 --window-bits 16 --steps 2000
    proxylm codec encode --codec runs/codecs/neural-16 --corpus stdlib --split train --out runs/views/neural-16 \\
        [--shard 0/1] [--workers 2] [--threads 1] [--shard-bytes 1000000] [--lanes 512] [--json]
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from proxylm.cli.args import at_least
from proxylm.codecs.options import NeuralOptions
from proxylm.prepare.precomputed import DEFAULT_SHARD_BYTES, EncodeJob, encode_corpus


# ---- train -------------------------------------------------------------------------------------------------
def add_train_args(p) -> None:
    p.add_argument("--window-bits", type=at_least(1), default=None, help="neural: bits per window symbol (default 16)")
    p.add_argument("--steps", type=at_least(1), default=None, help="neural: M1 training steps (default 2000)")


def neural_options(args) -> NeuralOptions:
    """The neural codec's options from the command line (defaults where a flag is not given, so a plain
    `codec train neural` caches where a run's `ensure_codec` looks)."""
    o = NeuralOptions()
    if args.window_bits is not None:
        o = replace(o, window_bits=args.window_bits)
    if args.steps is not None:
        o = replace(o, m1=replace(o.m1, steps=args.steps))
    return o


# ---- encode a whole split into shards -------------------------------------------------------------------------
def add_encode_args(p) -> None:
    """Arguments of `proxylm codec encode` that encode a whole corpus split (with --out)."""
    p.add_argument("--out", default=None, help="encode the corpus split into checksummed shards in this directory")
    p.add_argument("--shard", default="0/1", help="this machine's part i/n of the shards (default 0/1)")
    p.add_argument("--workers", type=at_least(1), default=1, help="encoding processes on this machine (default 1)")
    p.add_argument("--shard-bytes", type=at_least(1), default=DEFAULT_SHARD_BYTES,
                   help=f"raw bytes per shard (default {DEFAULT_SHARD_BYTES})")
    p.add_argument("--lanes", type=at_least(1), default=None, help="neural: segments coded at once (default 512)")
    p.add_argument("--threads", type=at_least(0), default=0,
                   help="torch threads per process (default 0: the cores the load average leaves free, "
                        "cores / workers with workers; see README 'Threads')")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n, got '{text}'") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def cmd_encode_corpus(args) -> int:
    from proxylm.data.config import DataConfig

    i, n = parse_shard(args.shard)
    data_cfg = DataConfig(corpus=args.corpus, glob=args.glob, val_fraction=args.val_fraction,
                          max_doc_bytes=args.max_doc_bytes)
    job = EncodeJob(args.codec, data_cfg, args.split, Path(args.out).expanduser(), i, n, args.workers,
                    args.shard_bytes, args.lanes, threads=args.threads)
    result = encode_corpus(job)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['complete_mine']}/{result['shards_mine']} of this machine's shards complete "
              f"({result['shards_total']} in all), {result['bytes_encoded'] / 1e6:.2f} MB encoded now in "
              f"{result['seconds']:.1f} s ({result['mb_per_s']:.3f} MB/s) -> {result['out']}")
    return 0
