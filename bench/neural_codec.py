"""Encode throughput of the batched neural coder beside a plain-Python arithmetic coder over the same M1.

    python bench/neural_codec.py --codec runs/codecs/neural-16      # ~2 min on 1 CPU core
    python bench/neural_codec.py                                    # trains a small M1 first (--train-steps 300)

Both coders use the same exact fixed-point M1 and produce the same symbols (checked here on the baseline's
documents):
  batched:  `NeuralCodec.encode_many`: every ~1 KB segment of every document in its own lane, one M1 call per
            step for all lanes, the coder vectorised over lanes in numpy (coder.encode_segments);
  baseline: `coder.encode_reference`: one document at a time, one byte and one M1 call (batch 1) at a time,
            distributions and intervals with Python integers.
Documents: the stdlib validation split, in order, up to --bytes for the batched coder; --baseline-bytes taken
from the same documents for the baseline (it is ~50x slower). Both run on --threads torch threads (1 by default:
on a shared machine more threads can be far slower). Ends with

    RESULT neural_vs_pure_python <batched bytes/s / baseline bytes/s>
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from proxylm.codecs.base import load_codec
from proxylm.codecs.neural import coder
from proxylm.data.config import DataConfig
from proxylm.data.corpus import open_corpus
from proxylm.prepare.m1 import train_neural_codec

BASELINE_PIECE = 1000  # bytes of each document the baseline encodes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codec", default=None, help="trained neural codec directory (default: train a small one)")
    p.add_argument("--train-steps", type=int, default=300, help="M1 steps when no --codec is given")
    p.add_argument("--bytes", type=int, default=300_000, help="raw bytes for the batched coder")
    p.add_argument("--baseline-bytes", type=int, default=4_000, help="raw bytes for the plain-Python coder")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    corpus = open_corpus("stdlib", DataConfig())
    if args.codec:
        codec = load_codec(args.codec)
    else:
        texts = [corpus.read(r) for r in corpus.documents("train")]
        codec = train_neural_codec(texts, steps=args.train_steps, threads=args.threads)
        codec.save(tempfile.mkdtemp(prefix="neural-bench-"))
    docs, total = [], 0
    for ref in corpus.documents("val"):
        if total >= args.bytes:
            break
        docs.append(corpus.read(ref)[:args.bytes - total])
        total += len(docs[-1])
    pieces = [d[:BASELINE_PIECE] for d in docs][:max(1, args.baseline_bytes // BASELINE_PIECE)]
    codec.encode(pieces[0][:100])  # build M1 outside the timings

    start = time.perf_counter()
    encoded = codec.encode_many(docs)
    batched_s = time.perf_counter() - start
    n_symbols = sum(len(s) for s in encoded)

    start = time.perf_counter()
    reference = [coder.encode_reference(codec.m1, piece, codec.spec) for piece in pieces]
    baseline_s = time.perf_counter() - start
    agree = all(r == s.tolist() for r, s in zip(reference, codec.encode_many(pieces)))

    n_baseline = sum(len(x) for x in pieces)
    batched, baseline = total / batched_s, n_baseline / baseline_s
    print(f"codec: {codec!r}, torch threads {args.threads}")
    print(f"batched coder:     {total} bytes -> {n_symbols} symbols ({total / n_symbols:.3f} bytes/symbol, "
          f"{np.mean(np.concatenate(encoded) < codec.passthrough):.4f} passthrough) in {batched_s:.1f} s: "
          f"{batched / 1e3:.2f} KB/s")
    print(f"plain-Python coder: {n_baseline} bytes in {baseline_s:.1f} s: {baseline / 1e3:.3f} KB/s "
          f"(symbols {'identical to' if agree else 'DIFFERENT from'} the batched coder's)")
    if not agree:
        raise SystemExit("the two coders disagree")
    print(f"RESULT neural_vs_pure_python {batched / baseline:.1f}")


if __name__ == "__main__":
    main()
