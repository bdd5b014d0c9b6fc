"""The training loop: views schedule fed by the optimizer step, FLOP budget, exact resume.

    proxylm train proxy-bpe-tiny train.max_steps=200 --out runs/demo
    proxylm resume runs/demo

Loss normalisation: each micro-batch contributes its loss *sum*; after all micro-batches (and all
ranks) the gradients are divided by the global weight sum, so gradient accumulation and data
parallelism give exactly the gradient of one big batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from proxylm.core import rundir
from proxylm.core.device import autocast, describe_dtype, native_bf16, resolve_dtype
from proxylm.core.errors import UserError
from proxylm.model.flops import training_flops
from proxylm.train import distributed as dist_utils
from proxylm.train.interrupt import StopOnInterrupt


class NonFiniteTraining(UserError):
    """The loss or the gradient norm is NaN or infinite: stopped before the optimizer step (nothing saved)."""


def lr_at(cfg, step: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    floor = t.lr * t.min_lr_frac
    if t.lr_schedule == "constant":
        return t.lr
    if t.lr_schedule == "cosine":
        progress = (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps)
        return floor + (t.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = int(total_steps * (1 - t.wsd_decay_frac))  # wsd: warm-up, stable, linear decay
    if step < decay_start:
        return t.lr
    progress = (step - decay_start) / max(1, total_steps - decay_start)
    return t.lr + (floor - t.lr) * min(1.0, progress)


def step_flops(cfg, rep, world_size: int, n_raw_positions: int, n_bridge_positions: int = 0) -> float:
    """FLOPs of one optimizer step over all micro-batches and ranks; raw heads run at
    `n_raw_positions` positions in all (those whose targets are all raw), the output bridge at
    `n_bridge_positions`."""
    d, m = cfg.data, cfg.model
    n_micro = cfg.train.grad_accum * world_size
    flops = lambda n_raw, n_br=0: training_flops(m, rep.vocab_size, rep.raw_vocab_size,  # noqa: E731
                                                 d.batch_size, d.seq_len, n_raw, n_br)
    return flops(0) * n_micro + (flops(n_raw_positions, n_bridge_positions) - flops(0))


def planned_steps(cfg, rep, world_size: int = 1) -> int:
    """Steps the LR and views schedules span: max_steps, or fewer if the FLOP budget ends first."""
    t = cfg.train
    if t.max_flops <= 0:
        return t.max_steps
    # Raw heads only run at raw positions, unknown in advance: plan without them (a lower bound of the
    # step cost), so the budget, not the plan, ends the run; the schedules then end within a few %.
    return max(1, min(t.max_steps, int(t.max_flops // step_flops(cfg, rep, world_size, 0))))


class Trainer:
    """The loop, handed its parts (proxylm/assemble.py builds them for a corpus run; M1 training in
    proxylm/prepare/m1.py hands in its own loader and evaluator):

        cfg        the run's RunConfig (proxylm/config.py, a layer below this one: read, never imported)
        model      the unwrapped Transformer, already on `device` (wrapped here for DDP/FSDP)
        loader     next_batch(step) -> Batch, schedule(step), state_dict(), load_state_dict(), stats()
        evaluator  evaluator(model) -> {"bpb": float, "bytes": int, ...}
    """

    def __init__(self, cfg, run_dir, model, rep, loader, evaluator, ctx=None, device=None,
                 total_steps: int | None = None, quiet: bool = False):
        self.cfg, self.run_dir, self.quiet = cfg, Path(run_dir), quiet
        t = cfg.train
        self.ctx = ctx or dist_utils.DistContext()
        self.device = device or next(model.parameters()).device
        self.rep, self.loader, self.evaluator = rep, loader, evaluator
        self.raw_model = model
        # the compute dtype; a resumed run keeps the one its checkpoints were trained in (restore())
        self.dtype = resolve_dtype(t.dtype, self.device)
        self.model = dist_utils.wrap_model(self.raw_model, cfg.train, self.ctx, dtype=self.dtype)
        self.optimizer = self._make_optimizer()
        self.total_steps = total_steps or planned_steps(cfg, rep, self.ctx.world_size)
        self.eval_every = (-(-self.total_steps // t.evals_per_run)) if t.evals_per_run > 0 else t.eval_every
        self.step, self.flops, self.symbols, self.raw_bytes, self.elapsed = 0, 0.0, 0, 0, 0.0
        # inputs by view, each counted once: raw-view bytes (= raw symbols), compressed-view bytes and symbols
        self.raw_view_bytes, self.compressed_view_bytes, self.compressed_symbols = 0, 0, 0
        self.last_saved: int | None = None   # the step of the newest checkpoint this process saved or loaded

    # ---- set-up ---------------------------------------------------------------------------------
    def _make_optimizer(self):
        t = self.cfg.train
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=fused)

    def step_flops(self, n_raw_positions: int, n_bridge_positions: int = 0) -> float:
        return step_flops(self.cfg, self.rep, self.ctx.world_size, n_raw_positions, n_bridge_positions)

    # ---- state ----------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"step": self.step, "flops": self.flops, "symbols": self.symbols, "raw_bytes": self.raw_bytes,
                "elapsed": self.elapsed, "total_steps": self.total_steps,
                "raw_view_bytes": self.raw_view_bytes, "compressed_view_bytes": self.compressed_view_bytes,
                "compressed_symbols": self.compressed_symbols,
                "loader": self.loader.state_dict(), "torch_rng": torch.get_rng_state().tolist(),
                "world_size": self.ctx.world_size, "dtype": self.dtype}

    def restore(self, reset_optimizer: bool = False, accept_changed_data: bool = False) -> dict:
        """Load the newest usable checkpoint (model and optimizer; sharded under FSDP); `state` is this rank's
        own. Every fallback taken is counted in the log line and in run_dir/resume.jsonl."""
        found = dist_utils.load_checkpoint(self.run_dir, self.model, self.optimizer, self.ctx.world_size,
                                           reset_optimizer=reset_optimizer)
        if found is None:
            raise FileNotFoundError(f"{self.run_dir}: nothing to resume (no complete checkpoint in "
                                    f"{self.run_dir / 'checkpoints'})")
        path, state, report = found
        self.step, self.flops = state["step"], state["flops"]
        self.last_saved = self.step
        self.symbols, self.raw_bytes, self.elapsed = state["symbols"], state["raw_bytes"], state["elapsed"]
        self.raw_view_bytes = state.get("raw_view_bytes", 0)  # absent in checkpoints written before these counters
        self.compressed_view_bytes = state.get("compressed_view_bytes", 0)
        self.compressed_symbols = state.get("compressed_symbols", 0)
        changed = self.loader.check_unchanged(state["loader"], accept_changed_data)
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        notes = self._resume_dtype(state.get("dtype", "float32"))  # absent: trained before dtype=auto
        if report["skipped"]:
            notes.append(f"skipped {len(report['skipped'])} newer checkpoint(s): "
                         + "; ".join(reason for _, reason in report["skipped"]))
        if report["optimizer_reset"]:
            notes.append("optimizer state reset (--reset-optimizer): AdamW starts fresh")
        if not report["verified"]:
            notes.append("checkpoint has no checksums (older format): loaded unverified")
        if report["pointer_problem"]:
            notes.append(report["pointer_problem"])
        if changed:
            report["accepted_changed_units"] = changed
            notes.append(f"--accept-changed-data: going on with {len(changed)} changed corpus unit(s): "
                         + ", ".join(changed[:5]))
        self.log(f"resumed from {path} at step {self.step}" + "".join(f"\n  warning: {n}" for n in notes))
        if self.ctx.is_main:
            with open(self.run_dir / "resume.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **report, "skipped_count": len(report["skipped"])}) + "\n")
        return report

    def _resume_dtype(self, recorded: str) -> list[str]:
        """Keep the dtype the run was trained in (resume equals an uninterrupted run within a dtype) unless
        train.dtype names another; say what that costs on this machine."""
        notes = []
        if self.cfg.train.dtype == "auto":
            self.dtype = recorded
        elif self.dtype != recorded:
            notes.append(f"train.dtype={self.dtype} but the checkpoints were trained in {recorded}: the run "
                         "continues in another dtype and will not equal an uninterrupted run")
        if self.dtype == "bfloat16" and not native_bf16(self.device):
            notes.append(f"this {self.device.type} has no native bfloat16: the run continues in bfloat16 "
                         "(emulated, slower) to stay equal to an uninterrupted run; train.dtype=float32 changes it")
        return notes

    def dtype_line(self) -> str:
        return describe_dtype(self.cfg.train.dtype, self.dtype, self.device)

    def save(self) -> None:
        # every rank takes part: FSDP shards, the consolidated model and each rank's loader state
        dist_utils.save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self._state(),
                                   keep=self.cfg.train.keep_ckpts)
        self.last_saved = self.step

    def _non_finite_message(self, loss: float, grad_norm: float) -> str:
        head = (f"step {self.step + 1}: the loss is {loss} (gradient norm {grad_norm}); training stopped before "
                f"the optimizer step")
        fix = f"lower train.lr (now {self.cfg.train.lr}) or set train.grad_clip (now {self.cfg.train.grad_clip})"
        if self.last_saved is None:
            return f"{head}, no checkpoint was saved; {fix} and train again"
        return (f"{head}; the last good checkpoint (step {self.last_saved}) is kept: `proxylm resume {self.run_dir} "
                f"train.lr=...` continues from it, or {fix} and train again")

    def _trim_metrics(self) -> None:
        """metrics.jsonl keeps only rows up to the step training starts from: an aborted attempt's later rows
        (after a resume) or every row (a restart from step 0) would otherwise be written twice."""
        path = self.run_dir / "metrics.jsonl"
        if not self.ctx.is_main or not path.exists():
            return
        kept, dropped = [], 0
        with open(path, "rb") as f:
            for line in f:
                try:
                    keep = int(json.loads(line)["step"]) <= self.step
                except (ValueError, KeyError, TypeError):
                    keep = False   # a torn last line of a killed attempt
                if keep:
                    kept.append(line)
                else:
                    dropped += 1
        if dropped:
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(b"".join(kept))
            os.replace(tmp, path)
            self.log(f"metrics.jsonl: dropped {dropped} row(s) after step {self.step} (an earlier attempt's)")

    # ---- logging --------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        """A line on stderr (rank 0); --quiet hides the progress only, never the summary or the evals."""
        if self.ctx.is_main and msg:
            print(msg, file=sys.stderr, flush=True)

    def _metrics(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        rundir.append_metrics(self.run_dir, record)
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])
        if getattr(self, "_wandb", None) is not None:
            self._wandb.log(record)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> dict:
        """The evaluator's result; `final`: its `final` method where it has one (a larger, bounded share of the
        val split: the run's reported val BPB)."""
        fn = getattr(self.evaluator, "final", None) if final else None
        with autocast(self.device, self.dtype):
            return (fn or self.evaluator)(self.raw_model)

    # ---- one optimizer step ---------------------------------------------------------------------
    def train_step(self) -> dict:
        t = self.cfg.train
        lr = lr_at(self.cfg, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        S = self.cfg.data.seq_len
        sums = torch.zeros(6, dtype=torch.float64)  # loss, weight, raw nll, raw n, comp nll, comp n
        n_raw_positions, symbols, raw_bytes, comp_bytes, comp_symbols = 0, 0, 0, 0, 0
        n_bridge, bridge_nll = 0, 0.0  # the output bridge's positions and CE (model/bridge.py)
        mixed = autocast(self.device, self.dtype)
        for micro in range(t.grad_accum):
            batch = self.loader.next_batch(self.step)
            tokens = batch.tokens.to(self.device, non_blocking=True)        # (B, S+F)
            doc_ids = batch.doc_ids.to(self.device, non_blocking=True)      # (B, S+F)
            positions = batch.positions.to(self.device, non_blocking=True)  # (B, S)
            with dist_utils.no_sync_unless(self.model, last=micro == t.grad_accum - 1), mixed:
                hidden = self.model(tokens[:, :S], positions=positions, doc_ids=doc_ids[:, :S])
                out = self.raw_model.loss(hidden, tokens, doc_ids)
                out.loss_sum.backward()
            comp = batch.is_compressed.to(self.device) & out.counted
            raw = ~batch.is_compressed.to(self.device) & out.counted
            sums += torch.tensor([float(out.loss_sum.detach()), float(out.weight_sum), float(out.nll[raw].sum()),
                                  float(raw.sum()), float(out.nll[comp].sum()), float(comp.sum())],
                                 dtype=torch.float64)
            if out.n_raw_positions is not None:
                n_raw_positions += int(out.n_raw_positions)
            if out.n_bridge_positions is not None:
                n_bridge += int(out.n_bridge_positions)
                bridge_nll += float(out.bridge_nll_sum)
            symbols += tokens.shape[0] * S
            raw_bytes += batch.raw_bytes
            comp_bytes += batch.compressed_bytes
            comp_symbols += batch.compressed_symbols
        sums = dist_utils.all_reduce_sum(sums.to(self.device)).cpu()
        weight = max(float(sums[1]), 1.0)
        # DDP averages gradients over ranks; undo that and divide by the global weight instead
        scale = self.ctx.world_size / weight if dist_utils.averages_gradients(self.model) else 1.0 / weight
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = dist_utils.clip_grad_norm(self.model, t.grad_clip)  # global norm, also over FSDP shards
        loss = float(sums[0]) / weight
        if not (math.isfinite(loss) and math.isfinite(float(grad_norm))):   # same on every rank (all-reduced)
            raise NonFiniteTraining(self._non_finite_message(loss, float(grad_norm)))
        self.optimizer.step()
        counts = dist_utils.all_reduce_sum(torch.tensor([n_raw_positions, symbols, raw_bytes, comp_bytes, comp_symbols,
                                                         n_bridge, bridge_nll], dtype=torch.float64,
                                                        device=self.device)).cpu()
        step_flops = self.step_flops(int(counts[0]), int(counts[5]))
        self.flops += step_flops
        self.symbols += int(counts[1])
        self.raw_bytes += int(counts[2])
        self.compressed_view_bytes += int(counts[3])
        self.raw_view_bytes += int(counts[2]) - int(counts[3])
        self.compressed_symbols += int(counts[4])
        self.step += 1
        rate, mode = self.loader.schedule(self.step - 1)
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                "loss_raw": float(sums[2] / sums[3]) if sums[3] else None,
                "loss_compressed": float(sums[4] / sums[5]) if sums[5] else None,
                "flops": self.flops, "symbols": self.symbols, "raw_bytes": self.raw_bytes,
                "raw_view_bytes": self.raw_view_bytes, "compressed_view_bytes": self.compressed_view_bytes,
                "compressed_symbols": self.compressed_symbols, "rate": rate, "mode": mode,
                **({"loss_bridge": float(counts[6] / counts[5])} if counts[5] else {})}

    def _budget_spent(self, next_step_flops: float | None) -> bool:
        """True when one more step (costing about `next_step_flops`) would overrun train.max_flops."""
        budget = self.cfg.train.max_flops
        return budget > 0 and bool(next_step_flops) and self.flops + next_step_flops > budget * 1.0001

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict:
        from tqdm import tqdm

        t = self.cfg.train
        self._tb = self._wandb = None
        if self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter  # a declared dependency; slow to import, so here

            self._tb = SummaryWriter(str(self.run_dir / rundir.TB_DIR))
            if getattr(getattr(self.cfg, "logging", None), "wandb", False):
                from proxylm.train.wandb_log import WandbLogger

                self._wandb = WandbLogger(self.cfg.logging, self.run_dir, dataclasses.asdict(self.cfg), self.cfg.name)
        # not a terminal (nohup, SLURM, CI): no carriage-return bar but one plain line per log_every steps
        self._plain = plain = self.ctx.is_main and not self.quiet and not sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.ctx.is_main or self.quiet or plain,
                   dynamic_ncols=True, file=sys.stderr)
        self._trim_metrics()
        last = {}
        evals = []
        step_flops_estimate = self.flops / self.step if self.step else None  # known again after a resume
        stop = StopOnInterrupt(enabled=self.ctx.world_size == 1)
        with stop:
            self._loop(bar, t, evals, last, step_flops_estimate, stop)
        last = self._last
        bar.close()
        if hasattr(self.loader, "close"):  # stop data workers; a later fit() restarts them where they were
            self.loader.close()
        if self._interrupted:
            self._close_loggers()
            raise KeyboardInterrupt
        result = self._result
        if not evals:  # resumed a finished run, or budget hit before the first step
            result = self.evaluate(final=True)
            evals.append({"step": self.step, "flops": self.flops, "val_bpb": result["bpb"]})
        return self._finish(evals, last, result)

    def _loop(self, bar, t, evals: list, last: dict, step_flops_estimate, stop) -> None:
        self._last, self._result, self._interrupted = last, {}, False
        saved = self.step
        while self.step < self.total_steps:
            if self._budget_spent(step_flops_estimate):
                break
            before, t0 = self.flops, time.perf_counter()
            last = self.train_step()
            step_flops_estimate = self.flops - before
            self.elapsed += time.perf_counter() - t0  # training time only: evals and saves excluded
            last["symbols_per_s"] = self.symbols / max(self.elapsed, 1e-9)
            last["raw_bytes_per_s"] = self.raw_bytes / max(self.elapsed, 1e-9)
            last["elapsed"] = self.elapsed
            bar.update(1)
            bar.set_postfix_str(_postfix(last), refresh=False)
            done = self.step >= self.total_steps or self._budget_spent(step_flops_estimate)
            if self.step % t.log_every == 0 or done:
                self._metrics({k: v for k, v in last.items() if v is not None})
                if self._plain:
                    print(f"step {self.step}/{self.total_steps} | {_postfix(last)}", file=sys.stderr, flush=True)
            if (self.eval_every and self.step % self.eval_every == 0) or done:
                result = self.evaluate(final=done)
                evals.append({"step": self.step, "flops": self.flops, "val_bpb": result["bpb"]})
                self._metrics({"step": self.step, "flops": self.flops, "val_bpb": result["bpb"],
                               "val_bytes": result["bytes"]})
                if self.ctx.is_main:
                    final = f" (final: {result['covers']})" if result.get("covers") else ""
                    bar.write(f"step {self.step}: val bpb {result['bpb']:.4f} at {self.flops:.3g} FLOPs{final}",
                              file=sys.stderr)  # stdout is kept for the --json summary
            if (t.ckpt_every and self.step % t.ckpt_every == 0) or done:
                self.save()
                saved = self.step
            self._last = last
            if done:
                self._result = result
            if stop.requested and not done:
                self._interrupted = True
                if saved != self.step:
                    self.save()
                bar.write(f"interrupted at step {self.step} of {self.total_steps}: checkpoint saved; continue with "
                          f"`proxylm resume {self.run_dir}`", file=sys.stderr)
                return

    def _close_loggers(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.close()

    def _finish(self, evals: list, last: dict, result: dict) -> dict:
        self._close_loggers()
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "flops": self.flops,
                   "symbols": self.symbols, "raw_bytes": self.raw_bytes, "raw_view_bytes": self.raw_view_bytes,
                   "compressed_view_bytes": self.compressed_view_bytes,
                   "compressed_symbols": self.compressed_symbols, "val_bpb": evals[-1]["val_bpb"],
                   "loss": last.get("loss"), "elapsed_s": self.elapsed, "dtype": self.dtype, "loader_stats": self.loader.stats(),
                   # which bytes val_bpb covers (the final eval's)
                   "val_bytes": result.get("bytes"), "val_documents": result.get("documents"),
                   "val_covers": result.get("covers"), "val_sha256": result.get("sha256")}
        bridge = getattr(self.raw_model, "output_bridge", None)
        if bridge is not None:  # raw runs the codec could not encode (left out of the auxiliary loss; this process)
            summary.update(bridge.stats())
        if self.ctx.is_main:
            (self.run_dir / rundir.SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary


def _postfix(m: dict) -> str:
    parts = [f"loss {m['loss']:.3f}"]
    if m.get("loss_raw") is not None:
        parts.append(f"raw {m['loss_raw']:.3f}")
    if m.get("loss_compressed") is not None:
        parts.append(f"comp {m['loss_compressed']:.3f}")
    parts += [f"{m['symbols_per_s']:.0f} sym/s", f"{m['raw_bytes_per_s']:.0f} B/s", f"{m['flops']:.2e} FLOPs"]
    return " | ".join(parts)
