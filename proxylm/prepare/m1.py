"""Training M1, the neural codec's byte model, with proxylm's own Transformer and Trainer; and the neural codec
built from it (what `proxylm codec train neural` and a run's automatic codec training call).

    codec = train_neural_codec(texts, window_bits=16, steps=2000)   # a NeuralCodec (proxylm/codecs/neural/)
    model, summary = train_m1(texts, window_len=32, options=M1Options(steps=2000))   # float32 Transformer

Training (`train_m1`): the model sees what a window sees at coding time, i.e. `<bos>` followed by a crop of
at most `window_len` bytes taken at a random offset of a random document (a window's context is reset at its
start, so long-context training would be wasted). The Trainer is handed its own data source (a
`CropLoader` instead of the corpus TrainLoader) and its own evaluator (bits per byte on held-out crops, the
quantity the coder pays). The default M1 trains in a few minutes on one CPU core (BENCHMARKS.md).
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch

from proxylm.codecs.neural.codec import DEFAULT_WINDOW_BITS, NeuralCodec, window_spec
from proxylm.codecs.options import M1Options
from proxylm.config import RunConfig
from proxylm.core.device import pick_device
from proxylm.core.representation import Representation
from proxylm.data.config import DataConfig
from proxylm.data.loader import Batch
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer
from proxylm.train.config import EvalConfig, TrainConfig
from proxylm.train.trainer import Trainer

EVAL_CROPS = 256  # held-out crops M1 is evaluated on while it trains


def train_neural_codec(texts, window_bits: int = DEFAULT_WINDOW_BITS, max_window_bytes: int | None = None,
                       steps: int | None = None, quiet: bool = False, **m1_options) -> NeuralCodec:
    """Train M1 on `texts` (the train split) for windows of `window_bits` bits. m1_options: M1Options fields
    (dim, n_layers, n_heads, batch_size, lr, seed, threads, ...)."""
    spec = window_spec(window_bits, max_window_bytes)
    if steps is not None and steps < 1:  # 0 used to mean "the default" without a word
        raise ValueError(f"neural codec: steps={steps}: must be >= 1 (M1 training steps)")
    options = M1Options(**m1_options, **({"steps": steps} if steps is not None else {}))
    model, summary = train_m1(texts, spec.max_window_bytes, options, quiet=quiet)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return NeuralCodec(asdict(model.cfg), state, None, spec.window_bits, spec.max_window_bytes, summary)


# ---- training M1 --------------------------------------------------------------------------------------------
class CropLoader:
    """Stands in for the Trainer's TrainLoader: each row is `<bos>` + a random crop of `seq_len` bytes.

    Batch b is a pure function of (seed, b), so the Trainer's exact resume needs no state."""

    def __init__(self, texts: Sequence[bytes], seq_len: int, batch_size: int, bos_id: int, byte_offset: int,
                 seed: int = 0):
        docs = [t for t in texts if len(t) >= seq_len]
        if not docs:
            raise ValueError(f"M1 needs training documents of at least {seq_len} bytes")
        self.data = np.frombuffer(b"".join(docs), dtype=np.uint8)
        self.starts = np.cumsum([0] + [len(d) for d in docs[:-1]])  # (n_docs,) offset of each document
        self.spans = np.array([len(d) - seq_len + 1 for d in docs], dtype=np.int64)  # crop starts per doc
        self.cum_spans = np.cumsum(self.spans)
        self.seq_len, self.batch_size, self.bos_id, self.byte_offset, self.seed = (
            seq_len, batch_size, bos_id, byte_offset, seed)
        self.batches = 0

    def crops(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, seq_len) uint8: uniform over every crop position of every document."""
        k = rng.integers(0, self.cum_spans[-1], size=n)
        doc = np.searchsorted(self.cum_spans, k, side="right")
        offset = k - (self.cum_spans[doc] - self.spans[doc])
        first = self.starts[doc] + offset
        return self.data[first[:, None] + np.arange(self.seq_len)]

    def next_batch(self, step: int):
        rng = np.random.default_rng([self.seed, self.batches])
        self.batches += 1
        crops = self.crops(rng, self.batch_size).astype(np.int64) + self.byte_offset  # (B, S)
        tokens = np.concatenate([np.full((self.batch_size, 1), self.bos_id), crops], axis=1)  # (B, S+1)
        B, S = self.batch_size, self.seq_len
        return Batch(tokens=torch.from_numpy(tokens), doc_ids=torch.zeros(B, S + 1, dtype=torch.int64),
                     positions=torch.arange(S).expand(B, S).contiguous(),
                     is_compressed=torch.zeros(B, S, dtype=torch.bool), raw_bytes=B * S, step=step)

    # the rest of the TrainLoader protocol the Trainer uses
    def schedule(self, step: int):
        return 0.0, "sentinel"

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.batches = state["batches"]

    def stats(self) -> dict:
        return {"batches": self.batches, "crop_bytes": self.seq_len}


def window_bits_per_byte(model, crops: torch.Tensor, bos_id: int, byte_offset: int, batch: int = 64) -> float:
    """Mean bits per byte of `crops` (N, S) uint8 tensor, each read from `<bos>` as a window is."""
    was_training = model.training
    model.eval()
    nats, n = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            c = crops[i:i + batch].long().to(device) + byte_offset  # (b, S)
            ids = torch.cat([torch.full((len(c), 1), bos_id, device=device), c[:, :-1]], dim=1)  # (b, S)
            logits = model.logits(model(ids))  # (b, S, V)
            nats += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), c, reduction="sum"))
            n += c.numel()
    model.train(was_training)
    return nats / math.log(2) / max(n, 1)


def train_m1(texts: Sequence[bytes], window_len: int, options: M1Options | None = None, quiet: bool = True):
    """Train M1 on `texts` (the corpus' train split) with proxylm's Trainer.

    -> (Transformer float32 on CPU, summary dict). The run directory is temporary: the codec keeps the weights.
    """
    o = options or M1Options()
    texts = list(texts)
    held = set(range(o.held_out_every - 1, len(texts), o.held_out_every)) if len(texts) >= o.held_out_every else set()
    train_texts = [t for i, t in enumerate(texts) if i not in held]
    held_texts = [t for i, t in enumerate(texts) if i in held] or train_texts
    rep = Representation.bytes_only()
    crops = CropLoader(train_texts, window_len, o.batch_size, rep.bos_id, rep.raw_offset, o.seed)
    eval_crops = torch.from_numpy(CropLoader(held_texts, window_len, 1, rep.bos_id, rep.raw_offset, o.seed + 1)
                                  .crops(np.random.default_rng(o.seed + 1), EVAL_CROPS).copy())  # (EVAL_CROPS, S)

    def evaluator(model) -> dict:  # bits per byte of windows read from <bos>: what the coder pays
        return {"bpb": window_bits_per_byte(model, eval_crops, rep.bos_id, rep.raw_offset),
                "bytes": int(eval_crops.numel())}

    cfg = RunConfig(
        data=DataConfig(seq_len=window_len, batch_size=o.batch_size, seed=o.seed),
        model=ModelConfig(dim=o.dim, n_layers=o.n_layers, n_heads=o.n_heads, max_seq_len=window_len + 1),
        train=TrainConfig(max_steps=o.steps, lr=o.lr, warmup_steps=min(o.warmup_steps, max(1, o.steps // 10)),
                          seed=o.seed, evals_per_run=2, ckpt_every=0, keep_ckpts=1, device=o.device,
                          threads=o.threads, log_every=max(1, o.steps // 20)),
        eval=EvalConfig(max_bytes=0), name="m1")
    with tempfile.TemporaryDirectory(prefix="proxylm-m1-") as run_dir:
        if o.threads:
            torch.set_num_threads(o.threads)
        torch.manual_seed(o.seed)
        model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size).to(pick_device(o.device))
        trainer = Trainer(cfg, run_dir, model, rep, crops, evaluator, quiet=quiet)
        if not quiet:
            print(f"M1: {trainer.raw_model.num_params() / 1e6:.2f}M parameters, {o.steps} steps of "
                  f"{o.batch_size} x {window_len}-byte crops", file=sys.stderr)
        summary = trainer.fit()
    model = trainer.raw_model.cpu().eval()
    return model, {"steps": summary["steps"], "window_bits_per_byte": summary["val_bpb"],
                   "train_loss": summary["loss"], "seconds": round(summary["elapsed_s"], 1),
                   "parameters": model.num_params(), "options": asdict(o)}
