"""torch.distributed glue: process group from torchrun's environment, model wrapping, reductions.

    torchrun --nproc_per_node 2 -m proxylm train bytes-tiny train.distributed=ddp

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # set under torchrun; None: the trainer picks

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap_model(model: torch.nn.Module, train_cfg, ctx: DistContext) -> torch.nn.Module:
    if ctx.world_size <= 1:
        return model
    if train_cfg.distributed == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    raise ValueError(f"train.distributed={train_cfg.distributed} is not supported yet")


def averages_gradients(model: torch.nn.Module) -> bool:
    """True when the wrapper averages gradients over ranks (DDP does)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return isinstance(model, DDP)


def no_sync_unless(model: torch.nn.Module, last: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()
