"""Data-parallel scaling on CPU: training symbols/s with 1 and 2 ranks (torchrun, gloo), same per-rank batch.
(Scaling in model size, the proxy's scaling study, is bench/scaling_study.py.)

    .venv/bin/python bench/scaling.py                        # bytes-micro, DDP, 40 steps per run
    .venv/bin/python bench/scaling.py --distributed fsdp --steps 60
    .venv/bin/python bench/scaling.py --config bytes-micro model.dim=128

Both runs use one torch thread per rank (train.threads=1, OMP_NUM_THREADS=1), so 2 ranks use 2 cores
and 1 rank uses 1: the ratio measures what data parallelism adds, not what a second thread inside one
process would. Each run's global batch is ranks x per-rank batch; symbols/s counts all ranks' symbols.
The first WARMUP_STEPS steps are left out of the rate (allocator and cache warm-up). Prints

    RESULT two_rank_speedup <symbols/s with 2 ranks / symbols/s with 1 rank>

On a 2-core machine expect about 1x-1.5x: the two ranks share the memory bandwidth and gloo's
all-reduce runs on the same cores as the compute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from proxylm.core.rundir import read_metrics

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5
DEFAULT_CONFIG = ["bytes-micro", "model.dim=128", "model.n_layers=4", "model.n_heads=4", "data.seq_len=256",
                  "data.batch_size=4"]


def run(ranks: int, config: list[str], steps: int, distributed: str, out: Path) -> dict:
    """One torchrun launch; symbols/s over the steps after WARMUP_STEPS, from its metrics.jsonl."""
    name, *overrides = config
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           "-m", "proxylm", "train", name, *overrides, f"train.max_steps={steps}", "train.log_every=1",
           "train.eval_every=0", "train.ckpt_every=0", "eval.max_bytes=1000", "train.threads=1",
           "train.device=cpu", f"train.distributed={distributed}", "--out", str(out), "--quiet", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    records = read_metrics(out)
    by_step = {r["step"]: r for r in records if "symbols" in r}
    first, last = by_step[WARMUP_STEPS], by_step[max(by_step)]
    rate = (last["symbols"] - first["symbols"]) / (last["elapsed"] - first["elapsed"])
    return {"ranks": ranks, "symbols_per_s": rate, "s_per_step": (last["elapsed"] - first["elapsed"])
            / (last["step"] - first["step"]), "symbols_per_step": last["symbols"] / last["step"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", nargs="+", default=DEFAULT_CONFIG, metavar="NAME [key=value ...]")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--distributed", choices=["ddp", "fsdp"], default="ddp")
    args = p.parse_args(argv)
    if args.steps <= WARMUP_STEPS:
        p.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, args.config, args.steps, args.distributed, Path(tmp) / f"ranks{n}") for n in (1, 2)]
    print(f"{' '.join(args.config)}, {args.distributed}, {args.steps} steps, 1 thread per rank")
    print(f"{'ranks':>5} {'symbols/step':>12} {'s/step':>8} {'symbols/s':>10}")
    for r in results:
        print(f"{r['ranks']:>5} {r['symbols_per_step']:>12.0f} {r['s_per_step']:>8.4f} {r['symbols_per_s']:>10.0f}")
    print(f"RESULT two_rank_speedup {results[1]['symbols_per_s'] / results[0]['symbols_per_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
