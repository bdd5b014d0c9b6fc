"""Views: which form(s) each document takes (raw bytes, compressed symbols, or both) and their ids.

    rate, mode = schedule_at(views_cfg, step=120, total_steps=1000)    # driven by the optimizer step
    d = decide(seed=0, key="json/decoder.py", epoch=0, rate=rate, mode=mode)   # pure function
    r = render(d, data, codec, rep)        # r.ids (n,) int64, r.is_compressed (n,) bool, r.nbytes (n,) int32

Layouts (R = <raw> bytes </raw>, C = <compressed> symbols </compressed>):

    raw          <bos> R <eos>                sentinel modes, and pairing modes when not paired
    compressed   <bos> C <eos>
    raw+compressed / compressed+raw           translation_*: ONE document <bos> R C <eos> (views see each other)
    raw|compressed / compressed|raw           parallel_*: TWO documents <bos> R <eos><bos> C <eos>
    vanilla      <bos> ids <eos>              no sentinels; raw byte ids, or the codec's ids (rate 1 + bpe
                                              codec = the plain token-LM baseline)

Decisions are a pure function of (seed, document key, epoch, rate, mode): two uniforms come from
hashing (seed, key, epoch), so there is no RNG state to save and a document re-read after a resume gets
the same view. With fixed uniforms a higher rate only ever turns more documents compressed.

Calibration (reference section 2.4): in pairing modes the share of compressed *views* (streams, not
symbols) equals `rate`. With p = rate:
    p > 0.5:  y = 2 - 1/p; compressed alone with probability y, else a pair -> share 1/(2-y) = p
    p <= 0.5: y = p/(1-p); a pair with probability y, else raw alone     -> share y/(1+y) = p
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from proxylm.core.errors import CannotEncode
from proxylm.data.config import ScheduleConfig, ViewsConfig
from proxylm.data.modes import COMPRESSED, COMPRESSED_FIRST, MIX_MODES, RANDOM, RAW, RAW_FIRST, mix_mode  # noqa: F401
from proxylm.core.hashing import stable_unit

_DECISION_SALT = "proxylm-view-v1"


@dataclass(frozen=True)
class Decision:
    """What one document becomes: one or two documents, each a sequence of views.

    ((RAW,),) raw only; ((RAW, COMPRESSED),) both views in one document (translation);
    ((RAW,), (COMPRESSED,)) two documents (parallel). `layout` names it ("raw+compressed", "raw|compressed")."""

    documents: tuple[tuple[str, ...], ...]
    sentinels: bool = True

    @classmethod
    def single(cls, view: str, sentinels: bool = True) -> "Decision":
        return cls(((view,),), sentinels)

    @classmethod
    def pair(cls, order: tuple[str, str], same_document: bool) -> "Decision":
        return cls((tuple(order),) if same_document else tuple((v,) for v in order))

    @classmethod
    def from_layout(cls, layout: str, sentinels: bool = True) -> "Decision":
        """Inverse of `layout`: `|` separates documents, `+` views inside one."""
        return cls(tuple(tuple(doc.split("+")) for doc in layout.split("|")), sentinels)

    @property
    def layout(self) -> str:
        return "|".join("+".join(doc) for doc in self.documents)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(v for doc in self.documents for v in doc)

    @property
    def paired(self) -> bool:
        return len(self.views) == 2

    @property
    def n_documents(self) -> int:
        return len(self.documents)

    @property
    def needs_codec(self) -> bool:
        return COMPRESSED in self.views


RAW_DECISION = Decision.single(RAW)
LAYOUTS = tuple(d.layout for d in (RAW_DECISION, Decision.single(COMPRESSED),
                                   *(Decision.pair(o, same) for same in (True, False) for o in (RAW_FIRST, COMPRESSED_FIRST))))


def calibrated_probability(rate: float) -> float:
    """y of the module docstring: the per-document probability that keeps the compressed-view share = rate."""
    if rate > 0.5:
        return 2.0 - 1.0 / rate
    return rate / (1.0 - rate)


def decide(seed: int, key: str, epoch: int, rate: float, mode: str) -> Decision:
    """The view(s) of one document; a pure function of its arguments."""
    m = mix_mode(mode)
    u = stable_unit(_DECISION_SALT, seed, key, epoch, "compress")
    if not m.paired:
        return Decision.single(COMPRESSED if u < rate else RAW, m.sentinels)
    y = calibrated_probability(rate)
    if rate > 0.5 and u < y:
        return Decision.single(COMPRESSED)
    if rate <= 0.5 and u >= y:
        return RAW_DECISION
    order = m.order
    if order is RANDOM:
        order = RAW_FIRST if stable_unit(_DECISION_SALT, seed, key, epoch, "order") < 0.5 else COMPRESSED_FIRST
    return Decision.pair(order, m.same_document)


def expected_compressed_share(rate: float, mode: str) -> float:
    """Share of compressed views the decisions produce on average (== rate for every mode)."""
    if not mix_mode(mode).paired:
        return rate
    y = calibrated_probability(rate)
    if rate > 0.5:
        return 1.0 / (2.0 - y)
    return y / (1.0 + y)


# ---- schedule --------------------------------------------------------------------------------------
def schedule_at(views_cfg: ViewsConfig, step: int, total_steps: int | None) -> tuple[float, str]:
    """(rate, mode) at optimizer step `step` (0-based) of a run of `total_steps` steps.

    Warm-up, steps [0, W): rate = initial + (rate - initial) * step / W in warmup_mode (step W is the
    first steady step, at `rate`). Steady, [W, T - D): views.rate in views.mode. Decay, [T - D, T):
    rate moves linearly to final_rate, reached at the last step T - 1, in final_mode. Steps past the end
    keep the last phase's values. W = round(warmup_frac * T), D = round(decay_frac * T).
    """
    s: ScheduleConfig = views_cfg.schedule
    if not s.enabled:
        return views_cfg.rate, views_cfg.mode
    if not total_steps or total_steps < 1:
        raise ValueError("views.schedule.enabled needs the run's total_steps (train.max_steps)")
    warm = round(s.warmup_frac * total_steps)
    decay = round(s.decay_frac * total_steps)
    step = max(0, int(step))
    if step < warm:
        return s.initial_rate + (views_cfg.rate - s.initial_rate) * step / warm, s.warmup_mode
    if decay and step >= total_steps - decay:
        t = min(1.0, (step - (total_steps - decay) + 1) / decay)
        return views_cfg.rate + (s.final_rate - views_cfg.rate) * t, s.final_mode
    return views_cfg.rate, views_cfg.mode


# ---- rendering -------------------------------------------------------------------------------------
@dataclass
class Rendered:
    """One document's ids, ready to pack."""

    ids: np.ndarray  # (n,) int64
    is_compressed: np.ndarray  # (n,) bool: compressed payload symbols (sentinels, bos, eos: False)
    nbytes: np.ndarray  # (n,) int32: raw text bytes each symbol stands for (sums to len(data) per view)
    decision: Decision  # the layout actually rendered (RAW_DECISION after a fallback)
    fallback: bool = False  # the codec raised CannotEncode: emitted raw instead
    n_raw_symbols: int = 0  # raw-view payload symbols
    n_compressed_symbols: int = 0  # compressed-view payload symbols


