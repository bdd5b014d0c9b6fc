"""Arithmetic coding with equal-information windows (Lester et al. 2024), exact and batched.

    spec = WindowSpec(window_bits=16, max_window_bytes=32)
    symbols = encode_segments(m1, [b"def f():\\n    return 1\\n"], spec)[0]   # (n,) int64
    data = decode_symbols(m1, symbols, spec)

A document is cut into segments (`segment_bounds`, ~1 KB, after a newline) and each segment into windows. A
window is one B-bit number (codec symbol 256 + value) holding as many bytes as fit in B bits. Within a window
M1 reads `<bos>` + the window's bytes, so its meaning depends on its own bytes only (M1's context and the coder
state reset at every window start). A byte that does not fit in a window on its own is emitted as itself
(codec symbol 0..255, "passthrough"). Symbols are self-delimiting, so decoding needs no segment boundaries;
segments only let one long document fill many lanes.

The coder: an exact integer arithmetic coder over M1's alphabet of 257 symbols (256 bytes + EOW, the end of
window). Chosen over constriction's range coders because the bit budget must be known exactly, and since a
window holds at most B bits nothing needs renormalising: the state is an interval [low, low + width) of
[0, 2^K) (K = STATE_BITS = 46) in int64, narrowed per symbol with

    low += width * cum[s] >> P,   width = (width * cum[s+1] >> P) - (width * cum[s] >> P)     (P = 16)

(the sub-intervals partition the interval exactly; width * cum < 2^62). A window of B bits is an aligned cell
[m, m+1) * 2^(K-B) inside the final interval: the window "fits" iff such an m exists, and its value is the
smallest such m (no padding bits are needed: the value is the B-bit symbol). The decoder reads the point
m * 2^(K-B), which lies in every nested interval, so it recovers each symbol by locating that point, and stops
at EOW. Since a window's intervals stay wider than one cell (2^-B of the whole), the truncation in `>> P` costs
at most 2^-(K-B-P) relatively: nothing measurable for B <= 30.

Termination: EOW is coded at the end of every window. The encoder adds the next byte only if the window still
fits *with the EOW that must follow it*, computed from M1's distribution after that byte (a tentative model
step; if it does not fit, the byte is rejected and starts the next window). EOW's probability is budget-aware,
a pure function of the window's prefix: (1) bytes whose sub-interval would be narrower than one cell can never
be the next byte of this window, so their mass moves to EOW; (2) a base mass 2^-(r - EOW_SLACK_BITS),
clamped to [2^-12, 2^-1], with r the whole bits of budget left: a stop is unlikely early in a window (the base
costs ~0.0004 bits per byte there) and likely at its end, where EOW then costs ~1 bit. (Tuned on 4 documents
of the stdlib val split: BENCHMARKS.md, "Neural codec".) A window that reaches `max_window_bytes` has an all-EOW distribution, so its EOW costs nothing.

Probabilities: M1's byte logits (exact, see m1.py) -> integer weights EXP[round((max - logit) * 2^10)]
(`byte_weights`) -> counts 1 + weight * R // sum(weights) with R = 2^16 - base - 256 (every byte >= 1 quantum
of 2^-16 before rule (1)) (`cumulative`). Everything after the logits is integer arithmetic, so encoder and decoder agree
exactly whatever the batch; `encode_reference` is the same coder in plain Python, one byte at a time (the
specification, the tests' oracle and the benchmark's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from proxylm.codecs.neural.m1 import EXP_FRAC_BITS, FixedPointM1
from proxylm.core.representation import N_BYTES

PRECISION_BITS = 16  # P: M1's distribution in units of 2^-16
STATE_BITS = 46  # K: coder interval inside [0, 2^46); width * cum < 2^62 fits int64
EOW = N_BYTES  # M1-alphabet index of the end-of-window symbol
N_SYMBOLS = N_BYTES + 1  # bytes + EOW
EOW_SLACK_BITS = 1  # EOW's base mass is 2^-(r - 1) with r bits of budget left in the window ...
EOW_MIN_BITS, EOW_MAX_BITS = 1, 12  # ... clamped to [2^-12, 2^-1]
HOPELESS_MARGIN_BITS = 0  # a byte whose sub-interval is below one cell (cannot fit) goes to EOW
MIN_WINDOW_BITS, MAX_WINDOW_BITS = 4, 30  # K - B >= 16 keeps truncation losses negligible
SEGMENT_BYTES = 1024  # documents are coded in independent segments of ~1 KB (parallel lanes)

TOTAL = 1 << PRECISION_BITS
FULL = 1 << STATE_BITS


@dataclass(frozen=True)
class WindowSpec:
    """What both sides must agree on besides M1."""

    window_bits: int = 16
    max_window_bytes: int = 32  # a window never holds more bytes (M1's context length)

    def __post_init__(self):
        if not MIN_WINDOW_BITS <= self.window_bits <= MAX_WINDOW_BITS:
            raise ValueError(f"window_bits must be in [{MIN_WINDOW_BITS}, {MAX_WINDOW_BITS}], got {self.window_bits}")
        if self.max_window_bytes < 1:
            raise ValueError("max_window_bytes must be >= 1")

    @property
    def shift(self) -> int:  # log2 of one cell (one B-bit window value) in interval units
        return STATE_BITS - self.window_bits

    @property
    def hopeless_below(self) -> int:  # width * count below this: sub-interval < 2^margin cells
        return 1 << (self.shift + PRECISION_BITS + HOPELESS_MARGIN_BITS)


# ---- distributions (vectorised over lanes) ---------------------------------------------------------------
def byte_weights(logits: torch.Tensor, exp_table: torch.Tensor) -> np.ndarray:
    """logits (B, 256) float64 (exact) -> unnormalised weights (B, 256) int64: EXP[round((max - logit) * 2^10)]."""
    z = (logits.amax(-1, keepdim=True) - logits) * 2.0 ** EXP_FRAC_BITS
    idx = torch.round(z).clamp_(max=len(exp_table) - 1).long()
    return exp_table[idx].long().numpy()  # integers <= 2^20


def remaining_bits(width: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """floor(log2(width)) - (K - B): whole bits of the window budget left (exact: frexp of an integer < 2^53)."""
    return np.frexp(width.astype(np.float64))[1] - 1 - spec.shift


def eow_base(width: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """EOW's base mass in counts: 2^-(r - EOW_SLACK_BITS), clamped, with r bits left (a stop is likelier late)."""
    bits = np.clip(remaining_bits(width, spec) - EOW_SLACK_BITS, EOW_MIN_BITS, EOW_MAX_BITS)
    return TOTAL >> bits


