"""Interfaces (prompt/score ids, allowed ids, decode) and generation (cache == recompute, sampling, stops)."""

import numpy as np
import pytest
import torch

from proxylm.data.config import ViewsConfig
from proxylm.core.representation import Representation
from proxylm.eval.generate import generate, generate_batch, sample_next
from proxylm.core.interface import ByteInterface, TokenInterface, interface_for
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer
from toys import REP, PairCodec, random_model


def no_stop_bytes() -> ByteInterface:
    iface = ByteInterface(REP)
    iface.stop_ids = ()  # a random model may pick a stop id; these tests want full-length output
    return iface


def favour(model, ids, bonus=100.0):
    """Make `ids` the model's overwhelming favourites (a logit bonus on head 0)."""
    extra = torch.zeros(model.vocab_size)
    extra[ids] = bonus
    base = model.head_logits  # model.logits goes through head_logits too
    model.head_logits = lambda ids=None: (lambda hidden, f=base(ids): f(hidden) + (extra if ids is None
                                                                                  else extra[ids]))


# ---- interfaces -------------------------------------------------------------------------------------------
def test_byte_interface_ids_and_mask():
    iface = ByteInterface(REP)
    ids, counted, n_bytes = iface.score_ids(b"hi!")
    r = REP
    assert ids.tolist() == [r.bos_id, r.raw_start_id, *r.raw_ids(b"hi!").tolist(), r.raw_end_id, r.eos_id]
    assert counted.tolist() == [False, False, True, True, True, False, False]  # the target at i counts
    assert n_bytes == 3 == counted.sum()
    assert iface.prompt_ids(b"hi").tolist() == [r.bos_id, r.raw_start_id, *r.raw_ids(b"hi").tolist()]
    assert iface.decode([*r.raw_ids(b"ok").tolist(), r.raw_end_id, *r.raw_ids(b"no").tolist()]) == b"ok"
    allowed = iface.allowed_ids(r.vocab_size)
    assert allowed.sum() == 256 + 2 and allowed[r.raw_end_id] and allowed[r.eos_id] and not allowed[r.bos_id]


def test_token_interface_ids_and_mask():
    codec = PairCodec(refuse=True)
    rep = Representation.for_codec(codec)
    iface = TokenInterface(rep, codec)
    ids, counted, n_bytes = iface.score_ids(b"xab")
    body = rep.compressed_ids(np.array([ord("x"), 256])).tolist()
    assert ids.tolist() == [rep.bos_id, *body, rep.eos_id]
    assert counted.tolist() == [False, True, True, False] and n_bytes == 3
    assert iface.prompt_ids(b"ab").tolist() == [rep.bos_id, rep.compressed_offset + 256]
    assert iface.decode([*body, rep.eos_id, *body]) == b"xab"
    allowed = iface.allowed_ids(rep.vocab_size)
    assert allowed.sum() == 257 + 1 and allowed[rep.compressed_offset] and not allowed[rep.raw_start_id]
    with pytest.raises(ValueError, match="cannot encode"):
        iface.score_ids(b"bad \xff")


def test_interface_for_picks_token_only_for_vanilla_rate_one():
    codec = PairCodec(refuse=True)
    rep = Representation.for_codec(codec)
    assert isinstance(interface_for(rep, codec, ViewsConfig(codec="gzip", mode="vanilla", rate=1.0)),
                      TokenInterface)
    assert isinstance(interface_for(rep, codec, ViewsConfig(codec="gzip", mode="vanilla", rate=0.5)),
                      ByteInterface)
    assert isinstance(interface_for(rep, codec, ViewsConfig(codec="gzip", mode="sentinel", rate=1.0)),
                      ByteInterface)
    assert isinstance(interface_for(REP, None, ViewsConfig()), ByteInterface)


