"""`proxylm export` and init_from: transformers reproduces proxylm's logits and greedy bytes, the byte tokenizer
round-trips any bytes with ids from the Representation, the model card reports BPB, weights load back."""

import hashlib
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from proxylm.cli import main  # noqa: E402
from proxylm.codecs.bpe import BpeBytesCodec, BpeCodec  # noqa: E402
from proxylm.config import RunConfig, save_config  # noqa: E402
from proxylm.codecs.options import codec_options_for  # noqa: E402
from proxylm.data.config import DataConfig, ViewsConfig  # noqa: E402
from proxylm.core.representation import SPECIAL_TOKENS, Representation  # noqa: E402
from proxylm.eval.generate import generate  # noqa: E402
from proxylm.export import bytes_to_ids, export_run, ids_to_bytes, suppressed_ids  # noqa: E402
from proxylm.model.hf import load_hf_weights  # noqa: E402
from proxylm.model.config import ModelConfig  # noqa: E402
from proxylm.model.transformer import Transformer  # noqa: E402
from proxylm.assemble import load_run  # noqa: E402
from proxylm.data.corpus import open_corpus  # noqa: E402
from proxylm.eval.bpb import read_eval_docs  # noqa: E402
from proxylm.startup import corpus_record, validation_facts  # noqa: E402
from proxylm.train.checkpoint import model_state, save_checkpoint  # noqa: E402

STEP, BPB = 7, 3.21
PROMPTS = [b"def f(x):", b"h\xc3\xa9llo <bos>", b""]
MODEL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128, init_std=0.2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def corpus(root):
    d = root / "corpus"
    d.mkdir()
    for i in range(8):
        (d / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + 'héllo'\n" * 4)
    return d


@pytest.fixture(scope="module")
def codec(corpus):
    return BpeCodec.train([p.read_bytes() for p in sorted(corpus.iterdir())], vocab_size=300)


def make_run(path, corpus, views: ViewsConfig, codec=None, seed=0, **model_kw):
    """A run directory as the trainer leaves it: config, representation, codec, one checkpoint, metrics."""
    path.mkdir()
    cfg = RunConfig(model=ModelConfig(**{**MODEL, **model_kw}), views=views, name=path.name,
                    data=DataConfig(corpus=str(corpus), val_fraction=0.5))
    save_config(cfg, path / "config.yaml")
    rep = Representation.for_codec(codec, separate_embedding=views.separate_embedding) if codec \
        else Representation.bytes_only()
    rep.save(path / "representation.json")
    if codec is not None:
        codec.save(path / "codec")
    torch.manual_seed(seed)
    model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size)
    save_checkpoint(path, STEP, model_state(model), None, {"step": STEP})
    (path / "metrics.jsonl").write_text(json.dumps({"step": STEP - 2, "loss": 5.0}) + "\n"
                                        + json.dumps({"step": STEP, "val_bpb": BPB, "val_bytes": 999}) + "\n")
    opened = open_corpus(cfg.data.corpus, cfg.data)  # what build_trainer records at start-up
    record = corpus_record(opened, validation_facts(opened), read_eval_docs(cfg.data.corpus, "val", cfg.data,
                                                                            cfg.eval.max_bytes, corpus=opened))
    (path / "corpus.json").write_text(json.dumps(record))
    return path


@pytest.fixture(scope="module")
def proxy(root, corpus, codec):
    """A proxy run (BPE views, extra prediction and raw heads), its export, and the export loaded back."""
    views = ViewsConfig(codec="bpe", rate=0.5, codec_options=codec_options_for("bpe", vocab_size=codec.alphabet_size))
    run_dir = make_run(root / "proxy", corpus, views, codec, n_pred_heads=2, n_raw_heads=1)
    out = root / "proxy-hf"
    summary = export_run(run_dir, out)
    return (load_run(run_dir), out, summary, transformers.AutoModelForCausalLM.from_pretrained(out).eval(),
            transformers.AutoTokenizer.from_pretrained(out))


def hf_generate(model, tok, prompt: bytes, n: int) -> list[int]:
    enc = tok(prompt.decode(), return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n)  # generation_config: greedy, suppress_tokens, stop ids
    return out[0, enc.input_ids.shape[1]:].tolist()


