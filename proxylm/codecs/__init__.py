"""Lossless codecs (compressors) that produce the compressed views. Importing registers them."""

from proxylm.codecs.base import CODECS, CannotEncode, Codec, codec_class, load_codec, register_codec  # noqa: F401
from proxylm.codecs import gzip_codec  # noqa: F401
from proxylm.codecs import bits, bpe  # noqa: F401
from proxylm.codecs import neural  # noqa: F401  (imports torch only when M1 is used)
