"""Training and evaluation configs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps (upper bound when max_flops is set)
    max_flops: float = 0.0  # stop once this many training FLOPs are spent (0: no budget)
    lr: float = 3e-3
    min_lr_frac: float = 0.1  # final LR = lr * min_lr_frac
    warmup_steps: int = 50
    lr_schedule: str = "cosine"  # cosine | wsd | constant
    wsd_decay_frac: float = 0.2  # wsd: share of steps spent decaying at the end
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step (per rank)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200  # validation BPB every N steps (0: only at the end)
    evals_per_run: int = 0  # if > 0, overrides eval_every: this many evenly spaced evals over the run
    ckpt_every: int = 200  # 0: only at the end
    keep_ckpts: int = 2
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | bfloat16 (autocast on CUDA)
    compile: bool = False
    distributed: str = "ddp"  # ddp | fsdp  (only used under torchrun with world size > 1)
    activation_checkpointing: bool = False
    threads: int = 0  # torch CPU threads (0: torch's default)
    init_from: str | None = None  # fresh runs: start from a `proxylm export` dir or a run dir (not on resume)

    def __post_init__(self):
        if self.lr_schedule not in ("cosine", "wsd", "constant"):
            raise ValueError("lr_schedule must be cosine, wsd or constant")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be float32 or bfloat16")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError("distributed must be ddp or fsdp")
        if self.grad_accum < 1 or self.max_steps < 1:
            raise ValueError("grad_accum and max_steps must be >= 1")


@dataclass
class EvalConfig:
    seq_len: int = 0  # 0: the training seq_len
    stride: int = 0  # 0: seq_len // 2
    max_bytes: int = 200_000  # validation bytes scored during training (0: whole split)
    batch_size: int = 8
