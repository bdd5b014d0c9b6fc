"""Data pipeline speed vs the speed a small model consumes its batches, side by side, per view.

    python bench/pipeline.py                       # ~1 min on 2 CPU cores (first run also trains the BPE codec)
    python bench/pipeline.py --seconds 2 --steps 3 # quicker, noisier

For each view (bytes; sentinel gzip at rate 0.9; sentinel BPE at rate 0.9; translation_random BPE at rate
0.4, the warm-up's start) it measures
  pipeline:    raw text MB/s turned into packed (B, S+F) batches by TrainLoader.next_batch (one thread),
  consumption: raw text MB/s a small model (the *-tiny configs: dim 256, 4 layers, seq 512, batch 8) trains
               on: B*S symbols per optimizer step (forward, loss, backward, AdamW) on --threads torch threads,
               converted to raw bytes with the raw bytes per input symbol measured in the pipeline run,
and prints their ratio. Ends with `RESULT pipeline_vs_consumption <ratio>` for the BPE proxy view
(sentinel, rate 0.9): how many times faster the pipeline produces than the model consumes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from proxylm.config import load_config
from proxylm.assemble import build_codec, representation_for
from proxylm.data.loader import TrainLoader

# (label, shipped config, overrides): schedules off so each row measures one fixed view
VIEWS = [
    ("bytes", "bytes-tiny", []),
    ("sentinel gzip 0.9", "proxy-gzip-tiny", ["views.schedule.enabled=false", "views.rate=0.9", "views.mode=sentinel"]),
    ("sentinel bpe 0.9", "proxy-bpe-tiny", ["views.schedule.enabled=false", "views.rate=0.9", "views.mode=sentinel"]),
    ("translation_random bpe 0.4", "proxy-bpe-tiny",
     ["views.schedule.enabled=false", "views.rate=0.4", "views.mode=translation_random"]),
]
HEADLINE = "sentinel bpe 0.9"


def measure_pipeline(cfg, codec, rep, seconds: float) -> dict:
    t0 = time.perf_counter()
    loader = TrainLoader(cfg.data, cfg.views, rep, codec, total_steps=cfg.train.max_steps, n_future=cfg.model.n_future,
                         max_position=cfg.model.max_seq_len)
    startup = time.perf_counter() - t0
    raw_bytes = symbols = steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = loader.next_batch(steps)
        raw_bytes += b.raw_bytes
        symbols += b.positions.numel()
        steps += 1
    dt = time.perf_counter() - t0
    return {"startup_s": startup, "batches_per_s": steps / dt, "mb_per_s": raw_bytes / dt / 1e6,
            "bytes_per_symbol": raw_bytes / symbols, "stats": loader.stats(), "sample": b}


def model_class():
    try:
        from proxylm.model.transformer import Transformer

        return Transformer
    except ImportError:  # pragma: no cover - the real model is part of the package
        raise SystemExit("bench/pipeline.py needs proxylm.model.transformer")


def measure_model(cfg, rep, batch, steps: int) -> float:
    """Median seconds per optimizer step of a freshly initialised model on `batch` (the median: other work on
    shared cores shows up as outliers)."""
    torch.manual_seed(0)
    model = model_class()(cfg.model, rep.vocab_size, rep.raw_vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    S = batch.positions.shape[1]

    def step():
        hidden = model(batch.tokens[:, :S], positions=batch.positions, doc_ids=batch.doc_ids[:, :S])
        out = model.loss(hidden, batch.tokens, batch.doc_ids)
        (out.loss_sum / out.weight_sum.clamp_min(1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, lazy init)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="pipeline measuring time per view")
    p.add_argument("--steps", type=int, default=5, help="timed model steps per view")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the model (the machine's cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows, headline = [], None
    for label, name, overrides in VIEWS:
        cfg = load_config(name, overrides)
        codec = build_codec(cfg)
        rep = representation_for(cfg, codec)
        pipe = measure_pipeline(cfg, codec, rep, args.seconds)
        step_s = measure_model(cfg, rep, pipe["sample"], args.steps)
        B, S = pipe["sample"].positions.shape
        consume = B * S / step_s * pipe["bytes_per_symbol"] / 1e6
        ratio = pipe["mb_per_s"] / consume
        st = pipe["stats"]
        rows.append((label, pipe["mb_per_s"], pipe["batches_per_s"], consume, step_s, ratio, pipe["bytes_per_symbol"],
                     st["compressed_view_share"], st["compressed_symbol_share"], pipe["startup_s"]))
        if label == HEADLINE:
            headline = ratio
        print(f"{label:28s} pipeline {pipe['mb_per_s']:7.2f} MB/s ({pipe['batches_per_s']:6.1f} batches/s) | "
              f"model {consume:7.4f} MB/s ({step_s:.3f} s/step) | ratio {ratio:7.1f}x | "
              f"{pipe['bytes_per_symbol']:.2f} bytes/symbol, compressed views {st['compressed_view_share']:.2f}, "
              f"compressed symbols {st['compressed_symbol_share']:.2f}, loader start {pipe['startup_s']:.2f} s",
              flush=True)
    print(f"\n# B={B} S={S}, model dim {cfg.model.dim} x {cfg.model.n_layers} layers, {args.threads} torch threads")
    print(f"RESULT pipeline_vs_consumption {headline:.1f}")


if __name__ == "__main__":
    main()
