"""`proxylm plan`: the activation estimate against what real CPU forwards save for backward (within 10%),
every shipped config planned, the paper sizes, and a refusal with the reason."""

import json

import pytest
import torch

from proxylm.cli import main
from proxylm.config import CONFIG_DIR, load_config
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer
from proxylm.plan import forward_activation_bytes, layer_activation_bytes, make_plan, planned_representation

V, RAW_V = 300, 272


def saved_bytes(model, ids, doc_ids, bf16: bool) -> int:
    """Bytes of the distinct storages a forward saves for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(ids, doc_ids=doc_ids)
    return sum(seen.values())


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("docs", [True, False], ids=["sdpa_masked", "sdpa_causal"])
@pytest.mark.parametrize("shape", [dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192),
                                   dict(dim=96, n_layers=3, n_heads=6)], ids=["gqa", "mha"])
def test_activation_estimate_within_10_percent(shape, docs, bf16):
    torch.manual_seed(0)
    cfg = ModelConfig(**shape)
    model = Transformer(cfg, V, RAW_V)
    if bf16:  # as FSDP2 with bf16 parameters: weights and the residual stream in bf16
        model = model.to(torch.bfloat16)
    B, S = 3, 160
    ids = torch.randint(0, V, (B, S))
    doc_ids = torch.tensor([[0] * 60 + [1] * 100, [4] * S, [1] * 10 + [2] * 150]) if docs else None
    measured = saved_bytes(model, ids, doc_ids, bf16)
    estimate = forward_activation_bytes(cfg, B, S, 2 if bf16 else 4, "sdpa_masked" if docs else "sdpa_causal",
                                        checkpointing=False)
    assert abs(estimate - measured) <= 0.1 * measured, (estimate, measured)


def test_checkpointed_forward_keeps_the_block_inputs():
    """With activation checkpointing a forward saves each block's input and what lies outside the blocks; the
    estimate adds one block recomputed in backward (its own size checked above)."""
    from proxylm.train.distributed import checkpoint_block

    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=3, n_heads=4)
    model = Transformer(cfg, V, RAW_V)
    for block in model.layers:
        checkpoint_block(block)
    B, S = 2, 128
    measured = saved_bytes(model, torch.randint(0, V, (B, S)), None, False)
    stored = (forward_activation_bytes(cfg, B, S, 4, "sdpa_causal", checkpointing=True)
              - layer_activation_bytes(cfg, B, S, 4, "sdpa_causal"))
    assert abs(stored - measured) <= 0.1 * measured, (stored, measured)


SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_plans(name):
    cfg = load_config(name)
    p = make_plan(cfg, gpus=8, gpu_memory_gib=141)
    assert p["params"] == p["params_embedding"] + p["params_non_embedding"] > 0
    assert p["flops_per_step"] == pytest.approx(p["flops_6n"] + p["flops_attention"])
    assert p["memory_gib"]["checkpointing"]["activations"] < p["memory_gib"]["no_checkpointing"]["activations"]


@pytest.mark.parametrize("codec", ["gzip", "bit", "halfbyte", "doublebyte"])
def test_planned_vocabulary_is_the_real_codecs(codec):
    """Codecs that need no training: the plan's vocabulary is the one a run would build."""
    from proxylm.assemble import build_codec, representation_for

    cfg = load_config("proxy-gzip-micro", [f"views.codec={codec}"])
    assert planned_representation(cfg) == representation_for(cfg, build_codec(cfg))


def test_paper_sizes_and_vocabularies():
    for size, non_emb in (("0.5b", 0.47e9), ("1.5b", 1.34e9), ("7b", 6.98e9)):
        trunk = {}
        for family, vocab in (("bytes", 320), ("tokens", 96960), ("proxy-bpe", 96960), ("proxy-neural", 65856)):
            p = make_plan(load_config(f"{family}-{size}"), gpus=8, gpu_memory_gib=80)
            assert p["vocab_size"] == vocab  # paper.md's vocabularies
            assert p["tokens_per_step"] == 8 * (8 if size != "7b" else 2) * 32768
            trunk[family] = p["params_non_embedding"] - p["params_heads"]
            assert p["fits"], (family, size, p["reason"])
        assert len(set(trunk.values())) == 1  # one backbone per size
        assert trunk["bytes"] == pytest.approx(non_emb, rel=0.02)  # paper.md 3.3's count (4d^2 + 3 d FFN)


def test_plan_cli_json_and_refusal(capsys):
    assert main(["plan", "proxy-bpe-1.5b", "--gpus", "8", "--gpu-memory", "80", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["fits"] and p["largest_micro_batch"]["checkpointing"] >= 8 and p["step_seconds"] > 0
    # without activation checkpointing 8 x 32K does not fit: refused, with the reason and a way out
    assert main(["plan", "proxy-bpe-1.5b", "train.activation_checkpointing=false", "--gpus", "8"]) == 1
    out, err = capsys.readouterr()
    assert "DOES NOT FIT" in out
    assert "does not fit: needs" in err and "activation_checkpointing=true" in err
    assert main(["plan", "bytes-micro"]) == 0
    assert "fits" in capsys.readouterr().out
