"""One place that assembles a run: config + run directory -> codec, representation, model, loader,
evaluator, Trainer. `train`, `resume`, `eval`, `generate`, `export` and `compare` all come through here.

    trainer = build_trainer(load_config("proxy-bpe-tiny"), "runs/x")          # a fresh run
    trainer = build_trainer(load_config("runs/x/config.yaml"), "runs/x", resume=True)
    summary = trainer.fit()
    run = load_run("runs/x")         # model (eval mode), rep, codec, cfg, interface: for eval and generation

The run directory is the source of truth: a resumed or loaded run uses its own saved `codec/` and
`representation.json`, never a codec rebuilt from the cache or retrained.

Before any work or any file is written, a run is checked: the run directory is locked by this process
(`run_dir/.lock`, held until the Trainer is closed or the process ends; a second `train`/`resume` on it fails
at once naming the holder's pid), the run directory and `checkpoints/` are writable (a probe write), the
corpus has validation documents, and on resume the merged config keeps the run's shapes (only the keys in
RESUMABLE_KEYS may change) and the saved config.yaml is rewritten only after the checkpoint has loaded.
"""

from __future__ import annotations

import json
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from proxylm.bridges import BRIDGE_CODEC_DIR, attach_bridges, bridge_codec
from proxylm.codecs import load_codec
from proxylm.codecs.base import CODEC_FILE
from proxylm.prepare.precomputed import PrecomputedViews
from proxylm.prepare.codec_cache import cache_root, check_lossless, codec_options, default_codec_dir, ensure_codec, needs_training
from proxylm.config import RunConfig, load_config, save_config, to_dict
from proxylm.convert import plan_conversion
from proxylm.core.device import autocast, pick_device, resolve_dtype
from proxylm.core.errors import ConfigError, UserError
from proxylm.core.interface import interface_for
from proxylm.core.representation import Representation
from proxylm.core.rundir import CKPT_DIR, CODEC_DIR, CONFIG, CORPUS, REPRESENTATION, NotLocked, RunLock, remove_if_unused
from proxylm.core.threads import set_threads
from proxylm.startup import (codec_source, corpus_record, covers_text, startup_summary,  # noqa: F401 (API)
                             validation_facts)
from proxylm.data.corpus import open_corpus
from proxylm.data.loader import TrainLoader
from proxylm.eval.bpb import evaluate_bpb, read_eval_docs, text_digest
from proxylm.model import hf
from proxylm.model.attention import require_backward_ok
from proxylm.model.transformer import Transformer
from proxylm.train import distributed as dist_utils
from proxylm.train.checkpoint import latest_checkpoint
from proxylm.train.wandb_log import check_wandb
from proxylm.train.trainer import Trainer, planned_steps

# what `proxylm resume RUN key=value` may change: everything that leaves the run's shapes, data and views alone
RESUMABLE_KEYS = ("train.*", "eval.*", "model.attention", "model.ce_chunk", "name", "logging.*")


# ---- the run directory: writable, checked before work ----------------------------------------------------
def probe_writable(directory: Path, what: str) -> None:
    """Create `directory` and write a file into it, so a read-only one is found before the work, not after."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {directory} ({e.strerror}): {what}") from None


def check_codec_cache(cfg: RunConfig, corpus=None) -> None:
    """A codec that must be trained is cached; find an unwritable cache before the corpus is read.
    corpus: the run's opened corpus (else opened here)."""

    v = cfg.views
    if v.codec is None or not needs_training(v.codec):
        return
    if v.codec_dir:
        directory = Path(v.codec_dir).expanduser()
        if not (directory / CODEC_FILE).exists():
            probe_writable(directory.parent, f"views.codec_dir={v.codec_dir}: the codec is trained there; "
                                             "choose a writable views.codec_dir")
        return
    directory = default_codec_dir(v.codec, codec_options(v),
                                  corpus if corpus is not None else open_corpus(cfg.data.corpus, cfg.data), cfg.data)
    if not (directory / CODEC_FILE).exists():  # a cache hit may well be read-only
        probe_writable(directory.parent, f"the codec cache ({cache_root()}) receives the trained codec; set "
                                         "PROXYLM_CACHE to a writable folder or views.codec_dir to a writable directory")


