"""The batched decoding loop behind proxylm/eval/generate.py: rows of prompts over one KV cache with per-row
lengths, plain (one id per row and forward) or self-speculative (the next id plus k drafts; see
proxylm/eval/speculative.py: drafts from extra heads, or copied from the row's own context), and the sampling
transform both use.

    dec = Decoder(model, interface, heads, temperature, top_p, GenStats(), lookup=8)
    dec.run([Row(0, ids, interface, max_bytes, max_new, stops, generator, on_bytes)], batch_size=8,
            on_done=lambda i, out: ...)
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import asdict, dataclass, field

import torch

from proxylm.eval.speculative import ContextLookup, Drafter, accept_drafts, accepted_greedy


def sampling_probs(logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """logits (..., V), allowed (V,) bool -> the distribution (..., V) sampling draws from (temperature > 0)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        p_sorted, order = probs.sort(dim=-1, descending=True)
        # drop an id when the ids ranked above it already reach top_p (the top id always stays)
        p_sorted = p_sorted.masked_fill(p_sorted.cumsum(-1) - p_sorted >= top_p, 0.0)
        p_sorted = p_sorted / p_sorted.sum(-1, keepdim=True)  # a distribution: speculative ratios need it
        probs = torch.zeros_like(probs).scatter_(-1, order, p_sorted)
    return probs


