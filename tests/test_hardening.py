"""Regression tests of the hardening campaign (issue 13): every bad input gets a one-line error naming the
file, line or key, before any work or file change; every fallback is counted and reported.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_hardening.py
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import write_code_corpus

import proxylm.cli
from proxylm.assemble import build_trainer, load_run
from proxylm.config import ConfigError, load_config
from proxylm.core.errors import UserError
from proxylm.train.checkpoint import (CKPT_DIR, LATEST, MANIFEST, OPTIMIZER, STATE, WEIGHTS, NoUsableCheckpoint,
                                      list_checkpoints)

SMALL = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
         "train.log_every=1", "eval.max_bytes=2000", "eval.batch_size=4", "train.warmup_steps=2",
         "train.max_steps=6", "train.ckpt_every=3", "train.eval_every=0", "data.val_fraction=0.2"]
ROOT = os.geteuid() == 0  # permissions do not stop root: the chmod cases are tested by other means there


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=30, max_functions=4)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 3 and 6 (copied by the tests that damage it)."""
    run = tmp_path_factory.mktemp("runs") / "base"
    build_trainer(load_config("bytes-micro", SMALL + [f"data.corpus={corpus}"]), run, quiet=True).fit()
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def cli(args, capsys):
    """(exit status, stderr) of `proxylm ARGS` run in this process."""
    capsys.readouterr()
    try:
        rc = proxylm.cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    return rc, capsys.readouterr().err


def flip_byte(path, at=-64):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def resume_log(run):
    return [json.loads(line) for line in (run / "resume.jsonl").read_text().splitlines()]


def newest(run):
    return list_checkpoints(run)[-1]


# ---- config values: refused at load, the key named ---------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("model.dim=0", "model.dim"), ("model.dim=-64", "model.dim"), ("model.n_layers=0", "model.n_layers"),
    ("model.n_kv_heads=0", "model.n_kv_heads"), ("model.n_heads=3", "model.dim"), ("model.n_kv_heads=3", "model.n_heads"),
    ("train.log_every=0", "train.log_every"), ("eval.max_bytes=-1", "eval.max_bytes"),
    ("eval.batch_size=0", "eval.batch_size"), ("train.lr=0", "train.lr"), ("train.beta2=1.5", "train.beta2"),
    ("data.max_doc_bytes=0", "data.max_doc_bytes"), ("views.codec_options.gzip.level=12", "views.codec_options.gzip"),
    ("eval.stride=600", "eval.stride"), ("train.keep_ckpts=-1", "train.keep_ckpts"),
])
def test_bad_config_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}[=:]"):
        load_config("bytes-micro", [override])


def test_bad_config_value_refused_before_any_file(corpus, tmp_path, capsys):
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", "model.dim=0", "--out", tmp_path / "r"], capsys)
    assert rc == 2 and err.strip() == "proxylm train: error: model.dim=0: must be >= 1"
    assert not (tmp_path / "r").exists()


