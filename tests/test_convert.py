"""Converting a token model (proxylm/convert.py): token rows keep their scores, raw-byte rows follow the rule,
unsupported shapes are refused with the key, a converted run resumes exactly, and a real transformers Llama
checkpoint with a `tokenizers` BPE converts, trains, exports and loads back with the same greedy bytes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_code_corpus

from proxylm.assemble import build_trainer, load_run
from proxylm.codecs.bpe import BpeCodec
from proxylm.config import RunConfig, load_config, save_config
from proxylm.convert import byte_sources, hf_shape, plan_conversion, token_model_kind
from proxylm.core.errors import UserError
from proxylm.core.representation import Representation
from proxylm.data.config import DataConfig, ViewsConfig
from proxylm.codecs.options import codec_options_for
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer
from proxylm.train.checkpoint import model_state, save_checkpoint

SMALL = ["data.seq_len=32", "data.batch_size=2", "train.log_every=1", "eval.max_bytes=3000", "eval.batch_size=4",
         "train.warmup_steps=2", "train.eval_every=0"]
LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def corpus(root):
    d = root / "corpus"
    d.mkdir()
    return write_code_corpus(d, n_files=30, max_functions=5)


@pytest.fixture(scope="module")
def token_run(root, corpus):
    """A proxylm `tokens` run as the trainer leaves it (BPE-300 ids, vanilla, one checkpoint), random weights."""
    codec = BpeCodec.train([p.read_bytes() for p in sorted(Path(corpus).iterdir())], vocab_size=300)
    path = root / "tokens"
    path.mkdir()
    cfg = RunConfig(model=ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, init_std=0.2),
                    views=ViewsConfig(codec="bpe", rate=1.0, mode="vanilla",
                                      codec_options=codec_options_for("bpe", vocab_size=codec.alphabet_size)),
                    data=DataConfig(corpus=corpus), name="tokens")
    save_config(cfg, path / "config.yaml")
    rep = Representation.for_codec(codec)
    rep.save(path / "representation.json")
    codec.save(path / "codec")
    torch.manual_seed(0)
    model = Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size)
    save_checkpoint(path, 5, model_state(model), None, {"step": 5})
    return path, model.eval(), rep, codec


def _cfg(corpus, source, name="proxy-convert-micro", extra=()):
    return load_config(name, SMALL + [f"data.corpus={corpus}", "data.val_fraction=0.2", f"train.init_from={source}"]
                       + list(extra))


def test_token_rows_score_as_in_the_source(token_run, corpus, root):
    path, source, src_rep, codec = token_run
    trainer = build_trainer(_cfg(corpus, path), root / "converted", quiet=True)
    model, rep = trainer.raw_model.eval(), trainer.rep
    cfg = load_config(str(root / "converted" / "config.yaml"))
    assert (cfg.model.dim, cfg.model.n_kv_heads, cfg.views.codec_options.bpe.vocab_size) == (32, 2, codec.alphabet_size)
    symbols = codec.encode(b"def f3_1(x):\n    return x * 1 + 3\n")
    src_ids = np.concatenate([[src_rep.bos_id], src_rep.compressed_ids(symbols)])
    new_ids = np.concatenate([[rep.bos_id], rep.compressed_ids(symbols)])
    all_symbols = np.arange(codec.alphabet_size)
    with torch.no_grad():
        want = source.logits(source(torch.as_tensor(src_ids)[None]))[..., src_rep.compressed_ids(all_symbols)]
        got = model.logits(model(torch.as_tensor(new_ids)[None]))[..., rep.compressed_ids(all_symbols)]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # raw byte 'a' reads and scores as the single-byte token 'a' did
    a = codec.token_bytes.index(b"a")
    for new, old in ((model.embed.weight, source.embed.weight), (model.output.weight, source.output.weight)):
        assert torch.equal(new[rep.raw_offset + ord("a")], old[int(src_rep.compressed_ids([a])[0])])
    trainer.run_lock.release()


def test_byte_rule_falls_back_and_counts():
    tokens = [b"a", b"a", b"bc", b"", b"xyz"]  # 'a' twice (e.g. 'a' and '<0x61>'), 'b' only inside a token
    sources, counts = byte_sources(tokens)
    assert sources[ord("a")] == [0, 1] and sources[ord("b")] == [2] and sources[ord("y")] == [4]
    assert sources[0] == [0, 1, 2, 4]  # a byte no token has: every token
    assert counts == {"single": 1, "containing": 5, "all": 250}  # b c x y z


def test_naive_conversion_has_raw_bytes_only(token_run, corpus, root):
    path, source, src_rep, codec = token_run
    conv = plan_conversion(_cfg(corpus, path, "bytes-micro"))
    assert conv.codec is None and conv.rep.vocab_size == Representation.bytes_only().vocab_size
    assert token_model_kind(path) == "run"
    assert plan_conversion(_cfg(corpus, path, "tokens-micro")) is None  # tokens into tokens: plain init_from


@pytest.mark.parametrize("change, key", [
    ({"head_dim": 16}, "head_dim"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_scaling"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "qwen3"}, "model_type"),
])
def test_unsupported_shapes_are_refused_with_the_key(change, key, root, corpus, token_run):
    conf = {"model_type": "llama", **LLAMA, "vocab_size": 300, **change}
    with pytest.raises(UserError, match=key):
        hf_shape(conf, "config.json")
    d = root / f"hf-bad-{key}-{len(change)}"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(conf))
    (d / "tokenizer.json").write_text((token_run[0] / "codec" / "tokenizer.json").read_text())
    with pytest.raises(UserError, match=key):  # through train: nothing written
        build_trainer(_cfg(corpus, d), root / f"never-{key}", quiet=True)
    assert not (root / f"never-{key}").exists()


def test_target_settings_a_conversion_cannot_honour(token_run, corpus):
    path = token_run[0]
    with pytest.raises(UserError, match="views.codec=gzip"):
        plan_conversion(_cfg(corpus, path, "proxy-gzip-micro"))
    with pytest.raises(UserError, match="views.codec_dir"):
        plan_conversion(_cfg(corpus, path, extra=["views.codec_dir=/tmp/elsewhere"]))
    with pytest.raises(UserError, match="compose_embedding"):
        plan_conversion(_cfg(corpus, path, extra=["model.compose_embedding=true"]))


def _losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_converted_run_resumes_exactly(token_run, corpus, tmp_path):
    path = token_run[0]
    base = ["train.max_steps=8", "train.ckpt_every=4"]
    build_trainer(_cfg(corpus, path, extra=base), tmp_path / "full", quiet=True).fit()
    part = build_trainer(_cfg(corpus, path, extra=base), tmp_path / "part", quiet=True)
    while part.step < 4:
        part.train_step()
    part.save()
    part.loader.close()
    part.run_lock.release()
    del part
    saved = load_config(str(tmp_path / "part" / "config.yaml"))
    resumed = build_trainer(saved, tmp_path / "part", resume=True, quiet=True)
    assert resumed.step == 4
    rest = [resumed.train_step()["loss"] for _ in range(4)]
    assert rest == _losses(tmp_path / "full")[4:]
    resumed.run_lock.release()


# ---- a real transformers checkpoint, offline --------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_dir(root):
    """A tiny LlamaForCausalLM (GQA, tied embeddings, rope_theta 5e4) and a ByteLevel BPE trained with `tokenizers`
    on stdlib sources, both written with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    import json as json_module
    texts = [p.read_text(encoding="utf-8") for p in sorted(Path(json_module.__file__).parent.glob("*.py"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    d = root / "llama"
    fast.save_pretrained(d)
    torch.manual_seed(0)
    conf = transformers.LlamaConfig(vocab_size=len(fast), tie_word_embeddings=True, rope_theta=5e4,
                                    initializer_range=0.2, bos_token_id=0, eos_token_id=0, **LLAMA)
    model = transformers.LlamaForCausalLM(conf).eval()
    model.save_pretrained(d)
    return d, model, fast


def test_lossy_tokenizer_is_refused_by_the_import_checks(llama_dir, corpus, root):
    d = root / "llama-lowercase"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        (d / name).write_bytes((llama_dir[0] / name).read_bytes())
    spec = json.loads((llama_dir[0] / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (d / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="normalizer Lowercase"):
        plan_conversion(_cfg(corpus, d))


def test_transformers_checkpoint_round_trip(llama_dir, corpus, root):
    transformers = pytest.importorskip("transformers")
    from proxylm.eval.generate import generate
    from proxylm.export import export_run, ids_to_bytes

    d, hf_model, fast = llama_dir
    assert token_model_kind(d) == "hf"
    run_dir = root / "from-llama"
    trainer = build_trainer(_cfg(corpus, d, extra=["train.max_steps=3", "train.lr=0.01"]), run_dir, quiet=True)
    model, rep = trainer.raw_model.eval(), trainer.rep
    assert (model.cfg.dim, model.cfg.kv_heads, model.cfg.rope_theta) == (32, 2, 5e4)
    ids = fast("def f(x):\n    return x", add_special_tokens=False).input_ids
    n = rep.codec_alphabet
    with torch.no_grad():
        want = hf_model(torch.tensor([ids])).logits[..., :n]
        got = model.logits(model(torch.as_tensor(rep.compressed_ids(ids))[None]))[..., rep.compressed_ids(np.arange(n))]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # trunk, GQA, rope theta, untied rows
    model.train()
    trainer.fit()
    trainer.run_lock.release()
    out = root / "from-llama-hf"
    export_run(run_dir, out)
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    run = load_run(run_dir)
    lengths = []
    for prompt in (b"def f(x):", b"import "):
        enc = tok(prompt.decode(), return_tensors="pt")
        hf_ids = back.generate(**enc, max_new_tokens=24)[0, enc.input_ids.shape[1]:].tolist()
        ours = generate(run.model, run.interface, prompt, max_bytes=24)
        assert ids_to_bytes(tok, hf_ids) == ours
        lengths.append(len(ours))
    assert max(lengths) >= 10


# ---- the conversion study ---------------------------------------------------------------------------------------
def _result(arm, x, seed, bpb):
    return {"arm": arm, "added": x, "seed": seed, "bpb": {"val": bpb}, "flops": x}


def test_study_statistics():
    from proxylm.compare.convert import ConvertPreset, build_report, result_lines

    p = ConvertPreset("micro", 4.0, [1.0, 2.0, 4.0], eval_bytes=1)
    proxy = {1.0: 2.6, 2.0: 2.4, 4.0: 2.2}  # the byte model at X=4 reaches 2.5: proxy needs 1.5 by log interpolation
    rs = [_result("tokens", 4.0, s, 2.0) for s in range(3)]
    for s in range(3):
        for x in p.added:
            rs += [_result("bytes", x, s, 3.0 - 0.125 * x + 0.01 * s), _result("naive", x, s, 2.8 - 0.1 * x),
                   _result("proxy", x, s, proxy[x] + 0.02 * s), _result("bytes+T", x, s, 2.9 - 0.1 * x)]
    r = build_report(p, rs, 3)
    gap = r["convert_gap"]
    assert gap["added"] == 4.0 and gap["mean"] == pytest.approx(2.2 + 0.02 - 2.5 - 0.01) and gap["verdict"] == "better"
    assert r["convert_vs_naive"]["mean"] == pytest.approx(2.22 - 2.4)
    m = r["convert_flops_to_match"]
    assert m["reached"] and not m["early"] and 0.25 < m["ratio"] < 1.0
    lines = result_lines(r)
    assert [line.split()[1] for line in lines] == ["convert_gap", "convert_vs_naive", "convert_flops_to_match"]
    assert "95% interval" in lines[0]


@pytest.mark.slow
def test_study_smoke_end_to_end(corpus, tmp_path, capsys):
    from proxylm.cli import main

    out = tmp_path / "study"
    assert main(["compare", "--preset", "convert-smoke", "--out", str(out), "--quiet", f"data.corpus={corpus}",
                 "data.val_fraction=0.2", "data.seq_len=32", "data.batch_size=2", "eval.batch_size=4"]) == 0
    text = capsys.readouterr().out
    assert "RESULT convert_gap" in text and "RESULT convert_vs_naive" in text and "RESULT convert_flops_to_match" in text
    assert (out / "convert_curve.png").stat().st_size > 1000
    report = json.loads((out / "results.json").read_text())
    assert not report["partial"] and len(report["probes"]) == 3  # proxy at both X, proxy-paper at one
    assert {row["arm"] for row in report["table"]} == {"bytes", "bytes+T", "naive", "proxy", "proxy-paper"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_conversion_under_two_ranks_matches_one_process(token_run, corpus, tmp_path, mode):
    """Every rank converts the same weights before wrapping: 2 ranks == one process reading both shards."""
    from test_distributed import MICRO, RANKS, STEPS, Interleaved, assert_same_run, torchrun

    from proxylm.data.loader import TrainLoader

    extra = [*MICRO, f"data.corpus={corpus}", f"train.init_from={token_run[0]}", f"train.distributed={mode}"]
    torchrun("train", "proxy-convert-micro", *extra, "--out", str(tmp_path / "run"))
    cfg = load_config("proxy-convert-micro", extra + [f"train.grad_accum={RANKS}"])
    trainer = build_trainer(cfg, tmp_path / "ref", quiet=True)
    c = trainer.cfg
    trainer.loader = Interleaved([TrainLoader(c.data, c.views, trainer.rep, trainer.loader.codec, rank=r,
                                              world_size=RANKS, total_steps=STEPS, n_future=c.model.n_future)
                                  for r in range(RANKS)])
    got = {m["step"]: m for m in (trainer.train_step() for _ in range(STEPS))}
    assert_same_run(tmp_path / "run", (got, trainer.evaluate()["bpb"]))
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert (saved.model.n_heads, saved.model.n_kv_heads) == (4, 2)  # MICRO says 2 heads: the source's shape won
