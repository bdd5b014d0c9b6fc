"""One place that assembles a run: config + run directory -> codec, representation, model, loader,
evaluator, Trainer. `train`, `resume`, `eval`, `generate`, `export` and `compare` all come through here.

    trainer = build_trainer(load_config("proxy-bpe-tiny"), "runs/x")          # a fresh run
    trainer = build_trainer(load_config("runs/x/config.yaml"), "runs/x", resume=True)
    summary = trainer.fit()
    run = load_run("runs/x")         # model (eval mode), rep, codec, cfg, interface: for eval and generation

The run directory is the source of truth: a resumed or loaded run uses its own saved `codec/` and
`representation.json`, never a codec rebuilt from the cache or retrained.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from proxylm.codecs import load_codec
from proxylm.codecs.precomputed import PrecomputedViews
from proxylm.codecs.train import check_lossless, ensure_codec
from proxylm.config import RunConfig, load_config, save_config
from proxylm.core.device import pick_device
from proxylm.core.interface import interface_for
from proxylm.core.representation import Representation
from proxylm.data.corpus import open_corpus
from proxylm.data.loader import TrainLoader
from proxylm.eval.bpb import evaluate_bpb, read_eval_docs
from proxylm.model import hf
from proxylm.model.transformer import Transformer
from proxylm.train import distributed as dist_utils
from proxylm.train.checkpoint import latest_checkpoint
from proxylm.train.trainer import Trainer, planned_steps

CODEC_DIR = "codec"
REPRESENTATION = "representation.json"
CONFIG = "config.yaml"


# ---- codec and representation ---------------------------------------------------------------------------
def build_codec(cfg: RunConfig):
    """The config's codec (None for raw bytes), trained and cached on first use."""
    return None if cfg.views.codec is None else ensure_codec(cfg.views, cfg.data)


def representation_for(cfg: RunConfig, codec) -> Representation:
    if codec is None:
        return Representation.bytes_only()
    return Representation.for_codec(codec, separate_embedding=cfg.views.separate_embedding)


def codec_and_representation(cfg: RunConfig, run_dir=None):
    """(codec or None, Representation): the run's own saved ones when `run_dir` holds them, else built."""
    if run_dir is not None and (Path(run_dir) / REPRESENTATION).exists():
        codec_dir = Path(run_dir) / CODEC_DIR
        codec = load_codec(codec_dir) if codec_dir.exists() else None
        return codec, Representation.load(Path(run_dir) / REPRESENTATION)
    codec = build_codec(cfg)
    return codec, representation_for(cfg, codec)


def training_codec(cfg: RunConfig, codec):
    """What the loader encodes with: the codec, or its offline views when `views.precomputed` is set."""
    if codec is None or not cfg.views.precomputed:
        return codec
    return PrecomputedViews(cfg.views.precomputed, codec).as_codec()


def write_run_files(cfg: RunConfig, run_dir: Path, rep: Representation, codec, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG)  # on resume: records any overrides
    if not resume:
        rep.save(run_dir / REPRESENTATION)
        if codec is not None:
            codec.save(run_dir / CODEC_DIR)


# ---- evaluation during training -----------------------------------------------------------------------------
class ValidationBPB:
    """evaluator(model) -> {"bpb", "bytes", ...}: raw-byte BPB on the val split, documents read once."""

    def __init__(self, cfg: RunConfig, rep: Representation, codec, device: torch.device):
        self.cfg, self.device = cfg, device
        self.interface = interface_for(rep, codec, cfg.views)
        self.docs = None

    def __call__(self, model) -> dict:
        e, d = self.cfg.eval, self.cfg.data
        if self.docs is None:
            self.docs = read_eval_docs(d.corpus, "val", d, e.max_bytes)
        seq_len = e.seq_len or d.seq_len
        # every rank evaluates the same text; cheap at these sizes and keeps ranks in step
        return evaluate_bpb(model, self.interface, self.docs, seq_len, e.stride or max(1, seq_len // 2),
                            e.batch_size, self.device)


# ---- the trainer ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: RunConfig, run_dir, resume: bool = False, quiet: bool = False) -> Trainer:
    """Every part of a run, built once and handed to the Trainer (which imports none of them)."""
    run_dir = Path(run_dir)
    t = cfg.train
    ctx = dist_utils.init(t.device)  # rank / world size / local device (a no-op without torchrun)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = ctx.device or pick_device(t.device)
    seed_everything(t.seed)
    codec, rep = codec_and_representation(cfg, run_dir if resume else None)
    if ctx.is_main:
        write_run_files(cfg, run_dir, rep, codec, resume)
    dist_utils.barrier()

    torch.manual_seed(t.seed)
    model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size).to(device)
    log = None
    if t.init_from and not resume:  # before wrapping: DDP broadcasts and FSDP shards these weights
        log = load_init_from(model, t.init_from, rep)
    total_steps = planned_steps(cfg, rep, ctx.world_size)
    corpus = open_corpus(cfg.data.corpus, cfg.data)
    lossless = None
    if codec is not None and getattr(codec, "roundtrip_check", False) and not resume:
        lossless = check_lossless(codec, corpus, cfg.views.codec_dir or f"codec {cfg.views.codec}")
    loader = TrainLoader(cfg.data, cfg.views, rep, training_codec(cfg, codec), split="train", rank=ctx.rank,
                         world_size=ctx.world_size, total_steps=total_steps, n_future=cfg.model.n_future,
                         corpus=corpus)
    trainer = Trainer(cfg, run_dir, model, rep, loader, ValidationBPB(cfg, rep, codec, device), ctx=ctx,
                      device=device, total_steps=total_steps, quiet=quiet)
    trainer.log(startup_summary(cfg, corpus, rep, codec, model, total_steps, ctx.world_size, lossless))
    if log:
        trainer.log(log)
    if resume:
        trainer.restore()
    return trainer


