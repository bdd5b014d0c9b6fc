"""Attention of the decoder behind one door: one function per backend, one signature, one mask per batch.

    mask = window_mask(cfg.attention, doc_ids, S, device)   # once per batch, shared by every layer
    y = mask.attend(q, k, v, enable_gqa)                   # q (B, H, S, hd), k, v (B, Hkv, S_kv, hd) -> (B, H, S, hd)

Every backend is `fn(q, k, v, mask, enable_gqa) -> y`:
  sdpa_masked    F.scaled_dot_product_attention with a boolean (B, 1, S, S_kv) mask (True = may attend), or
                 None = every key (one decode step over a KV cache)
  sdpa_causal    SDPA is_causal (flash kernels on GPU); mask is None
  flex_compiled  FlexAttention compiled (the fused kernel), mask a BlockMask
  flex_eager     FlexAttention eager (materialises the scores; a reference), mask a BlockMask

Attention never crosses documents: with `doc_ids` a query sees a key only if both are in the same document and
the key is not later. `model.attention` picks the backend of full-window forwards (training, evaluation,
prefill without a cache):
  auto   flex_compiled on CUDA with doc_ids, else SDPA (masked with doc_ids, causal without)
  sdpa   SDPA (masked with doc_ids, causal without)
  flex   flex_compiled everywhere (a causal BlockMask without doc_ids). torch 2.13's FlexAttention has no
         backward on CPU, so a CPU forward that needs gradients is refused (`require_backward_ok`); it
         never falls back to SDPA silently.
KV-cache forwards (generation) always use SDPA: their masks are per-row lengths, not documents; in bfloat16 they
attend in float64 (`Mask.wide`), so that greedy decoding does not depend on the batch or the drafts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from proxylm.core.errors import UserError

_compiled_flex = None
CALLS: dict[str, int] = {}  # backend name -> calls in this process (tests check which backend really ran)


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


# ---- the backends: fn(q, k, v, mask, enable_gqa) -> (B, H, S, hd) --------------------------------------
def sdpa_masked(q, k, v, mask, enable_gqa: bool):
    """mask: bool (B, 1, S, S_kv) or None (every key)."""
    _count("sdpa_masked")
    # (torch 2.13's CPU SDPA beats two explicit matmuls for a decode step: 11 vs 26 us at dim 128, 200 keys)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


def sdpa_causal(q, k, v, mask, enable_gqa: bool):
    """mask: None (causal over S == S_kv positions)."""
    _count("sdpa_causal")
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)


def flex_compiled(q, k, v, mask: BlockMask, enable_gqa: bool):
    global _compiled_flex
    _count("flex_compiled")
    if _compiled_flex is None:  # eager flex_attention materialises the scores; the compiled one is the kernel
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=mask, enable_gqa=enable_gqa)


def flex_eager(q, k, v, mask: BlockMask, enable_gqa: bool):
    _count("flex_eager")
    with warnings.catch_warnings():  # torch warns that eager flex is unfused: that is what this backend is
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=mask, enable_gqa=enable_gqa)


BACKENDS: dict[str, Callable] = {"sdpa_masked": sdpa_masked, "sdpa_causal": sdpa_causal,
                                 "flex_compiled": flex_compiled, "flex_eager": flex_eager}


def flex_backward_supported(device: torch.device) -> bool:
    """torch 2.13 runs FlexAttention's backward on CUDA only (the CPU path raises NotImplementedError)."""
    return device.type != "cpu"


def require_backward_ok(attention: str, device: torch.device) -> None:
    """Refuse, before any work, a training run whose attention backend has no backward on `device`."""
    if attention == "flex" and not flex_backward_supported(device):
        raise UserError(f"model.attention=flex: FlexAttention in torch {torch.__version__} has no backward on "
                        f"{device.type}, so it cannot train there; use model.attention=auto or sdpa "
                        "(flex still runs for evaluation and generation on this device)")


# ---- masks ----------------------------------------------------------------------------------------
def document_block_mask(doc_ids: torch.Tensor | None, S: int | None = None, device=None) -> BlockMask:
    """doc_ids (B, S) -> FlexAttention BlockMask: same document and causal; doc_ids None: causal over S."""
    if doc_ids is None:
        return create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx, None, None, S, S, device=device)
    B, S = doc_ids.shape

    def same_doc_causal(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (kv_idx <= q_idx)

    return create_block_mask(same_doc_causal, B, None, S, S, device=doc_ids.device)


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """doc_ids (B, S) -> bool (B, 1, S, S), True where query i may attend key j (same document, j <= i)."""
    S = doc_ids.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool, device=doc_ids.device).tril()
    return (doc_ids[:, :, None] == doc_ids[:, None, :]).logical_and(causal).unsqueeze(1)


