"""One model of a comparison: train it (or resume it, or reuse it when it finished with the same
settings), score it, and write `compare_result.json` beside its run.

    fp = fingerprint(cfg)                       # 16 hex digits over every setting that shapes the result
    check_reusable(cfg, run_dir)                # UserError when run_dir holds a run with other settings
    result = run_one("bytes", cfg, run_dir, eval_sets, quiet=True)

Settings are part of a result: a run directory trained with other settings (a different budget, seed,
model override, ...) is never silently reused. `compare` checks every model before training any and
refuses with the settings that differ, unless asked to retrain (the old run is moved aside, not deleted).
Each result also records `code`, a hash of proxylm's own sources that trained it: a code change is not a
settings change (most edits do not move a number), so runs are still reused, but the report says when its
results come from several code versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import sys
from pathlib import Path

import yaml

import proxylm

from proxylm.core import rundir
from proxylm.core.errors import UserError
from proxylm.core.io import atomic_write

RESULT_FILE = "compare_result.json"
# Settings that do not change what a run computes (names, logging, thread count, cache paths):
# left out of the fingerprint so that e.g. resuming with other threads still matches.
NOT_RESULT_KEYS = frozenset({"name", "train.threads", "train.log_every", "train.ckpt_every", "train.keep_ckpts",
                             "train.device", "views.codec_dir", "eval.batch_size", "data.num_workers",
                             "logging.wandb", "logging.wandb_project", "logging.wandb_mode"})


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """16 hex digits over proxylm's Python sources and shipped configs (paths and contents)."""
    root = Path(proxylm.__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def result_settings(cfg) -> dict:
    """{dotted key: value} of every setting that shapes the result."""
    from proxylm.config import to_dict

    return {k: v for k, v in _flatten(to_dict(cfg)).items() if k not in NOT_RESULT_KEYS}


def fingerprint(cfg) -> str:
    blob = json.dumps(result_settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings_diff(old: dict, new: dict, limit: int = 4) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def saved_settings(run_dir: Path) -> dict | None:
    """The result settings a run directory was trained with (None: no run there yet)."""
    from proxylm.config import load_config

    path = run_dir / rundir.CONFIG
    if not path.exists():
        return None
    try:
        cfg = load_config(str(path))
        if "final_max_bytes" not in (yaml.safe_load(path.read_text()).get("eval") or {}):
            # saved before eval.final_max_bytes existed: its final eval scored the periodic evals' bytes
            cfg.eval.final_max_bytes = cfg.eval.max_bytes
        return result_settings(cfg)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError
        raise UserError(f"{path}: cannot read the settings of the run there ({e}); move it away or use another "
                        "--out") from e


def same_settings(cfg, run_dir: Path) -> bool:
    """run_dir holds a run trained with cfg's settings. Both sides are read by this version of the config
    code, so a key added since (at its default) does not make an old result look different."""
    return saved_settings(run_dir) == result_settings(cfg)


def check_reusable(cfg, run_dir: Path, retrain: bool = False) -> bool:
    """True when run_dir is free or holds a run (finished or not) with cfg's settings. A run with other
    settings raises UserError, or with `retrain` is moved to `<run_dir>.old-<its fingerprint>` (False)."""
    old = saved_settings(run_dir)
    new = result_settings(cfg)
    if old is None or old == new:
        return True
    diff = settings_diff(old, new)
    if not retrain:
        raise UserError(f"{run_dir} was trained with other settings ({diff}); pass --retrain to train it again "
                        "(the old run is moved aside), or use another --out")
    old_fp = hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = run_dir.with_name(f"{run_dir.name}.old-{old_fp}")
    if target.exists():
        shutil.rmtree(target)
    run_dir.rename(target)
    print(f"[compare] {run_dir.name}: settings changed ({diff}); the old run moved to {target}", file=sys.stderr)
    return False


def bpb_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(FLOPs, validation BPB) pairs from the periodic evals in metrics.jsonl."""
    return [(rec["flops"], rec["val_bpb"]) for rec in rundir.read_metrics(run_dir) if "val_bpb" in rec]


def run_one(name: str, cfg, run_dir: Path, eval_sets: dict[str, list[bytes]], quiet: bool) -> dict:
    """Train (or resume, or reuse if finished with the same settings) one model; score it on every eval set.
    Call check_reusable first: this trusts that run_dir holds nothing trained with other settings."""
    from proxylm.assemble import build_trainer, load_run
    from proxylm.eval.bpb import evaluate_bpb
    from proxylm.train.checkpoint import list_checkpoints

    done = run_dir / RESULT_FILE
    fp = fingerprint(cfg)
    if done.exists():
        if same_settings(cfg, run_dir):
            print(f"[compare] {run_dir.name}: finished earlier with the same settings, reused", file=sys.stderr)
            return {**json.loads(done.read_text()), "fingerprint": fp}
        done.unlink()  # a result of other settings (check_reusable moved or refused those): score again
    print(f"[compare] {run_dir.name}: training to {cfg.train.max_flops:.3g} FLOPs", file=sys.stderr)
    summary = build_trainer(cfg, run_dir, resume=bool(list_checkpoints(run_dir)), quiet=quiet).fit()
    # "val" is the trainer's own final eval (same documents); other sets are scored here
    scores = {"val": {"bpb": summary["val_bpb"], "bytes": sum(map(len, eval_sets["val"]))}}
    extra_sets = {k: v for k, v in eval_sets.items() if k != "val"}
    if extra_sets:
        run = load_run(run_dir)
        seq_len = cfg.eval.window(cfg.data.seq_len)
        for set_name, docs in extra_sets.items():
            r = evaluate_bpb(run.model, run.interface, docs, seq_len, cfg.eval.stride_for(seq_len), cfg.eval.batch_size)
            scores[set_name] = {"bpb": r["bpb"], "bytes": r["bytes"]}
    stats = summary.get("loader_stats", {})
    result = {"model": name, "run_dir": str(run_dir), "fingerprint": fp, "code": code_version(),
              "flops": summary["flops"],
              "steps": summary["steps"], "symbols": summary["symbols"],
              # raw_bytes_seen: text behind every input symbol (a pair's text twice; kept for old readers)
              "raw_bytes_seen": summary["raw_bytes"],
              "raw_view_bytes": summary.get("raw_view_bytes"),
              "compressed_view_bytes": summary.get("compressed_view_bytes"),
              "compressed_symbols": summary.get("compressed_symbols"),
              "decisions": stats.get("documents"), "paired_documents": stats.get("pair_documents"),
              "pair_parts": stats.get("pair_parts"),
              "non_embedding_params": non_embedding_params(cfg),
              "elapsed_s": summary["elapsed_s"], "budget_flops": cfg.train.max_flops,
              "bpb": {k: v["bpb"] for k, v in scores.items()}, "eval_bytes": {k: v["bytes"] for k, v in scores.items()},
              "curve": bpb_curve(run_dir)}
    atomic_write(done, json.dumps(result, indent=2) + "\n")
    return result


def non_embedding_params(cfg) -> int:
    """Parameters of the transformer blocks (attention, MLP, norms): the size axis of the scaling study
    (embedding and output layers excluded: they differ by vocabulary, not by backbone)."""
    m = cfg.model
    d, q, kv, f = m.dim, m.n_heads * m.head_dim, m.kv_heads * m.head_dim, m.hidden_dim
    return m.n_layers * (d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d) + d
