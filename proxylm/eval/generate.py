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

The decoding loop lives in proxylm/eval/decoder.py. Speculative decoding (proxylm/eval/speculative.py):
`speculative=None` (default) uses the model's extra heads as drafts when that is exact, i.e. greedy decoding
with at least one usable extra head; True also for sampling (the speculative sampling rule keeps the model's
distribution); False never. Asked for but impossible (no
usable head, or use_cache=False) it falls back to plain decoding and says why in `stats.fallback`.
Greedy decoding also drafts from the context (`lookup`, at most 8 ids per forward; 0: off): where the last ids
occurred before, the ids that followed them are verified instead of the heads' drafts (every model, heads or
not; exact, so the output is unchanged). speculative=False turns every draft off.
Batches (generate_batch): up to batch_size rows decode together; each prompt is prefilled alone into its
row of a shared cache (rows have their own lengths, positions and stop strings), a finished row is refilled
with the next prompt, and rows are dropped from the batch once no prompt is left. Each row's output is the
one generate() gives for that prompt and seed (rows do not interact).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from proxylm.eval.settings import LOOKUP_DRAFTS  # noqa: F401  (re-exported: proxylm.eval.generate.LOOKUP_DRAFTS)
from proxylm.eval.decoder import Decoder, GenStats, Row, sample_next, sampling_probs  # noqa: F401 (API)
from proxylm.eval.speculative import draft_heads


def _stop_bytes(stop: Iterable[str | bytes]) -> list[bytes]:
    return [s.encode() if isinstance(s, str) else bytes(s) for s in stop if s]


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


def _check(temperature: float, top_p: float, max_bytes: int, lookup: int) -> None:
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if lookup < 0:
        raise ValueError(f"lookup must be >= 0, got {lookup}")
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
        rows.append(Row(i, ids, interface, max_bytes, max_new, row_stops, gen, on_bytes))
    return rows


@torch.inference_mode()
def generate_batch(model, interface, prompts: list[bytes], max_bytes: int = 256, temperature: float = 0.0,
                   top_p: float = 1.0, stop: Iterable[str | bytes] = (), seed: int = 0,
                   seeds: list[int] | None = None, row_stop: list[Iterable[str | bytes]] | None = None,
                   speculative: bool | None = None, max_drafts: int | None = None, batch_size: int = 8,
                   max_new_tokens: int | None = None, stats: GenStats | None = None, lookup: int = LOOKUP_DRAFTS,
                   on_done: Callable[[int, bytes], None] | None = None) -> list[bytes]:
    """Continue every prompt; -> the generated bytes per prompt (prompts excluded), in prompt order.

    seeds: one per prompt (default seed + i); stop: stop strings of every row, row_stop[i]: more for row i;
    batch_size: rows decoded per forward; on_done(i, out): called as soon as prompt i is finished (e.g. to
    start executing it); stats: a GenStats to fill. Other arguments as generate()."""
    _check(temperature, top_p, max_bytes, lookup)
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
        Decoder(model, interface, heads, temperature, top_p, stats,
                0 if speculative is False else lookup).run(rows, batch_size, done)
    finally:
        model.train(was_training)
    return outs


@torch.inference_mode()
def generate(model, interface, prompt: bytes, max_bytes: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, stop: Iterable[str | bytes] = (), seed: int = 0, use_cache: bool = True,
             on_bytes: Callable[[bytes], None] | None = None, max_new_tokens: int | None = None,
             speculative: bool | None = None, max_drafts: int | None = None,
             stats: GenStats | None = None, lookup: int = LOOKUP_DRAFTS) -> bytes:
    """Continue `prompt`; return the generated bytes (prompt excluded). See the module docstring.

    max_new_tokens: model steps allowed (default max_bytes: every id decodes to >= 1 byte);
    max_drafts: use at most this many extra heads as drafts (default all); lookup: at most this many drafts
    copied from the context (greedy; 0: off)."""
    _check(temperature, top_p, max_bytes, lookup)
    prompt = prompt.encode() if isinstance(prompt, str) else prompt  # text is given as its UTF-8 bytes
    stats = stats if stats is not None else GenStats()
    if use_cache:
        was_training = model.training
        model.eval()
        try:
            rows = _make_rows(model, interface, [bytes(prompt)], max_bytes, max_new_tokens, [_stop_bytes(stop)],
                              [seed], temperature > 0, on_bytes)
            stats.prompts += 1
            heads = _speculative_heads(model, interface, temperature, speculative, True, max_drafts, stats)
            Decoder(model, interface, heads, temperature, top_p, stats,
                    0 if speculative is False else lookup).run(rows, 1, None)
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
    dec = Decoder(model, interface, [], temperature, top_p, stats)  # the same choice of the next id
    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(row.ids, dtype=torch.long, device=device).view(1, -1)  # (1, n)
        while True:
            h = model(x)[:, -1]  # (1, D): full recompute
            stats.forwards += 1
            tok = dec._sample(dec.logits(h)[0], row)
            if row.push(tok):
                break
            x = torch.cat([x, torch.tensor([[tok]], dtype=torch.long, device=device)], dim=1)
    finally:
        model.train(was_training)
    stats.prompts += 1
    stats.tokens += len(row.out_ids)
    return row.finish()
