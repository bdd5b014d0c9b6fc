"""Training codecs, and the cache that makes a run train its codec only once.

    codec = train_codec("bpe", texts, vocab_size=4096)          # texts: iterable of bytes
    codec = ensure_codec(cfg.views, cfg.data)                   # load, or train on the train split + cache
    proxylm codec train bpe --corpus stdlib --vocab-size 4096 --out runs/codecs/bpe-4096

Training protocol: a codec class that learns from text defines a classmethod
`train(texts: Iterable[bytes], **options) -> Codec`; one whose training needs the model and the Trainer (the
neural codec's M1) is trained by a function of this layer (`MODEL_TRAINED`, proxylm/prepare/m1.py); any other
codec is built as `cls(**options)` (gzip and the fixed bit/byte views). A new codec plugs in by defining `train` and, if it takes options, a dataclass
section of `CodecOptions` (proxylm/codecs/options.py).

Cache: `views.codec_dir` when set, else `$PROXYLM_CACHE/codecs/<name>-<hash>` (default `~/.cache/proxylm`),
the hash covering the codec name, its options and the corpus (spec, glob, split and sampling settings, and the
names and sizes of its files). A codec learns from at most `data.codec_sample_bytes` (default 50 MB) of the train
split, spread over the corpus. A codec is trained in a temporary sibling directory and renamed into place, under a
file lock, so concurrent ranks train it once and a crash never leaves half a codec.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

from proxylm.codecs.base import CODECS, CODEC_FILE, CannotEncode, Codec, codec_class, load_codec
from proxylm.core.errors import UserError
from proxylm.core.io import file_lock
from proxylm.data.corpus import open_corpus as _open_corpus

CACHE_ENV = "PROXYLM_CACHE"
DEFAULT_CACHE = "~/.cache/proxylm"
HASH_CHARS = 12  # hex digits of the cache key in directory names

MODEL_TRAINED = ("neural",)  # codecs whose training needs the model and the Trainer: prepare/m1.py trains them


def needs_training(name: str) -> bool:
    cls = codec_class(name)
    return name in MODEL_TRAINED or callable(getattr(cls, "train", None))


def train_codec(name: str, texts: Iterable[bytes] = (), **options) -> Codec:
    """A codec of kind `name` learnt on `texts` (ignored by codecs that need no training)."""
    cls = codec_class(name)
    if name in MODEL_TRAINED:
        from proxylm.prepare.m1 import train_neural_codec  # torch and the Trainer: imported only to train

        return train_neural_codec(texts, **options)
    if needs_training(name):
        return cls.train(texts, **options)
    return cls(**options)


def codec_options(views_cfg) -> dict:
    """Training options of the views config's codec (its section of `views.codec_options`)."""
    return views_cfg.codec_options.for_codec(views_cfg.codec)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# ---- corpus access (one seam, so tests can substitute a small corpus) ---------------------------------
def open_corpus(spec: str, data_cfg):
    return _open_corpus(spec, data_cfg)


def corpus_texts(corpus, split: str = "train", max_bytes: int = 0) -> Iterator[bytes]:
    """The bytes of the documents of a split, read lazily: at most `max_bytes` spread over the corpus (units
    in a fixed hash order, see Corpus.sample), or all of them (0)."""
    for doc in corpus.sample(split, max_bytes):
        yield doc.data


def corpus_fingerprint(corpus, data_cfg) -> dict:
    """What the training text depends on: where it comes from, how it is split and sampled, and the files
    (names and sizes of every unit; no document is read)."""
    spec = data_cfg.corpus if data_cfg.corpus == "stdlib" else str(Path(data_cfg.corpus).expanduser().resolve())
    return {"corpus": spec, "glob": data_cfg.glob, "exclude": data_cfg.exclude, "text_field": data_cfg.text_field,
            "val_fraction": data_cfg.val_fraction, "max_doc_bytes": data_cfg.max_doc_bytes,
            "sample_bytes": data_cfg.codec_sample_bytes, "units": corpus.fingerprint(),
            # named splits change what "train" is (absent for other corpora: their cached codecs keep their key)
            **({"splits": corpus.split_how} if getattr(corpus, "split_roles", None) else {})}


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


ROUNDTRIP_SAMPLE_BYTES = 1_000_000  # train text a tokenizer codec is checked on at the start of a run


def check_lossless(codec: Codec, corpus, where: str, max_bytes: int = ROUNDTRIP_SAMPLE_BYTES) -> dict:
    """Refuse (UserError) a codec that does not give back the bytes of a sample of the train split.

    Documents it cannot encode (CannotEncode: they are emitted raw) are counted, not failures."""

    checked = unencodable = 0
    for doc in corpus.sample("train", max_bytes):
        try:
            symbols = codec.encode(doc.data)
        except CannotEncode as e:
            if _is_utf8(doc.data) and hasattr(codec, "encode_unchecked"):  # a text it loses, not one it cannot take
                raise UserError(f"{where}: the codec does not give back document '{doc.key}' ({e}; it is lossy on "
                                "raw bytes); import a tokenizer with `proxylm codec import --tokenizer PATH`, which "
                                "checks it") from None
            unencodable += 1
            continue
        checked += 1
        if codec.decode(symbols) != doc.data:
            raise UserError(f"{where}: the codec does not give back document '{doc.key}' (it is lossy on raw "
                            "bytes); import a tokenizer with `proxylm codec import --tokenizer PATH`, which checks it")
    return {"checked": checked, "unencodable": unencodable}