# ---- generation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 0.9)])
def test_cache_and_recompute_generate_the_same_bytes(temperature, top_p):
    model, iface = random_model(), no_stop_bytes()
    kw = dict(max_bytes=24, temperature=temperature, top_p=top_p, seed=3)
    cached = generate(model, iface, b"def f(x):", use_cache=True, **kw)
    full = generate(model, iface, b"def f(x):", use_cache=False, **kw)
    assert len(cached) == 24 and cached == full


def test_sampling_is_seeded():
    model, iface = random_model(), no_stop_bytes()
    runs = [generate(model, iface, b"x = ", max_bytes=20, temperature=1.5, top_p=0.95, seed=s) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
    # a tiny top_p keeps only the most likely id: the same as greedy
    greedy = generate(model, iface, b"x = ", max_bytes=20)
    assert generate(model, iface, b"x = ", max_bytes=20, temperature=1.0, top_p=1e-9, seed=7) == greedy


def test_allowed_ids_restrict_output():
    model = random_model()
    favour(model, [REP.bos_id, REP.vocab_size - 1])  # unrestricted, the model would only say these
    seen = []

    class Spy(ByteInterface):
        def decode(self, ids):
            seen.extend(int(i) for i in ids)
            return super().decode(ids)

    iface = Spy(REP)
    iface.stop_ids = ()
    out = generate(model, iface, b"abc", max_bytes=16, temperature=1.0, seed=0)
    assert len(out) == 16
    assert seen and all(REP.raw_offset <= i < REP.raw_vocab_size for i in seen)
    allowed = iface.allowed_ids(REP.vocab_size)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert allowed[sample_next(torch.randn(REP.vocab_size) * 5, allowed, 2.0, 1.0, g)]


def test_stop_ids_strings_streaming_and_max_bytes():
    model, iface = random_model(), no_stop_bytes()
    free = generate(model, iface, b"print(", max_bytes=40)
    assert len(free) == 40
    stop = free[10:13]
    cut = free[:free.find(stop)]
    chunks = []
    out = generate(model, iface, b"print(", max_bytes=40, stop=["\x00never", stop],
                   on_bytes=chunks.append)
    assert out == cut and b"".join(chunks) == out
    chunks = []
    assert generate(model, iface, b"print(", max_bytes=7, on_bytes=chunks.append) == free[:7] == b"".join(chunks)
    # a model whose favourite id is </raw> stops at once
    real = ByteInterface(REP)
    favour(model, [REP.raw_end_id])
    assert generate(model, real, b"print(", max_bytes=40) == b""


def test_long_prompt_is_truncated_to_the_context():
    model, iface = random_model(max_seq_len=32), no_stop_bytes()
    long_prompt = bytes(range(65, 91)) * 10  # 260 bytes > 32 positions
    a = generate(model, iface, long_prompt, max_bytes=8)
    b = generate(model, iface, long_prompt, max_bytes=8, use_cache=False)
    assert len(a) == 8 and a == b


def test_token_interface_generation_and_batch():
    codec = PairCodec(refuse=True)
    rep = Representation.for_codec(codec)
    model, iface = random_model(rep), TokenInterface(rep, codec)
    iface.stop_ids = ()
    outs = generate_batch(model, iface, [b"ab", b"cd"], max_bytes=12, temperature=0.8, seed=1)
    assert [len(o) for o in outs] == [12, 12]
    assert outs[1] == generate(model, iface, b"cd", max_bytes=12, temperature=0.8, seed=2, use_cache=False)


# ---- the CLI ----------------------------------------------------------------------------------------------
def make_run(path, **model_kw):
    """A byte-model run directory with one checkpoint of a random model."""
    from proxylm.config import RunConfig, save_config
    from proxylm.train.checkpoint import model_state, save_checkpoint

    path.mkdir()
    cfg = RunConfig(model=ModelConfig(dim=32, n_layers=2, n_heads=4, max_seq_len=96, init_std=0.3, **model_kw),
                    name=path.name)
    save_config(cfg, path / "config.yaml")
    REP.save(path / "representation.json")
    torch.manual_seed(0)
    model = Transformer(cfg.model, REP.vocab_size, REP.raw_vocab_size)
    save_checkpoint(path, 1, model_state(model), None, {"step": 1})
    return path, model


def test_cli_generate_speculative_batch_and_json(tmp_path, capsys):
    import json

    from proxylm.cli import main

    run, model = make_run(tmp_path / "mbp", n_pred_heads=4)
    base = ["generate", str(run), "--max-bytes", "12", "--device", "cpu", "--json"]
    assert main(base + ["--prompt", "def f(x):"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert main(base + ["--prompt", "def f(x):", "--no-speculative"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert spec["speculative"] and not plain["speculative"]
    assert spec["lookup"] == 8 and plain["lookup"] == plain["lookup_steps"] == 0 and "lookup_accepted" in spec
    assert spec["completion"] == plain["completion"] and spec["completion_bytes"] == plain["completion_bytes"]
    expected = generate(model.eval(), ByteInterface(REP), b"def f(x):", max_bytes=12, speculative=False)
    assert spec["completion"] == expected.decode("utf-8", "replace") and spec["prompt"] == "def f(x):"
    assert main(base + ["--prompt", "a", "--prompt", "def f(x):", "--batch-size", "2"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in batch["results"]] == ["a", "def f(x):"]
    assert batch["results"][1]["completion"] == plain["completion"] and batch["speculative"]


def test_cli_generate_text_output_fallback_and_bad_flags(tmp_path, capsysbinary):
    from proxylm.cli import main

    run, model = make_run(tmp_path / "plain")  # one head: nothing to draft with
    gen = ["generate", str(run), "--max-bytes", "4", "--device", "cpu"]
    assert main(gen + ["--prompt", "x", "--speculative"]) == 0
    out, err = capsysbinary.readouterr()
    assert b"speculative decoding with the heads' drafts not used: the model has no extra heads" in err
    assert b"drafts copied from the context are (--lookup 8)" in err
    assert out == b"x" + generate(model.eval(), ByteInterface(REP), b"x", max_bytes=4) + b"\n"
    assert main(gen + ["--prompt", "a", "--prompt", "b"]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"=== prompt 0 ===\na") and b"\n=== prompt 1 ===\nb" in out
    with pytest.raises(SystemExit) as refused:  # a typed flag: argparse refuses it in one line
        main(gen + ["--prompt", "x", "--batch-size", "0"])
    assert refused.value.code != 0
    assert b"--batch-size" in capsysbinary.readouterr().err


@pytest.mark.parametrize("n_pred_heads,temperature", [(1, 0.0), (4, 0.0), (1, 0.8)])
def test_benchmark_generation_in_batches_equals_one_prompt_at_a_time(n_pred_heads, temperature):
    """eval humaneval / codegen / robustness decode their samples in batches (speculatively where exact):
    each completion must be the one plain one-prompt generation gives."""
    from types import SimpleNamespace

    from proxylm.tasks.codegen import generate_in_batches

    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=2, max_seq_len=96, n_pred_heads=n_pred_heads)
    model = Transformer(cfg, REP.vocab_size, REP.raw_vocab_size).eval()
    run = SimpleNamespace(model=model, interface=no_stop_bytes())
    prompts = [b"def f(x):", b"import os\n", b"x", b"class A:\n    pass\n", b"", b"yield", b"# a", b"lambda", b"if 1:"]
    seeds = [3 * i + 1 for i in range(len(prompts))]
    stop = (b"\n\n",)
    got = list(generate_in_batches(run, prompts, seeds, stop, 12, temperature, 0.95, batch_size=4))
    want = [generate(model, run.interface, p, max_bytes=12, temperature=temperature, top_p=0.95, stop=stop, seed=s,
                     speculative=False)
            for p, s in zip(prompts, seeds)]
    assert got == want
