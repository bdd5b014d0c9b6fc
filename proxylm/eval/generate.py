"""Text generation from a trained model with a KV cache: one prompt or many per forward, plain or
self-speculative (paper 1.7: prompt `<bos><raw>` + bytes, output bytes).

    iface = interface_for(rep, codec, views_cfg)   # proxylm/core/interface.py
    text = generate(model, iface, b"def add(a, b):\\n", max_bytes=256, temperature=0.2, top_p=0.95,
                    stop=["\\ndef "], seed=0, on_bytes=lambda b: sys.stdout.buffer.write(b))
    outs = generate_batch(model, iface, [p0, p1, p2], max_bytes=256, stop=["\\ndef "], seeds=[7, 8, 9],
                          batch_size=8, on_done=lambda i, out: ...)  # outs[i] == generate(.., p_i, seed=seeds[i])

Decoding: greedy when temperature == 0, else sampling from softmax(logits / temperature) cut to the smallest
set of ids whose probability reaches top_p, drawn with a torch.Generator seeded by the row's seed (same seed,
same output). Logits are restricted to interface.allowed_ids (raw bytes + stop ids for byte models): no
compressed id or other special is ever emitted.
Ending: a stop id (`</raw>`, `<eos>`; not part of the output), a stop string (the output is cut just before
it), max_bytes of output, max_new_tokens model ids, or the context filling up.
Streaming: `on_bytes(chunk)` receives the output as it grows; bytes that could still turn out to start a stop
string are held back, so the concatenated chunks always equal the returned bytes.
Context: a prompt longer than max_seq_len - max_new_tokens keeps only its last ids. use_cache=False recomputes
the whole sequence every step (slow; plain decoding only: the reference the cached path must match exactly).

Speculative decoding (proxylm/eval/speculative.py): `speculative=None` (default) uses the model's extra heads
as drafts when that is exact, i.e. greedy decoding with at least one usable extra head; True also for sampling
(the speculative sampling rule keeps the model's distribution); False never. Asked for but impossible (no
usable head, or use_cache=False) it falls back to plain decoding and says why in `stats.fallback`.
Batches (generate_batch): up to batch_size rows decode together; each prompt is prefilled alone into its
row of a shared cache (rows have their own lengths, positions and stop strings), a finished row is refilled
with the next prompt, and rows are dropped from the batch once no prompt is left. Each row's output is the
one generate() gives for that prompt and seed (rows do not interact).
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from proxylm.eval.speculative import Drafter, accept_drafts, accepted_greedy, draft_heads


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


def _stop_bytes(stop: Iterable[str | bytes]) -> list[bytes]:
    return [s.encode() if isinstance(s, str) else bytes(s) for s in stop if s]


_PIECES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pieces(interface) -> dict[int, bytes]:
    """Memo of interface.decode([id]) per interface (a raw-byte interface decodes id by id)."""
    try:
        return _PIECES.setdefault(interface, {})
    except TypeError:  # not weak-referenceable
        return {}


class _Row:
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


class _Decoder:
    """Decodes rows in a batch with one shared per-row-length KV cache (plain: 1 id per row and forward;
    speculative: the next id plus k drafts per row and forward)."""

    def __init__(self, model, interface, heads, temperature: float, top_p: float, stats: GenStats):
        self.model, self.stats = model, stats
        self.temperature, self.top_p = temperature, top_p
        self.device = next(model.parameters()).device
        self.allowed = interface.allowed_ids(model.vocab_size).to(self.device)  # (V,)
        self.k = len(heads)
        self.drafter = Drafter(heads, model.vocab_size, self.allowed)
        self._last = None  # (prompt ids, cache, hidden, logits) of the last prefill

    def _choose(self, rows: list[_Row], hidden: torch.Tensor, logits0: torch.Tensor | None) -> None:
        """Set each row's drafts from hidden (B, D) (and its next id from logits0 (B, V) when given)."""
        greedy = self.temperature == 0
        if logits0 is not None:
            if greedy:
                nxt = logits0.masked_fill(~self.allowed, float("-inf")).argmax(-1).tolist()
            else:
                nxt = [sample_next(logits0[b], self.allowed, self.temperature, self.top_p, r.generator)
                       for b, r in enumerate(rows)]
            for r, t in zip(rows, nxt):
                r.nxt = t
        if not self.k:
            return
        dl = self.drafter.logits(hidden)  # (B, k, V), -inf where not allowed
        if greedy:
            for r, d in zip(rows, dl.argmax(-1).tolist()):
                r.drafts = d
        else:
            q = sampling_probs(dl, self.allowed, self.temperature, self.top_p)  # (B, k, V)
            for b, r in enumerate(rows):
                r.q = q[b]
                r.drafts = torch.multinomial(q[b], 1, generator=r.generator).view(-1).tolist()

    def prefill(self, row: _Row):
        """Run the prompt alone; -> its (1, n) cache, with the row's next id and drafts chosen. The same
        prompt again (n samples of one problem) reuses the last prefill: only the choices are per row."""
        key = row.ids.tobytes()
        if self._last is None or self._last[0] != key:
            x = torch.as_tensor(row.ids, dtype=torch.long, device=self.device).view(1, -1)  # (1, n)
            cache = self.model.new_kv_cache(1, x.shape[1])
            h = self.model(x, kv_cache=cache)[:, -1]  # (1, D)
            self.stats.prefills += 1
            self._last = (key, cache, h, self.model.logits(h))
        _, cache, h, logits = self._last
        self._choose([row], h, logits)
        return cache

    def step(self, rows: list[_Row], cache) -> None:
        """One forward over every row: feed [next id, drafts], keep the accepted prefix, push the ids."""
        fed = [r.drafts for r in rows]
        x = torch.tensor([[r.nxt] + d for r, d in zip(rows, fed)], dtype=torch.long, device=self.device)  # (B, 1+k)
        before = list(cache.lengths)
        hidden = self.model(x, kv_cache=cache)  # (B, 1+k, D)
        logits = self.model.logits(hidden)  # (B, 1+k, V)
        B = len(rows)
        if self.temperature == 0:
            target = logits.masked_fill(~self.allowed, float("-inf")).argmax(-1)  # (B, 1+k)
            a = accepted_greedy(x[:, 1:], target)  # (B,)
            nxt = target.gather(1, a.unsqueeze(1)).view(-1).tolist()
            a = a.tolist()
        else:
            a, nxt = [], []
            for b, r in enumerate(rows):
                if self.k:
                    p = sampling_probs(logits[b], self.allowed, self.temperature, self.top_p)  # (1+k, V)
                    ab, t = accept_drafts(p, r.q, r.drafts, r.generator)
                else:
                    ab, t = 0, sample_next(logits[b, 0], self.allowed, self.temperature, self.top_p, r.generator)
                a.append(ab)
                nxt.append(t)
        cache.set_lengths([n + 1 + ab for n, ab in zip(before, a)])  # roll back the rejected drafts
        s = self.stats
        s.forwards += 1
        s.row_steps += B
        s.accepted += sum(a)
        for ab in a:
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

    def run(self, rows: list[_Row], batch_size: int, on_done) -> None:
        queue = deque(rows)
        self.stats.accepted_at += [0] * max(0, self.k - len(self.stats.accepted_at))
        cap = max(len(r.ids) + r.max_new for r in rows) + self.k + 1
        slots: list[_Row | None] = [None] * min(batch_size, len(rows))
        cache = self.model.new_kv_cache(len(slots), cap)

        def finish(r: _Row) -> None:
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


