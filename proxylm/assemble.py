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

import os
import random
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from proxylm.bridges import BRIDGE_CODEC_DIR, attach_bridges, bridge_codec
from proxylm.codecs import load_codec
from proxylm.codecs.base import CODEC_FILE
from proxylm.codecs.precomputed import PrecomputedViews
from proxylm.codecs.train import cache_root, check_lossless, codec_options, default_codec_dir, ensure_codec, needs_training, open_corpus
from proxylm.config import RunConfig, load_config, save_config, to_dict
from proxylm.core.device import pick_device
from proxylm.core.errors import ConfigError, UserError
from proxylm.core.interface import interface_for
from proxylm.core.io import file_lock
from proxylm.core.representation import Representation
from proxylm.data.corpus import open_corpus
from proxylm.data.loader import TrainLoader
from proxylm.eval.bpb import evaluate_bpb, read_eval_docs
from proxylm.model import hf
from proxylm.model.transformer import Transformer
from proxylm.train import distributed as dist_utils
from proxylm.train.checkpoint import CKPT_DIR, latest_checkpoint
from proxylm.train.trainer import Trainer, planned_steps

CODEC_DIR = "codec"
REPRESENTATION = "representation.json"
CONFIG = "config.yaml"
LOCK = ".lock"
# what `proxylm resume RUN key=value` may change: everything that leaves the run's shapes, data and views alone
RESUMABLE_KEYS = ("train.*", "eval.*", "model.attention", "model.ce_chunk", "name")


# ---- the run directory: one writer, writable, checked before work -------------------------------------------
class RunLock:
    """Exclusive lock on run_dir/.lock (flock: released when the process dies, so never stale). Re-entrant
    within one process (a Trainer resumed in the process that trained it); other processes are refused."""

    _held: dict[str, list] = {}  # real path -> [ExitStack, count]

    def __init__(self, run_dir):
        self.key = os.path.realpath(run_dir)
        self.path = Path(run_dir) / LOCK
        self.released = False
        if self.key in RunLock._held:
            RunLock._held[self.key][1] += 1
            return
        stack = ExitStack()
        try:
            lock = stack.enter_context(file_lock(self.path, blocking=False))
        except BlockingIOError:
            holder = self.path.read_text(errors="replace").strip() or "unknown"
            raise UserError(f"{run_dir} is in use by another proxylm process (pid {holder}, holding {self.path}); "
                            "wait for it to finish or choose another --out") from None
        except OSError as e:  # read-only, or a path below a file
            raise UserError(f"cannot write to {run_dir} ({e.strerror}); make it writable or choose another "
                            "--out") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        RunLock._held[self.key] = [stack, 1]

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        entry = RunLock._held.get(self.key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del RunLock._held[self.key]
                entry[0].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def remove_if_unused(run_dir: Path) -> None:
    """Undo what a refused start created: a run directory holding nothing but the lock (and checkpoints/)."""
    if run_dir.is_dir() and not any(p.name not in (LOCK, CKPT_DIR) for p in run_dir.iterdir()):
        _rmdir_quiet(run_dir / CKPT_DIR)
        if not any(p.name != LOCK for p in run_dir.iterdir()):
            (run_dir / LOCK).unlink(missing_ok=True)
            _rmdir_quiet(run_dir)


def probe_writable(directory: Path, what: str) -> None:
    """Create `directory` and write a file into it, so a read-only one is found before the work, not after."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {directory} ({e.strerror}): {what}") from None


def check_codec_cache(cfg: RunConfig) -> None:
    """A codec that must be trained is cached; find an unwritable cache before the corpus is read."""

    v = cfg.views
    if v.codec is None or not needs_training(v.codec):
        return
    if v.codec_dir:
        directory = Path(v.codec_dir).expanduser()
        if not (directory / CODEC_FILE).exists():
            probe_writable(directory.parent, f"views.codec_dir={v.codec_dir}: the codec is trained there; "
                                             "choose a writable views.codec_dir")
        return
    directory = default_codec_dir(v.codec, codec_options(v), open_corpus(cfg.data.corpus, cfg.data), cfg.data)
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
    save_config(cfg, run_dir / CONFIG)  # on resume: records any overrides (after the checkpoint loaded)
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

    def prepare(self) -> None:
        """Read the validation documents now: an empty val split is refused before training, not at the
        first evaluation."""
        e, d = self.cfg.eval, self.cfg.data
        try:
            self.docs = read_eval_docs(d.corpus, "val", d, e.max_bytes)
        except ValueError as err:
            raise UserError(f"corpus {d.corpus} has no validation text to evaluate ({err}); raise "
                            f"data.val_fraction (now {d.val_fraction}) or eval.max_bytes (now {e.max_bytes}), "
                            "or add documents") from None

    def __call__(self, model) -> dict:
        e, d = self.cfg.eval, self.cfg.data
        if self.docs is None:
            self.prepare()
        seq_len = e.seq_len or d.seq_len
        # every rank evaluates the same text; cheap at these sizes and keeps ranks in step
        return evaluate_bpb(model, self.interface, self.docs, seq_len, e.stride or max(1, seq_len // 2),
                            e.batch_size, self.device)


# ---- the trainer ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: RunConfig, run_dir, resume: bool = False, quiet: bool = False,
                  reset_optimizer: bool = False) -> Trainer:
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
        trainer = _build(cfg, run_dir, resume, quiet, reset_optimizer, ctx)
    except BaseException:
        if lock is not None:
            lock.release()
            if created:
                remove_if_unused(run_dir)
        raise
    trainer.run_lock = lock or NotLocked()
    return trainer


class NotLocked:
    """What ranks other than 0 hold (rank 0 locks the run directory for all of them)."""

    def release(self) -> None:
        pass


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


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


def _build(cfg: RunConfig, run_dir: Path, resume: bool, quiet: bool, reset_optimizer: bool, ctx) -> Trainer:
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = ctx.device or pick_device(t.device)
    seed_everything(t.seed)
    if not resume:
        check_codec_cache(cfg)
    try:
        codec, rep = codec_and_representation(cfg, run_dir if resume else None)
    except PermissionError as e:
        raise UserError(f"cannot write the codec cache at {e.filename} ({e.strerror}); set PROXYLM_CACHE to a "
                        "writable folder or views.codec_dir to a writable directory") from None

    torch.manual_seed(t.seed)
    model = new_model(cfg, rep, codec, run_dir).to(device)
    if codec is None and cfg.model.input_bridge == "own" and ctx.is_main and not resume:  # travels with the run
        bridge_codec(cfg, codec, run_dir).save(run_dir / BRIDGE_CODEC_DIR)
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
    evaluator = ValidationBPB(cfg, rep, codec, device)
    evaluator.prepare()  # an empty val split fails here, before training
    if ctx.is_main and not resume:
        write_run_files(cfg, run_dir, rep, codec, resume)
    dist_utils.barrier()
    trainer = Trainer(cfg, run_dir, model, rep, loader, evaluator, ctx=ctx, device=device,
                      total_steps=total_steps, quiet=quiet)
    trainer.log(startup_summary(cfg, corpus, rep, codec, model, total_steps, ctx.world_size, lossless))
    if log:
        trainer.log(log)
    if resume:
        trainer.restore(reset_optimizer=reset_optimizer)
        if ctx.is_main:  # only now: a resume that fails leaves config.yaml as it was
            write_run_files(cfg, run_dir, rep, codec, resume)
        dist_utils.barrier()
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
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a proxylm run directory (no {CONFIG})")
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
