"""Bridges between the views (issue 22): the input bridge's trie, hashed byte n-grams, the output bridge.

Leakage: a feature at t depends only on bytes <= t; BPB eval, full recompute, KV-cache decoding (one id at a
time, several at once, ragged batched rows with rollbacks) all see the same features as training."""

import numpy as np
import pytest
import torch

from proxylm.assemble import build_trainer, load_run, new_model
from proxylm.codecs.bpe import BpeCodec
from proxylm.config import load_config
from proxylm.core.errors import ConfigError
from proxylm.core.representation import Representation
from proxylm.model.bridge import OutputBridge
from proxylm.model.config import ModelConfig
from proxylm.model.features import build_trie, context_windows
from proxylm.model.flops import training_flops
from proxylm.model.transformer import Transformer

TEXTS = [b"def add(a, b):\n    return a + b\n" * 3, "h\xe9llo w\xf6rld, h\xe9llo\n".encode() * 3]


@pytest.fixture(scope="module")
def codec():
    return BpeCodec.train(TEXTS, vocab_size=300)


def bridged_model(codec, mode="shared", ngrams=(2, 3), seed=0, rep=None):
    rep = rep or (Representation.for_codec(codec) if mode != "own" else Representation.bytes_only())
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=16, n_layers=2, n_heads=2, input_bridge=mode, ngram_sizes=list(ngrams), ngram_buckets=64,
                      init_std=0.3, max_seq_len=256)
    model = Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).eval()
    if mode != "none":
        rows = rep.compressed_ids(np.arange(codec.alphabet_size)).tolist() if mode == "shared" else None
        model.features.set_vocabulary(codec.symbol_bytes(), rows, cfg.dim, cfg.init_std)
    return model, rep


def longest_suffix_symbol(pieces, data: bytes) -> int:
    """The reference: the longest piece that data ends with (lowest index on ties), by brute force."""
    best, best_len = -1, 0
    for s, p in enumerate(pieces):
        if p and data.endswith(p) and len(p) > best_len:
            best, best_len = s, len(p)
    return best


def test_the_trie_finds_the_longest_symbol_ending_at_each_byte(codec):
    model, rep = bridged_model(codec, ngrams=())
    pieces = codec.symbol_bytes()
    text = b"def add(a, b):\n    return a + b\nreturn"
    ids = torch.from_numpy(np.concatenate([[rep.bos_id, rep.raw_start_id], rep.raw_ids(text)])).view(1, -1)
    win = context_windows(ids, None, model.features.context).view(ids.shape[1], -1)
    got = model.features.longest_symbol(win).tolist()
    assert got[:2] == [-1, -1]  # <bos>, <raw>: no bytes
    assert got[2:] == [longest_suffix_symbol(pieces, text[:t + 1]) for t in range(len(text))]
    assert max(len(pieces[s]) for s in got[2:]) >= 4  # multi-byte symbols are found
    _, _, terminal, depth = build_trie([b"ab", b"b", b"ab"])
    assert depth == 2 and terminal.tolist() == [-1, 1, 0]  # a repeated string ends at its lowest index


def test_a_feature_never_sees_a_later_byte_nor_another_document(codec):
    for mode in ("shared", "own"):
        model, rep = bridged_model(codec, mode=mode)
        text = rep.raw_ids(b"def add(a, b):\n    return a + b\n")
        ids = torch.from_numpy(np.concatenate([[rep.bos_id, rep.raw_start_id], text])).view(1, -1)
        def feats(x, model=model, **kw):
            return model.features(x, shared=model.embed.weight, **kw)

        base = feats(ids)
        for t in (5, 12, 20):
            changed = ids.clone()
            changed[0, t + 1:] = rep.raw_offset + ord("z")  # perturb every later byte
            assert torch.equal(feats(changed)[0, :t + 1], base[0, :t + 1])
            assert not torch.equal(feats(changed)[0, t + 1:], base[0, t + 1:])
        # a document boundary cuts the context: the second document's features ignore the first
        doc_ids = torch.zeros_like(ids)
        doc_ids[0, 10:] = 1
        alone = feats(ids[:, 10:])
        assert torch.equal(feats(ids, doc_ids=doc_ids)[0, 10:], alone[0])


