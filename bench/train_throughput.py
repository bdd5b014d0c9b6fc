"""Training throughput of proxylm's trainer beside a bare PyTorch loop over the same model and batch.

    .venv/bin/python bench/train_throughput.py [--config proxy-bpe-tiny] [--rounds 5] [--steps 3]

The bare loop is what a user would write by hand: one fixed, pre-built batch, the same Transformer,
forward + loss + backward + AdamW, nothing else. proxylm's step adds the data pipeline (documents
read, views decided and encoded, packed), per-view loss bookkeeping, FLOP counting and gradient
normalisation. The two are measured in alternating rounds in one process (this machine is noisy) and
the ratio of medians is reported:

    RESULT train_vs_bare <proxylm symbols/s / bare symbols/s>

Then the compute dtype (`--dtype-rounds 0` skips it): proxylm's own training step (`Trainer.train_step`,
data pipeline included) in float32 and in bfloat16 autocast, alternating in one process, at the tiny backbone
and at dim 512 x 8, and the default step's model FLOPs/s against the bfloat16 matmul peak this bench measures
on the same threads (a 1024 x 1024 x 1024 matmul); model FLOPs are proxylm/model/flops.py's, attention's dense
S x S work included:

    RESULT cpu_bf16_speedup <bf16 steps/s / fp32 steps/s, tiny backbone>
    RESULT cpu_bf16_speedup_large <the same at dim 512 x 8>
    RESULT cpu_mfu <model FLOPs/s of the bf16 tiny step / measured bf16 matmul FLOP/s>
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from proxylm.config import load_config
from proxylm.assemble import build_trainer
from proxylm.core.device import autocast


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="proxy-bpe-tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per round and side")
    ap.add_argument("--dtype-rounds", type=int, default=5, help="rounds of the dtype comparison (0: skip it)")
    ap.add_argument("--dtype-config", default="bytes-tiny")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the trainer's default policy, README 'Threads')")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config, ["train.max_steps=100000", "train.warmup_steps=1"] + thread_overrides(args)
                      + args.overrides)
    trainer = build_trainer(cfg, tempfile.mkdtemp(prefix="bench-train-"), quiet=True)
    S = cfg.data.seq_len
    symbols_per_step = cfg.data.batch_size * S * cfg.train.grad_accum

    model, batch = trainer.raw_model, trainer.loader.next_batch(0)
    tokens, doc_ids, positions = batch.tokens, batch.doc_ids, batch.positions
    bare_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def bare_step():  # in the trainer's compute dtype (train.dtype auto: bfloat16 where native)
        bare_opt.zero_grad(set_to_none=True)
        for _ in range(cfg.train.grad_accum):
            with autocast(trainer.device, trainer.dtype):
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
          f"{symbols_per_step} symbols/step, torch threads {torch.get_num_threads()}, dtype {trainer.dtype}")
    print(f"median bare {statistics.median(bare):.0f} sym/s, proxylm {statistics.median(ours):.0f} sym/s")
    print(f"RESULT train_vs_bare {ratio:.3f}")
    if args.dtype_rounds:
        compare_dtypes(args)


def thread_overrides(args) -> list[str]:
    """--threads as train.threads: the trainer applies train.threads (0: the load-based default policy), which
    would otherwise override the threads set here."""
    return [f"train.threads={args.threads}"] if args.threads else []


def matmul_flops_per_s(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def dtype_trainers(config: str, overrides: list[str]):
    """One trainer per dtype over the same config, seed and data."""
    common = ["train.max_steps=100000", "train.warmup_steps=1"] + overrides
    return {dt: build_trainer(load_config(config, common + [f"train.dtype={dt}"]),
                              tempfile.mkdtemp(prefix=f"bench-{dt}-"), quiet=True) for dt in ("float32", "bfloat16")}


def steps_per_s(trainer, steps: int) -> tuple[float, float]:
    """-> (steps/s, model FLOPs/s) of `steps` optimizer steps."""
    flops0, t0 = trainer.flops, time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds = time.perf_counter() - t0
    return steps / seconds, (trainer.flops - flops0) / seconds


def compare_dtypes(args) -> None:
    results = {}
    for label, overrides, steps, rounds in [
            ("tiny", [], args.steps, args.dtype_rounds),
            ("large", ["model.dim=512", "model.n_layers=8", "model.n_heads=8"], 1, max(2, args.dtype_rounds // 2))]:
        trainers = dtype_trainers(args.dtype_config, thread_overrides(args) + overrides)
        for t in trainers.values():
            steps_per_s(t, 1)  # warm-up
        rates = {dt: [] for dt in trainers}
        flops = []
        peaks = []
        for r in range(rounds):
            order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
            for dt in order:
                rate, fl = steps_per_s(trainers[dt], steps)
                rates[dt].append(rate)
                if dt == "bfloat16":
                    flops.append(fl)
            peaks.append(matmul_flops_per_s(torch.bfloat16))
            print(f"{label} round {r}: fp32 {rates['float32'][-1]:.3f} steps/s, bf16 {rates['bfloat16'][-1]:.3f} "
                  f"steps/s, bf16 matmul {peaks[-1] / 1e9:.0f} GFLOP/s")
        ratios = [b / f for b, f in zip(rates["bfloat16"], rates["float32"])]
        m = trainers["bfloat16"].raw_model
        print(f"{label}: {m.num_params(non_embedding=True) / 1e6:.2f}M non-embedding parameters; bf16/fp32 per "
              f"round {min(ratios):.2f}-{max(ratios):.2f}")
        results[label] = (statistics.median(ratios), statistics.median(flops) / statistics.median(peaks))
    print(f"torch threads {torch.get_num_threads()}; MFU counts attention's dense S x S FLOPs")
    print(f"RESULT cpu_bf16_speedup {results['tiny'][0]:.3f}")
    print(f"RESULT cpu_bf16_speedup_large {results['large'][0]:.3f}")
    print(f"RESULT cpu_mfu {results['tiny'][1]:.3f}")


if __name__ == "__main__":
    main()
