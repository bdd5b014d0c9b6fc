"""`proxylm compare` at a toy budget: budget respected, per-seed and mean results, plots, resume, the
settings fingerprint, and the statistics (paired differences, power-law fit).   pytest tests/test_compare.py"""

import dataclasses
import json
import math

import numpy as np
import pytest
from helpers import write_code_corpus

from proxylm.compare import MODELS, PRESETS, Size, compare, fingerprint, flops_to_reach, model_config
from proxylm.compare import stats
from proxylm.core.errors import UserError

TOY = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
       "views.codec_options.bpe.vocab_size=300", "views.codec_options.bpe_bytes.vocab_size=300", "eval.batch_size=8",
       "data.val_fraction=0.2", "data.max_doc_bytes=256"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"), n_files=30, max_functions=5)


def _smoke(**kw):
    return dataclasses.replace(PRESETS["smoke"], **{"budget_flops": 5e8, "eval_bytes": 2000, "evals_per_run": 3, **kw})


def test_smoke_compare_two_seeds_per_seed_and_mean_results_and_resume(corpus, tmp_path, capsys):
    preset = _smoke(models=["bytes", "proxy-bpe"])
    out = tmp_path / "cmp"
    report = compare(preset, out, corpus=corpus, seeds=2, extra=TOY, quiet=True)
    assert set(report["table"]) == set(preset.models) and report["seeds"] == 2
    assert len(report["runs"]) == 4 and {r["seed"] for r in report["runs"]} == {0, 1}
    for r in report["runs"]:
        assert 0.95 * preset.budget_flops <= r["flops"] <= preset.budget_flops, r["model"]
        assert len(r["curve"]) >= 2 and r["curve"][-1][0] == r["flops"]
        assert (out / (r["model"] if r["seed"] == 0 else f"{r['model']}-seed1") / "compare_result.json").exists()
    row = report["table"]["proxy-bpe"]
    seeds = [r["bpb"]["val"] for r in report["runs"] if r["model"] == "proxy-bpe"]
    assert row["bpb_val"] == pytest.approx(np.mean(seeds))
    assert row["bpb_val_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert row["bpb_val_seeds"] == seeds and row["decisions"] > 10
    # paired per-seed differences against each model's reference
    abl = {a["model"]: a for a in report["ablations"]}
    assert abl["proxy-bpe"]["reference"] == "bytes" and len(abl["proxy-bpe"]["diffs"]) == 2
    assert abl["proxy-bpe"]["verdict"] in ("within noise", "better", "worse")
    h = report["headline"]
    assert len(h["per_seed"]) == 2 and h["ratio"] == report["bytes_flops_to_match_proxy"] > 0
    for name in ("results.json", "results.md", "bpb_vs_flops.png", "final_bpb.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["bytes_flops_to_match_proxy"] == report["bytes_flops_to_match_proxy"]
    md = (out / "results.md").read_text()
    assert "| proxy-bpe | 2 |" in md and "| proxy-bpe | bytes |" in md

    capsys.readouterr()
    again = compare(preset, out, corpus=corpus, seeds=2, extra=TOY, quiet=True)
    assert capsys.readouterr().err.count("with the same settings, reused") == 4
    assert again["table"] == report["table"]
    # an interrupted study reports what finished, marked partial, and trains nothing
    more = _smoke(models=["bytes", "proxy-bpe", "proxy-gzip"])
    partial = compare(more, out, corpus=corpus, seeds=2, extra=TOY, quiet=True, report_only=True)
    assert partial["partial"] and (partial["finished_runs"], partial["planned_runs"]) == (4, 6)
    assert "proxy-gzip" not in partial["table"] and not (out / "proxy-gzip").exists()
    assert (out / "results.md").read_text().startswith("**Partial**: 4 of 6")
    # --report-only without --seeds reports every seed on disk; --json prints exactly one JSON object
    from proxylm.cli import main

    capsys.readouterr()
    argv = ["compare", "--preset", "smoke", "--out", str(out), "--corpus", corpus, "--models", "bytes,proxy-bpe",
            "--budget-flops", "5e8", "--report-only", "--json", "--threads", "1", *TOY, "eval.max_bytes=2000",
            "eval.final_max_bytes=2000", "train.evals_per_run=3"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # the whole of stdout is one object
    assert printed["seeds"] == 2 and printed["table"]["proxy-bpe"]["seeds"] == 2 and not printed["partial"]
    page = (out / "results.html").read_text()  # self-contained: tables and inline plots
    assert page.count('src="data:image/png;base64,') == 2 and "<table>" in page and "src=\"http" not in page
    md = (out / "results.md").read_text()
    assert "bound eval.final_max_bytes=2000" in md and "unigram byte model" in md

    # settings are part of a result: another budget is refused before any training, or retrained
    other = _smoke(models=["bytes", "proxy-bpe"], budget_flops=4e8)
    with pytest.raises(UserError, match=r"train\.max_flops: 500000000\.0 -> 400000000\.0.*--retrain"):
        compare(other, out, corpus=corpus, seeds=2, extra=TOY, quiet=True)
    assert json.loads((out / "results.json").read_text())["table"] == report["table"]  # nothing touched
    one = dataclasses.replace(other, models=["bytes"])
    redone = compare(one, out, corpus=corpus, seeds=1, extra=TOY, quiet=True, retrain=True)
    assert redone["runs"][0]["flops"] <= 4e8 and list(out.glob("bytes.old-*"))


def test_fingerprint_covers_result_settings_only():
    preset, size = PRESETS["smoke"], PRESETS["smoke"].sizes[0]
    base = model_config("bytes", preset, size, 0, None, [])
    assert fingerprint(base) == fingerprint(model_config("bytes", preset, size, 0, None, ["train.threads=1"]))
    for change in (["model.n_layers=3"], ["train.lr=0.01"], ["data.max_doc_bytes=300"]):
        assert fingerprint(base) != fingerprint(model_config("bytes", preset, size, 0, None, change)), change
    assert fingerprint(base) != fingerprint(model_config("bytes", preset, size, 1, None, []))
    assert fingerprint(base) != fingerprint(model_config("bytes", preset, Size("m", "micro", 1e11), 0, None, []))


def test_every_issue_model_is_defined():
    for name in ("bytes", "bytes-mbp", "tokens", "proxy-bpe", "proxy-bpe-bytes", "proxy-neural", "proxy-gzip",
                 "proxy-bpe-nowarmup", "proxy-bpe-alwayspair", "proxy-bpe-rate0.5", "proxy-bpe-rate0.75",
                 "proxy-bpe-shared-embedding", "proxy-bpe-cooldown", "proxy-bpe-tuned"):
        assert name in MODELS
    sizes = PRESETS["scaling"].sizes
    params = [stats_params(s) for s in sizes]
    assert len(sizes) >= 3 and params[-1] / params[0] >= 16
    assert all(a.budget_flops < b.budget_flops for a, b in zip(sizes, sizes[1:]))


def stats_params(size):
    from proxylm.compare.runs import non_embedding_params

    return non_embedding_params(model_config("bytes", PRESETS["scaling"], size, 0, None, []))


def test_flops_to_reach_interpolates_in_log_flops():
    curve = [(1e9, 5.0), (1e10, 3.0), (1e11, 2.0)]
    assert flops_to_reach(curve, 6.0) == 1e9
    assert flops_to_reach(curve, 4.0) == pytest.approx(10 ** 9.5)
    assert flops_to_reach(curve, 1.0) is None


def test_headline_says_when_the_ratio_is_only_a_bound():
    from proxylm.compare.report import headline_lines
    from proxylm.compare.stats import headline

    def run(model, seed, bpb, curve):
        return {"model": model, "seed": seed, "size": "", "flops": 1e11, "curve": curve, "bpb": {"val": bpb}}

    curve = [(2.5e10, 4.0), (5e10, 3.5), (1e11, 3.0)]
    inside = headline([run("bytes", 0, 3.0, curve), run("proxy-bpe", 0, 3.75, [])])
    assert not inside["early"] and inside["reached"] and inside["ratio"] == pytest.approx((2.5e10 * 5e10) ** 0.5 / 1e11)
    early = headline([run("bytes", 0, 3.0, curve), run("proxy-bpe", 0, 4.5, [])])  # bytes beat it at once
    assert early["early"] and early["ratio"] == pytest.approx(0.25)
    assert "upper bound" in " ".join(headline_lines(early)) and "bound" not in " ".join(headline_lines(inside))
    never = headline([run("bytes", 0, 3.0, curve), run("proxy-bpe", 0, 2.0, [])])
    assert not never["reached"] and "lower bound" in " ".join(headline_lines(never))


def test_paired_differences_judge_on_per_seed_differences():
    # a variant 0.05 better on every seed, while seeds move both by 0.3: clearly better when paired
    runs = []
    for seed, shift in enumerate([0.0, 0.3, -0.2]):
        runs.append({"model": "proxy-bpe", "seed": seed, "bpb": {"val": 3.0 + shift}})
        runs.append({"model": "proxy-bpe-x", "seed": seed, "bpb": {"val": 2.95 + shift + 0.001 * seed}})
        runs.append({"model": "proxy-bpe-y", "seed": seed, "bpb": {"val": 3.0 + shift + (0.05, -0.06, 0.02)[seed]}})
    better = stats.paired_difference(runs, "proxy-bpe-x", "proxy-bpe")
    assert better["verdict"] == "better" and better["mean"] == pytest.approx(-0.049)
    assert stats.paired_difference(runs, "proxy-bpe-y", "proxy-bpe")["verdict"] == "within noise"
    one = stats.paired_difference(runs[:3], "proxy-bpe-x", "proxy-bpe")
    assert one["verdict"] == "one seed: cannot tell"


def test_power_law_fit_recovers_synthetic_curves_and_crossover():
    flops = np.geomspace(1e11, 1e14, 9)
    truth = {"E": 1.2, "A": 0.8, "alpha": 0.35}
    bpb = stats.power_law(truth, flops)
    fit = stats.fit_power_law(flops, bpb)
    assert fit["E"] == pytest.approx(1.2, abs=0.02) and fit["alpha"] == pytest.approx(0.35, rel=0.05)
    assert fit["rmse"] < 1e-3
    noisy = stats.fit_power_law(flops, bpb + np.random.default_rng(0).normal(0, 0.01, len(bpb)))
    assert noisy["rmse"] < 0.02 and abs(noisy["E"] - 1.2) < 0.3
    # a proxy with a higher floor offset but steeper descent crosses the byte curve later on
    proxy = {"E": 1.0, "A": 2.0, "alpha": 0.35}  # crosses where 2.0 z + 1.0 = 0.8 z + 1.2: x = 6 ** (1 / 0.35)
    cross = stats.crossover(proxy, truth, 1e14)
    assert cross == pytest.approx(1e12 * 6 ** (1 / 0.35), rel=1e-3)
    assert (stats.power_law(proxy, [cross * 1.01]) <= stats.power_law(truth, [cross * 1.01])).all()
    assert stats.crossover({"E": 1.5, "A": 0.8, "alpha": 0.35}, truth, 1e14) is None  # parallel, above: never
    trend = stats.gap_trend([1e5, 1e5, 8e5, 8e5, 3.2e6, 3.2e6], [0.9, 1.0, 0.6, 0.7, 0.4, 0.5])
    assert trend["slope"] < 0 and trend["zero_at_params"] > 3.2e6
    assert math.isfinite(trend["slope_se"])


def test_results_from_several_code_versions_are_flagged():
    from proxylm.compare.report import code_lines
    from proxylm.compare.runs import code_version

    assert len(code_version()) == 16 and code_version() == code_version()
    same = [{"model": m, "seed": 0, "code": "a" * 16} for m in ("bytes", "tokens")]
    assert code_lines(same) == []
    mixed = same + [{"model": "proxy-bpe", "seed": 2, "size": "d32x2"}]  # a result written before `code` existed
    note = " ".join(code_lines(mixed))
    assert "2 versions" in note and "unrecorded: 1 run(s) (d32x2/proxy-bpe-seed2)" in note and "--retrain" in note


def test_a_run_saved_before_final_max_bytes_keeps_its_settings(tmp_path):
    """Its final eval scored the periodic evals' bytes, which is what the presets now ask for: still reusable."""
    import yaml

    from proxylm.compare.runs import check_reusable
    from proxylm.config import save_config, to_dict

    preset, size = _smoke(), PRESETS["smoke"].sizes[0]
    cfg = model_config("bytes", preset, size, 0, None, [])
    run = tmp_path / "bytes"
    run.mkdir()
    old = to_dict(cfg)
    del old["eval"]["final_max_bytes"]
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert check_reusable(cfg, run)
    save_config(model_config("bytes", preset, size, 0, None, ["eval.final_max_bytes=0"]), run / "config.yaml")
    with pytest.raises(UserError, match="eval.final_max_bytes"):
        check_reusable(cfg, run)