def cumulative(weights: np.ndarray, width: np.ndarray, n: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """M1's weights (B, 256), interval widths (B,), bytes in the window (B,) -> cum (B, 258) int64 over the 257
    symbols (cum[:, 256] .. 2^16 is EOW). Bytes get 1 + weight * R // sum(weights) counts (R = 2^16 - base - 256,
    every byte >= 1 quantum); then hopeless bytes get 0 and their mass goes to EOW; a full window is all EOW."""
    spread = TOTAL - eow_base(width, spec) - N_BYTES  # (B,)
    c = 1 + weights * spread[:, None] // weights.sum(1, keepdims=True)
    c[width[:, None] * c < spec.hopeless_below] = 0
    c[n >= spec.max_window_bytes] = 0
    cum = np.zeros((len(c), N_SYMBOLS + 1), dtype=np.int64)
    np.cumsum(c, axis=1, out=cum[:, 1:N_SYMBOLS])
    cum[:, N_SYMBOLS] = TOTAL
    return cum


def narrow(low: np.ndarray, width: np.ndarray, cum: np.ndarray, s: np.ndarray):
    """The sub-interval of symbol s (B,) in each lane's interval -> (low, width)."""
    rows = np.arange(len(s))
    lo = width * cum[rows, s] >> PRECISION_BITS
    hi = width * cum[rows, s + 1] >> PRECISION_BITS
    return low + lo, hi - lo


def window_value(low: np.ndarray, width: np.ndarray, spec: WindowSpec):
    """-> (fits (B,) bool, m (B,) int64): the first aligned cell inside [low, low + width) and whether it is inside."""
    m = (low + (1 << spec.shift) - 1) >> spec.shift
    return ((m + 1) << spec.shift) <= low + width, m


# ---- segments --------------------------------------------------------------------------------------------
def segment_bounds(data: bytes, target: int = SEGMENT_BYTES) -> list[tuple[int, int]]:
    """[start, end) of the segments: cut after the first newline at or past `target` bytes (else at 2 * target)."""
    out, start, n = [], 0, len(data)
    while n - start > target:
        nl = data.find(b"\n", start + target - 1, start + 2 * target)
        end = nl + 1 if nl >= 0 else start + 2 * target
        out.append((start, end))
        start = end
    if start < n:
        out.append((start, n))
    return out


# ---- batched encoder -------------------------------------------------------------------------------------
class _Lanes:
    """Per-lane coder state, all (L,) numpy arrays (lanes = rows of M1's batch)."""

    def __init__(self, n: int, start_cum: np.ndarray):
        self.seg = np.full(n, -1, dtype=np.int64)  # segment being coded, -1: idle
        self.pos = np.zeros(n, dtype=np.int64)  # next byte of the segment
        self.end = np.zeros(n, dtype=np.int64)  # segment length
        self.n = np.zeros(n, dtype=np.int64)  # bytes in the current window
        self.low = np.zeros(n, dtype=np.int64)
        self.width = np.full(n, FULL, dtype=np.int64)
        self.cum = np.repeat(start_cum[None], n, axis=0)  # (L, 258): the distribution after <bos> + window bytes
        self.pending = np.full(n, -1, dtype=np.int64)  # byte fed to M1, awaiting its EOW check
        self.t_low = np.zeros(n, dtype=np.int64)  # interval after the pending byte
        self.t_width = np.zeros(n, dtype=np.int64)
        self.start_cum = start_cum

    FIELDS = ("seg", "pos", "end", "n", "low", "width", "cum", "pending", "t_low", "t_width")

    def select(self, keep: np.ndarray) -> None:
        for f in self.FIELDS:
            setattr(self, f, getattr(self, f)[keep])

    def new_window(self, lanes: np.ndarray) -> None:
        self.n[lanes] = 0
        self.low[lanes] = 0
        self.width[lanes] = FULL
        self.cum[lanes] = self.start_cum


def encode_segments(m1: FixedPointM1, segments: list[bytes], spec: WindowSpec, n_lanes: int = 512,
                    progress=None) -> list[np.ndarray]:
    """Encode independent segments, up to `n_lanes` at once (one M1 row each) -> symbols (n_i,) int64 per segment.

    Each step feeds every busy lane's tentative next byte to M1 at once; lanes take the next segment as they
    finish, and the batch is compacted when fewer than half the lanes are busy. `progress(n_bytes)` is called
    as segments complete."""
    exp_table = m1.tables["exp"]
    start_cum = cumulative(byte_weights(m1.start_logits[None], exp_table), np.array([FULL]), np.zeros(1), spec)[0]
    out: list[list[int]] = [[] for _ in segments]
    n_lanes = max(1, min(n_lanes, len(segments)))
    lanes = _Lanes(n_lanes, start_cum)
    cache = m1.new_cache(n_lanes)
    m1.reset_lanes(cache, torch.arange(n_lanes))  # position 0 of every lane holds <bos>, never overwritten
    flat = np.frombuffer(b"".join(segments), dtype=np.uint8)  # every segment's bytes, back to back
    seg_start = np.cumsum([0] + [len(s) for s in segments[:-1]]).astype(np.int64)
    next_seg = 0

    def load(idle: np.ndarray) -> None:
        nonlocal next_seg
        for lane in idle:
            while next_seg < len(segments) and not len(segments[next_seg]):
                next_seg += 1  # empty segment: no symbols
            if next_seg >= len(segments):
                lanes.seg[lane] = -1
                continue
            lanes.seg[lane], lanes.pos[lane], lanes.end[lane] = next_seg, 0, len(segments[next_seg])
            next_seg += 1
        lanes.new_window(idle)

    def emit_windows(idx: np.ndarray, cum: np.ndarray) -> None:
        """Close the windows of lanes idx with EOW (cum: their current distributions)."""
        low, width = narrow(lanes.low[idx], lanes.width[idx], cum, np.full(len(idx), EOW))
        fits, m = window_value(low, width, spec)
        assert fits.all(), "a committed window must fit with its EOW"
        for lane, value in zip(idx, m):
            out[lanes.seg[lane]].append(N_BYTES + int(value))

    load(np.arange(n_lanes))
    while (lanes.seg >= 0).any():
        # 1) move every lane without a pending byte forward until it has one (or runs dry)
        ready = np.flatnonzero((lanes.seg >= 0) & (lanes.pending < 0))
        while len(ready):
            done = ready[lanes.pos[ready] >= lanes.end[ready]]
            if len(done):
                closing = done[lanes.n[done] > 0]
                if len(closing):
                    emit_windows(closing, lanes.cum[closing])
                if progress is not None:
                    progress(int(lanes.end[done].sum()))
                load(done)
            go = ready[lanes.pos[ready] < lanes.end[ready]]
            if len(go):
                b = flat[seg_start[lanes.seg[go]] + lanes.pos[go]].astype(np.int64)
                cum = lanes.cum[go]
                t_low, t_width = narrow(lanes.low[go], lanes.width[go], cum, b)
                rows = np.arange(len(go))
                ok = (cum[rows, b + 1] > cum[rows, b]) & window_value(t_low, t_width, spec)[0]  # possible and fits
                tried = go[ok]
                lanes.pending[tried], lanes.t_low[tried], lanes.t_width[tried] = b[ok], t_low[ok], t_width[ok]
                closing = ~ok & (lanes.n[go] > 0)
                alone = ~ok & (lanes.n[go] == 0)
                if closing.any():
                    emit_windows(go[closing], cum[closing])
                    lanes.new_window(go[closing])  # the byte is tried again as the first of a new window
                for lane, byte in zip(go[alone], b[alone]):  # does not fit even alone: passthrough
                    out[lanes.seg[lane]].append(int(byte))
                lanes.pos[go[alone]] += 1
            ready = np.flatnonzero((lanes.seg >= 0) & (lanes.pending < 0))
        busy = lanes.seg >= 0
        if not busy.any():
            break
        if busy.sum() <= len(busy) // 2 and next_seg >= len(segments):  # compact: idle rows cost compute
            keep = np.flatnonzero(busy)
            lanes.select(keep)
            cache = cache.select(torch.from_numpy(keep))
            busy = lanes.seg >= 0
        # 2) one M1 step for every busy lane: its pending byte at position n + 1
        p = np.flatnonzero(busy)
        tokens = torch.from_numpy(np.where(busy, lanes.pending, 0))
        positions = torch.from_numpy(np.where(busy, lanes.n + 1, 1))
        weights = byte_weights(m1.step(cache, tokens, positions), exp_table)[p]  # (busy, 256)
        # 3) keep the byte if the window still fits with the EOW that must follow it
        cum = cumulative(weights, lanes.t_width[p], lanes.n[p] + 1, spec)
        e_low, e_width = narrow(lanes.t_low[p], lanes.t_width[p], cum, np.full(len(p), EOW))
        ok = window_value(e_low, e_width, spec)[0]
        acc = p[ok]
        lanes.low[acc], lanes.width[acc] = lanes.t_low[acc], lanes.t_width[acc]
        lanes.n[acc] += 1
        lanes.pos[acc] += 1
        lanes.cum[acc] = cum[ok]
        rej = p[~ok]
        closing = rej[lanes.n[rej] > 0]
        if len(closing):
            emit_windows(closing, lanes.cum[closing])
        for lane in rej[lanes.n[rej] == 0]:  # first byte of a window, but no room for its EOW: passthrough
            out[lanes.seg[lane]].append(int(lanes.pending[lane]))
            lanes.pos[lane] += 1
        lanes.new_window(rej)
        lanes.pending[p] = -1
    return [np.asarray(o, dtype=np.int64) for o in out]


# ---- batched decoder -------------------------------------------------------------------------------------
def decode_windows(m1: FixedPointM1, values: np.ndarray, spec: WindowSpec, n_lanes: int = 1024) -> list[bytes]:
    """Window values (W,) (symbol - 256) -> the bytes of each window, up to `n_lanes` windows at once."""
    out: list[bytes] = []
    for i in range(0, len(values), n_lanes):
        out += _decode_batch(m1, np.asarray(values[i:i + n_lanes], dtype=np.int64), spec)
    return out


def _decode_batch(m1: FixedPointM1, values: np.ndarray, spec: WindowSpec) -> list[bytes]:
    exp_table = m1.tables["exp"]
    W = len(values)
    if W == 0:
        return []
    if values.min() < 0 or values.max() >= 1 << spec.window_bits:
        raise ValueError(f"window value out of range [0, 2^{spec.window_bits})")
    point = values << spec.shift  # (W,) the decoder's point, inside every nested interval of its window
    rows = np.arange(W)  # window of each lane
    low, width = np.zeros(W, dtype=np.int64), np.full(W, FULL, dtype=np.int64)
    n = np.zeros(W, dtype=np.int64)
    weights = np.repeat(byte_weights(m1.start_logits[None], exp_table), W, axis=0)  # (W, 256)
    active = np.ones(W, dtype=bool)  # lanes whose window has not reached its EOW
    decoded = np.zeros((W, spec.max_window_bytes), dtype=np.uint8)
    lengths = np.zeros(W, dtype=np.int64)
    cache = m1.new_cache(W)
    m1.reset_lanes(cache, torch.arange(W))
    s = np.zeros(W, dtype=np.int64)
    while True:
        a = np.flatnonzero(active)
        cum = cumulative(weights[a], width[a], n[a], spec)  # (A, 258)
        starts = width[a, None] * cum >> PRECISION_BITS  # (A, 258) sub-interval starts relative to low
        s[a] = (starts[:, 1:] <= (point[rows[a]] - low[a])[:, None]).sum(1)  # whose sub-interval holds the point
        low[a], width[a] = narrow(low[a], width[a], cum, s[a])
        byte = a[s[a] != EOW]
        decoded[rows[byte], n[byte]] = s[byte]
        n[byte] += 1
        ended = a[s[a] == EOW]
        lengths[rows[ended]] = n[ended]
        active[ended] = False
        if not active.any():
            break
        if active.sum() <= len(active) // 2:  # compact: finished rows cost compute
            keep = np.flatnonzero(active)
            rows, low, width, n, s, weights, active = (rows[keep], low[keep], width[keep], n[keep], s[keep],
                                                       weights[keep], active[keep])
            cache = cache.select(torch.from_numpy(keep))
        tokens = torch.from_numpy(np.where(active, s, 0))  # finished rows run on a dummy byte until compacted
        logits = m1.step(cache, tokens, torch.from_numpy(np.where(active, n, 1)))
        a = np.flatnonzero(active)
        weights[a] = byte_weights(logits, exp_table)[a]
    return [decoded[w, :lengths[w]].tobytes() for w in range(W)]


def decode_symbols(m1: FixedPointM1, symbols, spec: WindowSpec) -> bytes:
    """Codec symbols (passthrough bytes < 256, windows 256 + value) -> bytes."""
    s = np.asarray(symbols, dtype=np.int64)
    if s.size and (s.min() < 0 or s.max() >= N_BYTES + (1 << spec.window_bits)):
        raise ValueError(f"symbol out of range [0, {N_BYTES + (1 << spec.window_bits)})")
    is_window = s >= N_BYTES
    windows = iter(decode_windows(m1, s[is_window] - N_BYTES, spec))
    return b"".join(next(windows) if w else bytes([int(v)]) for v, w in zip(s, is_window))


# ---- the same coder in plain Python, one byte at a time (the specification; the benchmark's baseline) ----
def _py_weights(logits: list[float], exp_table: list[int]) -> list[int]:
    top = max(logits)
    last = len(exp_table) - 1
    return [exp_table[min(round((top - x) * 2.0 ** EXP_FRAC_BITS), last)] for x in logits]


def _py_cum(weights: list[int], width: int, n: int, spec: WindowSpec) -> list[int]:
    r = width.bit_length() - 1 - spec.shift
    spread = TOTAL - (TOTAL >> min(max(r - EOW_SLACK_BITS, EOW_MIN_BITS), EOW_MAX_BITS)) - N_BYTES
    total = sum(weights)
    cum = [0]
    for w in weights:
        c = 1 + w * spread // total
        usable = n < spec.max_window_bytes and width * c >= spec.hopeless_below
        cum.append(cum[-1] + (c if usable else 0))
    cum.append(TOTAL)
    return cum


def _py_narrow(low: int, width: int, cum: list[int], s: int) -> tuple[int, int]:
    lo, hi = width * cum[s] >> PRECISION_BITS, width * cum[s + 1] >> PRECISION_BITS
    return low + lo, hi - lo


def _py_fits(low: int, width: int, spec: WindowSpec) -> tuple[bool, int]:
    m = (low + (1 << spec.shift) - 1) >> spec.shift
    return ((m + 1) << spec.shift) <= low + width, m


def encode_reference(m1: FixedPointM1, data: bytes, spec: WindowSpec) -> list[int]:
    """Encode one document, one byte and one M1 call (batch 1) at a time, with Python integers."""
    exp_table = [int(v) for v in m1.tables["exp"].tolist()]
    start_weights = _py_weights(m1.start_logits.tolist(), exp_table)
    out: list[int] = []
    for a, b in segment_bounds(data):
        seg, pos = data[a:b], 0
        while pos < len(seg):  # one window (or one passthrough byte) per iteration
            cache = m1.new_cache(1)
            m1.reset_lanes(cache, torch.arange(1))
            low, width, n, weights = 0, FULL, 0, start_weights
            cum = _py_cum(weights, width, n, spec)
            while pos < len(seg):
                byte = seg[pos]
                if cum[byte + 1] == cum[byte]:
                    break
                t_low, t_width = _py_narrow(low, width, cum, byte)
                if not _py_fits(t_low, t_width, spec)[0]:
                    break
                logits = m1.step(cache, torch.tensor([byte]), torch.tensor([n + 1]))[0].tolist()
                t_weights = _py_weights(logits, exp_table)
                t_cum = _py_cum(t_weights, t_width, n + 1, spec)
                if not _py_fits(*_py_narrow(t_low, t_width, t_cum, EOW), spec)[0]:
                    break
                low, width, n, weights, cum = t_low, t_width, n + 1, t_weights, t_cum
                pos += 1
            if n == 0:  # the byte does not fit in a window on its own
                out.append(seg[pos])
                pos += 1
            else:
                out.append(N_BYTES + _py_fits(*_py_narrow(low, width, cum, EOW), spec)[1])
    return out
