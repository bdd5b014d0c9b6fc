#!/usr/bin/env bash
# Issue 14's generation goals on one GPU (speculative_speedup >= 2, batch8_throughput_ratio >= 4), inside a few
# minutes of a 15-minute device budget. Prepared, NOT yet run (no GPU was lent when it was written):
#
#     bash bench/gpu_generate.sh [OUT]           # OUT default: ${OUT:-runs}/gpu-generate
#
# On a CPU both goals are out of reach (BENCHMARKS.md: a forward over 4 positions or 8 rows costs 1.4-3.4x
# one there); on a GPU these models' forwards are launch-bound, so k positions or 8 rows cost about one.
# It trains the bench's two models on the GPU (float32, 3,000 steps each; expected about a minute each on an
# H100-class card), then times them as on the CPU (bench/generate.py's docstring). Expects a Python with this
# checkout's dependencies and a CUDA torch (PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTDIR=${1:-${OUT:-runs}/gpu-generate}
export PYTHONPATH=$PWD
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
timeout 420 $PY bench/generate.py --device cuda --work "$OUTDIR/models" --rounds 3 2>&1 | tee "$OUTDIR/generate.txt" \
  || echo "generate: timed out (the trained models in $OUTDIR/models are reused by a re-run)"