def test_cached_decoding_sees_the_features_of_a_full_forward(codec):
    model, rep = bridged_model(codec)
    ids = torch.from_numpy(np.concatenate([[rep.bos_id, rep.raw_start_id],
                                           rep.raw_ids(b"def add(a, b):\n    return a + b\n")])).view(1, -1)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(1, 64)
        steps = [model(ids[:, :9], kv_cache=cache)]
        steps += [model(ids[:, i:i + 1], kv_cache=cache) for i in range(9, 14)]
        steps.append(model(ids[:, 14:20], kv_cache=cache))  # several at once (speculative verification)
        cache.set_lengths([17])  # roll back 3 and feed them again
        steps.append(model(ids[:, 17:], kv_cache=cache))
        inc = torch.cat(steps[:-1], 1)[:, :17]
        assert torch.allclose(torch.cat([inc, steps[-1]], 1), full, atol=1e-5)
        # ragged batched rows: row 1 is row 0's prompt two ids shorter, then both advance together
        batch = model.new_kv_cache(2, 64)
        single = model.new_kv_cache(1, 64)
        model(ids[:, :12], kv_cache=single)
        batch.copy_row(0, single)
        single2 = model.new_kv_cache(1, 64)
        model(ids[:, :10], kv_cache=single2)
        batch.copy_row(1, single2)
        h = model(torch.stack([ids[0, 12:15], ids[0, 10:13]]), kv_cache=batch)
        assert torch.allclose(h[0], full[0, 12:15], atol=1e-5) and torch.allclose(h[1], full[0, 10:13], atol=1e-5)
        batch.keep_rows([1])
        assert torch.allclose(model(ids[:, 13:15], kv_cache=batch)[0], full[0, 13:15], atol=1e-5)


def test_the_output_bridge_pairs_symbol_ends_with_the_next_symbol(codec):
    rep = Representation.for_codec(codec)
    bridge = OutputBridge(codec, rep, weight=0.5)
    text = b"def add(a, b):\n    return a + b\n"
    sym = codec.encode(text)
    ends = np.cumsum([len(codec.symbol_bytes()[s]) for s in sym])
    body = np.concatenate([[rep.bos_id, rep.raw_start_id], rep.raw_ids(text), [rep.raw_end_id, rep.eos_id]])
    rows, cols, targets = bridge.pairs(body.reshape(1, -1), len(body) - 1)
    want_cols = [1] + [2 + e - 1 for e in ends[:-1]]  # <raw>, then each symbol's last byte
    assert cols.tolist() == want_cols and rows.tolist() == [0] * len(want_cols)
    assert targets.tolist() == rep.compressed_ids(sym).tolist()
    # a run cut by the window: the pairs touching the cut are left out, the rest are the same pairs
    cut = body[5:-3].reshape(1, -1)
    _, cols2, targets2 = bridge.pairs(cut, cut.shape[1])
    assert len(cols2) and set(zip((cols2 + 5).tolist(), targets2.tolist())) <= set(zip(want_cols, targets.tolist()))


def test_a_proxy_run_with_both_bridges_trains_counts_flops_reloads_and_generates(tmp_path, code_corpus):
    from proxylm.eval.bpb import evaluate_bpb
    from proxylm.eval.generate import generate

    overrides = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=64", "data.batch_size=2",
                 "train.max_steps=3", "train.warmup_steps=1", "train.eval_every=0", "eval.max_bytes=2000",
                 "views.codec_options.bpe.vocab_size=300", "model.input_bridge=shared", "model.output_bridge=0.5",
                 "model.ngram_sizes=[3,4]", "model.ngram_buckets=128", f"data.corpus={code_corpus}",
                 f"views.codec_dir={tmp_path / 'bpe'}"]
    cfg = load_config("proxy-bpe-micro", overrides)
    trainer = build_trainer(cfg, tmp_path / "run", quiet=True)
    record = trainer.train_step()
    assert record["loss_bridge"] > 0
    plain = training_flops(cfg.model, trainer.rep.vocab_size, trainer.rep.raw_vocab_size, 2, 64)
    assert record["flops"] > plain  # the bridge's head ran at some positions on top of the counted features
    summary = trainer.fit()
    trainer.run_lock.release()
    assert summary["bridge_runs_skipped"] == 0  # counted (and said in summary.json) when a run cannot be encoded
    run = load_run(tmp_path / "run")
    assert torch.equal(run.model.features.trie_keys, trainer.raw_model.features.trie_keys)
    assert run.model.output_bridge is not None  # rebuilt from the run's codec (unused at inference)
    r = evaluate_bpb(run.model, run.interface, [b"def f(x):\n    return x\n"], 64, 32)
    assert np.isfinite(r["bpb"]) and np.isfinite(summary["val_bpb"])
    cached = generate(run.model, run.interface, b"def f(", max_bytes=20, use_cache=True)
    recomputed = generate(run.model, run.interface, b"def f(", max_bytes=20, use_cache=False)
    assert cached == recomputed


