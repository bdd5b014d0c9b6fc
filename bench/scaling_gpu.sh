#!/usr/bin/env bash
# The scaling study at `scaling-gpu` sizes (d256x4, d512x8, d768x12; 5e14 / 2e15 / 8e15 FLOPs; 1 seed) on one
# GPU, inside a 15-minute device budget. Prepared, NOT yet run (no GPU was lent when it was written):
#
#     bash bench/scaling_gpu.sh [OUT]            # OUT default: ${OUT:-runs}/scaling-gpu
#
# Expects a Python with this checkout's dependencies and a CUDA torch (PYTHON, default python3). Step 1 is a
# 3-step probe per (size, family) whose per-step cost decides whether the budgets fit; step 2 runs the study
# (resumable: re-run the same line after a timeout); it stops itself at 12 minutes and keeps what finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTDIR=${1:-${OUT:-runs}/scaling-gpu}
export PYTHONPATH=$PWD PROXYLM_CACHE=${PROXYLM_CACHE:-$OUTDIR/cache}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
timeout 150 $PY bench/scaling_study.py --gpu --measure | tee "$OUTDIR/measure.txt" || echo "measure: timed out"
timeout 720 $PY bench/scaling_study.py --gpu --out "$OUTDIR" --seeds 1 2>&1 | tee "$OUTDIR/study.txt" \
  || echo "study: stopped at the time limit; what finished is in $OUTDIR (re-run to resume)"
