"""`proxylm eval translation`: scores one view given the other on held-out pairs; refuses byte-only and
token runs.   pytest tests/test_translation.py"""

import json

import numpy as np
import pytest

from proxylm.assemble import build_trainer, load_run
from proxylm.cli import main
from proxylm.config import load_config
from proxylm.eval.translation import translation_pairs, translation_probe

TOY = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=64", "data.batch_size=2",
       "train.max_steps=4", "train.ckpt_every=0", "train.eval_every=0", "eval.max_bytes=500",
       "data.val_fraction=0.3", "data.max_doc_bytes=256"]


@pytest.fixture(scope="module")
def runs(code_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("proxy", ["views.codec_options.bpe.vocab_size=300"]),
                        ("bytes", []), ("tokens", ["views.codec_options.bpe.vocab_size=300"])):
        family = {"proxy": "proxy-bpe-micro", "bytes": "bytes-micro", "tokens": "tokens-micro"}[name]
        cfg = load_config(family, TOY + extra + [f"data.corpus={code_corpus}"])
        build_trainer(cfg, root / name, quiet=True).fit()
        out[name] = root / name
    return out


def test_pairs_are_aligned_and_fit_the_window(runs):
    run = load_run(runs["proxy"])
    docs = [b"def f(x):\n    return x * 2 + 1  # \xc3\xa9t\xc3\xa9\n" * 6]
    pairs = translation_pairs(docs, run.codec, run.rep, seq_len=64, limit=10, piece_bytes=24)
    assert len(pairs) >= 5
    for raw, comp in pairs:
        raw.decode("utf-8")  # never a split character
        assert run.codec.decode(run.rep.symbols_from_compressed_ids(comp)) == raw
        assert len(raw) + len(comp) + 6 <= 64
    whole = translation_pairs(docs, run.codec, run.rep, seq_len=64, limit=3, piece_bytes=0)
    assert all(len(r) + len(c) + 6 <= 64 for r, c in whole) and len(whole[0][0]) > 24


def test_probe_scores_both_directions(runs, code_corpus):
    run = load_run(runs["proxy"])
    docs = [(p.read_bytes()) for p in sorted(__import__("pathlib").Path(code_corpus).glob("*.py"))[:5]]
    r = translation_probe(run, docs, limit=6, piece_bytes=20)
    assert r["pairs"] == 6 and r["raw_bytes"] >= 6 * 10
    for k in ("raw_given_compressed", "raw_alone", "compressed_given_raw", "compressed_alone"):
        assert np.isfinite(r[f"bpb_{k}"]) and r[f"bpb_{k}"] > 0
    for k in ("compressed_to_raw", "raw_to_compressed", "raw_to_compressed_decoded"):
        assert 0.0 <= r[f"exact_match_{k}"] <= 1.0


def test_cli_translation_and_refusals(runs, capsys):
    assert main(["eval", "translation", str(runs["proxy"]), "--limit", "4", "--piece-bytes", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 4 and out["bpb_raw_given_compressed"] > 0 and "exact_match_compressed_to_raw" in out
    assert main(["eval", "translation", str(runs["proxy"]), "--limit", "2", "--no-greedy"]) == 0
    assert "given the compressed view" in capsys.readouterr().out
    assert main(["eval", "translation", str(runs["bytes"])]) != 0
    assert "byte-only run" in capsys.readouterr().err
    assert main(["eval", "translation", str(runs["tokens"])]) != 0
    assert "token baseline" in capsys.readouterr().err
