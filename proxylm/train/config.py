"""Training and evaluation configs."""

from __future__ import annotations

from dataclasses import dataclass

from proxylm.core.errors import require


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
    # float32 | auto (bfloat16 autocast where the device computes it natively) | bfloat16; float32 stays the default:
    # bfloat16 moved val BPB by -0.023 [-0.044, -0.002] at equal steps (BENCHMARKS.md "bfloat16 on the CPU")
    dtype: str = "float32"
    compile: bool = False
    distributed: str = "ddp"  # ddp | fsdp  (only used under torchrun with world size > 1)
    activation_checkpointing: bool = False
    threads: int = 0  # torch CPU threads (0: the cores the load average leaves free; README 'Threads')
    init_from: str | None = None  # fresh runs: start from a `proxylm export` dir or a run dir (not on resume)

    def __post_init__(self):
        require(self.lr_schedule in ("cosine", "wsd", "constant"), "lr_schedule", self.lr_schedule,
                "must be cosine, wsd or constant")
        require(self.dtype in ("auto", "float32", "bfloat16"), "dtype", self.dtype, "must be auto, float32 or bfloat16")
        require(self.distributed in ("ddp", "fsdp"), "distributed", self.distributed, "must be ddp or fsdp")
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
                self.device, "must be auto, cpu, cuda or cuda:N")
        for key in ("max_steps", "grad_accum", "log_every"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        for key in ("warmup_steps", "eval_every", "evals_per_run", "ckpt_every", "threads", "max_flops",
                    "weight_decay", "grad_clip"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        require(self.keep_ckpts >= 0, "keep_ckpts", self.keep_ckpts, "must be >= 0 (0 keeps every checkpoint)")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.eps > 0, "eps", self.eps, "must be > 0")
        for key in ("min_lr_frac", "wsd_decay_frac"):
            require(0.0 <= getattr(self, key) <= 1.0, key, getattr(self, key), "must be in [0, 1]")
        for key in ("beta1", "beta2"):
            require(0.0 <= getattr(self, key) < 1.0, key, getattr(self, key), "must be in [0, 1)")


@dataclass
class LoggingConfig:
    """Where metrics go besides metrics.jsonl and TensorBoard (run_dir/tb)."""

    wandb: bool = False  # Weights & Biases (pip install 'proxylm[wandb]'); off by default
    wandb_project: str = "proxylm"
    wandb_mode: str = ""  # online | offline | disabled ("": wandb's own default or $WANDB_MODE); offline: run_dir/wandb

    def __post_init__(self):
        require(self.wandb_mode in ("", "online", "offline", "disabled"), "wandb_mode", self.wandb_mode,
                "must be online, offline, disabled or empty (wandb's default)")
        require(bool(self.wandb_project), "wandb_project", self.wandb_project, "must name a project")


@dataclass
class EvalConfig:
    """Raw-byte BPB windows: every evaluation (training's periodic eval, `eval bpb`, compare, robustness) takes
    its window from window() and its step from stride_for(), so there is one default: the training seq_len, and
    half the window (every target is scored once, with at least half a window of context before it)."""

    seq_len: int = 0  # 0: the training seq_len
    stride: int = 0  # 0: seq_len // 2
    max_bytes: int = 200_000  # validation bytes scored during training (0: whole split)
    # the final eval of a run (its reported val BPB): the whole val split up to this many bytes (0: no bound);
    # the shipped micro/tiny configs and compare presets lower it to keep runs fast (the summary says the bound)
    final_max_bytes: int = 1_000_000
    batch_size: int = 8

    def __post_init__(self):
        require(self.seq_len == 0 or self.seq_len >= 2, "seq_len", self.seq_len, "must be 0 (the training seq_len) or >= 2")
        require(self.stride >= 0, "stride", self.stride, "must be >= 0 (0: seq_len // 2)")
        require(self.seq_len == 0 or self.stride <= self.seq_len, "stride", self.stride,
                f"must be <= eval.seq_len ({self.seq_len})")
        require(self.max_bytes >= 0, "max_bytes", self.max_bytes, "must be >= 0 (0: the whole split)")
        require(self.final_max_bytes >= 0, "final_max_bytes", self.final_max_bytes, "must be >= 0 (0: the whole split)")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")

    def window(self, train_seq_len: int) -> int:
        """Symbols per eval window: eval.seq_len, else the training seq_len."""
        return self.seq_len or train_seq_len

    def stride_for(self, window: int) -> int:
        """Step between eval windows of `window` symbols: eval.stride, else half the window."""
        return self.stride or max(1, window // 2)
