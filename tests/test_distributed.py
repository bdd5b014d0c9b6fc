"""Data-parallel training on CPU ranks (gloo): DDP and FSDP2 against one process, resume, checkpoints.

    .venv/bin/python -m pytest tests/test_distributed.py          # fast: one 2-rank DDP launch, shards,
                                                                  # activation checkpointing
    .venv/bin/python -m pytest tests/test_distributed.py -m slow  # FSDP, accumulation, resumes, compile

The 2-rank runs are launched with `python -m torch.distributed.run --standalone --nproc_per_node 2`.
Their reference is one process with grad_accum=2 whose two micro-batches are rank 0's and rank 1's
batches (two loaders over the two shards), i.e. exactly the same global batch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import losses_by_step, metric_records

from proxylm.config import load_config
from proxylm.data.loader import TrainLoader
from proxylm.core.representation import Representation
from proxylm.assemble import load_run
from proxylm.train.checkpoint import CKPT_DIR, LATEST, SHARDED, checkpoint_name

pytestmark = pytest.mark.filterwarnings("ignore::proxylm.data.corpus.CorpusWarning")

REPO = Path(__file__).resolve().parents[1]
RANKS = 2
STEPS = 4
CKPT_EVERY = 2  # the resume test restarts from the middle checkpoint
LAUNCH_TIMEOUT_S = 300
# float32 on both sides; only the order of the reductions differs
LOSS_RTOL = 1e-5
MICRO = ["model.dim=32", "model.n_layers=2", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         f"train.max_steps={STEPS}", "train.eval_every=0", f"train.ckpt_every={CKPT_EVERY}", "train.log_every=1",
         "train.warmup_steps=1", "train.keep_ckpts=2", "eval.max_bytes=2000", "train.device=cpu",
         "train.threads=1"]  # one thread per process: the ranks share the cores
MODES = ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    """In-process Trainers set torch's thread count (train.threads); give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(40):
        lines = rng.randint(2, 25)
        (d / f"m{i:02d}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(lines)))
    return d


def overrides(corpus, mode: str, extra=()) -> list[str]:
    return [*MICRO, f"data.corpus={corpus}", f"train.distributed={mode}", *extra]


def rolled_back_copy(full: Path, run_dir: Path) -> Path:
    """A copy of the finished run `full` rolled back to its middle checkpoint (CKPT_EVERY), metrics emptied."""
    shutil.copytree(full, run_dir)
    shutil.rmtree(run_dir / CKPT_DIR / checkpoint_name(STEPS))
    (run_dir / CKPT_DIR / LATEST).write_text(checkpoint_name(CKPT_EVERY) + "\n")
    (run_dir / "metrics.jsonl").write_text("")
    return run_dir


def torchrun(*args: str, nproc: int = RANKS) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "proxylm", *args, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return done


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """mode -> run directory of one 2-rank launch (made on first use, shared by the tests)."""
    root, made = tmp_path_factory.mktemp("runs"), {}

    def get(mode: str) -> Path:
        if mode not in made:
            made[mode] = root / mode
            torchrun("train", "bytes-micro", *overrides(corpus, mode), "--out", str(made[mode]))
        return made[mode]

    return get


class Interleaved:
    """Micro-batch i of a step comes from rank i's loader: one process sees the 2-rank global batch."""

    def __init__(self, loaders):
        self.loaders, self.calls = loaders, 0

    def next_batch(self, step):
        batch = self.loaders[self.calls % len(self.loaders)].next_batch(step)
        self.calls += 1
        return batch

    def schedule(self, step):
        return self.loaders[0].schedule(step)


def one_process(corpus, run_dir: Path, accum_per_rank: int = 1):
    """(metrics by step, final validation BPB) of one process with grad_accum = RANKS * accum_per_rank whose
    micro-batches cycle through the RANKS shards: the global batch of a RANKS-rank run."""
    from proxylm.assemble import build_trainer

    cfg = load_config("bytes-micro", overrides(corpus, "ddp", [f"train.grad_accum={RANKS * accum_per_rank}"]))
    trainer = build_trainer(cfg, run_dir, quiet=True)
    trainer.loader = Interleaved([TrainLoader(cfg.data, cfg.views, trainer.rep, trainer.loader.codec, rank=r,
                                              world_size=RANKS, total_steps=STEPS, n_future=cfg.model.n_future)
                                  for r in range(RANKS)])
    got = {m["step"]: m for m in (trainer.train_step() for _ in range(STEPS))}
    return got, trainer.evaluate()["bpb"]


def step_metrics(run_dir: Path) -> dict[int, dict]:
    return {m["step"]: m for m in metric_records(run_dir) if "loss" in m}


def final_bpb(run_dir: Path) -> float:
    return [m["val_bpb"] for m in metric_records(run_dir) if "val_bpb" in m][-1]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    return one_process(corpus, tmp_path_factory.mktemp("ref") / "run")


def assert_same_run(run_dir: Path, ref) -> None:
    ref_metrics, ref_bpb = ref
    got = step_metrics(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, want in ref_metrics.items():
        for key in ("loss", "grad_norm", "symbols", "flops"):  # grad_norm: over all ranks' gradients (shards)
            assert got[step][key] == pytest.approx(want[key], rel=LOSS_RTOL), f"step {step} {key}"
    assert final_bpb(run_dir) == pytest.approx(ref_bpb, rel=LOSS_RTOL)


# ---- data -------------------------------------------------------------------------------------------
def test_ranks_read_disjoint_shares_covering_the_split(corpus):
    """In one epoch every training document is read by exactly one rank, once."""
    cfg = load_config("bytes-micro", overrides(corpus, "ddp"))
    rep, seen = Representation.bytes_only(), []
    for r in range(RANKS):
        loader = TrainLoader(cfg.data, cfg.views, rep, rank=r, world_size=RANKS, total_steps=STEPS)
        epoch0 = []
        while True:
            item = loader.doc_stream.next()
            if item.epoch > 0:
                break
            epoch0.append(item.key)
        assert len(set(epoch0)) == len(epoch0)  # each of its documents once
        seen += epoch0
    all_train = [doc.key for doc in loader.corpus.iter_documents("train")]
    assert sorted(seen) == sorted(all_train)  # disjoint, and nothing left out


# ---- 2 ranks == 1 process ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_match_one_process(runs, reference, mode):
    assert_same_run(runs(mode), reference)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_accumulation_with_activation_checkpointing_under_two_ranks(corpus, tmp_path, mode):
    """grad_accum=2 per rank (gradient sync only on the last micro-batch) == 4 micro-batches in one process."""
    extra = ["train.grad_accum=2", "train.activation_checkpointing=true"]
    torchrun("train", "bytes-micro", *overrides(corpus, mode, extra), "--out", str(tmp_path / "run"))
    assert_same_run(tmp_path / "run", one_process(corpus, tmp_path / "ref", accum_per_rank=2))


@pytest.mark.parametrize("mode", MODES)
def test_consolidated_checkpoint_loads_in_one_process(runs, mode):
    from proxylm.eval.bpb import evaluate_bpb, read_eval_docs

    run_dir = runs(mode)
    ckpt = run_dir / CKPT_DIR / checkpoint_name(STEPS)
    assert (ckpt / SHARDED).is_dir() == (mode == "fsdp")
    state = json.loads((ckpt / "state.json").read_text())
    assert [s["loader"]["rank"] for s in state["ranks"]] == list(range(RANKS))
    run = load_run(run_dir)  # no process group: model.safetensors is the full model
    assert run.step == STEPS
    cfg = run.cfg
    docs = read_eval_docs(cfg.data.corpus, "val", cfg.data, cfg.eval.max_bytes)
    seq_len = cfg.eval.window(cfg.data.seq_len)
    bpb = evaluate_bpb(run.model, run.interface, docs, seq_len, cfg.eval.stride_for(seq_len),
                       cfg.eval.batch_size)["bpb"]
    assert bpb == pytest.approx(final_bpb(run_dir), rel=LOSS_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_resume_under_two_ranks_continues_exactly(runs, mode, tmp_path):
    """Roll a finished run back to its middle checkpoint and resume: the same losses as uninterrupted."""
    full = runs(mode)
    run_dir = rolled_back_copy(full, tmp_path / "resumed")
    torchrun("resume", str(run_dir))
    want = losses_by_step(full)
    got = losses_by_step(run_dir)
    assert sorted(got) == list(range(CKPT_EVERY + 1, STEPS + 1))
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], rel=LOSS_RTOL), f"step {step}"
    assert final_bpb(run_dir) == pytest.approx(final_bpb(full), rel=LOSS_RTOL)


@pytest.mark.slow
def test_resume_with_other_world_size_is_refused(runs, tmp_path):
    from proxylm.assemble import build_trainer

    run_dir = tmp_path / "copy"
    shutil.copytree(runs("ddp"), run_dir)
    cfg = load_config(str(run_dir / "config.yaml"))
    with pytest.raises(ValueError, match="same number"):
        build_trainer(cfg, run_dir, resume=True, quiet=True)


# ---- single-process wrapping ------------------------------------------------------------------------
def _one_step(corpus, tmp_path, extra):
    from proxylm.assemble import build_trainer

    cfg = load_config("bytes-micro", overrides(corpus, "ddp", extra))
    trainer = build_trainer(cfg, tmp_path, quiet=True)
    out = [trainer.train_step()["loss"] for _ in range(2)]
    return out, {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}


def test_activation_checkpointing_changes_nothing_but_memory(corpus, tmp_path):
    base, w0 = _one_step(corpus, tmp_path / "a", [])
    ckpt, w1 = _one_step(corpus, tmp_path / "b", ["train.activation_checkpointing=true"])
    assert ckpt == pytest.approx(base, rel=LOSS_RTOL)
    assert w0.keys() == w1.keys()  # parameter names unchanged
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k])


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(corpus, tmp_path):
    base, w0 = _one_step(corpus, tmp_path / "a", [])
    comp, w1 = _one_step(corpus, tmp_path / "b", ["train.compile=true", "train.activation_checkpointing=true"])
    assert comp == pytest.approx(base, rel=1e-4)  # inductor fuses differently: float-level differences
    assert w0.keys() == w1.keys()