def check_run_dir_path(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory; choose another --out")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) and k != "codec_options" else {key: v})
    return out


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


def check_resume_config(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose config changes what the run's checkpoints and representation were made with."""
    saved = _flatten(to_dict(load_config(str(run_dir / CONFIG))))
    now = _flatten(to_dict(cfg))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and not _resumable(k))
    if changed:
        k = changed[0]
        raise UserError(f"resume {run_dir}: {k} cannot change on resume (saved {saved.get(k)!r}, given "
                        f"{now.get(k)!r}); only {', '.join(RESUMABLE_KEYS)} may change, since the run's "
                        "checkpoints, data order and representation were made with the rest. Start a new run "
                        "(train --out ...) with train.init_from to reuse its weights")


# ---- codec and representation ---------------------------------------------------------------------------
def build_codec(cfg: RunConfig, corpus=None):
    """The config's codec (None for raw bytes), trained and cached on first use (corpus: the opened one)."""
    return None if cfg.views.codec is None else ensure_codec(cfg.views, cfg.data, corpus)


def representation_for(cfg: RunConfig, codec) -> Representation:
    if codec is None:
        return Representation.bytes_only()
    return Representation.for_codec(codec, separate_embedding=cfg.views.separate_embedding)


def codec_and_representation(cfg: RunConfig, run_dir=None, corpus=None):
    """(codec or None, Representation): the run's own saved ones when `run_dir` holds them, else built (from
    `corpus`, the run's opened corpus, when given)."""
    if run_dir is not None and (Path(run_dir) / REPRESENTATION).exists():
        codec_dir = Path(run_dir) / CODEC_DIR
        codec = load_codec(codec_dir) if codec_dir.exists() else None
        return codec, Representation.load(Path(run_dir) / REPRESENTATION)
    codec = build_codec(cfg, corpus)
    return codec, representation_for(cfg, codec)


def training_codec(cfg: RunConfig, codec):
    """What the loader encodes with: the codec, or its offline views when `views.precomputed` is set."""
    if codec is None or not cfg.views.precomputed:
        return codec
    return PrecomputedViews(cfg.views.precomputed, codec).as_codec()


def write_run_files(cfg: RunConfig, run_dir: Path, rep: Representation, codec, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG)  # on resume: records any overrides (after the checkpoint loaded)
    if not resume:
        rep.save(run_dir / REPRESENTATION)
        if codec is not None:
            codec.save(run_dir / CODEC_DIR)


# ---- evaluation during training -----------------------------------------------------------------------------
class ValidationBPB:
    """evaluator(model) -> {"bpb", "bytes", ...}: raw-byte BPB on the val split, documents read once (from
    `corpus`, the run's opened corpus, when given)."""

    def __init__(self, cfg: RunConfig, rep: Representation, codec, device: torch.device, corpus=None):
        self.cfg, self.device, self.corpus = cfg, device, corpus
        self.interface = interface_for(rep, codec, cfg.views)
        self.docs = None
        self.split_bytes = None  # the val split's size when known exactly (startup summary), for `covers`

    def prepare(self) -> None:
        """Read the validation documents now: an empty val split is refused before training, not at the
        first evaluation."""
        e, d = self.cfg.eval, self.cfg.data
        try:
            self.docs = read_eval_docs(d.corpus, "val", d, e.max_bytes, corpus=self.corpus)
        except ValueError as err:
            raise UserError(f"corpus {d.corpus} has no validation text to evaluate ({err}); raise "
                            f"data.val_fraction (now {d.val_fraction}) or eval.max_bytes (now {e.max_bytes}), "
                            "or add documents") from None

    def __call__(self, model) -> dict:
        if self.docs is None:
            self.prepare()
        return self._score(model, self.docs)

    def _score(self, model, docs) -> dict:
        e, d = self.cfg.eval, self.cfg.data
        seq_len = e.window(d.seq_len)
        # every rank evaluates the same text; cheap at these sizes and keeps ranks in step
        return evaluate_bpb(model, self.interface, docs, seq_len, e.stride_for(seq_len), e.batch_size, self.device)

    def final(self, model) -> dict:
        """The run's reported val BPB: the whole val split up to eval.final_max_bytes, with `covers` saying
        which bytes (the periodic evals' documents when the bound is no larger than eval.max_bytes)."""
        e, d = self.cfg.eval, self.cfg.data
        bound = e.final_max_bytes
        if bound and e.max_bytes and bound <= e.max_bytes:
            docs = self.docs if self.docs is not None else read_eval_docs(d.corpus, "val", d, e.max_bytes,
                                                                           corpus=self.corpus)
        else:
            docs = read_eval_docs(d.corpus, "val", d, bound, corpus=self.corpus)
        result = self._score(model, docs)
        split_bytes = self.split_bytes if self.split_bytes is not None else -1
        result["whole"] = not bound or sum(map(len, docs)) < bound - d.max_doc_bytes  # no piece was cut or left
        result["covers"] = covers_text(result, split_bytes, bound)
        result["sha256"] = text_digest(docs)["sha256"]
        return result


# ---- the trainer ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: RunConfig, run_dir, resume: bool = False, quiet: bool = False,
                  reset_optimizer: bool = False, accept_changed_data: bool = False) -> Trainer:
    """Every part of a run, built once and handed to the Trainer (which imports none of them). Checks come
    first (see the module docstring); the run directory's lock stays held as `trainer.run_lock` until
    `trainer.run_lock.release()` or the end of the process."""
    run_dir = Path(run_dir)
    t = cfg.train
    check_run_dir_path(run_dir)
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
        check_resume_config(cfg, run_dir)
    ctx = dist_utils.init(t.device)  # rank / world size / local device (a no-op without torchrun)
    lock, error = None, None
    created = not run_dir.exists()
    if ctx.is_main:  # one writer: rank 0 holds the lock for all ranks (they may share the filesystem)
        try:
            lock = RunLock(run_dir)
            probe_writable(run_dir, "make the run directory writable or choose another --out")
            probe_writable(run_dir / CKPT_DIR, "checkpoints could not be saved; make it writable")
        except UserError as e:
            if lock is not None:
                lock.release()
            if created:
                remove_if_unused(run_dir)
            error = str(e)
    error = dist_utils.broadcast_from_main(error)
    if error is not None:
        raise UserError(error)
    try:
        trainer = _build(cfg, run_dir, resume, quiet, reset_optimizer, ctx, accept_changed_data)
    except BaseException:
        if lock is not None:
            lock.release()
            if created:
                remove_if_unused(run_dir)
        raise
    trainer.run_lock = lock or NotLocked()
    return trainer