def test_logits_match_proxylm(proxy):
    run, _, _, hf, _ = proxy
    ids = torch.randint(0, run.rep.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, run.model.logits(run.model(ids)), atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_proxylm(proxy):
    run, _, _, hf, tok = proxy
    allowed = run.interface.allowed_ids(run.rep.vocab_size)
    assert sorted(hf.generation_config.suppress_tokens) == torch.nonzero(~allowed).view(-1).tolist()
    assert hf.generation_config.do_sample is False
    lengths = []
    for prompt in PROMPTS:
        ids = hf_generate(hf, tok, prompt, 40)
        assert all(allowed[i] for i in ids)  # raw bytes, then at most one stop id
        ours = generate(run.model, run.interface, prompt, max_bytes=40)
        assert ids_to_bytes(tok, ids) == ours
        lengths.append(len(ours))
    assert max(lengths) >= 10  # not a vacuous comparison of immediate stops


def test_suppression_matters(proxy):
    """Unrestricted, this random model's argmax is a non-byte id somewhere: suppress_tokens is what prevents it."""
    run, _, _, hf, tok = proxy
    ids = torch.as_tensor(run.interface.prompt_ids(b"def f(x):\n" * 4)).view(1, -1)
    with torch.no_grad():
        top = hf(ids).logits[0].argmax(-1)
    assert not run.interface.allowed_ids(run.rep.vocab_size)[top].all()


def test_special_ids_line_up(proxy):
    run, out, summary, hf, tok = proxy
    rep = run.rep
    assert len(tok) == hf.config.vocab_size == rep.vocab_size == summary["vocab_size"]
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [rep.special_id(t) for t in SPECIAL_TOKENS]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (rep.bos_id, rep.eos_id, rep.pad_id)
    g = hf.generation_config
    assert (g.bos_token_id, g.pad_token_id, list(g.eos_token_id)) == (rep.bos_id, rep.pad_id,
                                                                     list(run.interface.stop_ids))
    assert tok("").input_ids == [rep.bos_id, rep.raw_start_id]
    assert tok("a", add_special_tokens=False).input_ids == [rep.raw_offset + ord("a")]
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "README.md", "representation.json"} <= files
    assert "pred_heads.0.weight" not in set(hf.state_dict())  # only head 0 travels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64))
def test_tokenizer_round_trips_any_bytes(proxy, data):
    run, _, _, _, tok = proxy
    ids = bytes_to_ids(tok, data)
    assert ids == run.rep.raw_ids(data).tolist()
    assert ids_to_bytes(tok, ids) == data
    assert ids_to_bytes(tok, [run.rep.bos_id, run.rep.raw_start_id, *ids, run.rep.eos_id]) == data
    assert tok.decode(ids) == data.decode("utf-8", "replace")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_tokenizer_reads_text_as_proxylm_does(proxy, text):
    run, _, _, _, tok = proxy
    ids = tok(text).input_ids
    assert ids == run.interface.prompt_ids(text.encode()).tolist()
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_model_card(proxy):
    run, out, summary, _, _ = proxy
    card = (out / "README.md").read_text()
    assert summary["val_bpb"] == BPB and f"{BPB:.4f} bits per byte" in card and f"step {STEP}" in card
    assert "`pred_heads`" in card and "`raw_heads`" in card and "suppress_tokens" in card
    assert "codec `bpe`, rate 0.5, mode `sentinel`" in card
    d = run.cfg.data
    corpus = open_corpus(d.corpus, d)
    assert f"{corpus.summary()['units']} units" in card and f"fingerprint `{corpus.fingerprint()}`" in card
    docs = read_eval_docs(d.corpus, "val", d, run.cfg.eval.max_bytes)  # the periodic evals' text, hashed here
    digest = hashlib.sha256(b"".join(b"%d\n" % len(doc) + doc for doc in docs)).hexdigest()
    assert f"{len(docs)} documents or pieces, {sum(map(len, docs))} bytes, sha256 `{digest}`" in card


def test_model_card_reads_only_the_run_directory(proxy, tmp_path, monkeypatch):
    """The card comes from the run directory: with the corpus gone it is the same; the final eval's digest
    (summary.json) replaces the periodic evals' when the run finished."""
    run, out, _, _, _ = proxy
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(run.run_dir, run_dir)
    summary = {"steps": STEP, "val_bpb": BPB, "val_covers": "the whole val split (5 raw bytes)", "val_sha256": "ab" * 32}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr("proxylm.data.corpus.open_corpus", lambda *a, **k: pytest.fail("export opened the corpus"))
    export_run(run_dir, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"validation text of the final val BPB: the whole val split (5 raw bytes); sha256 `{'ab' * 32}`" in card
    (run_dir / "corpus.json").unlink()
    export_run(run_dir, tmp_path / "hf2")
    assert "not recorded in the run directory" in (tmp_path / "hf2" / "README.md").read_text()


def test_load_hf_weights_reproduces_logits(proxy):
    run, out, _, _, _ = proxy
    torch.manual_seed(1)
    fresh = Transformer(run.model.cfg, run.rep.vocab_size, run.rep.raw_vocab_size).eval()
    extra = [h.weight.clone() for h in [*fresh.pred_heads, *fresh.raw_heads]]
    load_hf_weights(fresh, out)
    ids = torch.randint(0, run.rep.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fresh.logits(fresh(ids)), run.model.logits(run.model(ids)), atol=0, rtol=0)
    for before, h in zip(extra, [*fresh.pred_heads, *fresh.raw_heads]):
        assert torch.equal(before, h.weight)  # training-only heads keep their fresh init


def test_trainer_init_from(proxy, root):
    from proxylm.config import load_config
    from proxylm.assemble import build_trainer

    run, out, _, _, _ = proxy
    ids = torch.randint(0, run.rep.vocab_size, (1, 12))
    with torch.no_grad():
        want = run.model.logits(run.model(ids))
    for i, source in enumerate([out, run.run_dir]):
        cfg = load_config(str(run.run_dir / "config.yaml"),
                          [f"train.init_from={source}", f"views.codec_dir={run.run_dir / 'codec'}", "train.seed=5",
                           "data.seq_len=32", "data.batch_size=1"])
        trainer = build_trainer(cfg, root / f"continued-{i}", quiet=True)
        model = trainer.raw_model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.logits(model(ids)), want, atol=0, rtol=0)
        assert torch.equal(model.raw_heads[0].weight, run.model.raw_heads[0].weight) == (source == run.run_dir)


