"""Generation speed side by side: KV cache vs recompute, plain vs self-speculative greedy, batch 8 vs batch 1.

    python bench/generate.py --threads 2                     # trains its two models first (~80 min on one core; below)
    python bench/generate.py --work runs/bench-generate      # keep the trained models; a later call reuses them
    python bench/generate.py --byte-run runs/compare-demo/bytes-mbp --proxy-run runs/compare-demo/proxy-bpe
    python bench/generate.py --device cuda --new-bytes 256
    python bench/generate.py --quick --threads 1             # a reviewer's run: small models, fewer rounds (<15 min)

1. KV cache: a randomly initialised byte model, ~1k bytes of context, cached vs full recompute (same bytes,
   checked). `RESULT kv_cache_speedup`.
2. Speculative: greedy decoding of --prompts prompts (code from the stdlib validation split) with
   --new-bytes new bytes each (stop ids disabled, so every path emits exactly that many), plain vs
   self-speculative, output checked identical per prompt; bytes/s, bytes kept per forward (1 + accepted
   drafts), how often each draft position is kept. On a byte model with --heads prediction heads and on a
   proxy model (BPE views, 1 main head + 1 raw-byte head). Speculative is timed as shipped (drafts copied
   from the context where it repeats, else the heads': `RESULT speculative_speedup`, `RESULT
   proxy_speculative_speedup`) and with the heads' drafts alone (`RESULT heads_speculative_speedup`, `RESULT
   proxy_heads_speculative_speedup`). A small model's greedy output repeats itself, which favours the
   context lookup, so the drafting rule is also scored on the real continuation of each prompt
   (teacher-forced, `text_acceptance`).
3. Batches: the same prompts, plain greedy, generate_batch with batch_size 8 vs 1 (output checked identical):
   `RESULT batch8_throughput_ratio` (end to end), `RESULT batch8_decode_ratio` (prompt forwards, the same
   in both, subtracted); also speculative at batch 8 vs plain at batch 1. The same on a larger, randomly
   initialised byte model (--large, default dim 384 x 6 layers, 10.8M parameters): `RESULT
   batch8_throughput_ratio_large` (on one CPU core a 1M-parameter model's batch-8 forward costs ~2.4x a
   batch-1 forward; the larger model's ~1.7x).
Without --byte-run / --proxy-run the models are trained here, from the stdlib corpus with seed 0 for
--steps steps (seq 256, batch 8): the byte model at --byte-model (default dim 256 x 6 layers, 8 attention
heads: 5.2M parameters, ~60 min on one quiet core; `--byte-model 128 4 4` is the 1M-parameter model of the first
runs, ~20 min) and the proxy model at dim 128 x 4 layers (~20 min). Same command, same models; --work keeps
them for the next call. Batching pays on a CPU only once a batch-1 step is bound by reading the weights
rather than by arithmetic: a 1M-parameter model's weights sit in cache, its matmuls at 8 rows cost ~3x one
row's, and batch 8 stays near 3x batch 1 whatever the decoder does. Each ratio is the median over --rounds
rounds of the ratio within a round (the paths alternate within each round; on a shared machine the speed
drifts between rounds by up to half), printed with its range; bytes/s are from the median times.
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

# the models train in bfloat16 where native (cheaper); decoding runs in decoding's own default (float32)
TRAIN_OVERRIDES = ["data.seq_len=256", "data.batch_size=8", "train.warmup_steps=30", "train.seed=0", "train.dtype=auto"]
PROXY_MODEL = ["model.dim=128", "model.n_layers=4", "model.n_heads=4", "train.lr=0.004"]


def byte_model_overrides(dim: int, n_layers: int, n_heads: int, heads: int) -> list[str]:
    """The trained byte model's shape; lr 4e-3 at dim 128, 3e-3 when wider (a wider model wants a lower rate)."""
    return [f"model.dim={dim}", f"model.n_layers={n_layers}", f"model.n_heads={n_heads}",
            f"model.n_pred_heads={heads}", f"train.lr={0.004 if dim <= 128 else 0.003}"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def train_run(work: Path, name: str, config: str, overrides: list[str], steps: int, threads: int = 0) -> Path:
    """Train a run under work/name to `steps` steps: reused when already there, resumed from its last
    checkpoint when interrupted (checkpoints every 100 steps; resume == uninterrupted). threads: --threads as
    train.threads (0: the trainer's thread policy, which sets torch's threads for this process)."""
    from proxylm.assemble import build_trainer
    from proxylm.config import load_config
    from proxylm.train.checkpoint import latest_checkpoint

    run_dir = work / name
    found = latest_checkpoint(run_dir, with_optimizer=False) if run_dir.exists() else None
    if found is not None and found[3]["step"] == steps:
        print(f"reusing {run_dir} ({steps} steps)")
        return run_dir
    every = min(steps, 100)
    cfg = load_config(config, TRAIN_OVERRIDES + overrides + [f"train.max_steps={steps}", f"train.eval_every={steps}",
                                                            f"train.ckpt_every={every}", f"train.threads={threads}"])
    resume = found is not None and found[3]["step"] < steps
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = build_trainer(cfg, run_dir, resume=resume, quiet=True).fit()
    print(f"trained {name}: {steps} steps ({'resumed, ' if resume else ''}{time.perf_counter() - t0:.0f} s), "
          f"val BPB {summary['val_bpb']:.3f}")
    return run_dir


def bench_prompts(n: int, context: int, whole: bool = False) -> list:
    """n prompts of about `context` bytes: the start of the first n stdlib validation documents, cut after a
    line break (the model continues real code); whole: (prompt, its whole document) pairs."""
    from proxylm.data.config import DataConfig
    from proxylm.eval.bpb import read_eval_docs

    docs = [d for d in read_eval_docs("stdlib", "val", DataConfig(corpus="stdlib")) if len(d) > context]
    prompts = []
    for d in docs[:n]:
        cut = d.rfind(b"\n", 0, context)
        prompt = d[:cut + 1] if cut > 0 else d[:context]
        prompts.append((prompt, d) if whole else prompt)
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


def speculative_part(name: str, run, prompts: list[bytes], args) -> tuple[float, float, bool]:
    """Plain vs speculative greedy per prompt, speculative both with the heads' drafts alone (lookup=0) and as
    shipped (drafts copied from the context where it repeats, else the heads'); -> (speedup as shipped,
    speedup of the heads alone, identical output on every path)."""
    iface = run.interface
    iface.stop_ids = ()  # fixed length: every path emits exactly --new-bytes per prompt
    model = run.model
    paths = {"plain": dict(speculative=False), "heads only": dict(lookup=0), "heads + lookup": {}}
    kw = dict(max_bytes=args.new_bytes)
    for p in prompts[:2]:  # warm-up
        for extra in paths.values():
            generate(model, iface, p, **kw, **extra)
    times = {k: [] for k in paths}
    outs = {k: [] for k in paths}
    stats = {k: GenStats() for k in paths}
    for r in range(args.rounds):
        total = dict.fromkeys(paths, 0.0)
        outs = {k: [] for k in paths}
        for p in prompts:
            # the paths alternate prompt by prompt (a noisy machine), their order flipping every round
            for k, extra in (list(paths.items()) if r % 2 == 0 else reversed(paths.items())):
                st = stats[k] if r == 0 else GenStats()
                out, t = timed(lambda: generate(model, iface, p, stats=st, **kw, **extra), args.device)
                outs[k].append(out)
                total[k] += t
        for k in paths:
            times[k].append(total[k])
    n_bytes = sum(map(len, outs["plain"]))
    same = {k: sum(a == b for a, b in zip(outs["plain"], outs[k])) for k in paths}
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = {k: round_ratios(times["plain"], times[k]) for k in paths}
    cfg = model.cfg
    print(f"\n[speculative] {name}: dim {cfg.dim} x {cfg.n_layers} layers, {cfg.n_pred_heads} main head(s) + "
          f"{cfg.n_raw_heads} raw head(s), {model.num_params() / 1e6:.2f}M params, {len(prompts)} prompts x "
          f"{args.new_bytes} bytes, greedy")
    for k in paths:
        d = stats[k].as_dict()
        line = (f"{k:15s} {med[k]:7.3f} s  {n_bytes / med[k]:8.1f} bytes/s  {show(speedup[k])}  "
                f"identical {same[k]}/{len(prompts)}  {d['forwards']} forwards, kept per forward "
                f"{d['kept_per_step']:.2f}")
        if k != "plain":
            line += f"; drafts from the context in {d['lookup_steps'] / max(1, d['row_steps']):.0%} of forwards"
            if d["accepted"]:
                line += f" ({d['lookup_accepted'] / d['accepted']:.0%} of kept drafts)"
        print(line)
    d = stats["heads only"].as_dict()
    print(f"heads only: draft i kept in {[round(a / max(1, d['row_steps']), 3) for a in d['accepted_at']]} of forwards")
    print("rounds (s): " + ", ".join(f"{k} {[round(t, 3) for t in v]}" for k, v in times.items()))
    print(f"sample: {outs['plain'][0][:100]!r}")
    text = text_acceptance(run, args)
    print(f"kept per forward if greedy output were the real continuation (teacher-forced): heads only "
          f"{text['heads']:.2f}, heads + lookup {text['heads + lookup']:.2f}, lookup only {text['lookup']:.2f}")
    return speedup["heads + lookup"][0], speedup["heads only"][0], same["heads + lookup"] == \
        same["heads only"] == len(prompts)


def round_ratios(base: list[float], other: list[float]) -> tuple[float, float, float]:
    """Per-round time ratios base/other -> (median, min, max)."""
    r = [b / o for b, o in zip(base, other)]
    return statistics.median(r), min(r), max(r)


def show(ratio: tuple[float, float, float]) -> str:
    return f"{ratio[0]:5.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f})"


def text_acceptance(run, args) -> dict[str, float]:
    """Kept ids per forward of the decoder's drafting rule on the real continuation of each prompt's file
    (teacher-forced: the model's greedy choice is replaced by the true next id), so the context lookup is
    judged on real code, not only on a small model's repetitive greedy output."""
    from proxylm.eval.speculative import ContextLookup, Drafter, draft_heads

    iface, model = run.interface, run.model
    drafter_heads = draft_heads(model, iface)
    allowed = iface.allowed_ids(model.vocab_size).nonzero().view(-1)
    drafter = Drafter(drafter_heads, allowed) if drafter_heads else None
    docs = bench_prompts(args.prompts, args.context, whole=True)
    kept = {"heads": [], "heads + lookup": [], "lookup": []}
    with torch.inference_mode():
        for prompt, doc in docs:
            n0 = len(iface.prompt_ids(prompt))
            seq = list(iface.prompt_ids(doc[:len(prompt) + args.new_bytes + 16]))
            hidden = model(torch.tensor([seq], device=args.device))[0]  # (T, D)
            heads = (allowed[drafter.logits(hidden).argmax(-1)].tolist() if drafter else [[] for _ in seq])
            for rule in kept:
                j, steps, n = n0, 0, 0  # the id at j is the next one (always right); drafts are for j+1..
                lookup = ContextLookup(seq[:j + 1], max_len=8) if rule != "heads" else None
                while j < min(len(seq) - 1, n0 + args.new_bytes):
                    drafts = heads[j - 1] if rule != "lookup" else []
                    if lookup is not None:
                        lookup.extend(seq[len(lookup.ids):j + 1])
                        drafts = lookup.propose() or drafts
                    a = 0
                    while a < len(drafts) and j + 1 + a < len(seq) and drafts[a] == seq[j + 1 + a]:
                        a += 1
                    j, steps, n = j + 1 + a, steps + 1, n + 1 + a
                kept[rule].append(n / steps)
    return {k: statistics.mean(v) for k, v in kept.items()}


def random_byte_run(dim: int, n_layers: int, window: int, device: str):
    """A randomly initialised byte model (no training: batching's speed does not depend on the weights, and
    with stop ids disabled every path emits the same number of bytes)."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    rep = Representation.bytes_only()
    cfg = ModelConfig(dim=dim, n_layers=n_layers, n_heads=dim // 32, max_seq_len=window)
    model = Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).to(device).eval()
    return SimpleNamespace(model=model, interface=ByteInterface(rep))


def batch_part(run, prompts: list[bytes], args, name: str = "byte model") -> tuple[float, float]:
    """generate_batch at batch_size 1 vs 8 over the same prompts; -> (end-to-end ratio, decode-only ratio).
    Decode-only subtracts the prompt forwards (timed as a 1-byte generation), which batching does not change:
    each prompt is prefilled alone either way."""
    iface = run.interface
    iface.stop_ids = ()
    model = run.model
    generate_batch(model, iface, prompts[:2], batch_size=2, speculative=False, max_bytes=args.new_bytes)  # warm-up
    paths = {  # name -> (batch_size, speculative, max_bytes); "prompts" is the prompt forwards alone
        "prompts": (1, False, 1), "batch 1": (1, False, args.new_bytes), "batch 8": (8, False, args.new_bytes),
        "batch 8 speculative": (8, None, args.new_bytes)}
    times = {k: [] for k in paths}
    outs = {}
    for r in range(args.rounds):
        for k in (list(paths) if r % 2 == 0 else reversed(paths)):  # the order flips every round (drift)
            size, spec, max_bytes = paths[k]
            outs[k], t = timed(lambda: generate_batch(model, iface, prompts, batch_size=size, speculative=spec,
                                                      max_bytes=max_bytes), args.device)
            times[k].append(t)
    t1, t8, t8s, tpre = times["batch 1"], times["batch 8"], times["batch 8 speculative"], times["prompts"]
    one, eight, eight_s = outs["batch 1"], outs["batch 8"], outs["batch 8 speculative"]
    n_bytes = sum(map(len, one))
    a, b, c, pre = (statistics.median(x) for x in (t1, t8, t8s, tpre))
    ratio, spec_ratio = round_ratios(t1, t8), round_ratios(t1, t8s)
    decode_ratio = round_ratios([x - p for x, p in zip(t1, tpre)], [x - p for x, p in zip(t8, tpre)])
    print(f"\n[batch] {name}, {model.num_params() / 1e6:.2f}M params, {len(prompts)} prompts x {args.new_bytes} "
          f"bytes, greedy; prompt forwards "
          f"{pre:.3f} s of each total")
    print(f"batch 1             {a:7.3f} s  {n_bytes / a:8.1f} bytes/s  (decoding alone {n_bytes / (a - pre):8.1f})")
    print(f"batch 8             {b:7.3f} s  {n_bytes / b:8.1f} bytes/s  (decoding alone {n_bytes / (b - pre):8.1f})"
          f"  identical: {eight == one}  {show(ratio)} batch 1, decoding alone {show(decode_ratio)}")
    print(f"batch 8 speculative {c:7.3f} s  {n_bytes / c:8.1f} bytes/s  identical: {eight_s == one}  "
          f"{show(spec_ratio)} batch 1 plain")
    print(f"rounds (s): batch 1 {[round(t, 3) for t in t1]}, batch 8 {[round(t, 3) for t in t8]}")
    ok = eight == one
    return (ratio[0] if ok else 0.0), (decode_ratio[0] if ok else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--byte-run", help="a trained byte model with extra heads (default: train one)")
    p.add_argument("--proxy-run", help="a trained proxy model with a raw head (default: train one)")
    p.add_argument("--work", help="where trained models are kept and reused (default: a temporary folder)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of each model trained here")
    p.add_argument("--heads", type=int, default=4, help="prediction heads of the byte model trained here")
    p.add_argument("--byte-model", type=int, nargs=3, default=[256, 6, 8], metavar=("DIM", "LAYERS", "ATTN_HEADS"),
                   help="shape of the byte model trained here (128 4 4: the 1M-parameter model of the first runs)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--context", type=int, default=120,
                   help="prompt bytes (cut at a line break); prompt + output should fit the models' training window")
    p.add_argument("--new-bytes", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--large", type=int, nargs=2, default=[384, 6], metavar=("DIM", "LAYERS"),
                   help="the larger (random) byte model of the batch part (batching pays more as the model grows)")
    p.add_argument("--quick", action="store_true",
                   help="small models trained briefly and fewer rounds: --byte-model 128 4 4 --steps 600 --prompts 8 "
                        "--rounds 3 --large 256 4 (the models train in bfloat16 where native)")
    args = p.parse_args()
    if args.quick:
        # 8 prompts: batch 8 must have 8 rows to batch
        args.byte_model, args.steps, args.prompts, args.rounds, args.large = [128, 4, 4], 600, 8, 3, [256, 4]
    if args.threads:
        torch.set_num_threads(args.threads)
    from proxylm.assemble import load_run

    kv_cache_part(args)
    tmp = None
    work = Path(args.work) if args.work else Path(tmp := tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        dim, n_layers, n_heads = args.byte_model
        name = f"bytes-h{args.heads}" + ("" if args.byte_model == [128, 4, 4] else f"-d{dim}x{n_layers}")
        byte_dir = args.byte_run or train_run(work, name, "bytes-micro",
                                              byte_model_overrides(dim, n_layers, n_heads, args.heads), args.steps,
                                              args.threads)
        proxy_dir = args.proxy_run or train_run(work, "proxy-bpe", "proxy-bpe-micro", PROXY_MODEL, args.steps,
                                                args.threads)
        byte_run, proxy_run = load_run(byte_dir, args.device), load_run(proxy_dir, args.device)
        if args.threads:  # training applied its own thread policy: the measurements run on --threads
            torch.set_num_threads(args.threads)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    prompts = bench_prompts(args.prompts, args.context)
    window = min(byte_run.cfg.data.seq_len, proxy_run.cfg.data.seq_len)
    if args.context + args.new_bytes + 2 > window:  # past its training window a small model's output degrades
        print(f"note: {args.context} + {args.new_bytes} bytes exceed the {window}-symbol training window")
    print(f"\ndevice {args.device}, threads {torch.get_num_threads()}, prompts: {len(prompts)} x ~{args.context} "
          f"bytes from the stdlib validation split")
    speedup, heads_speedup, same = speculative_part(f"byte model ({byte_dir})", byte_run, prompts, args)
    proxy_speedup, proxy_heads_speedup, proxy_same = speculative_part(f"proxy model ({proxy_dir})", proxy_run,
                                                                      prompts, args)
    ratio, decode_ratio = batch_part(byte_run, prompts, args, "trained byte model")
    large_dim, large_layers = args.large
    large = random_byte_run(large_dim, large_layers, args.context + args.new_bytes + 64, args.device)
    large_ratio, _ = batch_part(large, prompts, args, f"random byte model dim {large_dim} x {large_layers} layers")
    print()
    print(f"RESULT speculative_speedup {speedup:.2f}" + ("" if same else "  (OUTPUT DIFFERS)"))
    print(f"RESULT heads_speculative_speedup {heads_speedup:.2f}" + ("" if same else "  (OUTPUT DIFFERS)"))
    print(f"RESULT proxy_speculative_speedup {proxy_speedup:.2f}" + ("" if proxy_same else "  (OUTPUT DIFFERS)"))
    print(f"RESULT proxy_heads_speculative_speedup {proxy_heads_speedup:.2f}" + ("" if proxy_same else
                                                                                "  (OUTPUT DIFFERS)"))
    print(f"RESULT batch8_throughput_ratio {ratio:.2f}")
    print(f"RESULT batch8_decode_ratio {decode_ratio:.2f}")
    print(f"RESULT batch8_throughput_ratio_large {large_ratio:.2f}")


if __name__ == "__main__":
    main()
