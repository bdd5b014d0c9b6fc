"""One rule for `device=auto` everywhere (training, evaluation, generation)."""

import torch

from proxylm.core.errors import UserError


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
