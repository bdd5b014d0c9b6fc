"""GPU readiness check: CPU/GPU loss parity on a tiny model, then throughput and MFU of a ~125M model.

    python bench/gpu_check.py                          # about 3 minutes on one H100/H200
    python bench/gpu_check.py --seconds 30 --peak-tflops 989
    python bench/gpu_check.py --config bytes-gpu data.batch_size=8 train.compile=false

1. Parity: one batch of real text (this package's own source, packed by TrainLoader with document
   masks) through a tiny model in float32 on the CPU (SDPA with a boolean mask) and on the GPU
   (FlexAttention with a document block mask); loss and gradient norm must agree within PARITY_RTOL.
2. Throughput: the Trainer's own train_step on the --config (default bytes-gpu: dim 768, 12 layers,
   12 heads, seq 2048, batch 16, bf16 autocast, per-block torch.compile, flex attention) for --seconds
   after --warmup steps (compilation). MFU = the trainer's FLOP counter (model FLOPs, attention counted
   dense S x S as in PaLM's formula) per second / the card's dense bf16 peak (PEAK_TFLOPS, or
   --peak-tflops). Prints
       RESULT gpu_symbols_per_s <symbols per second>
       RESULT gpu_mfu <fraction of peak>
   and the share of step time spent waiting for the data loader.

Without CUDA it says so, runs the CPU side of the parity check and a few seconds of the throughput
harness on a micro model (no RESULT lines), and exits 0. Exit 1: parity failed.
"""

from __future__ import annotations

import argparse
import copy
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
PARITY_SEQ = 256  # a multiple of FlexAttention's 128-position blocks
PARITY_MODEL = dict(dim=64, n_layers=2, n_heads=4, n_pred_heads=2)
CPU_HARNESS_SECONDS = 3.0
CPU_HARNESS_CONFIG = ["bytes-micro", "model.dim=32", "data.seq_len=64", "data.batch_size=2", "train.threads=1"]


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


# ---- 1. parity ----------------------------------------------------------------------------------
def parity_batch():
    """One (2, PARITY_SEQ) batch of this package's source files, packed with document boundaries."""
    from proxylm.data.config import DataConfig, ViewsConfig
    from proxylm.data.loader import TrainLoader
    from proxylm.core.representation import Representation

    rep = Representation.bytes_only()
    data = DataConfig(corpus=str(REPO / "proxylm"), val_fraction=0.0, seq_len=PARITY_SEQ, batch_size=2)
    n_future = PARITY_MODEL["n_pred_heads"]
    return rep, TrainLoader(data, ViewsConfig(), rep, n_future=n_future).next_batch(0)


def loss_and_grad_norm(model, batch, device) -> tuple[float, float]:
    b = batch.to(device)
    S = b.positions.shape[1]
    model.zero_grad(set_to_none=True)
    out = model.loss(model(b.tokens[:, :S], positions=b.positions, doc_ids=b.doc_ids[:, :S]), b.tokens, b.doc_ids)
    loss = out.loss_sum / out.weight_sum
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), float(norm)


def parity(cuda: bool) -> bool:
    from proxylm.model.config import ModelConfig
    from proxylm.model.transformer import Transformer

    rep, batch = parity_batch()
    torch.manual_seed(0)
    cpu_model = Transformer(ModelConfig(**PARITY_MODEL), rep.vocab_size, rep.raw_vocab_size)
    gpu_model = copy.deepcopy(cpu_model)
    cpu = loss_and_grad_norm(cpu_model, batch, "cpu")
    print(f"parity: cpu float32 (SDPA, boolean document mask): loss {cpu[0]:.6f}, grad norm {cpu[1]:.6f}")
    if not cuda:
        return True
    gpu = loss_and_grad_norm(gpu_model.cuda(), batch, "cuda")
    ok = all(abs(g - c) <= PARITY_RTOL * abs(c) for g, c in zip(gpu, cpu))
    print(f"parity: gpu float32 (FlexAttention, document block mask): loss {gpu[0]:.6f}, grad norm {gpu[1]:.6f} "
          f"-> {'ok' if ok else 'MISMATCH'} (rtol {PARITY_RTOL})")
    return ok


# ---- 2. throughput ------------------------------------------------------------------------------
def throughput(config: list[str], seconds: float, warmup: int, device: str) -> dict:
    """Train steps of `config` for `seconds` after `warmup` steps; symbols/s, FLOP/s, loader share."""
    from proxylm.config import load_config
    from proxylm.assemble import build_trainer

    name, *overrides = config
    # a schedule long enough never to end; no evaluation or checkpoint (train_step is called directly)
    cfg = load_config(name, [f"train.device={device}", "train.max_steps=1000000", "train.eval_every=0",
                             "train.ckpt_every=0", *overrides])
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
    result = {"steps": steps, "elapsed_s": elapsed, "symbols_per_s": (trainer.symbols - symbols0) / elapsed,
              "flops_per_s": (trainer.flops - flops0) / elapsed, "loader_share": loader_s[0] / elapsed,
              "loss": last["loss"], "params": n_params}
    if device == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("throughput: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()), flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", nargs="+", default=["bytes-gpu"], metavar="NAME [key=value ...]",
                   help="shipped config (or YAML) and overrides for the throughput run")
    p.add_argument("--seconds", type=float, default=60.0, help="timed training (after the warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile happens here)")
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the card (default: from PEAK_TFLOPS)")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device: running the CPU parts only (parity reference, throughput harness on a micro model)")
    ok = parity(cuda)
    if not cuda:
        throughput(CPU_HARNESS_CONFIG, min(args.seconds, CPU_HARNESS_SECONDS), 1, "cpu")
        print("no CUDA device: GPU parity, throughput and MFU skipped")
        return 0
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(name)
    result = throughput(args.config, args.seconds, args.warmup, "cuda")
    print(f"RESULT gpu_symbols_per_s {result['symbols_per_s']:.1f}")
    if peak is None:
        print(f"no bf16 peak known for '{name}': pass --peak-tflops for the MFU")
    else:
        mfu = result["flops_per_s"] / (peak * 1e12)
        print(f"{name}: {result['flops_per_s'] / 1e12:.1f} TFLOP/s of {peak:.0f} peak")
        print(f"RESULT gpu_mfu {mfu:.4f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
