#!/usr/bin/env bash
# Everything a lent GPU must show, in one script within 12 minutes of one H200 (a lent device gives 15):
#
#     bash bench/gpu_all.sh [OUT]              # OUT default: ${OUT:-runs}/gpu-all
#     bash bench/gpu_all.sh --dry-run [OUT]    # the CPU-sized version (tests/test_gpu_all.py runs it)
#
#   1. bench/gpu_all.py (<= 5 min): bf16 + flex + compile correctness against the CPU float32 reference;
#      throughput and MFU of bytes-gpu (85M parameters) with and without attention FLOPs (989 TFLOP/s
#      peak on H100/H200 SXM); peak memory against `proxylm plan`'s prediction
#   2. bench/generate.py (<= 4 min): the generation goals (speculative_speedup >= 2, batch8_throughput_ratio >= 4)
#   3. bench/scaling_study.py --gpu --measure (<= 2.5 min): per-step cost of the scaling-gpu sizes and the
#      predicted time of the whole study (`proxylm compare --preset scaling-gpu`, and the larger `gpu`
#      preset, are full studies: run them on a longer lease)
# Every step's output goes to OUT/report.txt; the RESULT lines of all steps to OUT/RESULTS.txt and, at the
# end, to stdout. A step that times out is said in the report and the script goes on. Expects a Python with
# this checkout's dependencies and a CUDA torch (PYTHON, default .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUTDIR=${1:-${OUT:-runs}/gpu-all}
export PYTHONPATH=$PWD PROXYLM_CACHE=${PROXYLM_CACHE:-$OUTDIR/cache}
mkdir -p "$OUTDIR"
REPORT=$OUTDIR/report.txt
: > "$REPORT"
FAILED=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, its output into the report
  local name=$1 limit=$2; shift 2
  echo "==== $name (limit ${limit}s): $*" | tee -a "$REPORT"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$REPORT" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "==== $name: TIMED OUT after ${limit}s (what finished is above)" | tee -a "$REPORT"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && { echo "==== $name: FAILED (exit $rc)" | tee -a "$REPORT"; FAILED=1; }
  echo "==== $name: $((SECONDS - t0)) s" | tee -a "$REPORT"
}

if [ $DRY -eq 1 ]; then
  echo "dry run: CPU-sized versions of every step" | tee -a "$REPORT"
  step gpu_all.py 300 "$PY" bench/gpu_all.py --dry-run
  step generate 300 "$PY" bench/generate.py --device cpu --threads 1 --work "$OUTDIR/models" --steps 2 --rounds 1 \
    --prompts 2 --context 40 --new-bytes 8 --heads 2 --byte-model 32 2 2 --large 32 2
  step scaling 120 "$PY" bench/scaling_study.py --measure --measure-steps 2 --models bytes --sizes d32x2
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$REPORT" 2>&1
  step gpu_all.py 300 "$PY" bench/gpu_all.py --seconds 60
  step generate 240 "$PY" bench/generate.py --device cuda --work "$OUTDIR/models" --rounds 3
  step scaling 150 "$PY" bench/scaling_study.py --gpu --measure
fi
grep -h '^RESULT ' "$REPORT" > "$OUTDIR/RESULTS.txt"
echo "==== summary ($REPORT)"
cat "$OUTDIR/RESULTS.txt"
exit $FAILED
