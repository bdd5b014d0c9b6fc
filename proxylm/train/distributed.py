"""torch.distributed glue: process group from torchrun's environment, model wrapping, gradient sync,
reductions and checkpoints that every rank takes part in.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m proxylm train bytes-tiny \\
        train.distributed=fsdp                      # or ddp (default); gloo on CPU, NCCL on GPU
    python -m torch.distributed.run --standalone --nproc_per_node 2 -m proxylm resume runs/bytes-tiny

Multi-node launches and the design are in docs/distributed.md. Without torchrun (no WORLD_SIZE > 1 in
the environment) no process group is created: `wrap_model` then only applies activation checkpointing
and torch.compile, and the checkpoint functions write and read a plain single-process checkpoint.

Wrapping order (innermost first): activation checkpointing of each block -> torch.compile of each
block -> DDP, or FSDP2 `fully_shard` of each block and then of the root. Blocks are compiled with
`Module.compile()` and checkpointed by wrapping their `forward`, so parameter names never change
(no `_orig_mod.` / `_checkpoint_wrapped_module.` prefixes in state dicts).

Checkpoints (`save_checkpoint` / `load_checkpoint`, called by every rank):
  * model.safetensors: always the consolidated full model (gathered to rank 0), so `load_run`, eval
    and export work in one process whatever the training layout was;
  * DDP / one process: optimizer.pt (the optimizer state is complete on every rank; rank 0 writes it);
  * FSDP: `sharded/`, model and optimizer saved with torch.distributed.checkpoint (DCP), each rank
    writing its own shards; resumed with `dcp.load` into the sharded state dicts;
  * state.json: rank 0's training state plus `ranks`, every rank's own state (its data-loader position
    and RNG), so a resume needs the same world size;
  * all written into one temporary folder that rank 0 renames into place after a barrier, so the
    atomic protocol of proxylm/train/checkpoint.py holds with any number of writers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from proxylm.train import checkpoint as ck


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # set under torchrun; None: the trainer picks

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> DistContext:
    """Join torchrun's process group (env:// rendezvous). `device` is train.device: auto and cuda use
    NCCL on the local GPU, cpu (or no GPU) uses gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    if device != "cpu" and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node; "
                               "use --nproc_per_node <= the GPU count")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(_shutdown)  # without it every run ends with a "process group not destroyed" warning
    return DistContext(rank, world, local_rank, dev)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_to_main(obj) -> list | None:
    """Every rank's `obj` (picklable) as a list on rank 0, None elsewhere; [obj] in one process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size() if get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---- model wrapping -----------------------------------------------------------------------------
def checkpoint_block(block: torch.nn.Module) -> None:
    """Recompute `block`'s activations in backward instead of storing them (in place; names unchanged).

    The wrapped `forward` is what FSDP's hooks surround, so in backward FSDP has already gathered the
    block's parameters when the recomputation runs."""
    from torch.utils.checkpoint import checkpoint

    forward = block.forward

    def checkpointed_forward(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed_forward


def wrap_model(model: torch.nn.Module, train_cfg, ctx: DistContext, dtype: str = "float32") -> torch.nn.Module:
    """Apply train.activation_checkpointing, train.compile and train.distributed (ddp | fsdp) to a
    Transformer already on its device. Returns the module to call for training; under FSDP it is
    `model` itself (sharded in place), under DDP a wrapper whose `.module` is `model`. `dtype` is the
    resolved compute dtype (FSDP gathers bfloat16 parameters for a bfloat16 run)."""
    blocks = list(model.layers)
    if train_cfg.activation_checkpointing:
        for block in blocks:
            checkpoint_block(block)
    if train_cfg.compile:
        # per block: one graph reused by every layer; the document mask and the loss stay eager
        for block in blocks:
            block.compile()
    if ctx.world_size <= 1:
        return model
    if train_cfg.distributed == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    return _fully_shard(model, blocks, dtype, ctx)


def _fully_shard(model, blocks, dtype: str, ctx: DistContext):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    bf16 = dtype == "bfloat16"
    # bf16 compute, fp32 gradient reduction (bf16 sums over many ranks lose bits); fp32 runs stay fp32
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again first in backward: keep them gathered
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    # the root group (embedding, final norm, heads) stays gathered after forward: the trainer calls
    # `model.loss` (the heads) and the evaluator `model.logits` after `model(...)` returns
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    return model


def is_fsdp(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Transformer inside a DDP wrapper (FSDP modules are the Transformer itself)."""
    return getattr(model, "module", model)


def averages_gradients(model: torch.nn.Module) -> bool:
    """True when the wrapper averages gradients over ranks: DDP's all-reduce and FSDP's reduce-scatter
    both divide the sum by the world size. The trainer multiplies that back before dividing by the
    global count of target tokens."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return isinstance(model, DDP) or is_fsdp(model)


def no_sync_unless(model: torch.nn.Module, last: bool):
    """Skip the gradient reduction on all but the last micro-batch of an accumulation (the local
    gradients add up; the last backward reduces the sum once)."""
    if last:
        return contextlib.nullcontext()
    if is_fsdp(model):
        return _fsdp_no_sync(model)
    if hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Global gradient norm (all ranks' shards), clipped to max_norm when max_norm > 0; a float."""
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if isinstance(norm, DTensor):  # FSDP: each rank holds the norm of its shard; combine them
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


# ---- checkpoints --------------------------------------------------------------------------------
def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The complete state dict as contiguous CPU tensors on rank 0 ({} on other ranks under FSDP).
    Every rank must call it: under FSDP it gathers the shards."""
    if not is_fsdp(model):
        return ck.model_state(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.contiguous() for k, v in full.items()}


def _sharded_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_checkpoint(run_dir, step: int, model, optimizer, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` (every rank calls this). `state` is this rank's training state."""
    weights = full_model_state(model)
    states = gather_to_main(state)
    if get_rank() == 0:
        ck.begin_checkpoint(run_dir, step)
    barrier()  # the temporary folder exists before anyone writes into it
    tmp = ck.temp_checkpoint_dir(run_dir, step)
    optim = None
    if is_fsdp(model):
        import torch.distributed.checkpoint as dcp

        dcp.save(_sharded_state(model, optimizer), checkpoint_id=str(tmp / ck.SHARDED))
    elif get_rank() == 0:
        optim = optimizer.state_dict()
    barrier()  # every rank's shards are in the temporary folder before it is renamed
    final = Path(run_dir) / ck.CKPT_DIR / ck.checkpoint_name(step)
    if states is not None:
        merged = dict(states[0])
        if len(states) > 1:
            merged["ranks"] = states
        ck.write_checkpoint_files(tmp, weights, optim, merged)
        final = ck.commit_checkpoint(run_dir, step, keep)
    barrier()  # nobody runs ahead (and e.g. starts the next save) before the rename
    return final


def load_checkpoint(run_dir, model, optimizer, world_size: int = 1, reset_optimizer: bool = False):
    """Restore model and optimizer from the newest usable checkpoint (every rank calls this).
    Returns (path, this rank's training state, report), or None when there is no checkpoint; `report`
    says what was skipped on the way (proxylm/train/checkpoint.py: verified by checksum, another model's
    weights refused, a missing or damaged optimizer state a fallback to the previous checkpoint).
    `reset_optimizer`: the newest good weights, with the optimizer left fresh. Rank 0 picks the
    checkpoint, so all ranks read the same one."""
    sharded = is_fsdp(model)
    expect = {k: tuple(v.shape) for k, v in unwrap(model).state_dict().items()}
    found, error = None, None
    if get_rank() == 0:
        try:
            found = ck.find_checkpoint(run_dir, with_optimizer=True, require_optimizer=not sharded,
                                       reset_optimizer=reset_optimizer, sharded=sharded, expect=expect,
                                       state_keys=ck.TRAINER_STATE)
        except ck.NoUsableCheckpoint as e:
            error = str(e)
    name, error = broadcast_from_main((found.path.name if found else None, error))
    if error is not None:
        raise ck.NoUsableCheckpoint(error)
    if name is None:
        return None
    path = Path(run_dir) / ck.CKPT_DIR / name
    if found:
        weights, optim, state = found.weights, found.optimizer, found.state
    elif sharded:  # the shards hold the weights; skip reading the full model on every rank
        weights, optim, state = None, None, json.loads((path / ck.STATE).read_text())
    else:
        weights, optim, state = ck.read_checkpoint(path, not reset_optimizer)
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise ValueError(f"{path} was written with {saved_world} ranks; resume with the same number "
                         "(each rank's data-loader position is saved separately)")
    has_shards = (path / ck.SHARDED).is_dir()
    if sharded != has_shards and not (reset_optimizer and not sharded):
        written, now = ("fsdp", "ddp or one process") if has_shards else ("ddp or one process", "fsdp")
        raise ValueError(f"{path} was written by {written} training; resume it with the same "
                         f"train.distributed, not {now}")
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        target = _sharded_state(model, optimizer)
        if reset_optimizer:  # only the model's shards; the optimizer stays fresh
            target = {"model": target["model"]}
        dcp.load(target, checkpoint_id=str(path / ck.SHARDED))  # in place, into this rank's shards
        if reset_optimizer:
            set_model_state_dict(model, target["model"])
        else:
            set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"])
    else:
        unwrap(model).load_state_dict(weights)
        if optim is not None:
            optimizer.load_state_dict(optim)
    report = broadcast_from_main({"checkpoint": name, "skipped": found.skipped, "optimizer_reset": found.optimizer_reset,
                                  "verified": found.verified, "pointer_problem": found.pointer_problem}
                                 if found else None)
    if "ranks" in state:
        state = state["ranks"][get_rank()]
    return path, state, report