def sample_next(logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> int:
    """logits (V,), allowed (V,) bool -> the next id (greedy when temperature == 0)."""
    if temperature == 0:
        return int(logits.float().masked_fill(~allowed, float("-inf")).argmax())
    return int(torch.multinomial(sampling_probs(logits, allowed, temperature, top_p), 1, generator=generator))


@dataclass
class GenStats:
    """What a generate/generate_batch call did (pass one in as `stats=`; counts add up over calls)."""

    speculative: bool = False  # drafts from extra heads were used
    fallback: str = ""  # why speculative decoding was asked for but not used
    drafts: int = 0  # drafts per row and forward (extra heads used)
    lookup: int = 0  # most drafts copied from the context per row and forward (0: no context lookup)
    lookup_steps: int = 0  # (row, forward) pairs fed drafts from the context instead of the heads
    lookup_accepted: int = 0  # of `accepted`, drafts from the context
    prompts: int = 0
    prefills: int = 0  # prompt forwards (one per distinct prompt in a row)
    forwards: int = 0  # decode forwards, each over every active row
    row_steps: int = 0  # (row, decode forward) pairs
    tokens: int = 0  # ids emitted (stop ids excluded)
    accepted: int = 0  # drafts accepted
    accepted_at: list[int] = field(default_factory=list)  # accepted_at[i]: times draft i (offset i+2) was kept

    def as_dict(self) -> dict:
        d = asdict(self)
        d["kept_per_step"] = 1 + self.accepted / self.row_steps if self.row_steps else 0.0
        return d


def _decode(interface, ids: list[int], previous: bytes) -> bytes:
    try:
        return interface.decode(ids)
    except Exception:  # a codec stream that is not decodable yet (e.g. half a gzip stream): wait for more ids
        return previous


def _earliest_stop(text: bytes, stops: list[bytes]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


_PIECES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pieces(interface) -> dict[int, bytes]:
    """Memo of interface.decode([id]) per interface (a raw-byte interface decodes id by id)."""
    try:
        return _PIECES.setdefault(interface, {})
    except TypeError:  # not weak-referenceable
        return {}


class Row:
    """One prompt's decoding state: ids in, ids out, the text so far, stop strings and streaming."""

    def __init__(self, index: int, ids, interface, max_bytes: int, max_new: int, stops: list[bytes],
                 generator, on_bytes):
        self.index, self.ids, self.interface = index, ids, interface
        self.max_bytes, self.max_new, self.stops = max_bytes, max_new, stops
        self.generator, self.on_bytes = generator, on_bytes
        self.stop_ids = set(int(i) for i in interface.stop_ids)
        self.hold = max((len(s) for s in stops), default=1) - 1  # bytes that might still begin a stop string
        # raw bytes decode id by id; a codec stream (token models) is decoded whole every time
        self.incremental = getattr(interface, "kind", None) == "bytes"
        self.pieces = _pieces(interface) if self.incremental else {}
        self.out_ids: list[int] = []
        self.text, self.emitted, self.done = b"", 0, False
        self.nxt, self.drafts, self.q = 0, [], None  # the chosen next id, its drafts, their distributions
        self.lookup: ContextLookup | None = None  # greedy drafts from prompt ids + out_ids (set by the Decoder)

    def push(self, tok: int) -> bool:
        """Take one decoded id; True when the row is done (a stop id ends it without being emitted)."""
        if tok in self.stop_ids:
            self.done = True
            return True
        self.out_ids.append(tok)
        if self.incremental:
            start = max(0, len(self.text) - self.hold)  # a new stop string must end in the new bytes
            piece = self.pieces.get(tok)
            if piece is None:
                piece = self.pieces[tok] = self.interface.decode([tok])
            self.text += piece
            cut = _earliest_stop(self.text[start:], self.stops)
            cut = None if cut is None else start + cut
        else:
            self.text = _decode(self.interface, self.out_ids, self.text)
            cut = _earliest_stop(self.text, self.stops)
        done = cut is not None or len(self.text) >= self.max_bytes or len(self.out_ids) >= self.max_new
        if cut is not None:
            self.text = self.text[:cut]
        self.text = self.text[:self.max_bytes]
        if not done and self.on_bytes is not None and len(self.text) - self.hold > self.emitted:
            self.on_bytes(self.text[self.emitted:len(self.text) - self.hold])
            self.emitted = len(self.text) - self.hold
        self.done = done
        return done

    def finish(self) -> bytes:
        if self.on_bytes is not None and len(self.text) > self.emitted:
            self.on_bytes(self.text[self.emitted:])
            self.emitted = len(self.text)
        return self.text


class Decoder:
    """Decodes rows in a batch with one shared per-row-length KV cache (plain: 1 id per row and forward;
    speculative: the next id plus k drafts per row and forward). Logits are computed for the allowed ids
    only (index space 0..n-1 over `self.ids`): the same choices as masking the full vocabulary, at a
    fraction of the output layer's cost for a proxy model."""

    def __init__(self, model, interface, heads, temperature: float, top_p: float, stats: GenStats,
                 lookup: int = 0):
        self.model, self.stats = model, stats
        self.lookup = lookup if temperature == 0 else 0  # exact for greedy only (drafts without a distribution)
        stats.lookup = self.lookup
        self.temperature, self.top_p = temperature, top_p
        self.device = next(model.parameters()).device
        allowed = interface.allowed_ids(model.vocab_size).to(self.device)  # (V,)
        self.ids = allowed.nonzero().view(-1)  # (n,) the ids generation may emit
        self.id_list = self.ids.tolist()
        self.every = torch.ones(len(self.ids), dtype=torch.bool, device=self.device)  # (n,) all allowed
        # hidden (..., D) -> head-0 logits (..., n) float32 over those ids; their rows of head 0 gathered once
        # (not a 25 us gather at every forward)
        self.logits = model.head_logits(self.ids)
        self.k = len(heads)
        self.drafter = Drafter(heads, self.ids)
        self._last = None  # (prompt ids, cache, hidden, logits) of the last prefill

    def _sample(self, logits: torch.Tensor, r: Row) -> int:
        """logits (n,) -> a sampled id (greedy: the argmax)."""
        return self.id_list[sample_next(logits, self.every, self.temperature, self.top_p, r.generator)]

    def _choose(self, rows: list[Row], hidden: torch.Tensor, logits0: torch.Tensor | None) -> None:
        """Set each row's drafts from hidden (B, D) (and its next id from logits0 (B, n) when given)."""
        greedy = self.temperature == 0
        if logits0 is not None:
            if greedy:
                nxt = self.ids[logits0.argmax(-1)].tolist()
            else:
                nxt = [self._sample(logits0[b], r) for b, r in enumerate(rows)]
            for r, t in zip(rows, nxt):
                r.nxt = t
        if not self.k:
            return
        dl = self.drafter.logits(hidden)  # (B, k, n)
        if greedy:
            for r, d in zip(rows, self.ids[dl.argmax(-1)].tolist()):
                r.drafts = d
        else:
            q = sampling_probs(dl, self.every, self.temperature, self.top_p)  # (B, k, n)
            for b, r in enumerate(rows):
                r.q = q[b]
                r.draft_index = torch.multinomial(q[b], 1, generator=r.generator).view(-1).tolist()
                r.drafts = [self.id_list[i] for i in r.draft_index]

    def prefill(self, row: Row):
        """Run the prompt alone; -> its (1, n) cache, with the row's next id and drafts chosen. The same
        prompt again (n samples of one problem) reuses the last prefill: only the choices are per row."""
        key = row.ids.tobytes()
        if self._last is None or self._last[0] != key:
            x = torch.as_tensor(row.ids, dtype=torch.long, device=self.device).view(1, -1)  # (1, n)
            cache = self.model.new_kv_cache(1, x.shape[1])
            h = self.model(x, kv_cache=cache)[:, -1]  # (1, D)
            self.stats.prefills += 1
            self._last = (key, cache, h, self.logits(h))
        _, cache, h, logits = self._last
        self._choose([row], h, logits)
        return cache

    def _drafts(self, rows: list[Row]) -> tuple[list[list[int]], list[bool]]:
        """Each row's drafts for this forward, and whether they were copied: from its context where its last
        ids occurred before, else its heads' drafts."""
        if not self.lookup:
            return [r.drafts for r in rows], [False] * len(rows)
        fed, copied = [], []
        for r in rows:
            r.lookup.extend(r.out_ids[len(r.lookup.ids) - len(r.ids):])  # the ids emitted since the last forward
            found = r.lookup.propose()
            fed.append(found or r.drafts)
            copied.append(bool(found))
        self.stats.lookup_steps += sum(copied)
        return fed, copied

    def step(self, rows: list[Row], cache) -> None:
        """One forward over every row: feed [next id, drafts], keep the accepted prefix, push the ids."""
        fed, copied = self._drafts(rows)
        width = max(map(len, fed))  # rows with fewer drafts are padded; a pad is never accepted
        x = torch.tensor([[r.nxt] + d + [r.nxt] * (width - len(d)) for r, d in zip(rows, fed)], dtype=torch.long,
                         device=self.device)  # (B, 1+width)
        before = list(cache.lengths)
        hidden = self.model(x, kv_cache=cache)  # (B, 1+width, D)
        logits = self.logits(hidden)  # (B, 1+width, n)
        B = len(rows)
        if self.temperature == 0:
            target = self.ids[logits.argmax(-1)]  # (B, 1+width) ids
            a = accepted_greedy(x[:, 1:], target)  # (B,)
            if width:
                a = torch.minimum(a, torch.tensor([len(d) for d in fed], device=self.device))
            nxt = target.gather(1, a.unsqueeze(1)).view(-1).tolist()
            a = a.tolist()
        else:
            a, nxt = [], []
            for b, r in enumerate(rows):
                if self.k:
                    p = sampling_probs(logits[b], self.every, self.temperature, self.top_p)  # (1+k, n)
                    ab, t = accept_drafts(p, r.q, r.draft_index, r.generator)
                    t = self.id_list[t]
                else:
                    ab, t = 0, self._sample(logits[b, 0], r)
                a.append(ab)
                nxt.append(t)
        cache.set_lengths([n + 1 + ab for n, ab in zip(before, a)])  # roll back the rejected drafts
        s = self.stats
        s.forwards += 1
        s.row_steps += B
        s.accepted += sum(a)
        for was_copied, ab in zip(copied, a):
            s.lookup_accepted += ab if was_copied else 0
            for i in range(ab):
                s.accepted_at[i] += 1
        if self.k:  # the next drafts come from the last kept position of each row
            last = hidden[torch.arange(B, device=self.device), torch.tensor(a, device=self.device)]  # (B, D)
            self._choose(rows, last, None)
        for r, d_fed, ab, t in zip(rows, fed, a, nxt):
            done = False
            for d in d_fed[:ab]:
                if r.push(d):
                    done = True
                    break
            if not done:
                r.nxt = t
                r.push(t)

    def run(self, rows: list[Row], batch_size: int, on_done) -> None:
        queue = deque(rows)
        width = max(self.k, self.lookup)  # most drafts per row and forward
        self.stats.accepted_at += [0] * max(0, width - len(self.stats.accepted_at))
        cap = max(len(r.ids) + r.max_new for r in rows) + width + 1
        slots: list[Row | None] = [None] * min(batch_size, len(rows))
        cache = self.model.new_kv_cache(len(slots), cap)

        def finish(r: Row) -> None:
            out = r.finish()
            self.stats.tokens += len(r.out_ids)
            if on_done is not None:
                on_done(r.index, out)

        def refill(slot: int) -> None:
            while queue:
                r = queue.popleft()
                row_cache = self.prefill(r)
                if r.push(r.nxt):
                    finish(r)
                    continue
                if self.lookup:
                    r.lookup = ContextLookup(r.ids.tolist(), self.lookup)
                cache.copy_row(slot, row_cache)
                slots[slot] = r
                return

        for i in range(len(slots)):
            refill(i)
        while True:
            if None in slots:  # nothing left to refill with: drop the finished rows from the batch
                keep = [i for i, r in enumerate(slots) if r is not None]
                if not keep:
                    return
                cache.keep_rows(keep)
                slots = [slots[i] for i in keep]
            self.step(slots, cache)
            for i, r in enumerate(slots):
                if r.done:
                    finish(r)
                    slots[i] = None
                    refill(i)
