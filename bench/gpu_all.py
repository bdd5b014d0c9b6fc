"""The Python half of bench/gpu_all.sh: correctness of the GPU path against the CPU, throughput and MFU of
the bytes-gpu model (85M parameters), and its peak memory against `proxylm plan`'s prediction.

    python bench/gpu_all.py                         # on one GPU: about 4 minutes
    python bench/gpu_all.py --dry-run               # the CPU-sized version (tests/test_gpu_all.py runs it)
    python bench/gpu_all.py --seconds 30 --config bytes-gpu data.batch_size=32

1. Parity: one batch of real text (this package's own source, packed by TrainLoader with document masks)
   through a tiny model. Reference: float32 on the CPU (SDPA with a boolean mask). Checked against it, loss and
   gradient norm:
     gpu_fp32_flex            float32, compiled FlexAttention with a document block mask   (rtol PARITY_RTOL)
     gpu_bf16_flex_compiled   bf16 autocast + compiled blocks + compiled flex, as training runs (rtol BF16_RTOL)
   --dry-run: cpu_bf16_sdpa (bf16 autocast on the CPU), and the loss alone through eager flex (no backward
   on a CPU in torch 2.13).
2. Throughput: the Trainer's own train_step on --config (default bytes-gpu: dim 768, 12 layers, seq 2048,
   batch 16, bf16, compiled, flex) for --seconds after --warmup steps (compilation). MFU = model FLOPs per
   second / the card's dense bf16 peak (H100/H200 SXM 989 TFLOP/s), with the attention FLOPs (counted dense,
   S x S, as the trainer does) and without them.
3. Memory: torch.cuda.max_memory_allocated() over the timed steps against `make_plan(cfg, gpus=1)`.

Prints RESULT lines: gpu_parity_ok (1/0), gpu_symbols_per_s, gpu_mfu, gpu_mfu_no_attention,
gpu_peak_memory_gib, plan_memory_gib, plan_memory_ratio (measured / predicted); with --dry-run the same
names with a `dry_` prefix, from the CPU. Exit 1: parity failed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# dense bf16 tensor-core peaks (no sparsity), TFLOP/s; the first name contained in the device name wins
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("A100", 312.0),
               ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0), ("RTX 4090", 165.0)]
PARITY_RTOL = 1e-3  # float32 both sides; kernels differ (SDPA vs FlexAttention, CPU vs GPU matmuls)
BF16_RTOL = 3e-2  # bf16 against float32: 8 mantissa bits through every matmul
PARITY_SEQ = 256  # a multiple of FlexAttention's 128-position blocks
PARITY_MODEL = dict(dim=64, n_layers=2, n_heads=4, n_pred_heads=2)
DRY_CONFIG = ["bytes-micro", "model.dim=32", "data.seq_len=64", "data.batch_size=2", "train.threads=1",
              "train.dtype=bfloat16"]
DRY_SECONDS = 2.0


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


# ---- 1. parity ----------------------------------------------------------------------------------
def parity_batch():
    """One (2, PARITY_SEQ) batch of this package's source files, packed with document boundaries."""
    from proxylm.core.representation import Representation
    from proxylm.data.config import DataConfig, ViewsConfig
    from proxylm.data.loader import TrainLoader

    rep = Representation.bytes_only()
    data = DataConfig(corpus=str(REPO / "proxylm"), val_fraction=0.0, seq_len=PARITY_SEQ, batch_size=2)
    return rep, TrainLoader(data, ViewsConfig(), rep, n_future=PARITY_MODEL["n_pred_heads"]).next_batch(0)


def loss_and_grad_norm(model, batch, device, bf16: bool = False, grad: bool = True) -> tuple[float, float]:
    b = batch.to(device)
    S = b.positions.shape[1]
    model.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16), \
            torch.set_grad_enabled(grad):
        out = model.loss(model(b.tokens[:, :S], positions=b.positions, doc_ids=b.doc_ids[:, :S]),
                         b.tokens, b.doc_ids)
        loss = out.loss_sum / out.weight_sum
    if not grad:
        return float(loss), float("nan")
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), float(norm)


def parity(cuda: bool) -> bool:
    from proxylm.model.config import ModelConfig
    from proxylm.model.transformer import Transformer

    rep, batch = parity_batch()
    torch.manual_seed(0)
    ref_model = Transformer(ModelConfig(**PARITY_MODEL, attention="sdpa"), rep.vocab_size, rep.raw_vocab_size)
    ref = loss_and_grad_norm(ref_model, batch, "cpu")
    print(f"parity: reference cpu float32 (SDPA, boolean document mask): loss {ref[0]:.6f}, grad norm {ref[1]:.6f}")

    def variant(name, attention, device, bf16, rtol, compile_blocks=False, grad=True):
        model = copy.deepcopy(ref_model).to(device)
        model.cfg = dataclasses.replace(model.cfg, attention=attention)  # read by every forward
        if compile_blocks:
            for block in model.layers:
                block.compile()
        got = loss_and_grad_norm(model, batch, device, bf16=bf16, grad=grad)
        pairs = list(zip(got, ref)) if grad else [(got[0], ref[0])]
        ok = all(abs(g - c) <= rtol * abs(c) for g, c in pairs)
        print(f"parity: {name}: loss {got[0]:.6f}, grad norm {got[1]:.6f} -> {'ok' if ok else 'MISMATCH'} "
              f"(rtol {rtol})", flush=True)
        return ok

    if cuda:
        checks = [variant("gpu_fp32_flex", "flex", "cuda", False, PARITY_RTOL),
                  variant("gpu_bf16_flex_compiled", "flex", "cuda", True, BF16_RTOL, compile_blocks=True)]
    else:
        checks = [variant("cpu_bf16_sdpa", "sdpa", "cpu", True, BF16_RTOL)]
        from proxylm.model import attention

        saved = attention.BACKENDS["flex_compiled"]
        attention.BACKENDS["flex_compiled"] = attention.flex_eager  # a CPU compile of flex takes ~40 s here
        try:
            checks.append(variant("cpu_fp32_flex_eager (loss only)", "flex", "cpu", False, PARITY_RTOL, grad=False))
        finally:
            attention.BACKENDS["flex_compiled"] = saved
    return all(checks)