@dataclass(frozen=True)
class Mask:
    """A backend and its mask, built once per batch and handed to every layer.

    wide: 16-bit q, k, v are attended in float64 and the output rounded back (KV-cache forwards, i.e. decoding).
    SDPA's sums depend on how many keys a row is padded to and how many queries share a forward; in float32
    that moves a result by ~1e-7, which bfloat16's rounding of the output turns into a whole ulp now and then,
    so a row's greedy output would depend on its batch and on the drafts verified (BENCHMARKS.md, "bfloat16
    decoding"). In float64 such a difference is ~1e-16 and practically never crosses a bfloat16 rounding boundary."""
    backend: str  # a key of BACKENDS
    mask: torch.Tensor | BlockMask | None = None
    wide: bool = False

    def attend(self, q, k, v, enable_gqa: bool):
        if self.backend.startswith("flex") and q.requires_grad and not flex_backward_supported(q.device):
            require_backward_ok("flex", q.device)  # raises: never another backend silently
        if self.wide and (low := _low_precision(q, v)) is not None:
            return BACKENDS[self.backend](q.double(), k.double(), v.double(), self.mask, enable_gqa).to(low)
        return BACKENDS[self.backend](q, k, v, self.mask, enable_gqa)


def _low_precision(q, v) -> torch.dtype | None:
    """The 16-bit dtype attention would run in (autocast's, or the inputs'), or None in float32/64."""
    if torch.is_autocast_enabled(q.device.type):
        low = torch.get_autocast_dtype(q.device.type)
        return low if low in (torch.bfloat16, torch.float16) else None
    return q.dtype if q.dtype in (torch.bfloat16, torch.float16) else None


def backend_for(attention: str, device: torch.device, has_doc_ids: bool) -> str:
    """The backend of a full-window forward (see the module docstring)."""
    if attention == "flex" or (attention == "auto" and device.type == "cuda" and has_doc_ids):
        return "flex_compiled"
    return "sdpa_masked" if has_doc_ids else "sdpa_causal"


def window_mask(attention: str, doc_ids: torch.Tensor | None, S: int, device: torch.device,
                backend: str | None = None) -> Mask:
    """The mask of a full window of S positions (doc_ids (B, S) or None: plain causal). backend: force one of
    BACKENDS (tests, benchmarks); default from `attention` (auto | sdpa | flex)."""
    backend = backend or backend_for(attention, device, doc_ids is not None)
    if backend.startswith("flex"):
        return Mask(backend, document_block_mask(doc_ids, S, device))
    if doc_ids is not None:
        if backend == "sdpa_causal":
            raise ValueError("sdpa_causal cannot keep documents apart: use sdpa_masked with doc_ids")
        return Mask(backend, document_mask(doc_ids))
    if S == 1:
        return Mask("sdpa_masked", None)
    if backend == "sdpa_masked":  # forced: the causal mask spelled out
        return Mask(backend, torch.ones(S, S, dtype=torch.bool, device=device).tril())
    return Mask("sdpa_causal", None)


def cache_mask(visible: torch.Tensor | None, causal: bool = False) -> Mask:
    """A KV-cache forward (wide, see Mask): `causal`, a prefill of several positions; else visible (B, 1, S,
    pos+S) bool, or None (one new position sees every cached key)."""
    if causal:
        return Mask("sdpa_causal", None, wide=True)
    return Mask("sdpa_masked", visible, wide=True)


def available_backends(device: torch.device) -> dict[str, str]:
    """Backend name -> what it runs on `device`: "forward+backward", "forward" (no backward there), or absent
    when it cannot run (compiled flex needs a C++ compiler on CPU, Triton on CUDA)."""
    import shutil

    out = {"sdpa_masked": "forward+backward", "sdpa_causal": "forward+backward"}
    flex_what = "forward+backward" if flex_backward_supported(device) else "forward"
    out["flex_eager"] = flex_what
    if device.type == "cuda" or shutil.which("g++") or shutil.which("c++"):
        out["flex_compiled"] = flex_what
    return out