def test_a_byte_run_with_its_own_table_carries_it(tmp_path, code_corpus):
    overrides = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=64", "data.batch_size=2",
                 "train.max_steps=2", "train.warmup_steps=1", "train.eval_every=0", "eval.max_bytes=2000",
                 "views.codec_options.bpe.vocab_size=300", "model.input_bridge=own", f"data.corpus={code_corpus}",
                 f"views.codec_dir={tmp_path / 'bpe'}"]
    cfg = load_config("bytes-micro", overrides)
    build_trainer(cfg, tmp_path / "run", quiet=True).fit()
    assert (tmp_path / "run" / "bridge_codec").is_dir()
    run = load_run(tmp_path / "run")
    assert run.model.features.own.weight.shape[0] == run.model.features.trie_rows.numel() > 256
    assert run.rep.codec_name is None and run.codec is None  # a byte model: raw-byte vocabulary only
    fresh = new_model(run.cfg, run.rep, run.codec, tmp_path / "run")
    assert torch.equal(fresh.features.trie_terminal, run.model.features.trie_terminal)


def test_bridges_are_off_by_default_and_refused_without_a_compressed_view():
    cfg = load_config("proxy-bpe-micro")
    assert cfg.model.input_bridge == "none" and cfg.model.output_bridge == 0 and cfg.model.ngram_sizes == []
    with pytest.raises(ConfigError, match="compressed view"):
        load_config("bytes-micro", ["model.output_bridge=0.5"])
    with pytest.raises(ConfigError, match="compressed view"):
        load_config("bytes-micro", ["model.input_bridge=shared"])
    with pytest.raises(ConfigError, match="input_bridge"):
        load_config("bytes-micro", ["model.input_bridge=maybe"])


def test_the_bridges_preset_judges_each_arm_against_its_byte_arm_and_probes_the_proxies(tmp_path, code_corpus):
    import dataclasses

    from proxylm.compare import PRESETS, Size, compare, result_lines

    toy = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=2",
           "views.codec_options.bpe.vocab_size=300", "eval.batch_size=8", "data.val_fraction=0.2",
           "data.max_doc_bytes=256", f"views.codec_dir={tmp_path / 'bpe'}"]
    preset = dataclasses.replace(PRESETS["bridges"], models=["bytes-trie", "proxy-bpe-tuned-bridges"], eval_bytes=2000,
                                 evals_per_run=2, scaling=[Size("m", "micro", 5e8)])
    report = compare(preset, tmp_path / "cmp", corpus=code_corpus, seeds=2, extra=toy, quiet=True)
    e = report["bridges"]["sizes"]["m"]
    assert e["best_proxy"] == "proxy-bpe-tuned-bridges" and e["gap"]["reference"] == "bytes-trie"
    assert len(e["gap"]["diffs"]) == 2
    arms = e["arms"]
    assert arms["bytes-trie"]["params"]["features"] > 0 and "translation" not in arms["bytes-trie"]
    assert 0 < arms["proxy-bpe-tuned-bridges"]["translation"]["bpb_raw_alone"] < 20
    assert (tmp_path / "cmp" / "m" / "proxy-bpe-tuned-bridges" / "translation.json").exists()
    lines = result_lines(report)
    assert any(line.startswith("RESULT proxy_bridge_gap ") for line in lines)
    assert any(line.startswith("RESULT bridge_flops_to_match") for line in lines) == (e["gap"]["mean"] < 0)
    assert "## Bridges" in (tmp_path / "cmp" / "results.md").read_text()


def test_the_bridges_report_prints_no_scaling_trend():
    """The bridges preset has two sizes, so its report carries the scaling fits, but `proxy_gap_trend` and
    `proxy_crossover_flops` belong to the scaling study: only the bridge RESULT lines are printed."""
    from proxylm.compare import result_lines

    gap = {"mean": 0.16, "low": 0.1, "high": 0.2, "diffs": [0.1, 0.2, 0.18], "verdict": "worse", "reference": "bytes-trie"}
    scaling = {"trends": {"proxy-bpe-tuned": {"slope": -0.03}}, "fits": {}, "crossover_flops": {}}
    report = {"bytes_flops_to_match_proxy": None, "scaling": scaling,
              "bridges": {"sizes": {"tiny": {"gap": gap, "best_proxy": "proxy-bpe-tuned-ibridge"}}}}
    lines = result_lines(report)
    assert lines == ["RESULT proxy_bridge_gap 0.1600  # tiny: proxy-bpe-tuned-ibridge - bytes-trie, 95% interval "
                     "[0.100, 0.200], 3 seeds, worse"]
    del report["bridges"]
    assert result_lines(report) == ["RESULT proxy_gap_trend_tuned -0.0300"]


