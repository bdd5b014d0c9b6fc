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
import os
from contextlib import ExitStack
from pathlib import Path

from proxylm.core.errors import UserError
from proxylm.core.io import file_lock

CONFIG = "config.yaml"
REPRESENTATION = "representation.json"
CODEC_DIR = "codec"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CORPUS = "corpus.json"  # the corpus as start-up listed it and the validation text scored (model card)
TB_DIR = "tb"
CKPT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
MANIFEST = "manifest.json"
SHARDED = "sharded"  # DCP folder of FSDP runs
LOCK = ".lock"  # one writer per run directory (RunLock below)


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


# ---- one writer per run directory -------------------------------------------
class RunLock:
    """Exclusive lock on run_dir/.lock (flock: released when the process dies, so never stale). Re-entrant
    within one process (a Trainer resumed in the process that trained it); other processes are refused."""

    _held: dict[str, list] = {}  # real path -> [ExitStack, count]

    def __init__(self, run_dir):
        self.key = os.path.realpath(run_dir)
        self.path = Path(run_dir) / LOCK
        self.released = False
        if self.key in RunLock._held:
            RunLock._held[self.key][1] += 1
            return
        stack = ExitStack()
        try:
            lock = stack.enter_context(file_lock(self.path, blocking=False))
        except BlockingIOError:
            holder = self.path.read_text(errors="replace").strip() or "unknown"
            raise UserError(f"{run_dir} is in use by another proxylm process (pid {holder}, holding {self.path}); "
                            "wait for it to finish or choose another --out") from None
        except OSError as e:  # read-only, or a path below a file
            raise UserError(f"cannot write to {run_dir} ({e.strerror}); make it writable or choose another "
                            "--out") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        RunLock._held[self.key] = [stack, 1]

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        entry = RunLock._held.get(self.key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del RunLock._held[self.key]
                entry[0].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def remove_if_unused(run_dir: Path, keep_dir: bool = False) -> None:
    """Undo what a refused start created: a run directory holding nothing but the lock (and checkpoints/);
    `keep_dir`: the directory was there (empty) before, so only what this start put in it goes."""
    if run_dir.is_dir() and not any(p.name not in (LOCK, CKPT_DIR) for p in run_dir.iterdir()):
        _rmdir_quiet(run_dir / CKPT_DIR)
        if not any(p.name != LOCK for p in run_dir.iterdir()):
            (run_dir / LOCK).unlink(missing_ok=True)
            if not keep_dir:
                _rmdir_quiet(run_dir)


class NotLocked:
    """What ranks other than 0 hold (rank 0 locks the run directory for all of them)."""

    def release(self) -> None:
        pass


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