def test_relative_base_is_resolved_against_the_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "common.yaml").write_text("base: bytes-micro\nmodel: {dim: 48, n_heads: 2}\n")
    (tmp_path / "conf" / "run.yaml").write_text("base: common.yaml\ntrain: {max_steps: 3}\n")
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    cfg = load_config("conf/run.yaml")
    assert cfg.model.dim == 48 and cfg.train.max_steps == 3
    (tmp_path / "conf" / "bad.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="bad.yaml: base: nowhere.yaml"):
        load_config("conf/bad.yaml")


# ---- command-line numbers and strings ------------------------------------------------------------------------
@pytest.mark.parametrize("args, flag", [
    (["eval", "bpb", "RUN", "--max-bytes", "-5"], "--max-bytes"),
    (["eval", "bpb", "RUN", "--batch-size", "0"], "--batch-size"),
    (["generate", "RUN", "--prompt", "x", "--max-bytes", "-1"], "--max-bytes"),
    (["codec", "train", "neural", "--steps", "0"], "--steps"),
    (["codec", "encode", "--codec", "gzip", "--out", "OUT", "--lanes", "-1"], "--lanes"),
    (["codec", "encode", "--codec", "gzip", "--out", "OUT", "--workers", "0"], "--workers"),
])
def test_bad_numeric_flags_are_refused_in_one_line(args, flag, trained, tmp_path, capsys):
    args = [str(trained) if a == "RUN" else str(tmp_path / "o") if a == "OUT" else a for a in args]
    rc, err = cli(args, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and f"argument {flag}:" in err
    assert not (tmp_path / "o").exists()


def test_neural_codec_refuses_zero_steps():
    from proxylm.prepare.m1 import train_neural_codec

    with pytest.raises(ValueError, match="steps=0"):
        train_neural_codec([b"x" * 100], steps=0)


def test_generate_max_bytes_beyond_the_context_is_refused(trained, capsys):
    rc, err = cli(["generate", trained, "--prompt", "def f", "--max-bytes", "4095"], capsys)
    assert rc == 2 and "leaving 4089 for output; use --max-bytes <= 4089" in err


def test_generate_takes_invalid_utf8_from_the_shell(trained):
    """`generate --prompt $'\\xff\\xfe'`: argv bytes that are not UTF-8 reach the model as those bytes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for extra in ([], ["--json"]):
        out = subprocess.run([sys.executable, "-m", "proxylm", "generate", str(trained), "--prompt", b"\xff\xfe",
                              "--max-bytes", "3", *extra], capture_output=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(b"\xff\xfe") if not extra else json.loads(out.stdout)["prompt"] == "\ufffd\ufffd"


def test_overrides_after_options(corpus, tmp_path, capsys):
    rc, err = cli(["train", "bytes-micro", "--out", tmp_path / "r", "--quiet", f"data.corpus={corpus}",
                   *SMALL, "train.max_steps=2"], capsys)
    assert rc == 0, err
    assert load_config(str(tmp_path / "r" / "config.yaml")).train.max_steps == 2
    rc, err = cli(["train", "bytes-micro", "--out", tmp_path / "s", "--bogus"], capsys)
    assert rc == 2 and "unrecognized arguments: --bogus" in err


def test_train_restarts_a_run_that_never_saved(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("name: old\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0}\n')
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "train.max_steps=2", "--out", run,
                   "--quiet"], capsys)
    assert rc == 0 and "no checkpoint" in err
    assert 99.0 not in [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_out_naming_a_file(corpus, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", "--out", tmp_path / "f"], capsys)
    assert rc == 2 and "is a file, not a directory" in err and (tmp_path / "f").read_text() == "x"


def test_unwritable_out(corpus, tmp_path, capsys):
    (tmp_path / "f").write_text("x")  # a path below a file can never be created, even by root
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", "--out", tmp_path / "f" / "run"], capsys)
    assert rc == 2 and "cannot write to" in err and str(tmp_path / "f") in err


def test_unwritable_codec_cache(corpus, tmp_path, capsys, monkeypatch):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("PROXYLM_CACHE", str(tmp_path / "cache"))
    rc, err = cli(["train", "proxy-bpe-micro", f"data.corpus={corpus}", *SMALL, "--out", tmp_path / "r"], capsys)
    assert rc == 2 and "PROXYLM_CACHE" in err and "cannot write to" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(ROOT, reason="root writes through read-only permissions")
def test_read_only_run_dir_and_checkpoints(run_copy, capsys):
    ck = run_copy / CKPT_DIR
    os.chmod(ck, 0o555)
    try:
        rc, err = cli(["resume", run_copy, "train.max_steps=8", "--quiet"], capsys)
        assert rc == 2 and f"cannot write to {ck}" in err
        os.chmod(ck, 0o755)
        os.chmod(run_copy, 0o555)
        rc, err = cli(["resume", run_copy, "train.max_steps=8", "--quiet"], capsys)
        assert rc == 2 and "cannot write to" in err
    finally:
        os.chmod(run_copy, 0o755)
        os.chmod(ck, 0o755)


def test_unwritable_checkpoints_found_before_training(run_copy, capsys):
    """What a read-only checkpoints/ does, reproduced in a way that also stops root: the probe write fails."""
    shutil.rmtree(run_copy / CKPT_DIR)
    (run_copy / CKPT_DIR).write_text("in the way")
    before = (run_copy / "metrics.jsonl").read_text()
    rc, err = cli(["resume", run_copy, "--quiet"], capsys)
    assert rc == 2 and "cannot write to" in err and str(run_copy / CKPT_DIR) in err
    assert (run_copy / "metrics.jsonl").read_text() == before  # no step was trained


# ---- checkpoints: checksums, fallbacks, refusals ---------------------------------------------------------------
def test_checkpoints_carry_a_manifest(trained):
    for ck in list_checkpoints(trained):
        files = json.loads((ck / MANIFEST).read_text())["files"]
        assert set(files) == {WEIGHTS, OPTIMIZER, STATE}


def test_flipped_weight_byte_falls_back_and_is_counted(run_copy, capsys):
    flip_byte(newest(run_copy) / WEIGHTS)
    with pytest.warns(UserWarning, match="sha256 mismatch"):
        assert load_run(run_copy).step == 3  # eval and generation fall back too
    with pytest.warns(UserWarning, match="sha256 mismatch"):
        rc, err = cli(["resume", run_copy, "train.max_steps=7", "--quiet"], capsys)
    assert rc == 0
    log = resume_log(run_copy)[-1]
    assert log["step"] == 3 and log["skipped_count"] == 1 and log["skipped"][0][0] == "step_0000006"


def test_flipped_optimizer_byte_falls_back_to_the_previous_checkpoint(run_copy, capsys):
    flip_byte(newest(run_copy) / OPTIMIZER, at=len((newest(run_copy) / OPTIMIZER).read_bytes()) // 2)
    assert load_run(run_copy).step == 6  # weights are fine: evaluation needs no optimizer
    with pytest.warns(UserWarning, match="optimizer.pt"):
        rc, err = cli(["resume", run_copy, "train.max_steps=7", "--quiet"], capsys)
    assert rc == 0
    assert resume_log(run_copy)[-1]["step"] == 3


def test_deleted_optimizer_is_refused_unless_reset(run_copy, capsys):
    for ck in list_checkpoints(run_copy):
        (ck / OPTIMIZER).unlink()
    config_before = (run_copy / "config.yaml").read_bytes()
    rc, err = cli(["resume", run_copy, "train.max_steps=7", "--quiet"], capsys)
    assert rc == 2 and "--reset-optimizer" in err.splitlines()[-1]
    assert (run_copy / "config.yaml").read_bytes() == config_before
    rc, err = cli(["resume", run_copy, "train.max_steps=7", "--quiet", "--reset-optimizer"], capsys)
    assert rc == 0
    log = resume_log(run_copy)[-1]
    assert log["step"] == 6 and log["optimizer_reset"] is True


def test_state_json_of_the_wrong_shape(run_copy):
    ck = newest(run_copy)
    data = json.dumps({"step": "six"}).encode()
    (ck / STATE).write_bytes(data)
    manifest = json.loads((ck / MANIFEST).read_text())  # even with a matching checksum it is refused
    import hashlib

    manifest["files"][STATE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ck / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="key 'step' is 'six'"):
        assert load_run(run_copy).step == 3
    for ck in list_checkpoints(run_copy):
        (ck / STATE).write_text("[1, 2]")
    with pytest.warns(UserWarning), pytest.raises(NoUsableCheckpoint, match="no usable checkpoint"):
        load_run(run_copy)


def test_newest_checkpoint_with_another_models_weights(run_copy, tmp_path, corpus):
    other = tmp_path / "other"
    build_trainer(load_config("bytes-micro", SMALL + [f"data.corpus={corpus}", "model.dim=64", "train.max_steps=3"]),
                  other, quiet=True).fit()
    ck = newest(run_copy)
    shutil.rmtree(ck)
    shutil.copytree(newest(other), ck)  # complete and checksummed, but another model's
    with pytest.warns(UserWarning, match="another model's weights"):
        assert load_run(run_copy).step == 3


def test_garbage_latest_pointer(run_copy, capsys):
    (run_copy / CKPT_DIR / LATEST).write_bytes(b"\xff\xfe../../etc\x00")
    with pytest.warns(UserWarning, match="not a complete checkpoint"):
        assert load_run(run_copy).step == 6


def test_checkpoint_without_manifest_loads_unverified_once(run_copy):
    for ck in list_checkpoints(run_copy):
        (ck / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="loaded unverified") as record:
        assert load_run(run_copy).step == 6
        load_run(run_copy)
    assert sum("unverified" in str(w.message) for w in record) == 1


# ---- lost work -------------------------------------------------------------------------------------------------
def test_empty_val_split_refused_before_training(corpus, tmp_path, capsys):
    rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "data.val_fraction=0.0",
                   "--out", tmp_path / "r"], capsys)
    assert rc == 2 and "no validation text" in err and "data.val_fraction" in err
    assert not (tmp_path / "r").exists()


def test_resume_with_a_shape_change_keeps_config_yaml(run_copy, capsys):
    before = (run_copy / "config.yaml").read_bytes()
    rc, err = cli(["resume", run_copy, "model.dim=32", "model.n_layers=3"], capsys)
    assert rc == 2 and "model.n_layers cannot change on resume" in err and "train.*" in err
    assert (run_copy / "config.yaml").read_bytes() == before
    rc, err = cli(["resume", run_copy, "train.max_steps=7", "eval.batch_size=2", "--quiet"], capsys)
    assert rc == 0 and load_config(str(run_copy / "config.yaml")).train.max_steps == 7


def test_a_second_writer_is_refused_naming_the_holder(run_copy, corpus, capsys):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        f = open({str(run_copy / '.lock')!r}, "a"); fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0); f.write(f"{{os.getpid()}}\\n"); f.flush(); print("locked", flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run_copy / "metrics.jsonl").read_text()
        rc, err = cli(["resume", run_copy, "train.max_steps=8", "--quiet"], capsys)
        assert rc == 2 and f"pid {holder.pid}" in err
        rc, err = cli(["train", "bytes-micro", f"data.corpus={corpus}", *SMALL, "--overwrite", "--out", run_copy],
                      capsys)
        assert rc == 2 and f"pid {holder.pid}" in err
        assert (run_copy / "metrics.jsonl").read_text() == before and list_checkpoints(run_copy)
    finally:
        holder.kill()
        holder.wait()


# ---- precomputed shards ----------------------------------------------------------------------------------------
@pytest.fixture
def shards(corpus, tmp_path):
    from proxylm.prepare.precomputed import EncodeJob, encode_corpus
    from proxylm.data.config import DataConfig

    data_cfg = DataConfig(corpus=corpus, val_fraction=0.2)
    out = tmp_path / "shards"
    encode_corpus(EncodeJob("gzip", data_cfg, "train", out, shard_bytes=400), quiet=True)
    return out, data_cfg


def test_truncated_shard_manifest(shards, capsys, corpus):
    from proxylm.prepare.precomputed import MANIFEST as SHARD_MANIFEST, PrecomputedViews

    out, _ = shards
    path = out / SHARD_MANIFEST
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match=f"{path}: truncated"):
        PrecomputedViews(out)
    rc, err = cli(["codec", "encode", "--codec", "gzip", "--out", out, "--corpus", corpus, "--val-fraction", "0.2",
                   "--split", "train"], capsys)
    assert rc == 2 and "truncated" in err


def test_corrupt_and_foreign_shards_name_the_file_and_documents(shards):
    from proxylm.prepare.precomputed import MissingView, PrecomputedViews, shard_name

    out, _ = shards
    views = PrecomputedViews(out)
    first_key = views.manifest["shards"][1][0]
    flip_byte(out / shard_name(1))
    with pytest.raises(MissingView, match=rf"{shard_name(1)} \(holding documents {first_key}"):
        views[first_key]
    # a complete shard of another position (its checksum file copied along): foreign
    for suffix in (".bin", ".sha256"):
        shutil.copy((out / shard_name(0)).with_suffix(suffix), (out / shard_name(1)).with_suffix(suffix))
    with pytest.raises(MissingView, match="a foreign shard"):
        PrecomputedViews(out)[first_key]
    assert issubclass(MissingView, UserError)


def test_missing_view_names_the_document_key(shards, corpus):
    from proxylm.prepare.precomputed import MissingView, PrecomputedViews
    from proxylm.data.corpus import open_corpus

    out, data_cfg = shards
    codec = PrecomputedViews(out).as_codec()
    val = open_corpus(corpus, data_cfg).documents("val")[0]  # encoded: the train split only
    with pytest.raises(MissingView, match=f"document '{val.key}'"):
        codec.encode(open_corpus(corpus, data_cfg).read(val))
