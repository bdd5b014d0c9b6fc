"""Atomic checkpoints of a run directory (its files are named in proxylm/core/rundir.py):

    checkpoints/step_0000100/   model.safetensors, optimizer.pt, state.json, manifest.json
    checkpoints/latest          name of the newest complete checkpoint

Under FSDP (`train.distributed=fsdp`) a checkpoint also holds `sharded/`, the model and optimizer as
torch.distributed.checkpoint (DCP) shards, and no optimizer.pt; model.safetensors is always the
consolidated full model, so loading a run never needs a process group (proxylm/train/distributed.py).

A checkpoint is written into a temporary folder and renamed into place, and `latest` is replaced
atomically afterwards, so a kill at any moment leaves the previous checkpoint usable.

Integrity: `manifest.json` lists the sha256 and size of every file of the checkpoint (state.json and any
DCP shard included); it is written after the other files and before state.json, whose presence marks the
checkpoint complete. Loading verifies every file it reads against it. A checkpoint that fails (unreadable,
checksum mismatch, malformed state.json, another model's weights) is reported and skipped, never deleted:
loading falls back to the next older one and says how many it skipped (`Found.skipped`). A missing or
mismatching optimizer state is a fallback too when the caller needs it (resume), unless it resets the
optimizer (`proxylm resume --reset-optimizer`). Checkpoints written before manifests existed load
unverified, with one warning per run directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from proxylm.core.errors import UserError
from proxylm.core.io import atomic_write, fsync_dir
from proxylm.core.rundir import CKPT_DIR, LATEST, MANIFEST, OPTIMIZER, SHARDED, STATE, WEIGHTS

MANIFEST_FORMAT = "proxylm-checkpoint-v1"
# what the Trainer's state.json must hold, with the type each value must have
TRAINER_STATE = {"step": int, "flops": (int, float), "symbols": int, "raw_bytes": int, "elapsed": (int, float),
                 "loader": dict, "torch_rng": list}


class CorruptCheckpoint(ValueError):
    pass


class BadOptimizerState(CorruptCheckpoint):
    """The weights are fine, the optimizer state is missing or fails its checksum."""


class NoUsableCheckpoint(UserError):
    """Every complete checkpoint of the run failed; the message lists why."""


_warned_unverified: set[str] = set()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    """Write weights, optimizer, manifest and state into the temporary folder and fsync them; state.json
    last, since its presence marks a checkpoint complete (manifest.json, just before it, holds every
    file's sha256, state.json's included)."""
    save_file(weights, str(tmp / WEIGHTS))
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / OPTIMIZER)
    state_bytes = json.dumps(state).encode()
    files = {}
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            rel = f.relative_to(tmp).as_posix()
            if f.parent == tmp:  # sub-folders (DCP shards) are synced by their writer
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    files[STATE] = {"sha256": hashlib.sha256(state_bytes).hexdigest(), "bytes": len(state_bytes)}
    for name, data in ((MANIFEST, json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1).encode()),
                       (STATE, state_bytes)):
        with open(tmp / name, "wb") as fh:
            fh.write(data)
            fh.flush()
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


def _read_manifest(path: Path) -> dict | None:
    """The checkpoint's {file: {"sha256", "bytes"}}, or None for a checkpoint written before manifests."""
    mpath = path / MANIFEST
    if not mpath.exists():
        return None
    try:
        manifest = json.loads(mpath.read_bytes())
        files = manifest["files"]
        assert manifest["format"] == MANIFEST_FORMAT and isinstance(files, dict)
        assert all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())
    except Exception as e:
        raise CorruptCheckpoint(f"{mpath}: unreadable checkpoint (malformed manifest: {type(e).__name__})") from e
    return files


def _verify(path: Path, files: dict | None, names, error=CorruptCheckpoint) -> None:
    """Check each of `names` (relative paths listed in the manifest) against its sha256."""
    if files is None:
        return
    for name in names:
        f = path / name
        if name not in files:
            raise error(f"{f}: unreadable checkpoint (not listed in {MANIFEST})")
        if not f.is_file():
            raise error(f"{f}: unreadable checkpoint (missing; {MANIFEST} lists it)")
        if f.stat().st_size != files[name].get("bytes", f.stat().st_size) or sha256_file(f) != files[name]["sha256"]:
            raise error(f"{f}: unreadable checkpoint (sha256 mismatch: the file was changed or damaged)")


def _check_state(state, path: Path, state_keys: dict) -> None:
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path / STATE}: unreadable checkpoint (not a JSON object)")
    for key, kind in state_keys.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (key == "step" and value < 0):
            raise CorruptCheckpoint(f"{path / STATE}: unreadable checkpoint (key '{key}' is {value!r}; "
                                    "a state.json written by proxylm holds the training state)")


def _check_shapes(weights: dict, expect: dict, path: Path) -> None:
    """`expect` {name: shape}: the model these weights must fit (else they belong to another model)."""
    missing = sorted(set(expect) - set(weights))
    extra = sorted(set(weights) - set(expect))
    wrong = [(k, tuple(weights[k].shape), tuple(expect[k])) for k in expect
             if k in weights and tuple(weights[k].shape) != tuple(expect[k])]
    if missing or extra or wrong:
        what = (f"{wrong[0][0]} has shape {wrong[0][1]}, this run's config gives {wrong[0][2]}" if wrong else
                f"it lacks {missing[0]}" if missing else f"it has {extra[0]}, which this run's model does not")
        raise CorruptCheckpoint(f"{path / WEIGHTS}: holds another model's weights ({what}); the run's "
                                "config.yaml and this checkpoint disagree")


