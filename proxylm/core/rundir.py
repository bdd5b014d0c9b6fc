"""A run directory: the name of every file in it, and reading its metrics (one module owns them).

    config.yaml            the resolved config       representation.json   the vocabulary layout
    codec/                 the codec (if any)        metrics.jsonl         one JSON object per log/eval
    summary.json           the finished run          tb/                   TensorBoard events
    checkpoints/latest     the newest complete checkpoint's name   .lock     held by the run's one writer
    checkpoints/step_0000100/   model.safetensors, optimizer.pt, state.json, manifest.json (sharded/ under FSDP)

    records = read_metrics(run_dir)            # every complete line of metrics.jsonl, in order
    is_run_dir(path)                           # holds a config.yaml

Checkpoint layout and integrity: proxylm/train/checkpoint.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CONFIG = "config.yaml"
REPRESENTATION = "representation.json"
CODEC_DIR = "codec"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TB_DIR = "tb"
CKPT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
MANIFEST = "manifest.json"
SHARDED = "sharded"  # DCP folder of FSDP runs
LOCK = ".lock"  # one writer per run directory (proxylm/assemble.py RunLock)


def is_run_dir(path) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_metrics(run_dir) -> list[dict]:
    """The records of metrics.jsonl in order ([] when there is none); a line cut by a kill is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_metrics(run_dir, record: dict) -> None:
    """One strict JSON line: a NaN/Infinity value is no valid JSON, so non-finite values become null and are
    named under "non_finite"."""
    try:
        line = json.dumps(record, allow_nan=False)
    except ValueError:
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        line = json.dumps({**{k: (None if k in bad else v) for k, v in record.items()}, "non_finite": bad})
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(line + "\n")


def read_summary(run_dir) -> dict | None:
    """summary.json of a finished run, or None."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
