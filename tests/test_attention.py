"""Attention behind one door (proxylm/model/attention.py): every backend this machine runs against a dense
reference (values and gradients), the mask built once per batch, and model.attention=flex running flex or
refusing. The compiled-flex cases carry the `gpupath` marker (a CPU compile takes ~40 s here)."""

import pytest
import torch

from proxylm.core.errors import UserError
from proxylm.model import attention
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer

B, H, HKV, S, HD = 2, 4, 2, 96, 16
DOC_IDS = torch.tensor([[0] * 30 + [1] * 50 + [2] * 16, [5] * S])


def dense_reference(q, k, v, allowed):
    """q (B, H, S, hd), k, v (B, Hkv, S, hd), allowed bool (B, S, S) -> (B, H, S, hd), in float64."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # kv head j serves q heads j*rep..
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return scores.softmax(-1) @ v


def qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, S, HD, generator=g, dtype=torch.float32) for h in (H, HKV, HKV)]


def allowed_of(doc_ids):
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    if doc_ids is None:
        return causal.expand(B, S, S)
    return (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def check_backend(name: str, doc_ids, device: str = "cpu"):
    dev = torch.device(device)
    what = attention.available_backends(dev)[name]
    if doc_ids is not None:
        doc_ids = doc_ids.to(dev)
    mask = attention.window_mask("auto", doc_ids, S, dev, backend=name)
    assert mask.backend == name
    q, k, v = qkv()
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = dense_reference(*ref_in, allowed_of(None if doc_ids is None else doc_ids.cpu()))
    grad_out = torch.randn_like(ref)
    (ref * grad_out).sum().backward()
    ins = [t.to(dev).requires_grad_(what == "forward+backward") for t in (q, k, v)]
    before = attention.CALLS.get(name, 0)
    out = mask.attend(*ins, enable_gqa=True)
    assert attention.CALLS[name] == before + 1  # this backend ran, not another
    tol = dict(atol=1e-5, rtol=1e-5) if device == "cpu" else dict(atol=2e-3, rtol=2e-3)  # TF32 matmuls on GPUs
    torch.testing.assert_close(out.double().cpu(), ref.detach(), **tol)
    if what == "forward+backward":
        (out * grad_out.float().to(dev)).sum().backward()
        for got, want in zip(ins, ref_in):
            torch.testing.assert_close(got.grad.double().cpu(), want.grad, **tol)


FAST = ["sdpa_masked", "flex_eager"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("docs", [True, False], ids=["documents", "causal"])
def test_backend_matches_dense_reference(name, docs, device):
    check_backend(name, DOC_IDS if docs else None, device)


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_causal_matches_dense_reference(device):
    check_backend("sdpa_causal", None, device)
    with pytest.raises(ValueError, match="documents"):
        attention.window_mask("auto", DOC_IDS, S, torch.device("cpu"), backend="sdpa_causal")


@pytest.mark.gpupath
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("docs", [True, False], ids=["documents", "causal"])
def test_compiled_flex_matches_dense_reference(docs, device):
    if "flex_compiled" not in attention.available_backends(torch.device(device)):
        pytest.skip("no C++ compiler for inductor's CPU flex kernel")
    check_backend("flex_compiled", DOC_IDS if docs else None, device)


def model(attn: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, attention=attn), 64, 64).eval()


def test_document_mask_built_once_per_batch(monkeypatch):
    built = []
    real = attention.document_mask
    monkeypatch.setattr(attention, "document_mask", lambda d: built.append(1) or real(d))
    calls = attention.CALLS.get("sdpa_masked", 0)
    model("sdpa")(torch.randint(0, 64, (B, S)), doc_ids=DOC_IDS)
    assert len(built) == 1 and attention.CALLS["sdpa_masked"] == calls + 3  # one mask, three layers use it


def test_auto_on_cpu_is_sdpa():
    dev = torch.device("cpu")
    assert attention.backend_for("auto", dev, True) == "sdpa_masked"
    assert attention.backend_for("auto", dev, False) == "sdpa_causal"
    assert attention.backend_for("auto", torch.device("cuda"), True) == "flex_compiled"
    assert attention.backend_for("flex", dev, False) == "flex_compiled"


def test_flex_on_cpu_refuses_training_never_falls_back():
    m = model("flex").train()
    ids = torch.randint(0, 64, (B, S))
    before = dict(attention.CALLS)
    with pytest.raises(UserError, match="no backward on cpu"):
        m(ids, doc_ids=DOC_IDS)
    assert attention.CALLS.get("sdpa_masked", 0) == before.get("sdpa_masked", 0)
    with pytest.raises(UserError, match="model.attention=auto or sdpa"):
        attention.require_backward_ok("flex", torch.device("cpu"))
    attention.require_backward_ok("sdpa", torch.device("cpu"))


@pytest.mark.gpupath
@pytest.mark.filterwarnings("ignore")
def test_model_attention_flex_runs_compiled_flex_on_cpu():
    """model.attention=flex on a CPU, no gradients (evaluation): compiled FlexAttention runs and matches SDPA."""
    if "flex_compiled" not in attention.available_backends(torch.device("cpu")):
        pytest.skip("no C++ compiler for inductor's CPU flex kernel")
    ids = torch.randint(0, 64, (B, S))
    with torch.no_grad():
        ref = model("sdpa")(ids, doc_ids=DOC_IDS)
        before = attention.CALLS.get("flex_compiled", 0)
        out = model("flex")(ids, doc_ids=DOC_IDS)
    assert attention.CALLS["flex_compiled"] == before + 3
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