def read_checkpoint(path: Path, with_optimizer: bool = True, *, require_optimizer: bool = False,
                    sharded: bool = False, expect: dict | None = None,
                    state_keys: dict | None = None) -> tuple[dict, dict | None, dict]:
    """(weights, optimizer state or None, state), every file read verified against manifest.json.

    Raises CorruptCheckpoint with the reason; BadOptimizerState when only the optimizer state is unusable
    (listed but missing or damaged, or absent while `require_optimizer`). `sharded`: verify the DCP shards
    (FSDP) instead of reading optimizer.pt. `expect` {name: shape} refuses another model's weights."""
    files = _read_manifest(path)
    if files is None and str(path.parent) not in _warned_unverified:
        _warned_unverified.add(str(path.parent))
        warnings.warn(f"{path.parent}: checkpoints without {MANIFEST} (written by an older proxylm) are "
                      "loaded unverified")
    _verify(path, files, [STATE, WEIGHTS])
    try:
        state = json.loads((path / STATE).read_bytes())
        weights = load_file(str(path / WEIGHTS))
    except Exception as e:  # any parse error means this checkpoint cannot be used
        raise CorruptCheckpoint(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    _check_state(state, path, {"step": int, **(state_keys or {})})
    if expect is not None:
        _check_shapes(weights, expect, path)
    optim = None
    if with_optimizer and sharded:
        shards = sorted(k for k in files or {} if k.startswith(SHARDED + "/"))
        if not (path / SHARDED).is_dir() or (files is not None and not shards):
            raise BadOptimizerState(f"{path / SHARDED}: unreadable checkpoint (no sharded optimizer state)")
        _verify(path, files, shards, BadOptimizerState)
    elif with_optimizer:
        listed = files is not None and OPTIMIZER in files
        if listed or (path / OPTIMIZER).exists():
            _verify(path, files, [OPTIMIZER], BadOptimizerState)
            try:
                optim = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
            except Exception as e:
                raise BadOptimizerState(f"{path / OPTIMIZER}: unreadable checkpoint ({type(e).__name__}: {e})") from e
        elif require_optimizer:
            raise BadOptimizerState(f"{path / OPTIMIZER}: unreadable checkpoint (missing: the optimizer state "
                                    "is gone)")
    return weights, optim, state


@dataclass
class Found:
    """The checkpoint a load settled on, and what it skipped to get there (the counted fallbacks)."""

    path: Path
    weights: dict
    optimizer: dict | None
    state: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint name, reason), newest first
    optimizer_reset: bool = False  # resumed with a fresh optimizer (--reset-optimizer)
    verified: bool = True  # False: a checkpoint from before manifests (no checksums)
    pointer_problem: str | None = None  # `latest` named no complete checkpoint


def _candidates(run_dir) -> tuple[list[Path], str | None]:
    """Complete checkpoints, the one `latest` names first; plus what is wrong with `latest`, if anything."""
    candidates = list_checkpoints(run_dir)[::-1]
    pointer = Path(run_dir) / CKPT_DIR / LATEST
    problem = None
    if pointer.exists():
        text = pointer.read_bytes()[:200].decode("utf-8", "replace").strip()
        named = Path(run_dir) / CKPT_DIR / text
        if text and "/" not in text and named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
        elif candidates:
            problem = (f"{pointer} names {text!r}, not a complete checkpoint; using the newest complete one "
                       f"({candidates[0].name})")
    return candidates, problem


def find_checkpoint(run_dir, with_optimizer: bool = True, *, require_optimizer: bool = False,
                    reset_optimizer: bool = False, sharded: bool = False, expect: dict | None = None,
                    state_keys: dict | None = None) -> Found | None:
    """The newest usable checkpoint, or None when the run has no complete checkpoint at all.

    Each checkpoint that fails is skipped (reported with its reason in `Found.skipped` and as a warning),
    never deleted. `reset_optimizer`: the optimizer state is not read (the caller starts a fresh one), so a
    checkpoint with good weights is enough. Raises NoUsableCheckpoint when every checkpoint fails."""
    candidates, problem = _candidates(run_dir)
    if not candidates:
        return None
    if problem:
        warnings.warn(problem)
    skipped = []
    for path in candidates:
        try:
            weights, optim, state = read_checkpoint(
                path, with_optimizer and not reset_optimizer, require_optimizer=require_optimizer,
                sharded=sharded, expect=expect, state_keys=state_keys)
        except CorruptCheckpoint as e:
            warnings.warn(f"{e}; falling back to an older checkpoint")
            skipped.append((path.name, str(e)))
            continue
        return Found(path, weights, optim, state, skipped, reset_optimizer and with_optimizer,
                     _read_manifest(path) is not None, problem)
    reasons = "; ".join(r for _, r in skipped)
    hint = (" Pass --reset-optimizer to resume from the newest good weights with a fresh optimizer."
            if any("optimizer" in r or SHARDED in r for _, r in skipped) else "")
    raise NoUsableCheckpoint(f"{Path(run_dir) / CKPT_DIR}: no usable checkpoint ({reasons}).{hint}")


def latest_checkpoint(run_dir, with_optimizer: bool = True, expect: dict | None = None):
    """Newest readable checkpoint: (path, weights, optimizer, state), or None if there is none.

    Tries `latest` first, then older ones; a corrupt checkpoint is reported and skipped, never deleted."""
    found = find_checkpoint(run_dir, with_optimizer, expect=expect)
    return None if found is None else (found.path, found.weights, found.optimizer, found.state)
