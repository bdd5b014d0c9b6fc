"""Losses of the prediction heads: multi-head weighting with raw-byte heads, and a chunked cross-entropy.

    out = multi_head_loss(hidden, tokens, doc_ids, main_heads=[w0, w1], raw_heads=[r0],
                          raw_vocab_size=rep.raw_vocab_size, chunk=2048)
    (out.loss_sum / out.weight_sum).backward()      # = out.loss

Conventions (docs/contracts.md): `hidden` is (B, S, D) final-normed; `tokens` and `doc_ids` are (B, S+F) with
F >= H + H_raw; head k (main heads first, then raw heads) targets `tokens[:, k+1 : S+k+1]`. A target counts only
if it lies in the same document as its input position.

Weighting (reference design 3.4, path 3), with H main heads, H_raw raw heads, T = H + H_raw:
  * a *raw position* is one whose counted targets are all < raw_vocab_size (raw bytes or specials);
    targets that do not count (they lie in the next document) are ignored for this decision, and a position
    whose head-0 target does not count is no raw position;
  * at a raw position every head, main and raw, weighs 1/T (an average over all T heads);
  * at any other position each main head weighs 1/H and the raw heads are not evaluated at all;
  * a target that does not count weighs 0 (its head simply drops out; weights are not renormalised);
  * loss_sum = sum of weight * CE, weight_sum = number of positions whose head-0 target counts.
With H_raw = 0 every position weighs its main heads 1/H (plain multi-token prediction).

Chunked CE (reference 3.5): logits are computed `chunk` positions at a time in fp32, and each chunk is wrapped in
`torch.utils.checkpoint`, so autograd keeps only the chunk's inputs, never its (chunk, V) logits; the backward
pass recomputes one chunk's logits at a time. Peak logits memory is therefore chunk * V * 4 bytes instead of
B * S * V * 4 (32k positions x 65k vocab would be 8.6 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class LossOutput:
    """What `Transformer.loss` returns. Unpacks as the contract's 4-tuple:
    `loss_sum, weight_sum, nll, counted = out`."""

    loss_sum: torch.Tensor  # () differentiable sum of weight * CE over positions and heads
    weight_sum: torch.Tensor  # () float: positions whose head-0 target counts (the divisor)
    nll: torch.Tensor  # (B, S) head-0 nll in nats, detached, 0 where not counted
    counted: torch.Tensor  # (B, S) bool: head-0 target counts
    head_nll_sum: torch.Tensor | None = None  # (T,) detached sum of CE per head over positions it was scored at
    head_count: torch.Tensor | None = None  # (T,) number of positions each head was scored at
    n_raw_positions: torch.Tensor | None = None  # () positions where the raw heads ran (for flops.py)
    n_bridge_positions: torch.Tensor | None = None  # () positions the output bridge scored (model/bridge.py)
    bridge_nll_sum: torch.Tensor | None = None  # () detached CE sum of those positions

    def __iter__(self):
        return iter((self.loss_sum, self.weight_sum, self.nll, self.counted))

    @property
    def loss(self) -> torch.Tensor:
        """Mean loss of this batch alone (for gradient accumulation, sum loss_sum and weight_sum instead)."""
        return self.loss_sum / self.weight_sum.clamp(min=1)


def _ce_chunk(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, w: torch.Tensor):
    logits = F.linear(h, weight).float()  # (n, V) fp32: the only logits alive at a time
    nll = F.cross_entropy(logits, targets, reduction="none")  # (n,)
    return (nll * w).sum(), nll.detach()


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, w: torch.Tensor,
                          chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_n w[n] * CE(h[n] @ weight.T, targets[n]) without materialising all logits.

    h (N, D), weight (V, D), targets (N,) int64, w (N,) float -> (loss_sum (), nll (N,) detached)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    # checkpoint only when a backward will happen; otherwise nothing is saved anyway
    needs_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    # zero rows (e.g. no raw positions in this micro-batch): keep the weight in the graph so DDP/FSDP
    # still see a (zero) gradient for it on every rank
    total = (weight.sum() * 0.0).float() if h.shape[0] == 0 and needs_grad else h.new_zeros((), dtype=torch.float32)
    nlls = []
    for start in range(0, h.shape[0], chunk):
        args = (h[start:start + chunk], weight, targets[start:start + chunk], w[start:start + chunk])
        s, nll = checkpoint(_ce_chunk, *args, use_reentrant=False) if needs_grad else _ce_chunk(*args)
        total = total + s
        nlls.append(nll)
    nll = torch.cat(nlls) if nlls else h.new_zeros((0,), dtype=torch.float32)
    return total, nll


def head_targets(tokens: torch.Tensor, doc_ids: torch.Tensor, seq_len: int, n_heads: int):
    """tokens, doc_ids (B, S+F) -> targets (B, S, n_heads) int64, valid (B, S, n_heads) bool.

    Head k's target is tokens[:, k+1 : S+k+1]; it is valid when in the same document as the input position."""
    if tokens.shape != doc_ids.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and doc_ids {tuple(doc_ids.shape)} differ")
    if tokens.shape[1] < seq_len + n_heads:
        raise ValueError(f"{n_heads} heads need tokens of length >= S + {n_heads} = {seq_len + n_heads}, "
                         f"got {tokens.shape[1]}")
    targets = torch.stack([tokens[:, k + 1:seq_len + k + 1] for k in range(n_heads)], dim=-1)
    same_doc = [doc_ids[:, k + 1:seq_len + k + 1] == doc_ids[:, :seq_len] for k in range(n_heads)]
    return targets, torch.stack(same_doc, dim=-1)


