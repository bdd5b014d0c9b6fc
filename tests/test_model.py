"""Transformer: Llama equivalence, document masking, RoPE resets, KV cache, head losses, chunked CE, FLOPs."""

import math

import pytest
import torch
import torch.nn.functional as F

from proxylm.model import heads as heads_mod
from proxylm.model.config import ModelConfig
from proxylm.model.flops import forward_flops, training_flops
from proxylm.model.hf import hf_llama_config, hf_llama_state_dict
from proxylm.model.transformer import Transformer, positions_from_doc_ids

V, RAW_V = 96, 40  # tiny vocabulary: ids < RAW_V are "raw" (specials + bytes), the rest "compressed"


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64,
                         "init_std": 0.2, **kw})
    return Transformer(cfg, V, RAW_V)


def test_matches_hf_llama():
    transformers = pytest.importorskip("transformers")
    model = tiny(rope_theta=500000.0).eval()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_llama_config(model.cfg, V))).eval()
    hf.load_state_dict(hf_llama_state_dict(model), strict=True)
    ids = torch.randint(0, V, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(model(ids)), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_document_masking_blocks_other_documents():
    model = tiny().eval()
    ids = torch.randint(0, V, (1, 20))
    doc = torch.tensor([[0] * 7 + [1] * 8 + [2] * 5])
    changed = ids.clone()
    changed[0, :7] = torch.randint(0, V, (7,))  # rewrite document 0 ...
    changed[0, 15:] = torch.randint(0, V, (5,))  # ... and document 2
    with torch.no_grad():
        a, b = model(ids, doc_ids=doc), model(changed, doc_ids=doc)
    torch.testing.assert_close(a[0, 7:15], b[0, 7:15], atol=1e-6, rtol=0)  # document 1 does not notice
    assert not torch.allclose(a[0, :7], b[0, :7])


def test_rope_positions_restart_per_document():
    model = tiny().eval()
    doc_a, doc_b = torch.randint(0, V, (1, 9)), torch.randint(0, V, (1, 11))
    window = torch.cat([doc_a, doc_b], dim=1)
    doc_ids = torch.tensor([[3] * 9 + [4] * 11])
    with torch.no_grad():
        alone = model(doc_b)
        packed = model(window, doc_ids=doc_ids)  # positions derived from doc_ids
        explicit = model(window, positions=positions_from_doc_ids(doc_ids), doc_ids=doc_ids)
    torch.testing.assert_close(packed[:, 9:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, packed)
    assert positions_from_doc_ids(doc_ids).tolist() == [list(range(9)) + list(range(11))]


def test_kv_cache_matches_full_forward():
    model = tiny().eval()
    ids = torch.randint(0, V, (1, 30))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(1, 30)
        parts = [model(ids[:, :12], kv_cache=cache), model(ids[:, 12:20], kv_cache=cache)]  # prefill, chunk
        parts += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(20, 30)]  # single steps
    assert cache.pos == 30
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_init_scales_residual_outputs():
    model = Transformer(ModelConfig(dim=128, n_layers=8, n_heads=4, max_seq_len=16), V, RAW_V)
    std = model.cfg.init_std
    assert model.layers[0].attn.q.weight.std().item() == pytest.approx(std, rel=0.05)
    expected = std / math.sqrt(2 * model.cfg.n_layers)
    assert model.layers[0].mlp.down.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.layers[0].attn.o.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(model.norm.weight == 1)


def hand_loss(model, hidden, tokens, doc_ids):
    """Loss by the reference's rule, one position at a time (slow, obvious)."""
    H, R = model.cfg.n_pred_heads, model.cfg.n_raw_heads
    T = H + R
    heads = [model.output] + list(model.pred_heads) + list(model.raw_heads)
    B, S, _ = hidden.shape
    total, positions = 0.0, 0
    for b in range(B):
        for s in range(S):
            tgt = [int(tokens[b, s + k + 1]) for k in range(T)]
            ok = [bool(doc_ids[b, s + k + 1] == doc_ids[b, s]) for k in range(T)]
            positions += ok[0]
            raw = R > 0 and all(t < RAW_V for t, o in zip(tgt, ok) if o)
            for k in range(T):
                if not ok[k] or (k >= H and not raw):
                    continue
                ce = F.cross_entropy(heads[k](hidden[b, s]).float()[None], torch.tensor([tgt[k]]))
                total = total + ce * (1 / T if raw else 1 / H)
    return total, positions


def test_head_loss_weighting_matches_hand_count():
    model = tiny(n_pred_heads=2, n_raw_heads=2, ce_chunk=5)
    B, S, Fut = 2, 10, 4
    tokens = torch.randint(0, RAW_V, (B, S + Fut))
    tokens[0, 4:7] = torch.randint(RAW_V, V, (3,))  # compressed symbols: positions before them are not raw
    tokens[1, 12] = V - 1  # a compressed symbol just past a document end: only reached by uncounted targets
    doc_ids = torch.tensor([[0] * 8 + [1] * 6, [5] * 11 + [6] * 3])
    hidden = model(tokens[:, :S], doc_ids=doc_ids)
    out = model.loss(hidden, tokens, doc_ids)
    expected, positions = hand_loss(model, hidden, tokens, doc_ids)
    assert out.weight_sum.item() == positions == int(out.counted.sum())
    assert 0 < int(out.n_raw_positions) < B * S
    torch.testing.assert_close(out.loss_sum, expected, atol=1e-5, rtol=1e-5)
    loss_sum, weight_sum, nll, counted = out  # contract unpacking
    assert nll.shape == counted.shape == (B, S) and not nll[~counted].any()
    ref0 = F.cross_entropy(model.logits(hidden).reshape(-1, V), tokens[:, 1:S + 1].reshape(-1), reduction="none")
    torch.testing.assert_close(nll[counted], ref0.view(B, S)[counted].detach())


def test_chunked_ce_equals_unchunked_with_grads():
    grads = []
    for chunk in (3, 10_000):
        model = tiny(n_pred_heads=2, n_raw_heads=1, ce_chunk=chunk)
        tokens = torch.randint(0, RAW_V, (2, 17 + 3))
        tokens[0, 5:9] = torch.randint(RAW_V, V, (4,))  # some non-raw positions too
        doc_ids = torch.zeros_like(tokens)
        out = model.loss(model(tokens[:, :17]), tokens, doc_ids)
        (out.loss_sum / out.weight_sum).backward()
        grads.append((out.loss_sum.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_chunked_ce_memory_is_bounded(monkeypatch):
    chunk, B, S = 8, 4, 24
    model = tiny(ce_chunk=chunk, n_pred_heads=2)
    rows = []
    original = heads_mod._ce_chunk

    def spy(h, weight, targets, w):
        rows.append(h.shape[0])
        return original(h, weight, targets, w)

    monkeypatch.setattr(heads_mod, "_ce_chunk", spy)
    tokens = torch.randint(0, V, (B, S + 2))
    hidden = model(tokens[:, :S])
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.loss(hidden, tokens, torch.zeros_like(tokens))
    out.loss_sum.backward()  # backward recomputes one chunk at a time
    assert max(rows) == chunk
    # nothing the size of all logits is kept for backward: at most the head weights / hidden states
    assert max(saved) <= max(V * model.cfg.dim, B * S * model.cfg.dim) < B * S * V


def test_flops_hand_count():
    cfg = ModelConfig(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, n_pred_heads=2, n_raw_heads=1)
    vocab, raw_vocab, B, S, n_raw = 10, 6, 1, 4, 3
    per_position = 2 * (8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16)  # q, k, v (1 kv head of 4), o, mlp = 1152
    attention = 2 * 2 * S * S * 8  # scores + values, dense S x S = 512
    main_heads = B * S * 2 * 2 * 8 * vocab  # 2 heads = 1280
    raw_heads = n_raw * 1 * 2 * 8 * raw_vocab  # = 288
    fwd = B * S * per_position + B * attention + main_heads + raw_heads
    assert fwd == 6688
    assert forward_flops(cfg, vocab, raw_vocab, B, S, n_raw) == fwd
    assert training_flops(cfg, vocab, raw_vocab, B, S, n_raw) == 3 * fwd
    # the trunk's linears are 2 FLOPs per weight per position
    model = Transformer(cfg, vocab, raw_vocab)
    linear_params = sum(p.numel() for n, p in model.layers.named_parameters() if "norm" not in n)
    assert per_position == 2 * linear_params
