"""The scaling study: where does the proxy start to pay? Bytes, tokens, proxy-BPE (paper recipe) and
proxy-BPE (tuned small-scale recipe) at three backbone sizes, budgets growing with size, 3 seeds.

    .venv/bin/python bench/scaling_study.py --measure                    # per-step cost -> predicted preset time
    nice -n 10 .venv/bin/python bench/scaling_study.py --out runs/scaling # the study (re-run to resume)
    .venv/bin/python bench/scaling_study.py --gpu --out runs/scaling-gpu # `scaling-gpu` sizes (bench/gpu_all.sh: --measure)

--measure trains each (size, family) for a few steps on this machine and prints seconds per step, the
steps each budget buys and the predicted wall time of the whole preset (training only; periodic evals
and codec training add a few %). The study itself is `proxylm compare --preset scaling`: it fits BPB
against FLOPs per family, plots the curves and the proxy-minus-bytes gap against model size, and prints

    RESULT proxy_gap_trend <change in gap per doubling of model size>   (paper recipe; _tuned: tuned recipe)
    RESULT proxy_crossover_flops <FLOPs where the fits cross | inf>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(preset_name: str, steps: int = 6, models: list[str] | None = None, sizes: list[str] | None = None) -> float:
    from proxylm.assemble import build_trainer
    from proxylm.compare import PRESETS, model_config
    from proxylm.train.trainer import planned_steps

    preset = PRESETS[preset_name]
    total = 0.0
    print(f"{'size':>8} {'model':>16} {'s/step':>8} {'steps':>6} {'minutes':>8}  (load average "
          f"{os.getloadavg()[0]:.1f} at start)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in [s for s in preset.sizes if not sizes or s.name in sizes]:
            for model in [m for m in preset.models if not models or m in models]:
                cfg = model_config(model, preset, size, 0, None, [f"train.max_steps={steps}", "train.ckpt_every=0",
                                                                  "train.eval_every=0", "train.evals_per_run=0",
                                                                  "eval.max_bytes=1000", "train.max_flops=0"])
                trainer = build_trainer(cfg, Path(tmp) / f"{size.name}-{model}", quiet=True)
                trainer.train_step()  # first step: allocator and cache warm-up, not timed
                t0 = time.perf_counter()
                for _ in range(steps - 1):
                    trainer.train_step()
                per_step = (time.perf_counter() - t0) / (steps - 1)
                budget_cfg = model_config(model, preset, size, 0, None, [])
                n = planned_steps(budget_cfg, trainer.rep)
                minutes = n * per_step / 60 * preset.seeds
                total += minutes
                print(f"{size.name:>8} {model:>16} {per_step:>8.3f} {n:>6} {minutes:>8.1f}")
    what = "the preset" if not (models or sizes) else "the sizes and models measured"
    print(f"predicted training time of {what} ({preset.seeds} seeds): {total:.1f} minutes")
    print(f"RESULT scaling_preset_predicted_minutes {total:.1f}")
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--measure", action="store_true", help="per-step cost and predicted preset time, then stop")
    p.add_argument("--gpu", action="store_true", help="the scaling-gpu preset")
    p.add_argument("--measure-steps", type=int, default=6, help="--measure: steps per (size, model), >= 2")
    p.add_argument("--models", nargs="+", help="--measure: only these families")
    p.add_argument("--sizes", nargs="+", help="--measure: only these sizes (e.g. d256x4)")
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--seeds", type=int, help="default: the preset's")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    preset = "scaling-gpu" if args.gpu else "scaling"
    if args.measure:
        measure(preset, max(2, args.measure_steps), args.models, args.sizes)
        return 0
    cmd = [sys.executable, "-m", "proxylm", "compare", "--preset", preset, "--out", args.out, "--quiet",
           *(["--seeds", str(args.seeds)] if args.seeds else []), *args.overrides]
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


if __name__ == "__main__":
    sys.exit(main())