def head_weights(targets: torch.Tensor, valid: torch.Tensor, n_main: int, raw_vocab_size: int):
    """targets, valid (B, S, T) -> weights (B, S, T) float32, raw_position (B, S) bool (see module docstring)."""
    n_total = targets.shape[-1]
    n_raw = n_total - n_main
    if n_raw > 0:
        # positions without any counted target (last of a document) are no raw positions: nothing to score
        raw_pos = ((targets < raw_vocab_size) | ~valid).all(dim=-1) & valid[..., 0]  # (B, S)
    else:
        raw_pos = torch.zeros(targets.shape[:-1], dtype=torch.bool, device=targets.device)
    rp = raw_pos.unsqueeze(-1).float()  # (B, S, 1)
    w_main = rp / n_total + (1 - rp) / n_main  # (B, S, 1)
    w_raw = rp / n_total
    w = torch.cat([w_main.expand(-1, -1, n_main), w_raw.expand(-1, -1, n_raw)], dim=-1)  # (B, S, T)
    return w * valid.float(), raw_pos


def multi_head_loss(hidden: torch.Tensor, tokens: torch.Tensor, doc_ids: torch.Tensor,
                    main_heads: list[torch.Tensor], raw_heads: list[torch.Tensor],
                    raw_vocab_size: int, chunk: int) -> LossOutput:
    """hidden (B, S, D); tokens, doc_ids (B, S+F); main_heads: H weights (V, D); raw_heads: H_raw weights
    (raw_vocab_size, D). Returns LossOutput (see the module docstring for the weighting)."""
    B, S, D = hidden.shape
    H, R = len(main_heads), len(raw_heads)
    targets, valid = head_targets(tokens, doc_ids, S, H + R)  # (B, S, T)
    w, raw_pos = head_weights(targets, valid, H, raw_vocab_size)  # (B, S, T), (B, S)
    N = B * S
    h = hidden.reshape(N, D)
    loss_sum = hidden.new_zeros((), dtype=torch.float32)
    head_nll, head_count = [], []
    nll0 = None
    for k, weight in enumerate(main_heads):
        s, nll = chunked_cross_entropy(h, weight, targets[..., k].reshape(N), w[..., k].reshape(N), chunk)
        loss_sum = loss_sum + s
        vk = valid[..., k].reshape(N)
        head_nll.append((nll * vk).sum())
        head_count.append(vk.sum())
        if k == 0:
            nll0 = (nll * vk).view(B, S)
    if R:
        rows = raw_pos.reshape(N).nonzero().squeeze(1)  # (N_raw,) raw heads run only here (as flops.py counts)
        h_raw = h.index_select(0, rows)  # (N_raw, D)
        for j, weight in enumerate(raw_heads):
            k = H + j
            t = targets[..., k].reshape(N)[rows]
            t = torch.where(t < raw_vocab_size, t, 0)  # an uncounted target (next document) may lie outside
            s, nll = chunked_cross_entropy(h_raw, weight, t, w[..., k].reshape(N)[rows], chunk)
            loss_sum = loss_sum + s
            vk = valid[..., k].reshape(N)[rows]
            head_nll.append((nll * vk).sum())
            head_count.append(vk.sum())
    counted = valid[..., 0]
    return LossOutput(loss_sum=loss_sum, weight_sum=counted.sum().float(), nll=nll0, counted=counted,
                      head_nll_sum=torch.stack(head_nll), head_count=torch.stack(head_count),
                      n_raw_positions=raw_pos.sum())
