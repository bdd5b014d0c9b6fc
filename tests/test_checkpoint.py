import warnings

import pytest
import torch

from proxylm.train.checkpoint import (CKPT_DIR, WEIGHTS, latest_checkpoint, list_checkpoints,
                                      save_checkpoint)


def _weights(v):
    return {"w": torch.full((2, 3), float(v))}


def test_save_and_load_latest(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _weights(step), {"state": {}, "param_groups": []}, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    path, weights, optim, state = latest_checkpoint(tmp_path)
    assert state["step"] == 3 and torch.equal(weights["w"], _weights(3)["w"]) and optim is not None


def test_interrupted_write_leaves_previous_usable(tmp_path):
    save_checkpoint(tmp_path, 1, _weights(1), None, {"step": 1})
    # a kill during the next write leaves only a temporary folder behind
    partial = tmp_path / CKPT_DIR / ".tmp-step_0000002"
    partial.mkdir()
    (partial / WEIGHTS).write_bytes(b"half a file")
    path, weights, _, state = latest_checkpoint(tmp_path)
    assert state["step"] == 1


def test_corrupt_newest_falls_back_with_warning(tmp_path):
    save_checkpoint(tmp_path, 1, _weights(1), None, {"step": 1})
    newest = save_checkpoint(tmp_path, 2, _weights(2), None, {"step": 2})
    (newest / WEIGHTS).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        path, weights, _, state = latest_checkpoint(tmp_path)
    assert state["step"] == 1 and (newest / WEIGHTS).exists()  # reported, never deleted


def test_no_checkpoint(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path) is None
