"""The neural codec (paper section 2.2): a small byte LM (M1) drives arithmetic coding in equal-information
windows; its compressed view mixes B-bit window symbols with passthrough bytes.

    m1.py      M1 (proxylm's Transformer, trained by proxylm/prepare/m1.py) in exact fixed point, from its weights
    coder.py   exact integer arithmetic coder, windows, batched encoder/decoder, plain-Python reference coder
    codec.py   the `neural` Codec (registered on import; torch is imported only when M1 is first used)
Offline encoding into shards (any codec, needed for this one) is proxylm/prepare/precomputed.py.
"""

from proxylm.codecs.neural.codec import NeuralCodec  # noqa: F401  (registers "neural")
