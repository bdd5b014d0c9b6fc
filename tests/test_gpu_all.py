"""bench/gpu_all.sh cannot rot: its CPU-sized version (--dry-run) runs here.

    .venv/bin/python -m pytest -q tests/test_gpu_all.py             # bench/gpu_all.py --dry-run (seconds)
    .venv/bin/python -m pytest -q -m gpupath tests/test_gpu_all.py  # the whole script, --dry-run (~2 minutes)
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_gpu_all_py_dry_run():
    done = subprocess.run([sys.executable, "bench/gpu_all.py", "--dry-run", "--seconds", "1"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = dict(line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("RESULT "))
    assert results["dry_gpu_parity_ok"] == "1"
    for name in ("dry_gpu_symbols_per_s", "dry_gpu_mfu", "dry_gpu_mfu_no_attention", "dry_plan_memory_gib"):
        assert float(results[name]) >= 0
    assert float(results["dry_gpu_mfu_no_attention"]) <= float(results["dry_gpu_mfu"])


@pytest.mark.gpupath
def test_gpu_all_sh_dry_run(tmp_path):
    done = subprocess.run(["bash", "bench/gpu_all.sh", "--dry-run", str(tmp_path / "out")], cwd=REPO,
                          env={**ENV, "PYTHON": sys.executable, "PROXYLM_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "TIMED OUT" not in report and "FAILED" not in report
    names = {line.split()[1] for line in (tmp_path / "out" / "RESULTS.txt").read_text().splitlines()}
    assert {"dry_gpu_parity_ok", "dry_gpu_mfu", "dry_gpu_mfu_no_attention", "speculative_speedup",
            "batch8_throughput_ratio", "scaling_preset_predicted_minutes"} <= names
    assert "==== summary" in done.stdout
