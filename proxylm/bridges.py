"""Wiring of the bridges between the views into a run's model (the modules: proxylm/model/features.py, bridge.py).

    attach_bridges(model, cfg, rep, codec, run_dir)    # proxylm/assemble.py's new_model calls it

The bridges read the codec's symbols as byte strings (`symbol_bytes`: bpe and imported tokenizers). A proxy run
uses its own codec; a byte run with model.input_bridge=own (no compressed view) uses the codec that
views.codec_options describe (bpe, e.g. views.codec_options.bpe.vocab_size=512: the proxy arms' table), saved
to run_dir/bridge_codec so the run carries its table and a later load needs no codec cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from proxylm.codecs import load_codec
from proxylm.prepare.codec_cache import ensure_codec
from proxylm.core.errors import ConfigError

BRIDGE_CODEC_DIR = "bridge_codec"


def bridge_codec(cfg, codec, run_dir=None):
    """The codec whose symbols the bridges use: the run's own; for a byte run (input_bridge=own) the codec
    views.codec_options describe (bpe), read back from run_dir/bridge_codec when saved there."""
    m = cfg.model
    if codec is not None:
        return codec
    if m.output_bridge > 0 or m.input_bridge == "shared":
        raise ConfigError("model.output_bridge / model.input_bridge=shared need a compressed view (views.codec=bpe): "
                          "a byte model has no compressed ids to predict or share; use model.input_bridge=own")
    if run_dir is not None and (Path(run_dir) / BRIDGE_CODEC_DIR).exists():
        return load_codec(Path(run_dir) / BRIDGE_CODEC_DIR)
    return ensure_codec(dataclasses.replace(cfg.views, codec="bpe"), cfg.data)


def attach_bridges(model, cfg, rep, codec, run_dir=None) -> None:
    """Give `model` the trie of the input bridge and the output bridge its config asks for (nothing when off)."""
    m = cfg.model
    if m.input_bridge == "none" and m.output_bridge <= 0:
        return
    source = bridge_codec(cfg, codec, run_dir)
    pieces = source.symbol_bytes()
    if pieces is None:
        raise ConfigError(f"model.input_bridge / model.output_bridge: the codec {source.name!r} cannot say which "
                          "bytes its symbols stand for (bpe and imported tokenizers can); use views.codec=bpe")
    if m.input_bridge != "none":
        rows = rep.compressed_ids(np.arange(len(pieces), dtype=np.int64)).tolist() if codec is not None else None
        model.features.set_vocabulary(pieces, rows, m.dim, m.init_std)
    if m.output_bridge > 0:
        from proxylm.model.bridge import OutputBridge
        model.output_bridge = OutputBridge(source, rep, m.output_bridge)
