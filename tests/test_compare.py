"""`proxylm compare` at a toy budget: budget respected, table and plots written, resume skips."""

import dataclasses
import json

import pytest
from conftest import write_code_corpus

from proxylm.compare import MODELS, PRESETS, compare, flops_to_reach

TOY = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
       "views.codec_options.bpe.vocab_size=300", "views.codec_options.bpe_bytes.vocab_size=300", "eval.batch_size=8", "data.val_fraction=0.2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=30, max_functions=5)


def test_smoke_compare_budget_table_plots_and_resume(corpus, tmp_path, capsys):
    preset = dataclasses.replace(PRESETS["smoke"], budget_flops=5e8, eval_bytes=2000, evals_per_run=3)
    out = tmp_path / "cmp"
    report = compare(preset, out, corpus=corpus, extra=TOY, quiet=True)
    assert set(report["table"]) == set(preset.models)
    for r in report["runs"]:
        assert 0.95 * preset.budget_flops <= r["flops"] <= preset.budget_flops, r["model"]
        assert len(r["curve"]) >= 2 and r["curve"][-1][0] == r["flops"]
    for name in ("results.json", "results.md", "bpb_vs_flops.png", "final_bpb.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["bytes_flops_to_match_proxy"] == report["bytes_flops_to_match_proxy"] > 0
    assert "| proxy-bpe |" in (out / "results.md").read_text()

    capsys.readouterr()
    again = compare(preset, out, corpus=corpus, extra=TOY, quiet=True)
    assert capsys.readouterr().err.count("finished earlier, skipped") == len(preset.models)
    assert again["table"] == report["table"]


def test_every_issue_model_is_defined():
    for name in ("bytes", "bytes-mbp", "tokens", "proxy-bpe", "proxy-bpe-bytes", "proxy-neural", "proxy-gzip",
                 "proxy-bpe-nowarmup", "proxy-bpe-alwayspair", "proxy-bpe-rate0.5", "proxy-bpe-rate0.75",
                 "proxy-bpe-shared-embedding", "proxy-bpe-cooldown"):
        assert name in MODELS


def test_flops_to_reach_interpolates_in_log_flops():
    curve = [(1e9, 5.0), (1e10, 3.0), (1e11, 2.0)]
    assert flops_to_reach(curve, 6.0) == 1e9
    assert flops_to_reach(curve, 4.0) == pytest.approx(10 ** 9.5)
    assert flops_to_reach(curve, 1.0) is None
