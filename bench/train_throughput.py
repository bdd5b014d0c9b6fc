"""Training throughput of proxylm's trainer beside a bare PyTorch loop over the same model and batch.

    .venv/bin/python bench/train_throughput.py [--config proxy-bpe-tiny] [--rounds 5] [--steps 3]

The bare loop is what a user would write by hand: one fixed, pre-built batch, the same Transformer,
forward + loss + backward + AdamW, nothing else. proxylm's step adds the data pipeline (documents
read, views decided and encoded, packed), per-view loss bookkeeping, FLOP counting and gradient
normalisation. The two are measured in alternating rounds in one process (this machine is noisy) and
the ratio of medians is reported:

    RESULT train_vs_bare <proxylm symbols/s / bare symbols/s>
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from proxylm.config import load_config
from proxylm.assemble import build_trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="proxy-bpe-tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per round and side")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    cfg = load_config(args.config, ["train.max_steps=100000", "train.warmup_steps=1"] + args.overrides)
    trainer = build_trainer(cfg, tempfile.mkdtemp(prefix="bench-train-"), quiet=True)
    S = cfg.data.seq_len
    symbols_per_step = cfg.data.batch_size * S * cfg.train.grad_accum

    model, batch = trainer.raw_model, trainer.loader.next_batch(0)
    tokens, doc_ids, positions = batch.tokens, batch.doc_ids, batch.positions
    bare_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def bare_step():
        bare_opt.zero_grad(set_to_none=True)
        for _ in range(cfg.train.grad_accum):
            hidden = model(tokens[:, :S], positions=positions, doc_ids=doc_ids[:, :S])
            out = model.loss(hidden, tokens, doc_ids)
            (out.loss_sum / out.weight_sum).backward()
        bare_opt.step()

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return args.steps * symbols_per_step / (time.perf_counter() - t0)

    timed(bare_step), timed(trainer.train_step)  # warm-up both paths
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(timed(bare_step))
        ours.append(timed(trainer.train_step))
        print(f"round {r}: bare {bare[-1]:.0f} sym/s   proxylm {ours[-1]:.0f} sym/s")
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"config {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{symbols_per_step} symbols/step, torch threads {torch.get_num_threads()}")
    print(f"median bare {statistics.median(bare):.0f} sym/s, proxylm {statistics.median(ours):.0f} sym/s")
    print(f"RESULT train_vs_bare {ratio:.3f}")


if __name__ == "__main__":
    main()