def startup_summary(cfg: RunConfig, corpus, rep: Representation, codec, model, total_steps: int, world_size: int,
                    lossless: dict | None = None) -> str:
    """What the run will do, before it does it (printed on stderr): data, model, vocabulary, steps, epochs."""
    s = corpus.summary()
    lines = [f"corpus {s['corpus']}: {s['units']} units (files, row groups or row ranges)"]
    text_bytes = 0
    for ftype, t in sorted(s["types"].items()):
        docs = f"{t['documents']} documents" if t["documents"] >= 0 else "documents counted as read"
        lines.append(f"  {ftype:<12} {t['files']:>7} files  {t['bytes'] / 1e6:>10.2f} MB  {docs}")
        text_bytes += t["bytes"]
    if s["skipped"]:
        lines.append("  skipped: " + ", ".join(f"{k} {v} (e.g. {s['skipped_examples'][k]})" for k, v in
                                            sorted(s["skipped"].items())))
    n_params = sum(p.numel() for p in model.parameters())
    per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.train.grad_accum * world_size
    codec_line = "raw bytes only" if codec is None else f"codec {codec!r}"
    if lossless:
        codec_line += f", round trip checked on {lossless['checked']} train documents"
    lines += [f"model: {n_params / 1e6:.2f}M parameters; vocabulary {rep.vocab_size} ({codec_line})",
              f"steps: {total_steps} planned x {per_step} symbols per step ({cfg.data.batch_size} x {cfg.data.seq_len} "
              f"x accumulation {cfg.train.grad_accum} x {world_size} rank(s)); data workers {cfg.data.num_workers}"]
    if text_bytes:
        share = 1.0 - cfg.data.val_fraction
        lines.append(f"epochs: about {total_steps * per_step / (text_bytes * share):.2f} at one symbol per byte on disk "
                     "(compressed views and compressed files make it fewer/more)")
    return "\n".join(lines)


# ---- loading a trained run --------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    rep: Representation
    codec: object | None
    model: torch.nn.Module
    interface: object
    step: int
    state: dict


def load_run(run_dir, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run directory (weights only; no optimizer state)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a proxylm run directory (no {CONFIG})")
    cfg = load_config(str(run_dir / CONFIG))
    codec, rep = codec_and_representation(cfg, run_dir)
    found = latest_checkpoint(run_dir, with_optimizer=False)
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint yet")
    path, weights, _, state = found
    model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size)
    model.load_state_dict(weights)
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, rep, codec, model, interface_for(rep, codec, cfg.views), state["step"], state)


# ---- train.init_from ----------------------------------------------------------------------------------------------
def _check_representation(source: Path, rep: Representation | None) -> None:
    """Raw bytes must keep their ids; a different codec behind the compressed ids is only reported."""
    path = source / REPRESENTATION
    if rep is None or not path.exists():
        return
    src = Representation.load(path)
    if (src.raw_offset, src.raw_vocab_size) != (rep.raw_offset, rep.raw_vocab_size):
        raise ValueError(f"{source}: raw bytes sit at ids {src.raw_offset}..{src.raw_vocab_size - 1}, this run "
                         f"puts them at {rep.raw_offset}..{rep.raw_vocab_size - 1}")
    if src.codec_name != rep.codec_name or src.codec_alphabet != rep.codec_alphabet:
        warnings.warn(f"{source}: compressed ids were trained for codec {src.codec_name} ({src.codec_alphabet} "
                      f"symbols), this run uses {rep.codec_name} ({rep.codec_alphabet})")


@torch.no_grad()
def load_run_weights(model, run_dir) -> int:
    """Copy a proxylm run's latest checkpoint into `model`: trunk and head 0 must match; extra heads are taken
    where the source has them with the same shape, else keep their current weights. Returns the source step."""
    run_dir = Path(run_dir)
    src_cfg = load_config(str(run_dir / CONFIG))
    src_rep = Representation.load(run_dir / REPRESENTATION)
    hf.check_architecture(hf.hf_llama_config(src_cfg.model, src_rep.vocab_size),
                          hf.hf_llama_config(model.cfg, model.vocab_size), run_dir)
    found = latest_checkpoint(run_dir, with_optimizer=False)
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no readable checkpoint to initialise from")
    _, weights, _, state = found
    own = model.state_dict()
    for name, t in own.items():
        if name in weights and weights[name].shape == t.shape:
            t.copy_(weights[name])
        elif not name.startswith(("pred_heads.", "raw_heads.")):
            raise ValueError(f"{run_dir}: checkpoint lacks {name} with shape {tuple(t.shape)}")
    return state["step"]


def load_init_from(model, source, rep: Representation | None = None) -> str:
    """`train.init_from`: weights from a transformers export or a proxylm run directory; returns a log line."""
    source = Path(source)
    if (source / CONFIG).exists():
        _check_representation(source, rep)
        step = load_run_weights(model, source)
        return f"initialised from run {source} (step {step})"
    if (source / hf.HF_CONFIG).exists():
        _check_representation(source, rep)
        hf.load_hf_weights(model, source)
        return f"initialised from export {source} (head 0 and trunk; extra heads fresh)"
    raise FileNotFoundError(f"train.init_from={source}: neither a proxylm run directory ({CONFIG}) nor a "
                            f"transformers export ({hf.HF_CONFIG})")