def new_model(cfg: RunConfig, rep, codec, run_dir=None) -> Transformer:
    """The run's Transformer (random weights), with its input-embedding composition when
    model.compose_embedding asks for it (each compressed id's raw-byte ids, from the codec) and its bridges
    (model.input_bridge, model.output_bridge: the codec's symbol bytes; see bridge_codec)."""
    model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size)
    if cfg.model.compose_embedding:
        pieces = codec.symbol_bytes() if codec is not None else None
        if pieces is None:
            raise ConfigError(f"model.compose_embedding=true: the codec {cfg.views.codec!r} has no bytes per symbol "
                              "(only bpe has); set model.compose_embedding=false or views.codec=bpe")
        ids = rep.compressed_ids(np.arange(len(pieces), dtype=np.int64))
        model.set_composition({int(i): rep.raw_ids(b).tolist() for i, b in zip(ids, pieces)
                               if not rep.is_raw_byte(int(i))})
    attach_bridges(model, cfg, rep, codec, run_dir)  # model.input_bridge, model.output_bridge
    return model


def _build(cfg: RunConfig, run_dir: Path, resume: bool, quiet: bool, reset_optimizer: bool, ctx,
           accept_changed_data: bool = False) -> Trainer:
    t = cfg.train
    threads = set_threads(t.threads)  # 0: the default policy (proxylm/core/threads.py)
    check_wandb(cfg.logging)  # an optional logger asked for and missing: refused before any work
    device = ctx.device or pick_device(t.device)
    require_backward_ok(cfg.model.attention, device)  # flex on a CPU: refused before any work
    seed_everything(t.seed)
    corpus = open_corpus(cfg.data.corpus, cfg.data)  # lists units only; opened once, handed to every part
    conversion = None if resume else plan_conversion(cfg)  # train.init_from is a token model (proxylm/convert.py)
    if conversion is not None:
        cfg = conversion.cfg  # the source's model shape; written as the run's config.yaml
        codec_words, train_now = "the token model's own tokenizer (train.init_from, imported and checked)", False
    else:
        if not resume:
            check_codec_cache(cfg, corpus)
        codec_words, _, train_now = codec_source(cfg, run_dir, resume, corpus) if ctx.is_main else ("", None, False)
    if train_now and not quiet:  # said before the wait, not after
        print(f"codec: {codec_words}; this takes a while, once", file=sys.stderr, flush=True)
    try:
        codec, rep = ((conversion.codec, conversion.rep) if conversion is not None
                      else codec_and_representation(cfg, run_dir if resume else None, corpus))
    except PermissionError as e:
        raise UserError(f"cannot write the codec cache at {e.filename} ({e.strerror}); set PROXYLM_CACHE to a "
                        "writable folder or views.codec_dir to a writable directory") from None

    torch.manual_seed(t.seed)
    model = new_model(cfg, rep, codec, run_dir).to(device)
    if codec is None and cfg.model.input_bridge == "own" and ctx.is_main and not resume:  # travels with the run
        bridge_codec(cfg, codec, run_dir).save(run_dir / BRIDGE_CODEC_DIR)
    log = None
    if t.init_from and not resume:  # before wrapping: DDP broadcasts and FSDP shards these weights
        log = conversion.load(model) if conversion is not None else load_init_from(model, t.init_from, rep)
    total_steps = planned_steps(cfg, rep, ctx.world_size)
    lossless = None
    if codec is not None and getattr(codec, "roundtrip_check", False) and not resume:
        lossless = check_lossless(codec, corpus, cfg.views.codec_dir or f"codec {cfg.views.codec}")
    loader = TrainLoader(cfg.data, cfg.views, rep, training_codec(cfg, codec), split="train", rank=ctx.rank,
                         world_size=ctx.world_size, total_steps=total_steps, n_future=cfg.model.n_future,
                         corpus=corpus)
    evaluator = ValidationBPB(cfg, rep, codec, device, corpus)
    evaluator.prepare()  # an empty val split fails here, before training
    if ctx.is_main and not resume:
        write_run_files(cfg, run_dir, rep, codec, resume)
    dist_utils.barrier()
    trainer = Trainer(cfg, run_dir, model, rep, loader, evaluator, ctx=ctx, device=device,
                      total_steps=total_steps, quiet=quiet)
    facts = validation_facts(corpus)
    evaluator.split_bytes = facts["bytes"] if facts["exact"] else None
    if ctx.is_main and not resume:
        (run_dir / CORPUS).write_text(json.dumps(corpus_record(corpus, facts, evaluator.docs), indent=1) + "\n")
    trainer.log(startup_summary(cfg, corpus, rep, codec, model, total_steps, ctx.world_size, lossless,
                                extra={"facts": facts, "prepared": (sum(map(len, evaluator.docs)), len(evaluator.docs)),
                                       "codec": codec_words, "threads": threads}))
    if log:
        trainer.log(log)
    if resume:
        trainer.restore(reset_optimizer=reset_optimizer, accept_changed_data=accept_changed_data)
        if ctx.is_main:  # only now: a resume that fails leaves config.yaml as it was
            write_run_files(cfg, run_dir, rep, codec, resume)
        dist_utils.barrier()
    trainer.log(trainer.dtype_line())  # after restore(): a resumed run keeps its checkpoints' dtype
    return trainer


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
    dtype: str = "float32"  # the resolved compute dtype of evaluation and generation

    def compute(self):
        """The mixed-precision region to evaluate or decode in: hold it around the whole loop (weights are
        cast once per region). Parameters stay float32; logits are float32."""
        return autocast(next(self.model.parameters()).device, self.dtype)


def load_run(run_dir, device: str | torch.device = "cpu", dtype: str = "auto", decoding: bool = False) -> LoadedRun:
    """Rebuild a trained model from its run directory (weights only; no optimizer state). `dtype` (auto |
    float32 | bfloat16) is the compute dtype of `run.compute()`: auto takes bfloat16 where it is native,
    except for `decoding`, where auto is float32: bfloat16 decoding measured no faster than float32 on the CPU
    (BENCHMARKS.md, "bfloat16 decoding"); greedy output is batch- and draft-invariant in both dtypes."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a proxylm run directory (no {CONFIG})")
    device = torch.device(device)
    resolved = "float32" if decoding and dtype == "auto" else resolve_dtype(dtype, device)
    cfg = load_config(str(run_dir / CONFIG))
    codec, rep = codec_and_representation(cfg, run_dir)
    model = new_model(cfg, rep, codec, run_dir)
    expect = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = latest_checkpoint(run_dir, with_optimizer=False, expect=expect)
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint yet")
    path, weights, _, state = found
    model.load_state_dict(weights)
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, rep, codec, model, interface_for(rep, codec, cfg.views), state["step"], state,
                     resolved)


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
