"""The translation probe (the paper's "oracle translation" ablation): does a proxy model align its views?

    proxylm eval translation runs/compare-demo/proxy-bpe --limit 64 --json
    result = translation_probe(run, docs, limit=64, piece_bytes=64)

Held-out text (the run's val split by default) is cut into small aligned pieces, each a pair
(raw bytes R, compressed ids C of the same bytes), short enough that both views fit one window of the
run's seq_len. For each pair, in the layout the model was trained on (`<bos><compressed> C </compressed>
<raw> R </raw><eos>` and the reverse):

* **BPB of one view given the other**: bits the model spends on R's bytes after seeing C in context
  (raw_given_compressed), and on C's symbols after seeing R (compressed_given_raw), both per raw byte;
  beside the same view scored alone (`<bos><raw> R </raw>`, `<bos><compressed> C </compressed>`). A model that
  has learned to translate spends far fewer bits with the other view in context.
* **Greedy translation**: from `... C </compressed><raw>` the model writes raw bytes until `</raw>`
  (exact match: the bytes are R), and from `... R </raw><compressed>` it writes codec ids until
  `</compressed>` (exact match: the ids are C; decoded match: they decode to R). Also the mean share of
  the target reproduced before the first mistake.

Only payload symbols are scored (not sentinels), so given/alone numbers are directly comparable. A byte-only
run or a token baseline (no sentinels) has no second view and is refused.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from proxylm.core.errors import UserError
from proxylm.data.views import COMPRESSED, RAW, Decision, encode_or_none, render_fitted, utf8_cut


def check_translatable(run) -> None:
    """UserError unless the run has a compressed view beside raw bytes."""
    cfg = run.cfg
    if run.codec is None or cfg.views.codec is None:
        raise UserError(f"{run.run_dir} is a byte-only run (views.codec: null): it has no compressed view to "
                        "translate; give a proxy run (e.g. runs/compare-demo/proxy-bpe)")
    s = cfg.views.schedule
    modes = {cfg.views.mode} | ({s.warmup_mode, s.final_mode} if s.enabled else set())
    if modes == {"vanilla"}:
        raise UserError(f"{run.run_dir} is a token baseline (views.mode: vanilla): it never saw raw bytes beside its "
                        "tokens; give a proxy run")


def translation_pairs(docs: list[bytes], codec, rep, seq_len: int, limit: int, piece_bytes: int = 64):
    """[(raw bytes, compressed ids (n,) int64)]: consecutive pieces of `docs`, `piece_bytes` raw bytes each
    (never splitting a UTF-8 character; 0: as large as fits one window), each pair fitting `seq_len`."""
    pairs = []
    layout = Decision.from_layout("raw+compressed")
    for doc in docs:
        start = 0
        while start < len(doc) and len(pairs) < limit:
            if piece_bytes:
                end = utf8_cut(doc, start, piece_bytes)
            else:
                end = render_fitted(layout, doc[start:], codec, rep, seq_len, seq_len)[0].span[1] + start
            piece = doc[start:end]
            start = end
            symbols = encode_or_none(codec, piece)
            if symbols is None or len(piece) < max(1, piece_bytes // 2):
                continue  # cannot encode, or a short tail
            comp = rep.compressed_ids(symbols)
            if len(piece) + len(comp) + 6 > seq_len:
                continue  # does not fit one window (only with an explicit, too large piece_bytes)
            pairs.append((piece, comp))
        if len(pairs) >= limit:
            break
    return pairs


def _view(rep, name: str, payload: np.ndarray) -> list[int]:
    start, end = (rep.raw_start_id, rep.raw_end_id) if name == RAW else (rep.compressed_start_id, rep.compressed_end_id)
    return [start, *payload.tolist(), end]


@torch.no_grad()
def _nats(model, ids: list[int], first: int, n: int, device) -> float:
    """Sum of the model's nats on targets ids[first : first + n] (each predicted from everything before)."""
    x = torch.tensor(ids, dtype=torch.long, device=device).view(1, -1)
    logp = torch.log_softmax(model.logits(model(x[:, :-1])), dim=-1)[0]  # (L-1, V)
    targets = x[0, first:first + n]
    return float(-logp[first - 1:first - 1 + n].gather(1, targets.view(-1, 1)).sum())


@torch.no_grad()
def _greedy(model, prompt: list[int], allowed: torch.Tensor, stop: int, max_new: int, device) -> list[int]:
    x = torch.tensor(prompt, dtype=torch.long, device=device).view(1, -1)
    cache = model.new_kv_cache(1, len(prompt) + max_new + 1)
    hidden = model(x, kv_cache=cache)
    out: list[int] = []
    for _ in range(max_new):
        logits = model.logits(hidden[:, -1])[0].masked_fill(~allowed, -math.inf)
        nxt = int(torch.argmax(logits))
        if nxt == stop:
            break
        out.append(nxt)
        hidden = model(torch.tensor([[nxt]], dtype=torch.long, device=device), kv_cache=cache)
    return out