# ---- 2. throughput, 3. memory ---------------------------------------------------------------------
def throughput(config: list[str], seconds: float, warmup: int, device: str) -> dict:
    """Train steps of `config` for `seconds` after `warmup` steps: symbols/s, FLOP/s (with and without the
    attention), loader share, peak memory and the plan's prediction."""
    from proxylm.assemble import build_trainer
    from proxylm.config import load_config
    from proxylm.model.flops import BACKWARD_FACTOR, attention_flops_per_sequence
    from proxylm.plan import GIB, make_plan

    name, *overrides = config
    # a schedule long enough never to end; no evaluation or checkpoint (train_step is called directly)
    cfg = load_config(name, [f"train.device={device}", "train.max_steps=1000000", "train.eval_every=0",
                             "train.ckpt_every=0", *overrides])
    sequences = cfg.data.batch_size * cfg.train.grad_accum
    attention_per_step = ((1 + BACKWARD_FACTOR) * cfg.model.n_layers * sequences
                          * attention_flops_per_sequence(cfg.model, cfg.data.seq_len))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, run_dir, quiet=True)
        n_params = trainer.raw_model.num_params()
        loader_s = [0.0]
        next_batch = trainer.loader.next_batch

        def timed_next_batch(step):
            t0 = time.perf_counter()
            batch = next_batch(step)
            loader_s[0] += time.perf_counter() - t0
            return batch

        trainer.loader.next_batch = timed_next_batch
        t0 = time.perf_counter()
        for _ in range(warmup):
            trainer.train_step()
        print(f"throughput: {n_params / 1e6:.1f}M parameters, {warmup} warm-up steps (compilation) took "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        flops0, symbols0, steps, loader_s[0] = trainer.flops, trainer.symbols, 0, 0.0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        while steps == 0 or time.perf_counter() - t0 < seconds:
            last = trainer.train_step()  # ends with a host copy of the loss: the GPU is synchronised
            steps += 1
        elapsed = time.perf_counter() - t0
    flops_per_s = (trainer.flops - flops0) / elapsed
    total_gib = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 80.0
    plan = make_plan(cfg, gpus=1, gpu_memory_gib=total_gib)
    key = "checkpointing" if cfg.train.activation_checkpointing else "no_checkpointing"
    result = {"steps": steps, "elapsed_s": elapsed, "symbols_per_s": (trainer.symbols - symbols0) / elapsed,
              "flops_per_s": flops_per_s, "flops_per_s_no_attention": flops_per_s - attention_per_step * steps / elapsed,
              "loader_share": loader_s[0] / elapsed, "loss": last["loss"], "params": n_params,
              "plan_memory_gib": plan["memory_gib"][key]["total"]}
    if device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / GIB
    print("throughput: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()), flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", nargs="+", default=["bytes-gpu"], metavar="NAME [key=value ...]",
                   help="shipped config (or YAML) and overrides for the throughput run")
    p.add_argument("--seconds", type=float, default=60.0, help="timed training (after the warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile happens here)")
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the card (default: from PEAK_TFLOPS)")
    p.add_argument("--dry-run", action="store_true", help="the CPU-sized version, on the CPU")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.dry_run
    prefix = "" if cuda else "dry_"
    if not cuda and not args.dry_run:
        print("no CUDA device: pass --dry-run for the CPU-sized version")
        return 1
    ok = parity(cuda)
    print(f"RESULT {prefix}gpu_parity_ok {int(ok)}")
    if cuda:
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or peak_tflops(name)
        result = throughput(args.config, args.seconds, args.warmup, "cuda")
    else:
        name, peak = "cpu (dry run)", args.peak_tflops or 989.0
        result = throughput(DRY_CONFIG, min(args.seconds, DRY_SECONDS), 1, "cpu")
    print(f"RESULT {prefix}gpu_symbols_per_s {result['symbols_per_s']:.1f}")
    if peak is None:
        print(f"no bf16 peak known for '{name}': pass --peak-tflops for the MFU")
    else:
        print(f"{name}: {result['flops_per_s'] / 1e12:.3g} TFLOP/s of {peak:.0f} peak")
        print(f"RESULT {prefix}gpu_mfu {result['flops_per_s'] / (peak * 1e12):.4f}")
        print(f"RESULT {prefix}gpu_mfu_no_attention {result['flops_per_s_no_attention'] / (peak * 1e12):.4f}")
    print(f"RESULT {prefix}plan_memory_gib {result['plan_memory_gib']:.3f}")
    if "peak_memory_gib" in result:
        print(f"RESULT {prefix}gpu_peak_memory_gib {result['peak_memory_gib']:.3f}")
        print(f"RESULT {prefix}plan_memory_ratio {result['peak_memory_gib'] / result['plan_memory_gib']:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
