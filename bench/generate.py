"""Generation speed with the KV cache vs full recompute, at ~1k bytes of context, side by side.

    python bench/generate.py                      # CPU, small model (ModelConfig defaults: dim 256, 4 layers)
    python bench/generate.py --device cuda --new-bytes 128

Both paths generate the same bytes (checked) from a randomly initialised byte model; the stop ids are
disabled so both run exactly --new-bytes steps. Prints the numbers, then `RESULT kv_cache_speedup <ratio>`.
"""

from __future__ import annotations

import argparse
import time

import torch

from proxylm.core.representation import Representation
from proxylm.eval.generate import generate
from proxylm.core.interface import ByteInterface
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--context-bytes", type=int, default=1024)
    p.add_argument("--new-bytes", type=int, default=64)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    rep = Representation.bytes_only()
    cfg = ModelConfig(dim=args.dim, n_layers=args.layers, n_heads=max(1, args.dim // 64),
                      max_seq_len=args.context_bytes + args.new_bytes + 8)
    model = Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).to(args.device).eval()
    iface = ByteInterface(rep)
    iface.stop_ids = ()  # fixed length: never stop early, so both paths do the same number of steps
    prompt = bytes(range(32, 127)) * (args.context_bytes // 95 + 1)
    prompt = prompt[:args.context_bytes]

    def run(use_cache):
        return generate(model, iface, prompt, max_bytes=args.new_bytes, use_cache=use_cache)

    run(True)  # warm-up (allocations, kernels)
    cached, t_cache = timed(lambda: run(True), args.device)
    full, t_full = timed(lambda: run(False), args.device)
    n = len(cached)
    print(f"model: dim {cfg.dim}, {cfg.n_layers} layers, {model.num_params() / 1e6:.2f}M params, "
          f"device {args.device}, threads {torch.get_num_threads()}")
    print(f"context {args.context_bytes} bytes (+2 sentinels), {n} new bytes")
    print(f"kv cache : {t_cache:8.3f} s  {n / t_cache:9.1f} bytes/s")
    print(f"recompute: {t_full:8.3f} s  {n / t_full:9.1f} bytes/s")
    print(f"identical output: {cached == full}")
    print(f"RESULT kv_cache_speedup {t_full / t_cache:.1f}")


if __name__ == "__main__":
    main()
