"""Self-speculative decoding with the model's own extra heads (draft, verify in one forward, keep a prefix).

A model with extra heads (main heads 1.. of `model.n_pred_heads`, then the raw-byte heads `model.n_raw_heads`;
proxylm/model/heads.py) predicts, at the position of the last kept id, the ids 1, 2, .. T ahead. Head 0's id
(the next one) is the model's own choice; heads 1..T-1 draft the T-1 ids after it:

    heads = draft_heads(model, interface)                     # extra heads usable as drafts, in offset order
    q_logits = Drafter(heads, allowed_index).logits(h_last) # (N, T-1, n): drafts for offsets 2 .. T
    h = model([next, d_1 .. d_{T-1}], kv_cache=cache)        # one forward verifies every draft
    a = accepted_greedy(drafts, head0_argmax_of(h))          # greedy: longest prefix equal to head 0's argmax
    a, nxt = accept_drafts(p, q, drafts, generator)          # sampling: the speculative sampling rule
    cache.set_lengths([len_before + 1 + a])                  # drop the rejected positions from the cache

Greedy: a draft is kept only if it equals head 0's argmax given everything before it, so the output is plain
greedy decoding's, byte for byte (up to float rounding between the one-position and the k-position forward,
which only matters at exact ties of the two best logits). Sampling (Leviathan et al. 2023; Chen et al.
2023): draft d_i ~ q_i (the extra head's distribution under the same temperature / top-p / allowed-ids
transform as plain sampling) is accepted with probability min(1, p_i(d_i) / q_i(d_i)); on the first
rejection the id is drawn from norm(max(0, p_i - q_i)) and the step ends; when every draft is accepted one
more id is drawn from p_T. Each emitted id is then distributed exactly as the model's p given the ids before
it, so the output distribution is the model's (the realisation for a seed differs from plain sampling's).

Context lookup (greedy only; "prompt lookup decoding", Saxena 2023): the ids that followed the most recent
earlier occurrence of the row's last n ids (n = 8, 6, 4, 3 tried in turn) are proposed as drafts instead of
the heads' when such an occurrence exists. Code repeats itself (names, indentation, whole lines), the drafts
cost nothing, work for every model (heads or not, bytes or tokens) and are verified like any other, so
greedy output is unchanged:

    lookup = ContextLookup(prompt_ids, max_len=8)
    lookup.extend(new_ids)          # every emitted id
    drafts = lookup.propose()       # [] when the last ids never occurred before

Raw heads predict raw-byte ids only (ids < raw_vocab_size) and are trained at raw positions only, so they
draft for the raw-byte interface alone; a token model's drafts come from its main heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draft_heads(model, interface, max_drafts: int | None = None) -> list[torch.Tensor]:
    """The weights (V_h, D) of the extra heads that can draft for `interface`, in offset order (offset 2 first)."""
    heads = [h.weight for h in getattr(model, "pred_heads", ())]
    if getattr(interface, "kind", None) == "bytes":
        heads += [h.weight for h in getattr(model, "raw_heads", ())]
    return heads if max_drafts is None else heads[:max(0, max_drafts)]


class Drafter:
    """Draft logits of the extra heads over the ids generation may emit (an allowed-ids index space).

        drafter = Drafter(draft_heads(model, interface), allowed_index)   # allowed_index (n,) ids
        drafter.logits(h)        # h (N, D) -> (N, k, n) float32; -inf past a raw head's vocabulary

    The heads' rows of those ids are gathered and stacked into one (k*n, D) matrix, so drafting is one
    matmul per forward; beyond STACK_BYTES (a token model's whole vocabulary) each head runs on its own."""

    STACK_BYTES = 64 << 20

    def __init__(self, heads: list[torch.Tensor], ids: torch.Tensor):
        self.heads, self.ids, self.k, self.n = heads, ids, len(heads), len(ids)
        self.weight = None
        if not heads:
            return
        # a raw head has fewer rows than the vocabulary: ids past them are impossible drafts
        self.valid = torch.stack([ids < h.shape[0] for h in heads])  # (k, n)
        self.rows = [ids.clamp(max=h.shape[0] - 1) for h in heads]
        D = heads[0].shape[1]
        if self.k * self.n * D * heads[0].element_size() <= self.STACK_BYTES:
            self.weight = torch.cat([h[r] for h, r in zip(heads, self.rows)])  # (k*n, D)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (N, D) -> (N, k, n) float32."""
        if self.weight is not None:
            out = F.linear(hidden, self.weight).float().view(-1, self.k, self.n)
        else:
            out = torch.stack([F.linear(hidden, h[r]).float() for h, r in zip(self.heads, self.rows)], dim=1)
        return out.masked_fill(~self.valid, float("-inf"))


def accepted_greedy(drafts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """drafts (B, k), target (B, k+1) head-0 argmax at the k+1 fed positions -> (B,) number of leading drafts
    equal to the target before them (draft i is checked against target i: the choice after the id before it)."""
    if drafts.shape[1] == 0:
        return torch.zeros(drafts.shape[0], dtype=torch.long, device=drafts.device)
    return (drafts == target[:, :-1]).long().cumprod(dim=1).sum(dim=1)


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: list[int],
                  generator: torch.Generator | None) -> tuple[int, int]:
    """The speculative sampling rule for one row.

    p (k+1, V): the model's sampling distribution at each fed position (p[i] is the distribution of the id
    that draft i proposes; p[k] follows the last draft); q (k, V): the distributions the drafts were drawn
    from; drafts: k ids. Returns (accepted drafts a, the next id): the next id comes from the residual
    norm(max(0, p[a] - q[a])) after a rejection, from p[k] when all k were accepted."""
    k = len(drafts)
    if k:
        idx = torch.tensor(drafts, device=p.device).unsqueeze(1)  # (k, 1)
        ratio = (p[:k].gather(1, idx) / q.gather(1, idx)).squeeze(1)  # (k,) q > 0: each draft was drawn from q
        u = torch.rand(k, generator=generator, device=p.device)
        rejected = (u >= ratio).nonzero()
        if len(rejected):
            a = int(rejected[0])
            residual = (p[a] - q[a]).clamp(min=0)
            if float(residual.sum()) <= 0:  # p == q up to rounding: a rejection is (almost) impossible
                residual = p[a]
            return a, int(torch.multinomial(residual, 1, generator=generator))
    return k, int(torch.multinomial(p[k], 1, generator=generator))


class ContextLookup:
    """Drafts copied from the row's own context: the ids after the most recent earlier occurrence of its
    longest suffix n-gram (n in `ngrams`, longest first), at most `max_len` of them. Indexed as ids arrive
    (one dict entry per n and id), so a proposal costs a few dict lookups, not a scan."""

    NGRAMS = (8, 6, 4, 3)

    def __init__(self, ids, max_len: int, ngrams: tuple[int, ...] = NGRAMS):
        self.max_len, self.ngrams = max_len, ngrams
        self.ids: list[int] = []
        self.follower: dict[int, dict[tuple, int]] = {n: {} for n in ngrams}  # n-gram -> index of the id after it
        self.extend(ids)

    def extend(self, ids) -> None:
        for t in ids:
            p = len(self.ids)  # the n-gram ending just before p is now followed by the id at p
            for n in self.ngrams:
                if p >= n:
                    self.follower[n][tuple(self.ids[p - n:p])] = p
            self.ids.append(int(t))

    def propose(self) -> list[int]:
        p = len(self.ids)
        for n in self.ngrams:
            if p >= n:
                start = self.follower[n].get(tuple(self.ids[p - n:]))
                if start is not None:  # < p: the current suffix has no follower yet
                    return self.ids[start:start + self.max_len]
        return []
