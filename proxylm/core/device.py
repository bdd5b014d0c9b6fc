"""One rule for `device=auto` and `dtype=auto` everywhere (training, evaluation, generation)."""

from __future__ import annotations

import contextlib

import torch

from proxylm.core.errors import UserError

DTYPES = ("auto", "float32", "bfloat16")


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA when there is one; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA device is available; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda[:N])") from e


def cpu_bf16_units() -> str | None:
    """The CPU's native bfloat16 instructions as detected by torch's cpuinfo ("avx512_bf16", "amx"), or None."""
    if torch.cpu._is_amx_tile_supported():
        return "amx"
    if torch.cpu._is_avx512_bf16_supported():
        return "avx512_bf16"
    return None


def native_bf16(device: torch.device) -> str | None:
    """Why `device` computes bfloat16 natively (a short reason), or None where bfloat16 would be emulated."""
    if device.type == "cuda":
        return "CUDA with bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if device.type == "cpu":
        units = cpu_bf16_units()
        return f"CPU with {units}" if units else None
    return None


def resolve_dtype(name: str, device: torch.device) -> str:
    """`auto` -> "bfloat16" where the device computes it natively, else "float32"; others pass through."""
    if name not in DTYPES:
        raise UserError(f"dtype {name!r}: use one of {', '.join(DTYPES)}")
    if name == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return name


def describe_dtype(name: str, resolved: str, device: torch.device) -> str:
    """One line for start-up summaries: the compute dtype and why it was chosen."""
    reason = native_bf16(device)
    if name == "auto":
        why = reason if resolved == "bfloat16" else f"no native bfloat16 on this {device.type}"
        return f"compute dtype {resolved} (auto: {why}; parameters, optimizer state and losses float32)"
    note = "" if resolved == "float32" or reason else f"; this {device.type} has no native bfloat16: emulated, slow"
    return f"compute dtype {resolved} (train.dtype={name}){note}"


def autocast(device: torch.device, dtype: str):
    """Mixed precision for a whole region: bfloat16 matmuls/attention, float32 parameters and reductions.

    Held across a whole evaluation or decoding loop, autocast casts each weight once and reuses the cast
    (its cache keeps casts of leaf parameters that require grad until the outermost region exits)."""
    if dtype != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