def cache_key(name: str, options: dict, fingerprint: dict) -> str:
    blob = json.dumps({"codec": name, "options": options, "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_CHARS]


# ---- atomic, locked creation --------------------------------------------------------------------------
def locked(directory: Path):
    """Exclusive lock next to `directory` (released when the process dies, so never stale)."""
    return file_lock(directory.parent / f".{directory.name}.lock")


def save_atomic(codec: Codec, directory, overwrite: bool = False) -> Path:
    """Save into a temporary sibling, then rename: `directory` is either absent or a complete codec.

    `overwrite` replaces a codec directory (one with codec.json); any other non-empty directory is refused.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        if not (directory / CODEC_FILE).exists():
            raise ValueError(f"{directory} exists and is not a codec directory; choose another --out")
        if not overwrite:
            raise ValueError(f"{directory} already holds a codec; pass --force to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        codec.save(tmp)
        old = None
        if directory.exists() and overwrite:
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old)  # out of the way in one step; deleted once the new one is in place
        os.rename(tmp, directory)  # fails if `directory` exists and is not empty: never clobber silently
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def build_codec(name: str, directory, texts: Callable[[], Iterable[bytes]], **options) -> Codec:
    """Load the codec in `directory`, or train it (under a lock) and save it there atomically."""
    directory = Path(directory)
    with locked(directory):
        if (directory / CODEC_FILE).exists():  # another process finished it while we waited
            return load_codec(directory)
        if directory.exists() and any(directory.iterdir()):
            if (directory / "tokenizer.json").exists():  # an HF tokenizer (folder): it needs importing, not removing
                raise UserError(f"{directory} holds a tokenizer, not a proxylm codec ({CODEC_FILE}); import it with "
                                f"`proxylm codec import --tokenizer {directory} --out codecs/mine` (checked lossless), "
                                "then views.codec_dir=codecs/mine")
            raise ValueError(f"{directory} exists but holds no {CODEC_FILE}; remove it or choose another directory")
        if directory.exists():
            directory.rmdir()
        codec = train_codec(name, texts() if needs_training(name) else (), **options)
        save_atomic(codec, directory)
    return codec


def _check_loaded(codec: Codec, name: str, options: dict, directory: Path) -> Codec:
    if codec.name != name:
        raise ValueError(f"{directory} holds a '{codec.name}' codec but views.codec is '{name}'")
    if "surface" in codec.config():  # an imported tokenizer: its vocabulary size is its own, not an option
        return codec
    differing = {k: (v, codec.config()[k]) for k, v in options.items()
                 if k in codec.config() and codec.config()[k] != v}
    if differing:
        warnings.warn(f"{directory}: using the saved codec; its options differ from the views config "
                      + ", ".join(f"{k}: config {want} vs saved {have}" for k, (want, have) in differing.items()))
    return codec


def ensure_codec(views_cfg, data_cfg, corpus=None) -> Codec:
    """The run's codec: loaded from `views.codec_dir` or the cache, else trained on the train split once.
    corpus: the run's opened corpus (else opened here, only when the cache key or the training needs it)."""
    if views_cfg.codec is None:
        raise ValueError("views.codec is not set: a raw-bytes run has no codec")
    name, options = views_cfg.codec, codec_options(views_cfg)
    if views_cfg.codec_dir and (Path(views_cfg.codec_dir).expanduser() / CODEC_FILE).exists():
        directory = Path(views_cfg.codec_dir).expanduser()
        return _check_loaded(load_codec(directory), name, options, directory)
    if not needs_training(name):
        return train_codec(name, **options)  # nothing to learn, nothing to cache
    corpus = corpus if corpus is not None else open_corpus(data_cfg.corpus, data_cfg)
    if views_cfg.codec_dir:
        directory = Path(views_cfg.codec_dir).expanduser()
    else:
        directory = default_codec_dir(name, options, corpus, data_cfg)
    return build_codec(name, directory, lambda: corpus_texts(corpus, "train", data_cfg.codec_sample_bytes),
                       **options)


def default_codec_dir(name: str, options: dict, corpus, data_cfg) -> Path:
    """Cache directory of a codec trained with `options` on this corpus' train split."""
    return cache_root() / "codecs" / f"{name}-{cache_key(name, options, corpus_fingerprint(corpus, data_cfg))}"


def resolve_codec(arg: str) -> Codec:
    """A codec directory, or the name of a codec that needs no training (built with default options)."""
    path = Path(arg).expanduser()
    if (path / CODEC_FILE).exists():
        return load_codec(path)
    codec_class("gzip")  # registers the built-in codecs
    if arg in CODECS:
        if needs_training(arg):
            raise ValueError(f"codec '{arg}' must be trained first: `proxylm codec train {arg} --out DIR`, "
                             "then pass --codec DIR")
        return train_codec(arg)
    if path.exists():
        return load_codec(path)  # raises a clear "not a codec directory"
    raise FileNotFoundError(f"--codec {arg}: no such codec directory, and not a codec name "
                            f"(names: {', '.join(sorted(CODECS))})")
