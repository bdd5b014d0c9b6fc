"""The `neural` codec: M1 + arithmetic coding in equal-information windows of B bits (paper section 2.2).

    proxylm codec train neural --corpus stdlib --out runs/codecs/neural-16 [--window-bits 16] [--steps 2000]
    proxylm codec stats --codec runs/codecs/neural-16 --corpus stdlib --split val
    proxylm codec encode --codec runs/codecs/neural-16 --corpus stdlib --split train --out runs/views/neural-16

    codec = load_codec("runs/codecs/neural-16")
    symbols = codec.encode(b"import os\n")     # (n,) int64: 0..255 passthrough bytes, 256 + w a B-bit window
    assert codec.decode(symbols) == b"import os\n"

alphabet_size = 256 + 2^B, passthrough = 256 (the Representation maps symbols < 256 onto the raw-byte ids).
Any input is encodable (improbable bytes pass through), so `CannotEncode` is never raised. What the default M1
gives on stdlib (bytes per symbol, training time, speed): BENCHMARKS.md, "Neural codec".

Codec directory: codec.json ({"name": "neural", "window_bits", "max_window_bytes", "model": M1's ModelConfig,
"format": the coder's constants, "m1_training": how M1 was trained}) and m1.safetensors (M1's float32 weights
plus the fixed-point lookup tables under "table.*"). A codec written with other coder constants refuses to load
rather than decode wrongly. max_window_bytes (default 2 * B) is also M1's training context.

Speed: `encode_many` codes all ~1 KB segments of all given documents in parallel lanes (coder.py); encoding one
short document alone is slow (few lanes). For whole corpora use the offline encoder
(proxylm/prepare/precomputed.py), which also spreads the work over processes and machines; the training loader reads its shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxylm.codecs.base import Codec, register_codec
from proxylm.core.representation import N_BYTES

WEIGHTS_FILE = "m1.safetensors"
TABLE_PREFIX = "table."
DEFAULT_WINDOW_BITS = 16
WINDOW_BYTES_PER_BIT = 2  # default max_window_bytes = 2 * B (a full window then costs <= 0.5 bits per byte)
DEFAULT_LANES = 512  # segments coded at once (M1 batch rows)


def _coder():
    """coder.py imports torch: loaded on first use, so registering the codec stays cheap."""
    from proxylm.codecs.neural import coder

    return coder


def window_spec(window_bits: int = DEFAULT_WINDOW_BITS, max_window_bytes: int | None = None):
    """The coder's WindowSpec; max_window_bytes defaults to 2 * B (also M1's training context)."""
    return _coder().WindowSpec(window_bits, max_window_bytes or WINDOW_BYTES_PER_BIT * window_bits)


def coder_format() -> dict:
    """Every constant both sides must share besides M1 and the window spec (checked when a codec loads)."""
    from proxylm.codecs.neural import m1

    coder = _coder()

    names = ("PRECISION_BITS", "STATE_BITS", "EOW_SLACK_BITS", "EOW_MIN_BITS", "EOW_MAX_BITS", "HOPELESS_MARGIN_BITS")
    grids = ("INT8_MAX", "V_FRAC_BITS", "V_MAX_BITS", "ATTN_EXP_BITS", "NORM_FRAC_BITS",
             "NORM_MAX_BITS", "EXP_FRAC_BITS", "EXP_RANGE", "EXP_OUT_BITS", "SIGMOID_FRAC_BITS", "SIGMOID_RANGE",
             "TABLE_FRAC_BITS")
    return {"version": 1, **{n.lower(): getattr(coder, n) for n in names}, **{n.lower(): getattr(m1, n) for n in grids}}


@register_codec
class NeuralCodec(Codec):
    name = "neural"
    passthrough = N_BYTES

    def __init__(self, model_config: dict, weights: dict, tables: dict | None = None,
                 window_bits: int = DEFAULT_WINDOW_BITS, max_window_bytes: int | None = None,
                 m1_training: dict | None = None, n_lanes: int = DEFAULT_LANES):
        """weights: M1's float32 state dict; tables: fixed-point tables (None: built, then saved with the codec)."""
        self.spec = window_spec(window_bits, max_window_bytes)
        self.model_config = dict(model_config)
        self.weights, self.m1_training, self.n_lanes = weights, m1_training or {}, n_lanes
        self._tables = tables
        self._m1 = None

    # ---- M1 ---------------------------------------------------------------------------------------------
    @property
    def m1(self):
        """The exact fixed-point M1 (built on first use)."""
        if self._m1 is None:
            from proxylm.codecs.neural.m1 import FixedPointM1

            self._m1 = FixedPointM1(self.model_config, self.weights, self._tables,
                                    max_len=self.spec.max_window_bytes + 1)
            self._tables = self._m1.tables
        return self._m1

    # ---- protocol ---------------------------------------------------------------------------------------
    @property
    def window_bits(self) -> int:
        return self.spec.window_bits

    @property
    def alphabet_size(self) -> int:
        return self.passthrough + (1 << self.spec.window_bits)

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_many([data])[0]

    def encode_many(self, datas: list[bytes], progress=None) -> list[np.ndarray]:
        """All segments of all documents in parallel lanes -> symbols per document (never None)."""
        coder = _coder()
        segments, owner = [], []
        for i, data in enumerate(datas):
            for a, b in coder.segment_bounds(data):
                segments.append(data[a:b])
                owner.append(i)
        coded = coder.encode_segments(self.m1, segments, self.spec, self.n_lanes, progress)
        parts: list[list[np.ndarray]] = [[] for _ in datas]
        for i, symbols in zip(owner, coded):
            parts[i].append(symbols)
        return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]

    def decode(self, symbols) -> bytes:
        return _coder().decode_symbols(self.m1, symbols, self.spec)

    @staticmethod
    def passthrough_share(symbols) -> float:
        """Share of symbols that are passthrough bytes (what `proxylm codec stats` reports)."""
        s = np.asarray(symbols)
        return float(np.count_nonzero(s < NeuralCodec.passthrough) / s.size) if s.size else 0.0

    # ---- persistence ------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"window_bits": self.spec.window_bits, "max_window_bytes": self.spec.max_window_bytes,
                "model": self.model_config, "format": coder_format(), "m1_training": self.m1_training}

    def _save_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        tables = self.m1.tables
        save_file({**self.weights, **{TABLE_PREFIX + k: v.contiguous() for k, v in tables.items()}},
                  str(directory / WEIGHTS_FILE))

    @classmethod
    def from_config(cls, directory: Path, config: dict) -> "NeuralCodec":
        from safetensors.torch import load_file

        if config.get("format") != coder_format():
            raise ValueError(f"{directory}: neural codec written with coder format {config.get('format')}, this "
                             f"proxylm uses {coder_format()}; retrain it (`proxylm codec train neural`)")
        tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
        tables = {k[len(TABLE_PREFIX):]: v for k, v in tensors.items() if k.startswith(TABLE_PREFIX)}
        weights = {k: v for k, v in tensors.items() if not k.startswith(TABLE_PREFIX)}
        return cls(config["model"], weights, tables, config["window_bits"], config["max_window_bytes"],
                   config.get("m1_training"))

    def __repr__(self) -> str:
        return (f"NeuralCodec(window_bits={self.spec.window_bits}, alphabet_size={self.alphabet_size}, "
                f"m1={self.m1_training.get('parameters', '?')} parameters)")