def spread_bytes(n_bytes: int, n_symbols: int) -> np.ndarray:
    """(n_symbols,) int32 byte counts summing exactly to n_bytes (integer, evenly spread)."""
    edges = np.arange(n_symbols + 1, dtype=np.int64) * n_bytes // max(n_symbols, 1)
    return np.diff(edges).astype(np.int32)


def encode_or_none(codec, data: bytes):
    """codec's symbols for data, or None when it raises CannotEncode. Prefers `encode_many` (BPE's batch path
    skips offset tracking, so it is faster than `encode` even for one document: BENCHMARKS.md)."""
    many = getattr(codec, "encode_many", None)
    if many is not None:
        return many([data])[0]
    try:
        return codec.encode(data)
    except CannotEncode:
        return None


def render(decision: Decision, data: bytes, codec, rep) -> Rendered:
    """Ids of `data` in the layout `decision` says, every id from `rep`. Falls back to the raw layout (same
    sentinel setting) when the codec raises CannotEncode."""
    comp = None
    if decision.needs_codec:
        if codec is None:
            raise ValueError("a compressed view needs a codec")
        symbols = encode_or_none(codec, data)
        if symbols is None:
            r = render(Decision.single(RAW, decision.sentinels), data, codec, rep)
            r.fallback = True
            return r
        comp = rep.compressed_ids(symbols)
    raw = rep.raw_ids(data) if RAW in decision.views else None

    parts, flags, weights = [], [], []

    def add(ids, compressed: bool, nbytes):
        parts.append(ids)
        flags.append(np.full(len(ids), compressed, dtype=bool))
        weights.append(nbytes)

    def special(*ids):
        add(np.asarray(ids, dtype=np.int64), False, np.zeros(len(ids), dtype=np.int32))

    def view(name):
        if name == RAW:
            start, payload, end = rep.raw_start_id, raw, rep.raw_end_id
        else:
            start, payload, end = rep.compressed_start_id, comp, rep.compressed_end_id
        if decision.sentinels:
            special(start)
        add(payload, name == COMPRESSED, spread_bytes(len(data), len(payload)))
        if decision.sentinels:
            special(end)

    for doc in decision.documents:
        special(rep.bos_id)
        for name in doc:
            view(name)
        special(rep.eos_id)
    return Rendered(np.concatenate(parts), np.concatenate(flags), np.concatenate(weights), decision,
                    n_raw_symbols=0 if raw is None else len(raw), n_compressed_symbols=0 if comp is None else len(comp))


# ---- translation pairs that fit a window ------------------------------------------------------------
PAIR_SPECIALS = 6  # <bos> <raw> </raw> <compressed> </compressed> <eos>
RAW_SPECIALS = 4  # <bos> <raw> </raw> <eos>


