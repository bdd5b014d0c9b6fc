"""Torch threads: 1 thread against every core, on a quiet and on a loaded machine, for training, eval and decoding.

    nice python bench/threads.py --steps 5 --rounds 1      # ~1 minute on 2 cores shared with ~2 other jobs
    nice python bench/threads.py --steps 5 --rounds 3      # over 10 minutes when the machine's load is ~10

Loaded means one busy-looping process per core started by this script (at its own niceness) for the loaded
measurements, stopped after them; quiet means none added (the load average at the start is printed: on a
shared machine "quiet" is whatever the others leave). Work, each timed in a round per setting, the settings
alternating within a round, the median over rounds reported:
  train   `--steps` optimizer steps of bytes-micro (2 prediction heads), a fresh trainer per round
  eval    raw-byte BPB of that model on 20 KB of the stdlib validation split
  decode  100 greedy bytes from a 40-byte prompt, plain and speculative (drafts from the heads and the context)
Printed: `RESULT threads_<work>_<load>_<n> <seconds>` for n in 1 and all cores, `RESULT threads_<work>_<load>_ratio
<seconds at all cores / seconds at 1>` (above 1: more threads are slower), and for decoding at the default policy
`RESULT threads_speculative_vs_plain_<load> <speculative seconds / plain seconds>` (below 1: speculative is faster).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from proxylm.assemble import build_trainer
from proxylm.config import load_config
from proxylm.core.threads import default_threads, usable_cores
from proxylm.eval.bpb import evaluate_bpb, read_eval_docs
from proxylm.eval.generate import GenStats, generate

PROMPT = b"def read_config(path):\n    with open(path) as f:\n"


def make_trainer(steps: int):
    cfg = load_config("bytes-micro", [f"train.max_steps={steps}", "model.n_pred_heads=2", "train.eval_every=0",
                                      "train.ckpt_every=0", "train.threads=1"])
    return cfg, build_trainer(cfg, tempfile.mkdtemp(prefix="bench-threads-"), quiet=True)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_start(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def load_stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def measure(args, trainer, cfg, docs, load: str, counts: list[int]) -> dict:
    """{(work, n): [seconds per round]} for n in counts."""
    model, iface = trainer.raw_model.eval(), trainer.evaluator.interface
    seq = cfg.data.seq_len
    times: dict = {}
    for _ in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            model.train()
            steps = lambda: [trainer.train_step() for _ in range(args.steps)]  # noqa: E731
            times.setdefault(("train", n), []).append(timed(steps))
            model.eval()
            times.setdefault(("eval", n), []).append(timed(lambda: evaluate_bpb(model, iface, docs, seq, seq // 2,
                                                                               cfg.eval.batch_size)))
            for name, spec in (("decode", False), ("speculative", None)):
                stats = GenStats()
                times.setdefault((name, n), []).append(timed(lambda: generate(
                    model, iface, PROMPT, max_bytes=100, speculative=spec, stats=stats)))
    out = {k: statistics.median(v) for k, v in times.items()}
    top = counts[-1]
    for work in ("train", "eval", "decode", "speculative"):
        for n in counts:
            print(f"RESULT threads_{work}_{load}_{n} {out[(work, n)]:.3f}", flush=True)
        if len(counts) > 1:
            print(f"RESULT threads_{work}_{load}_ratio {out[(work, top)] / out[(work, 1)]:.2f}", flush=True)
    return out


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop the load processes (finally)
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per timed training round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cores = usable_cores()
    counts = sorted({1, cores})
    print(f"cores {cores}; load average {os.getloadavg()[0]:.2f}; default policy now: {default_threads()} thread(s)",
          flush=True)
    cfg, trainer = make_trainer(10_000)
    torch.set_num_threads(1)
    for _ in range(60):  # a model that predicts something, so the heads' drafts are sometimes kept
        trainer.train_step()
    docs = read_eval_docs("stdlib", "val", cfg.data, 20_000)
    results = {"quiet": measure(args, trainer, cfg, docs, "quiet", counts)}
    procs = load_start(cores)
    try:
        time.sleep(1.0)
        results["loaded"] = measure(args, trainer, cfg, docs, "loaded", counts)
    finally:
        load_stop(procs)
    for load in results:  # speculative against plain at the default policy under each load (1 under load)
        n = 1 if load == "loaded" else default_threads()
        n = n if (("decode", n) in results[load]) else 1
        ratio = results[load][("speculative", n)] / results[load][("decode", n)]
        print(f"RESULT threads_speculative_vs_plain_{load} {ratio:.2f}  (at {n} thread(s))", flush=True)


if __name__ == "__main__":
    main()
