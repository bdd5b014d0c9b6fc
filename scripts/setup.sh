#!/usr/bin/env bash
# Set up proxylm on a fresh machine: a virtual environment at .venv/ with proxylm installed (editable).
#   bash scripts/setup.sh          # idempotent; re-running only installs what is missing
# torch is installed first and pinned to the CPU wheel (2.13.0): an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[test,hf]"
echo "proxylm set up: $(.venv/bin/proxylm --version 2>/dev/null || echo 'CLI missing')"
