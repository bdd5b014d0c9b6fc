"""The GPU path as far as a CPU can run it (marker `gpupath`; `.ci/run` runs these after the default suite):
bf16 autocast training, compiled blocks in bf16, a 2-rank FSDP2 run in bf16 mixed precision resumed from its
DCP shards, and a multi-node launch (two `torchrun --nnodes 2` on one host, c10d rendezvous on localhost)
against a single-node 2-rank run. Compiled FlexAttention: tests/test_attention.py.

    .venv/bin/python -m pytest -q -m gpupath          # the whole marker: 4 minutes on 2 shared cores
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import pytest

from proxylm.config import load_config
from proxylm.train.checkpoint import CKPT_DIR, SHARDED, checkpoint_name
import test_distributed
from helpers import losses_by_step, metric_records, val_by_step
from test_distributed import CKPT_EVERY, LAUNCH_TIMEOUT_S, LOSS_RTOL, REPO, STEPS, overrides, rolled_back_copy, torchrun

corpus = test_distributed.corpus  # the same module-scoped fixtures
restore_threads = test_distributed.restore_threads  # autouse

pytestmark = [pytest.mark.gpupath, pytest.mark.filterwarnings("ignore::proxylm.data.corpus.CorpusWarning")]
BF16 = ["train.dtype=bfloat16"]  # explicit: train.dtype's default is not this test's business


def train_steps(corpus, run_dir, extra, steps=3):
    from proxylm.assemble import build_trainer

    trainer = build_trainer(load_config("bytes-micro", overrides(corpus, "ddp", extra)), run_dir, quiet=True)
    return [trainer.train_step()["loss"] for _ in range(steps)], trainer


def test_bf16_autocast_training_on_cpu(corpus, tmp_path):
    fp32, _ = train_steps(corpus, tmp_path / "fp32", ["train.dtype=float32"])
    bf16, trainer = train_steps(corpus, tmp_path / "bf16", BF16)
    assert all(math.isfinite(x) for x in bf16)
    assert bf16 != fp32  # bf16 really ran (the same batches, other rounding) ...
    assert bf16 == pytest.approx(fp32, rel=3e-2)  # ... and trains the same model
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in trainer.raw_model.parameters())


def test_compiled_blocks_in_bf16_train_like_eager(corpus, tmp_path):
    eager, _ = train_steps(corpus, tmp_path / "eager", BF16, steps=2)
    compiled, trainer = train_steps(corpus, tmp_path / "compiled", BF16 + ["train.compile=true"], steps=2)
    assert compiled == pytest.approx(eager, rel=2e-2)  # inductor rounds bf16 differently
    assert all(hasattr(b, "_compiled_call_impl") and b._compiled_call_impl is not None
               for b in trainer.raw_model.layers)


def test_fsdp_bf16_two_ranks_resume_from_dcp_shards(corpus, tmp_path):
    full = tmp_path / "full"
    torchrun("train", "bytes-micro", *overrides(corpus, "fsdp", BF16), "--out", str(full))
    assert (full / CKPT_DIR / checkpoint_name(CKPT_EVERY) / SHARDED).is_dir()
    run_dir = rolled_back_copy(full, tmp_path / "resumed")
    torchrun("resume", str(run_dir))
    want, got = losses_by_step(full), losses_by_step(run_dir)
    assert sorted(got) == list(range(CKPT_EVERY + 1, STEPS + 1))
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], rel=LOSS_RTOL), f"step {step}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_host_match_one_node(corpus, tmp_path):
    """docs/distributed.md's multi-node recipe, both 'nodes' on localhost: the same losses as --standalone."""
    single = tmp_path / "single"
    torchrun("train", "bytes-micro", *overrides(corpus, "ddp"), "--out", str(single))
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{free_port()}", "--rdzv-id", "proxylm-test",
           "-m", "proxylm", "train", "bytes-micro", *overrides(corpus, "ddp"), "--out", str(multi), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    nodes = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outs = [n.communicate(timeout=LAUNCH_TIMEOUT_S)[0] for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-4000:] for o in outs)
    want, got = ({r['step']: r for r in metric_records(d) if 'loss' in r} for d in (single, multi))
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        for key in ("loss", "grad_norm", "symbols"):
            assert got[step][key] == pytest.approx(want[step][key], rel=LOSS_RTOL), f"step {step} {key}"
    assert list(val_by_step(multi).values())[-1] == pytest.approx(list(val_by_step(single).values())[-1], rel=LOSS_RTOL)