def _speculative_heads(model, interface, temperature: float, speculative: bool | None, use_cache: bool,
                       max_drafts: int | None, stats: GenStats) -> list[torch.Tensor]:
    if speculative is False or (speculative is None and temperature > 0):
        return []
    heads = draft_heads(model, interface, max_drafts)
    reason = ("the model has no extra heads that draft for this interface" if not heads else
              "use_cache=False recomputes without a cache" if not use_cache else "")
    if reason:
        if speculative:
            stats.fallback = reason
        return []
    stats.speculative, stats.drafts = True, len(heads)
    return heads


def _check(temperature: float, top_p: float, max_bytes: int) -> None:
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")


def _make_rows(model, interface, prompts, max_bytes, max_new_tokens, stops, seeds, sampling, on_bytes):
    device = next(model.parameters()).device
    max_len = model.cfg.max_seq_len
    max_new = min(max_new_tokens if max_new_tokens is not None else max_bytes, max_len - 1)
    rows = []
    for i, (prompt, row_stops, seed) in enumerate(zip(prompts, stops, seeds)):
        ids = np.asarray(interface.prompt_ids(prompt), dtype=np.int64)[-(max_len - max_new):]  # (n,) the last ids
        gen = torch.Generator(device=device).manual_seed(int(seed)) if sampling else None
        rows.append(_Row(i, ids, interface, max_bytes, max_new, row_stops, gen, on_bytes))
    return rows