def _prefix_share(got: list[int], want: list[int]) -> float:
    k = 0
    while k < min(len(got), len(want)) and got[k] == want[k]:
        k += 1
    return k / len(want) if want else 1.0


def translation_probe(run, docs: list[bytes], limit: int = 64, piece_bytes: int = 64, greedy: bool = True,
                      device="cpu") -> dict:
    check_translatable(run)
    model, rep, codec = run.model, run.rep, run.codec
    model.eval()
    seq_len = run.cfg.data.seq_len
    pairs = translation_pairs(docs, codec, rep, seq_len, limit, piece_bytes)
    if not pairs:
        raise UserError(f"no held-out piece of {piece_bytes or 'window-filling'} bytes could be encoded into a pair "
                        f"that fits seq_len {seq_len}; lower --piece-bytes or give more text")
    vocab = model.vocab_size
    allowed_raw = torch.zeros(vocab, dtype=torch.bool, device=device)
    allowed_raw[rep.raw_offset:rep.raw_vocab_size] = True
    allowed_raw[rep.raw_end_id] = True
    allowed_comp = torch.zeros(vocab, dtype=torch.bool, device=device)
    allowed_comp[torch.from_numpy(rep.compressed_ids(np.arange(codec.alphabet_size, dtype=np.int64)))] = True
    allowed_comp[rep.compressed_end_id] = True
    nats = {"raw_given_compressed": 0.0, "raw_alone": 0.0, "compressed_given_raw": 0.0, "compressed_alone": 0.0}
    exact = {"compressed_to_raw": 0, "raw_to_compressed": 0, "raw_to_compressed_decoded": 0}
    prefix = {"compressed_to_raw": 0.0, "raw_to_compressed": 0.0}
    n_bytes = n_symbols = 0
    for raw, comp in pairs:
        r_ids = rep.raw_ids(raw)
        R, C = _view(rep, RAW, r_ids), _view(rep, COMPRESSED, comp)
        bos, eos = rep.bos_id, rep.eos_id
        nats["raw_given_compressed"] += _nats(model, [bos, *C, *R, eos], 1 + len(C) + 1, len(r_ids), device)
        nats["raw_alone"] += _nats(model, [bos, *R, eos], 2, len(r_ids), device)
        nats["compressed_given_raw"] += _nats(model, [bos, *R, *C, eos], 1 + len(R) + 1, len(comp), device)
        nats["compressed_alone"] += _nats(model, [bos, *C, eos], 2, len(comp), device)
        n_bytes += len(raw)
        n_symbols += len(comp)
        if greedy:
            got = _greedy(model, [bos, *C, rep.raw_start_id], allowed_raw, rep.raw_end_id, len(r_ids) + 8, device)
            exact["compressed_to_raw"] += got == r_ids.tolist()
            prefix["compressed_to_raw"] += _prefix_share(got, r_ids.tolist())
            got = _greedy(model, [bos, *R, rep.compressed_start_id], allowed_comp, rep.compressed_end_id,
                          len(comp) + 8, device)
            exact["raw_to_compressed"] += got == comp.tolist()
            prefix["raw_to_compressed"] += _prefix_share(got, comp.tolist())
            try:
                decoded = codec.decode(rep.symbols_from_compressed_ids(np.asarray(got, dtype=np.int64)))
            except Exception:  # noqa: BLE001  (a codec may reject an ill-formed stream: not a match)
                decoded = None
            exact["raw_to_compressed_decoded"] += decoded == raw
    n = len(pairs)
    out = {"run": str(run.run_dir), "step": run.step, "pairs": n, "raw_bytes": n_bytes, "compressed_symbols": n_symbols,
           "piece_bytes": piece_bytes, "seq_len": seq_len}
    for k, v in nats.items():
        out[f"bpb_{k}"] = v / math.log(2) / n_bytes
    if greedy:
        for k, v in exact.items():
            out[f"exact_match_{k}"] = v / n
        for k, v in prefix.items():
            out[f"prefix_share_{k}"] = v / n
    return out


def format_result(r: dict) -> str:
    lines = [f"{r['run']} (step {r['step']}): {r['pairs']} held-out pairs, {r['raw_bytes']} raw bytes, "
             f"{r['compressed_symbols']} compressed symbols",
             f"  raw view BPB:        alone {r['bpb_raw_alone']:.4f}   given the compressed view "
             f"{r['bpb_raw_given_compressed']:.4f}",
             f"  compressed view BPB: alone {r['bpb_compressed_alone']:.4f}   given the raw view "
             f"{r['bpb_compressed_given_raw']:.4f}   (bits per raw byte)"]
    if "exact_match_compressed_to_raw" in r:
        lines += [f"  greedy compressed -> raw: exact {r['exact_match_compressed_to_raw']:.1%}, "
                  f"prefix {r['prefix_share_compressed_to_raw']:.1%}",
                  f"  greedy raw -> compressed: exact {r['exact_match_raw_to_compressed']:.1%} "
                  f"(decodes to the bytes {r['exact_match_raw_to_compressed_decoded']:.1%}), "
                  f"prefix {r['prefix_share_raw_to_compressed']:.1%}"]
    return "\n".join(lines)