def test_an_export_carries_the_trie_and_says_transformers_alone_lacks_it(tmp_path, code_corpus):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from proxylm.export import FEATURES_FILE, export_run

    overrides = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=64", "data.batch_size=2",
                 "train.max_steps=2", "train.warmup_steps=1", "train.eval_every=0", "eval.max_bytes=2000",
                 "views.codec_options.bpe.vocab_size=300", "model.input_bridge=shared", "model.ngram_sizes=[3]",
                 "model.ngram_buckets=64", f"data.corpus={code_corpus}", f"views.codec_dir={tmp_path / 'bpe'}"]
    build_trainer(load_config("proxy-bpe-micro", overrides), tmp_path / "run", quiet=True).fit()
    out = export_run(tmp_path / "run", tmp_path / "hf")
    saved = load_file(str(tmp_path / "hf" / FEATURES_FILE))
    run = load_run(tmp_path / "run")
    assert torch.equal(saved["trie_keys"], run.model.features.trie_keys) and "ngrams.0.weight" in saved
    assert out["input_features"]["file"] == FEATURES_FILE
    assert "transformers` alone does not compute them" in (tmp_path / "hf" / "README.md").read_text()


def test_bpb_eval_scores_with_the_features_a_plain_forward_sees(codec):
    from proxylm.core.interface import ByteInterface
    from proxylm.eval.bpb import evaluate_bpb

    model, rep = bridged_model(codec)
    doc = b"def add(a, b):\n    return a + b\n"
    ids, counted, _ = ByteInterface(rep).score_ids(doc)
    x = torch.from_numpy(ids).view(1, -1)
    with torch.no_grad():
        logits = model.logits(model(x[:, :-1]))[0]
        nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")
    want = float(nll[torch.from_numpy(counted[1:])].sum())
    got = evaluate_bpb(model, ByteInterface(rep), [doc], seq_len=64, stride=64)
    assert got["nats"] == pytest.approx(want, rel=1e-5)


def test_flops_count_the_feature_adds_and_the_bridge_head():
    base = ModelConfig(dim=16, n_layers=1, n_heads=2)
    feats = ModelConfig(dim=16, n_layers=1, n_heads=2, input_bridge="shared", ngram_sizes=[3, 4])
    V, R = 400, 272
    assert training_flops(feats, V, R, 2, 8) - training_flops(base, V, R, 2, 8) == 3 * 2 * 8 * 3 * 16
    assert training_flops(base, V, R, 2, 8, n_bridge_positions=5) - training_flops(base, V, R, 2, 8) == 3 * 5 * 2 * 16 * V


@pytest.mark.parametrize("kind", ["byte_level", "metaspace"])
def test_the_output_bridge_works_for_imported_tokenizers(tmp_path, kind):
    import test_import

    from proxylm.codecs.imported import import_tokenizer

    make = test_import._byte_level if kind == "byte_level" else test_import._metaspace
    codec, _ = import_tokenizer(make(tmp_path / "t.json"))
    rep = Representation.for_codec(codec)
    text = "def f1(x):\n    return x * 1  # ünïcode ✓\n".encode()
    body = np.concatenate([[rep.bos_id, rep.raw_start_id], rep.raw_ids(text), [rep.raw_end_id, rep.eos_id]])
    _, cols, targets = OutputBridge(codec, rep, 1.0).pairs(body.reshape(1, -1), len(body))
    sym = codec.encode(text)
    assert targets.tolist() == rep.compressed_ids(sym).tolist()
    for i, c in enumerate(cols[1:].tolist()):  # symbol i ends at byte c - 2: the text so far decodes to it
        assert codec.decode(sym[:i + 1]) == text[:c - 1]


def test_speculative_and_batched_generation_agree_with_full_recompute(codec):
    from proxylm.core.interface import ByteInterface
    from proxylm.eval.generate import GenStats, generate, generate_batch

    rep = Representation.for_codec(codec)
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, n_layers=2, n_heads=2, n_pred_heads=3, input_bridge="shared", ngram_sizes=[2, 3],
                      ngram_buckets=64, init_std=0.3, max_seq_len=256)
    model = Transformer(cfg, rep.vocab_size, rep.raw_vocab_size).eval()
    model.features.set_vocabulary(codec.symbol_bytes(), rep.compressed_ids(np.arange(codec.alphabet_size)).tolist(),
                                  cfg.dim, cfg.init_std)
    iface = ByteInterface(rep)
    prompts = [b"def add(a, b):\n    ret", b"h\xc3\xa9llo", b"return a"]
    want = [generate(model, iface, p, max_bytes=24, use_cache=False) for p in prompts]
    stats = GenStats()
    assert [generate(model, iface, p, max_bytes=24, speculative=True, stats=stats) for p in prompts] == want
    assert stats.forwards > 0
    assert generate_batch(model, iface, prompts, max_bytes=24, batch_size=2, speculative=True) == want
    assert generate_batch(model, iface, prompts, max_bytes=24, batch_size=3, speculative=False) == want
