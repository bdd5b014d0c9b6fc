"""model.compose_embedding: a BPE id's input embedding is its own row plus the mean of its bytes' rows; raw ids
are untouched, gradients reach the byte rows, a trained run reloads and exports with the composition."""

import numpy as np
import pytest
import torch

from proxylm.assemble import build_trainer, load_run, new_model
from proxylm.codecs.bpe import BpeCodec
from proxylm.config import load_config
from proxylm.core.errors import ConfigError
from proxylm.core.representation import Representation
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer

TEXTS = [b"def add(a, b):\n    return a + b\n" * 3, "héllo wörld, héllo\n".encode() * 3]


@pytest.fixture(scope="module")
def codec():
    return BpeCodec.train(TEXTS, vocab_size=300)


def composed_model(codec, seed=0):
    rep = Representation.for_codec(codec)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, compose_embedding=True), rep.vocab_size,
                        rep.raw_vocab_size)
    ids = rep.compressed_ids(np.arange(codec.alphabet_size))
    model.set_composition({int(i): rep.raw_ids(b).tolist() for i, b in zip(ids, codec.symbol_bytes())})
    return model, rep


def test_compressed_ids_are_their_row_plus_their_bytes_mean(codec):
    model, rep = composed_model(codec)
    E = model.embed.weight.detach()
    long_token = max(range(codec.alphabet_size), key=lambda s: len(codec.symbol_bytes()[s]))
    piece = codec.symbol_bytes()[long_token]
    assert len(piece) >= 3
    c = int(rep.compressed_ids(np.array([long_token]))[0])
    raw = rep.raw_ids(b"xyz").tolist()
    ids = torch.tensor([[c, *raw, rep.special_id("<raw>")]])
    x = model.embed_ids(ids)[0].detach()  # (5, D)
    assert torch.allclose(x[0], E[c] + E[rep.raw_ids(piece)].mean(0), atol=1e-6)
    assert torch.equal(x[1:], E[ids[0, 1:]])  # raw bytes and specials: their own rows only
    table = model.input_embedding_table().detach()
    assert torch.allclose(table[ids[0]], x, atol=1e-6) and torch.equal(table[:rep.raw_vocab_size],
                                                                       E[:rep.raw_vocab_size])


def test_gradients_of_a_compressed_id_reach_its_byte_rows(codec):
    model, rep = composed_model(codec)
    s = next(i for i, b in enumerate(codec.symbol_bytes()) if len(b) >= 2)
    c = int(rep.compressed_ids(np.array([s]))[0])
    model.embed_ids(torch.tensor([[c]])).sum().backward()
    grad_rows = model.embed.weight.grad.abs().sum(1).nonzero().view(-1).tolist()
    assert sorted(grad_rows) == sorted({c, *rep.raw_ids(codec.symbol_bytes()[s]).tolist()})


def test_a_model_without_composition_is_unchanged(codec):
    rep = Representation.for_codec(codec)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2), rep.vocab_size, rep.raw_vocab_size)
    ids = torch.arange(rep.vocab_size).view(1, -1)
    assert torch.equal(model.embed_ids(ids), model.embed(ids))
    assert model.input_embedding_table() is model.embed.weight
    assert "compose_count" not in model.state_dict()  # derived from the codec, never saved


def test_composition_needs_a_codec_with_bytes_per_symbol():
    with pytest.raises(ConfigError, match="model.compose_embedding"):
        load_config("proxy-gzip-micro", ["model.compose_embedding=true"])
    with pytest.raises(ConfigError, match="views.codec=bpe"):
        load_config("bytes-micro", ["model.compose_embedding=true"])


def test_a_composed_run_trains_reloads_and_exports(tmp_path, code_corpus):
    pytest.importorskip("transformers")
    from proxylm.export import export_run

    overrides = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=64", "data.batch_size=2",
                 "train.max_steps=4", "train.warmup_steps=1", "train.eval_every=0", "eval.max_bytes=2000",
                 "views.codec_options.bpe.vocab_size=300", "model.compose_embedding=true",
                 f"data.corpus={code_corpus}", f"views.codec_dir={tmp_path / 'bpe'}"]
    cfg = load_config("proxy-bpe-micro", overrides)
    summary = build_trainer(cfg, tmp_path / "run", quiet=True).fit()
    assert np.isfinite(summary["val_bpb"])
    run = load_run(tmp_path / "run")
    assert run.model.compose_count.sum() > 0  # the composition is rebuilt from the run's own codec
    fresh = new_model(run.cfg, run.rep, run.codec)
    assert torch.equal(fresh.compose_raw, run.model.compose_raw)
    out = export_run(tmp_path / "run", tmp_path / "hf")
    from safetensors.torch import load_file

    weights = load_file(str(next((tmp_path / "hf").glob("*.safetensors"))))
    table = run.model.input_embedding_table().detach()
    assert torch.allclose(weights["model.embed_tokens.weight"].float(), table, atol=1e-6) and out