def test_token_baseline_export(root, corpus, codec):
    run_dir = make_run(root / "tokens", corpus, ViewsConfig(codec="bpe",
                                                            rate=1.0, mode="vanilla", codec_options=codec_options_for("bpe", vocab_size=codec.alphabet_size)), codec)
    out = root / "tokens-hf"
    assert export_run(run_dir, out)["interface"] == "tokens"
    run = load_run(run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert len(tok) == run.rep.vocab_size
    assert list(hf.generation_config.eos_token_id) == [run.rep.eos_id]
    assert hf.generation_config.suppress_tokens == suppressed_ids(run.interface, run.rep.vocab_size)
    text = "def f3(x):\n    return 'héllo' <eos>"
    assert tok(text).input_ids == run.interface.prompt_ids(text.encode()).tolist()
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    lengths = []
    for prompt in PROMPTS[:2]:
        ids = hf_generate(hf, tok, prompt, 20)
        ours = generate(run.model, run.interface, prompt, max_bytes=10**6, max_new_tokens=20)
        assert ids_to_bytes(tok, ids) == ours
        lengths.append(len(ours))
    assert max(lengths) >= 10


def test_refuses_token_models_over_non_text_codecs(root, corpus, codec):
    run_dir = make_run(root / "tokens-bytes", corpus, ViewsConfig(codec="bpe-bytes", rate=1.0, mode="vanilla"),
                       BpeBytesCodec(codec))
    with pytest.raises(ValueError, match="only the 'bpe' token baseline"):
        export_run(run_dir, root / "never")
    assert not (root / "never").exists()


def test_cli_bfloat16_and_errors(proxy, root, capsys):
    from safetensors import safe_open

    run, out, _, _, _ = proxy
    bf = root / "bf16"
    assert main(["export", str(run.run_dir), "--out", str(bf), "--dtype", "bfloat16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"
    with safe_open(str(bf / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
    assert main(["export", str(run.run_dir), "--out", str(bf)]) == 2  # not empty, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(root / "missing"), "--out", str(root / "x")]) == 2
    assert "not a proxylm run directory" in capsys.readouterr().err

    cfg = run.model.cfg
    with pytest.raises(ValueError, match="vocabulary size"):
        load_hf_weights(Transformer(cfg, run.rep.vocab_size + 64, run.rep.raw_vocab_size), out)
    wider = ModelConfig(**{**MODEL, "dim": 64})
    with pytest.raises(ValueError, match="model shape"):
        load_hf_weights(Transformer(wider, run.rep.vocab_size, run.rep.raw_vocab_size), out)
    with pytest.raises(FileNotFoundError, match="not a transformers export"):
        load_hf_weights(run.model, root / "missing")


def test_init_from_refuses_other_byte_layout(proxy):
    from proxylm.assemble import load_init_from

    run, out, _, _, _ = proxy
    moved = Representation.bytes_only(n_spare=run.rep.n_spare + 1)  # every byte one id later
    with pytest.raises(ValueError, match="raw bytes sit at ids"):
        load_init_from(run.model, out, moved)


def test_export_claims_the_trained_context_not_the_rope_table(proxy):
    run, out, summary, hf, tok = proxy
    trained = min(run.cfg.data.seq_len, run.model.cfg.max_seq_len)
    assert summary["context"] == trained == hf.config.max_position_embeddings == tok.model_max_length
    assert trained < run.model.cfg.max_seq_len or run.cfg.data.seq_len >= run.model.cfg.max_seq_len
