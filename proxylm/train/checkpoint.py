"""Run directories and atomic checkpoints.

A run directory holds:

    config.yaml            resolved config          representation.json   the vocabulary layout
    codec/                 the codec (if any)       metrics.jsonl         one JSON object per log/eval
    tb/                    TensorBoard events       checkpoints/step_0000100/  model.safetensors,
                                                                          optimizer.pt, state.json
    checkpoints/latest     name of the newest complete checkpoint

Under FSDP (`train.distributed=fsdp`) a checkpoint also holds `sharded/`, the model and optimizer as
torch.distributed.checkpoint (DCP) shards, and no optimizer.pt; model.safetensors is always the
consolidated full model, so loading a run never needs a process group (proxylm/train/distributed.py).

A checkpoint is written into a temporary folder and renamed into place, and `latest` is replaced
atomically afterwards, so a kill at any moment leaves the previous checkpoint usable. Loading falls
back to an older checkpoint (with a warning) if the newest one is unreadable.

Loading a run for evaluation (`load_run`) lives in proxylm/assemble.py, which knows codecs and models.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from proxylm.core.io import atomic_write, fsync_dir

CKPT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
SHARDED = "sharded"  # DCP folder of FSDP runs


class CorruptCheckpoint(ValueError):
    pass


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Plain (unwrapped) state dict with contiguous CPU tensors, as safetensors wants."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().to("cpu").contiguous() for k, v in inner.state_dict().items()}


def save_checkpoint(run_dir, step: int, weights: dict, optimizer_state: dict | None, state: dict,
                    keep: int = 2) -> Path:
    tmp = begin_checkpoint(run_dir, step)
    write_checkpoint_files(tmp, weights, optimizer_state, state)
    return commit_checkpoint(run_dir, step, keep)


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def temp_checkpoint_dir(run_dir, step: int) -> Path:
    """Where checkpoint `step` is written before it is renamed into place (same path on every rank)."""
    return Path(run_dir) / CKPT_DIR / f".tmp-{checkpoint_name(step)}"


def begin_checkpoint(run_dir, step: int) -> Path:
    """A fresh, empty temporary folder for checkpoint `step` (one writer: rank 0)."""
    tmp = temp_checkpoint_dir(run_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def write_checkpoint_files(tmp: Path, weights: dict, optimizer_state: dict | None, state: dict) -> None:
    """Write weights, optimizer and state into the temporary folder and fsync them; state.json last,
    since its presence marks a checkpoint complete."""
    save_file(weights, str(tmp / WEIGHTS))
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps(state))
    for f in tmp.iterdir():
        if f.is_file():  # sub-folders (DCP shards) are synced by their writer
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def commit_checkpoint(run_dir, step: int, keep: int = 2) -> Path:
    """Rename the temporary folder into place, then point `latest` at it; prune to `keep` checkpoints."""
    ckpt_root = Path(run_dir) / CKPT_DIR
    name = checkpoint_name(step)
    final = ckpt_root / name
    if final.exists():
        shutil.rmtree(final)
    temp_checkpoint_dir(run_dir, step).rename(final)
    fsync_dir(ckpt_root)
    atomic_write(ckpt_root / LATEST, name + "\n")
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE).exists())


def read_checkpoint(path: Path, with_optimizer: bool = True) -> tuple[dict, dict | None, dict]:
    """(weights, optimizer state or None, state); raises CorruptCheckpoint with the reason."""
    try:
        state = json.loads((path / STATE).read_text())
        weights = load_file(str(path / WEIGHTS))
        optim = None
        if with_optimizer and (path / OPTIMIZER).exists():
            optim = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse error means this checkpoint cannot be used
        raise CorruptCheckpoint(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    return weights, optim, state


def latest_checkpoint(run_dir, with_optimizer: bool = True):
    """Newest readable checkpoint: (path, weights, optimizer, state), or None if there is none.

    Tries `latest` first, then older ones; a corrupt checkpoint is reported and skipped, never deleted.
    """
    candidates = list_checkpoints(run_dir)[::-1]
    pointer = Path(run_dir) / CKPT_DIR / LATEST
    if pointer.exists():
        named = Path(run_dir) / CKPT_DIR / pointer.read_text().strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for path in candidates:
        try:
            return (path, *read_checkpoint(path, with_optimizer))
        except CorruptCheckpoint as e:
            warnings.warn(f"{e}; falling back to an older checkpoint")
    return None
