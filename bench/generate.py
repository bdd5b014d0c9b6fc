"""Generation speed side by side: KV cache vs recompute, plain vs self-speculative greedy, batch 8 vs batch 1.

    python bench/generate.py --threads 1                     # trains the two small models first (see below)
    python bench/generate.py --work runs/bench-generate      # keep the trained models; a later call reuses them
    python bench/generate.py --byte-run runs/compare-demo/bytes-mbp --proxy-run runs/compare-demo/proxy-bpe
    python bench/generate.py --device cuda --new-bytes 256

1. KV cache: a randomly initialised byte model, ~1k bytes of context, cached vs full recompute (same bytes,
   checked). `RESULT kv_cache_speedup`.
2. Speculative: greedy decoding of --prompts prompts (code from the stdlib validation split) with
   --new-bytes new bytes each (stop ids disabled, so every path emits exactly that many), plain vs
   self-speculative, output checked identical per prompt; bytes/s, bytes kept per forward (1 + accepted
   drafts), how often each draft position is kept. On a byte model with --heads prediction heads and on a
   proxy model (BPE views, 1 main head + 1 raw-byte head). `RESULT speculative_speedup` (byte model),
   `RESULT proxy_speculative_speedup`.
3. Batches: the same prompts, plain greedy, generate_batch with batch_size 8 vs 1 (output checked identical):
   `RESULT batch8_throughput_ratio` (end to end), `RESULT batch8_decode_ratio` (prompt forwards, the same
   in both, subtracted); also speculative at batch 8 vs plain at batch 1.
Without --byte-run / --proxy-run the models are trained here, from the stdlib corpus with seed 0 for
--steps steps (dim 128, 4 layers, seq 256, batch 8): same command, same models. Times are the median of
--rounds rounds, the paths alternating within each round.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from proxylm.core.interface import ByteInterface
from proxylm.core.representation import Representation
from proxylm.eval.generate import GenStats, generate, generate_batch
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer

MODEL_OVERRIDES = ["model.dim=128", "model.n_layers=4", "model.n_heads=4", "data.seq_len=256",
                   "data.batch_size=8", "train.lr=0.004", "train.warmup_steps=30", "train.seed=0"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def train_run(work: Path, name: str, config: str, overrides: list[str], steps: int) -> Path:
    """Train a run under work/name to `steps` steps: reused when already there, resumed from its last
    checkpoint when interrupted (checkpoints every 100 steps; resume == uninterrupted)."""
    from proxylm.assemble import build_trainer
    from proxylm.config import load_config
    from proxylm.train.checkpoint import latest_checkpoint

    run_dir = work / name
    found = latest_checkpoint(run_dir, with_optimizer=False) if run_dir.exists() else None
    if found is not None and found[3]["step"] == steps:
        print(f"reusing {run_dir} ({steps} steps)")
        return run_dir
    every = min(steps, 100)
    cfg = load_config(config, MODEL_OVERRIDES + overrides + [f"train.max_steps={steps}", f"train.eval_every={steps}",
                                                            f"train.ckpt_every={every}"])
    resume = found is not None and found[3]["step"] < steps
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = build_trainer(cfg, run_dir, resume=resume, quiet=True).fit()
    print(f"trained {name}: {steps} steps ({'resumed, ' if resume else ''}{time.perf_counter() - t0:.0f} s), "
          f"val BPB {summary['val_bpb']:.3f}")
    return run_dir


def bench_prompts(n: int, context: int) -> list[bytes]:
    """n prompts of about `context` bytes: the start of the first n stdlib validation documents, cut after a
    line break (the model continues real code)."""
    from proxylm.data.config import DataConfig
    from proxylm.eval.bpb import read_eval_docs

    docs = [d for d in read_eval_docs("stdlib", "val", DataConfig(corpus="stdlib")) if len(d) > context]
    prompts = []
    for d in docs[:n]:
        cut = d.rfind(b"\n", 0, context)
        prompts.append(d[:cut + 1] if cut > 0 else d[:context])
    return prompts


def kv_cache_part(args) -> None:
    torch.manual_seed(0)
    rep = Representation.bytes_only()
    cfg = ModelConfig(dim=256, n_layers=4, n_heads=4, max_seq_len=1024 + args.new_bytes + 8)
    model = Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).to(args.device).eval()
    iface = ByteInterface(rep)
    iface.stop_ids = ()
    prompt = (bytes(range(32, 127)) * 11)[:1024]

    def run(use_cache):
        return generate(model, iface, prompt, max_bytes=64, use_cache=use_cache)

    run(True)  # warm-up
    cached, t_cache = timed(lambda: run(True), args.device)
    full, t_full = timed(lambda: run(False), args.device)
    print(f"\n[kv cache] random byte model dim 256 x 4 layers, 1024 bytes of context, {len(cached)} new bytes")
    print(f"kv cache {t_cache:.3f} s, recompute {t_full:.3f} s, identical output: {cached == full}")
    print(f"RESULT kv_cache_speedup {t_full / t_cache:.1f}")


def speculative_part(name: str, run, prompts: list[bytes], args) -> tuple[float, bool]:
    """Plain vs speculative greedy per prompt; -> (speedup, identical)."""
    iface = run.interface
    iface.stop_ids = ()  # fixed length: both paths emit exactly --new-bytes per prompt
    model = run.model
    kw = dict(max_bytes=args.new_bytes)
    for p in prompts[:2]:  # warm-up
        generate(model, iface, p, speculative=False, **kw)
        generate(model, iface, p, speculative=True, **kw)
    t_plain, t_spec, plain_out, spec_out = [], [], [], []
    stats = GenStats()
    for r in range(args.rounds):
        tp = ts = 0.0
        outs_p, outs_s = [], []
        for p in prompts:
            out, t = timed(lambda: generate(model, iface, p, speculative=False, **kw), args.device)
            outs_p.append(out)
            tp += t
            st = stats if r == 0 else GenStats()
            out, t = timed(lambda: generate(model, iface, p, speculative=True, stats=st, **kw), args.device)
            outs_s.append(out)
            ts += t
        t_plain.append(tp)
        t_spec.append(ts)
        plain_out, spec_out = outs_p, outs_s
    n_bytes = sum(map(len, plain_out))
    same = [a == b for a, b in zip(plain_out, spec_out)]
    tp, ts = statistics.median(t_plain), statistics.median(t_spec)
    d = stats.as_dict()
    cfg = model.cfg
    print(f"\n[speculative] {name}: dim {cfg.dim} x {cfg.n_layers} layers, {cfg.n_pred_heads} main head(s) + "
          f"{cfg.n_raw_heads} raw head(s), {model.num_params() / 1e6:.2f}M params, {len(prompts)} prompts x "
          f"{args.new_bytes} bytes, greedy")
    print(f"plain       {tp:7.3f} s  {n_bytes / tp:8.1f} bytes/s  ({len(plain_out)} x {args.new_bytes} forwards)")
    print(f"speculative {ts:7.3f} s  {n_bytes / ts:8.1f} bytes/s  ({d['forwards']} forwards, "
          f"{d['drafts']} drafts each)")
    print(f"bytes kept per forward: {d['kept_per_step']:.2f} (of at most {1 + d['drafts']}); "
          f"draft i kept in {[round(a / max(1, d['row_steps']), 3) for a in d['accepted_at']]} of forwards")
    print(f"identical output: {sum(same)}/{len(same)} prompts   (rounds: plain {[round(t, 3) for t in t_plain]}, "
          f"speculative {[round(t, 3) for t in t_spec]})")
    print(f"sample: {plain_out[0][:100]!r}")
    return tp / ts, all(same)


def batch_part(run, prompts: list[bytes], args) -> tuple[float, float]:
    """generate_batch at batch_size 1 vs 8 over the same prompts; -> (end-to-end ratio, decode-only ratio).
    Decode-only subtracts the prompt forwards (timed as a 1-byte generation), which batching does not change:
    each prompt is prefilled alone either way."""
    iface = run.interface
    iface.stop_ids = ()
    model = run.model
    kw = dict(max_bytes=args.new_bytes)
    generate_batch(model, iface, prompts[:2], batch_size=2, speculative=False, **kw)  # warm-up
    t1, t8, t8s, tpre = [], [], [], []
    for _ in range(args.rounds):
        _, t = timed(lambda: generate_batch(model, iface, prompts, batch_size=1, speculative=False, max_bytes=1),
                     args.device)
        tpre.append(t)
        one, t = timed(lambda: generate_batch(model, iface, prompts, batch_size=1, speculative=False, **kw),
                       args.device)
        t1.append(t)
        eight, t = timed(lambda: generate_batch(model, iface, prompts, batch_size=8, speculative=False, **kw),
                         args.device)
        t8.append(t)
        eight_s, t = timed(lambda: generate_batch(model, iface, prompts, batch_size=8, **kw), args.device)
        t8s.append(t)
    n_bytes = sum(map(len, one))
    a, b, c, pre = (statistics.median(x) for x in (t1, t8, t8s, tpre))
    print(f"\n[batch] byte model, {len(prompts)} prompts x {args.new_bytes} bytes, greedy; prompt forwards "
          f"{pre:.3f} s of each total")
    print(f"batch 1             {a:7.3f} s  {n_bytes / a:8.1f} bytes/s  (decoding alone {n_bytes / (a - pre):8.1f})")
    print(f"batch 8             {b:7.3f} s  {n_bytes / b:8.1f} bytes/s  (decoding alone {n_bytes / (b - pre):8.1f})"
          f"  identical: {eight == one}")
    print(f"batch 8 speculative {c:7.3f} s  {n_bytes / c:8.1f} bytes/s  identical: {eight_s == one}  "
          f"({a / c:.2f}x batch 1 plain)")
    ok = eight == one
    return (a / b if ok else 0.0), ((a - pre) / (b - pre) if ok else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--byte-run", help="a trained byte model with extra heads (default: train one)")
    p.add_argument("--proxy-run", help="a trained proxy model with a raw head (default: train one)")
    p.add_argument("--work", help="where trained models are kept and reused (default: a temporary folder)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of each model trained here")
    p.add_argument("--heads", type=int, default=4, help="prediction heads of the byte model trained here")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--context", type=int, default=120,
                   help="prompt bytes (cut at a line break); prompt + output should fit the models' training window")
    p.add_argument("--new-bytes", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from proxylm.assemble import load_run

    kv_cache_part(args)
    tmp = None
    work = Path(args.work) if args.work else Path(tmp := tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        byte_dir = args.byte_run or train_run(work, f"bytes-h{args.heads}", "bytes-micro",
                                              [f"model.n_pred_heads={args.heads}"], args.steps)
        proxy_dir = args.proxy_run or train_run(work, "proxy-bpe", "proxy-bpe-micro", [], args.steps)
        byte_run, proxy_run = load_run(byte_dir, args.device), load_run(proxy_dir, args.device)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    prompts = bench_prompts(args.prompts, args.context)
    window = min(byte_run.cfg.data.seq_len, proxy_run.cfg.data.seq_len)
    if args.context + args.new_bytes + 2 > window:  # past its training window a small model's output degrades
        print(f"note: {args.context} + {args.new_bytes} bytes exceed the {window}-symbol training window")
    print(f"\ndevice {args.device}, threads {torch.get_num_threads()}, prompts: {len(prompts)} x ~{args.context} "
          f"bytes from the stdlib validation split")
    speedup, same = speculative_part(f"byte model ({byte_dir})", byte_run, prompts, args)
    proxy_speedup, proxy_same = speculative_part(f"proxy model ({proxy_dir})", proxy_run, prompts, args)
    ratio, decode_ratio = batch_part(byte_run, prompts, args)
    print()
    print(f"RESULT speculative_speedup {speedup:.2f}" + ("" if same else "  (OUTPUT DIFFERS)"))
    print(f"RESULT proxy_speculative_speedup {proxy_speedup:.2f}" + ("" if proxy_same else "  (OUTPUT DIFFERS)"))
    print(f"RESULT batch8_throughput_ratio {ratio:.2f}")
    print(f"RESULT batch8_decode_ratio {decode_ratio:.2f}")


if __name__ == "__main__":
    main()