@torch.inference_mode()
def generate_batch(model, interface, prompts: list[bytes], max_bytes: int = 256, temperature: float = 0.0,
                   top_p: float = 1.0, stop: Iterable[str | bytes] = (), seed: int = 0,
                   seeds: list[int] | None = None, row_stop: list[Iterable[str | bytes]] | None = None,
                   speculative: bool | None = None, max_drafts: int | None = None, batch_size: int = 8,
                   max_new_tokens: int | None = None, stats: GenStats | None = None,
                   on_done: Callable[[int, bytes], None] | None = None) -> list[bytes]:
    """Continue every prompt; -> the generated bytes per prompt (prompts excluded), in prompt order.

    seeds: one per prompt (default seed + i); stop: stop strings of every row, row_stop[i]: more for row i;
    batch_size: rows decoded per forward; on_done(i, out): called as soon as prompt i is finished (e.g. to
    start executing it); stats: a GenStats to fill. Other arguments as generate()."""
    _check(temperature, top_p, max_bytes)
    prompts = [bytes(p) for p in prompts]
    n = len(prompts)
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(n)]
    row_stop = list(row_stop) if row_stop is not None else [()] * n
    if len(seeds) != n or len(row_stop) != n:
        raise ValueError(f"{n} prompts need {n} seeds and row_stop entries, got {len(seeds)} and {len(row_stop)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shared = _stop_bytes(stop)
    stops = [shared + _stop_bytes(s) for s in row_stop]
    stats = stats if stats is not None else GenStats()
    rows = _make_rows(model, interface, prompts, max_bytes, max_new_tokens, stops, seeds, temperature > 0, None)
    stats.prompts += n
    if not rows:
        return []
    heads = _speculative_heads(model, interface, temperature, speculative, True, max_drafts, stats)
    outs: list[bytes] = [b""] * n

    def done(i: int, out: bytes) -> None:
        outs[i] = out
        if on_done is not None:
            on_done(i, out)

    was_training = model.training
    model.eval()
    try:
        _Decoder(model, interface, heads, temperature, top_p, stats).run(rows, batch_size, done)
    finally:
        model.train(was_training)
    return outs


@torch.inference_mode()
def generate(model, interface, prompt: bytes, max_bytes: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, stop: Iterable[str | bytes] = (), seed: int = 0, use_cache: bool = True,
             on_bytes: Callable[[bytes], None] | None = None, max_new_tokens: int | None = None,
             speculative: bool | None = None, max_drafts: int | None = None,
             stats: GenStats | None = None) -> bytes:
    """Continue `prompt`; return the generated bytes (prompt excluded). See the module docstring.

    max_new_tokens: model steps allowed (default max_bytes: every id decodes to >= 1 byte);
    max_drafts: use at most this many extra heads as drafts (default all)."""
    _check(temperature, top_p, max_bytes)
    stats = stats if stats is not None else GenStats()
    if use_cache:
        was_training = model.training
        model.eval()
        try:
            rows = _make_rows(model, interface, [bytes(prompt)], max_bytes, max_new_tokens, [_stop_bytes(stop)],
                              [seed], temperature > 0, on_bytes)
            stats.prompts += 1
            heads = _speculative_heads(model, interface, temperature, speculative, True, max_drafts, stats)
            _Decoder(model, interface, heads, temperature, top_p, stats).run(rows, 1, None)
        finally:
            model.train(was_training)
        return rows[0].text
    _speculative_heads(model, interface, temperature, speculative, False, max_drafts, stats)  # records a fallback
    return _generate_recompute(model, interface, prompt, max_bytes, temperature, top_p, stop, seed, on_bytes,
                               max_new_tokens, stats)


def _generate_recompute(model, interface, prompt, max_bytes, temperature, top_p, stop, seed, on_bytes,
                        max_new_tokens, stats: GenStats) -> bytes:
    """Plain decoding recomputing the whole sequence every step: the reference of the cached paths."""
    (row,) = _make_rows(model, interface, [bytes(prompt)], max_bytes, max_new_tokens, [_stop_bytes(stop)],
                        [seed], temperature > 0, on_bytes)
    device = next(model.parameters()).device
    allowed = interface.allowed_ids(model.vocab_size).to(device)  # (V,)
    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(row.ids, dtype=torch.long, device=device).view(1, -1)  # (1, n)
        while True:
            h = model(x)[:, -1]  # (1, D): full recompute
            stats.forwards += 1
            tok = sample_next(model.logits(h)[0], allowed, temperature, top_p, row.generator)
            if row.push(tok):
                break
            x = torch.cat([x, torch.tensor([[tok]], dtype=torch.long, device=device)], dim=1)
    finally:
        model.train(was_training)
    stats.prompts += 1
    stats.tokens += len(row.out_ids)
    return row.finish()