@dataclass
class Part:
    """One rendered document made from the byte range `span` of a piece (see render_fitted)."""

    span: tuple[int, int]
    rendered: Rendered
    filler: bool = False  # raw alone, filling a gap too small for a pair


def room_after(room: int, n_tokens: int, seq_len: int) -> int:
    """Inputs left in the current window after `n_tokens` more are packed into a window with `room` left."""
    pos = (seq_len - room + n_tokens) % seq_len
    return seq_len - pos


def utf8_cut(data: bytes, start: int, want: int) -> int:
    """End of a byte range starting at `start` of about `want` bytes (>= 1) that does not split a UTF-8
    character: moved back to a lead byte, or forward past one character when it would be empty."""
    n = len(data)
    end = min(n, start + max(1, want))
    while start + 1 < end < n and (data[end] & 0xC0) == 0x80:
        end -= 1
    while end < n and (data[end] & 0xC0) == 0x80:  # only when the range is one (multi-byte) character
        end += 1
    return end


def is_translation(decision: Decision) -> bool:
    """Both views in one document: the layout whose pairs are cut to fit a window."""
    return decision.paired and decision.n_documents == 1


def render_fitted(decision: Decision, data: bytes, codec, rep, seq_len: int, room: int,
                  min_room: int | None = None) -> list[Part]:
    """`data` rendered as documents that each fit the window they are packed into.

    A translation pair (`raw+compressed` or `compressed+raw`) of a whole piece rarely fits one window of
    `seq_len` inputs, and a pair cut by a window edge shows the model one view without the other. So the
    piece is cut into consecutive sub-pieces, each rendered as its own pair <bos> R_i C_i <eos> (raw
    bytes i beside the compressed symbols of the same bytes), sized to the `room` left in the window it
    is packed into (the first: `room`; then whole windows). The size comes from the piece's own
    bytes/symbol and is shrunk until the pair fits. A gap under `min_room` (default seq_len // 8) is
    filled with the next bytes as a raw-only document (`filler`), so no pair starts in it.

    Any other decision is one part, the whole piece as `render` gives it. A codec that cannot encode
    the piece gives the raw fallback (one part)."""
    n = len(data)
    if not is_translation(decision) or n == 0:
        return [Part((0, n), render(decision, data, codec, rep))]
    whole = encode_or_none(codec, data)
    if whole is None or len(whole) == 0:
        return [Part((0, n), render(decision, data, codec, rep))]
    bytes_per_symbol = n / len(whole)
    min_room = max(PAIR_SPECIALS + 2, seq_len // 8 if min_room is None else min_room)
    filler_decision = Decision.single(RAW, decision.sentinels)
    parts, start = [], 0
    while start < n:
        part = None
        if room >= min_room:
            budget = room - PAIR_SPECIALS
            want = int(budget * bytes_per_symbol / (bytes_per_symbol + 1.0))
            for _ in range(8):
                end = utf8_cut(data, start, want)
                r = render(decision, data[start:end], codec, rep)
                if len(r.ids) <= room:
                    part = Part((start, end), r)
                    break
                if r.fallback or end - start <= 1:
                    break
                # shrink in proportion to the overshoot (payload only), a little more to converge fast
                want = min(end - start - 1, int((end - start) * budget / (len(r.ids) - PAIR_SPECIALS) * 0.95))
        if part is None or part.rendered.fallback:
            end = utf8_cut(data, start, max(1, room - RAW_SPECIALS))
            part = Part((start, end), render(filler_decision, data[start:end], codec, rep), filler=True)
        parts.append(part)
        room = room_after(room, len(part.rendered.ids), seq_len)
        start = part.span[1]
    return parts


def split_views(ids, rep, decision: Decision | None = None) -> list[tuple[str, np.ndarray]]:
    """Inverse of the layout: [(RAW | COMPRESSED, payload ids)] of one rendered document (or pair).

    Sentinel layouts are read from the sentinels; vanilla (no sentinels) needs the decision.
    """
    ids = np.asarray(ids, dtype=np.int64)
    specials = {rep.bos_id, rep.eos_id}
    if decision is not None and not decision.sentinels:
        body = ids[~np.isin(ids, list(specials))]
        return [(decision.views[0], body)]
    out, i = [], 0
    opens = {rep.raw_start_id: (RAW, rep.raw_end_id), rep.compressed_start_id: (COMPRESSED, rep.compressed_end_id)}
    while i < len(ids):
        t = int(ids[i])
        if t in opens:
            name, close = opens[t]
            j = i + 1 + int(np.argmax(ids[i + 1:] == close)) if (ids[i + 1:] == close).any() else len(ids)
            out.append((name, ids[i + 1:j]))
            i = j + 1
        else:
            i += 1
    return out


def decode_view(name: str, payload: np.ndarray, rep, codec=None) -> bytes:
    """Bytes of one view's payload ids (compressed views are decoded with the codec)."""
    if name == RAW:
        return rep.bytes_from_ids(payload)
    return codec.decode(rep.symbols_from_compressed_ids(payload))
