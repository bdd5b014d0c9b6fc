"""Offline compression of a corpus split into checksummed shards, and the lookup the data pipeline reads.

    proxylm codec encode --codec runs/codecs/neural-16 --corpus stdlib --split train --out runs/views/neural-16
    proxylm codec encode ... --workers 2                  # processes on this machine (torch threads split)
    proxylm codec encode ... --shard 0/4                  # machine 0 of 4 takes shards 0, 4, 8, ...

    views = PrecomputedViews("runs/views/neural-16", codec)    # codec: checks the shards were made with it
    symbols = views.get("json/decoder.py", data)          # (n,) int64, None if absent or the bytes differ
    loader_codec = views.as_codec()                       # a Codec whose encode() looks the bytes up, never runs M1

Any codec works (`codec.encode_many` does the work); the neural codec is the one that needs it.

Layout of SHARDS/:
    manifest.json          the plan: format, codec fingerprint, corpus and split, and the document keys of every
                           shard (documents sorted by key, cut into shards of ~shard_bytes). Written once; a rerun
                           with another codec, corpus or split refuses to mix into it.
    shard-00000.bin        b"PROXYLM-SHARD 1\\n", one JSON line {"documents": [[key, sha256 of its bytes, bytes,
                           symbols], ...], "dtype": "<u4"}, then every document's symbols as little-endian uint32
    shard-00000.sha256     "<sha256 of the .bin>  shard-00000.bin": written last; marks the shard complete

Resume: a shard whose .sha256 matches its .bin is kept; any other is encoded again (files are written to a
temporary name and renamed, so an interrupted run leaves no half shard). Encoding is deterministic, so a
resumed run's shards are byte-identical to an uninterrupted one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxylm.codecs.base import CannotEncode
from proxylm.prepare.codec_cache import open_corpus, resolve_codec
from proxylm.core.errors import UserError
from proxylm.core.io import atomic_write
from proxylm.core.process import die_with_parent
from proxylm.data.config import DataConfig

FORMAT = "proxylm-shards-v1"
MAGIC = b"PROXYLM-SHARD 1\n"
MANIFEST = "manifest.json"
DEFAULT_SHARD_BYTES = 1_000_000  # raw bytes per shard: the unit of resume and of parallel work
SYMBOL_DTYPE = "<u4"


class MissingView(UserError, LookupError):
    """A document has no precomputed view (the loader must not run M1 inline unless asked); the message names
    the shard file and the document key, and says how to fix it."""


def read_manifest(path: Path) -> dict:
    """SHARDS/manifest.json, or a UserError naming it when it is truncated or not a shard manifest."""
    try:
        manifest = json.loads(path.read_bytes())
        assert isinstance(manifest, dict) and isinstance(manifest.get("shards"), list)
        assert all(isinstance(keys, list) for keys in manifest["shards"])
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise UserError(f"{path}: truncated or not a shard manifest; delete {path.parent} and run `proxylm codec "
                        f"encode --out {path.parent}` again") from None
    return manifest


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_fingerprint(codec) -> str:
    """sha256 of the codec's name, config and weights (if any): equal iff the codec encodes identically."""
    h = hashlib.sha256(json.dumps({"name": codec.name, **codec.config()}, sort_keys=True).encode())
    for key, tensor in sorted(getattr(codec, "weights", {}).items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.bin"


# ---- plan ------------------------------------------------------------------------------------------------
def plan_shards(refs, shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[list[str]]:
    """Document keys per shard: refs sorted by key, cut greedily at ~shard_bytes raw bytes."""
    shards, current, size = [], [], 0
    for ref in sorted(refs, key=lambda r: r.key):
        current.append(ref.key)
        size += ref.size
        if size >= shard_bytes:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    return shards


def write_or_check_manifest(out: Path, manifest: dict) -> dict:
    """Create SHARDS/manifest.json, or check that the existing one describes the same job."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.exists():
        old = read_manifest(path)
        for field in ("format", "codec_fingerprint", "corpus", "split", "shards"):
            if old.get(field) != manifest.get(field):
                raise ValueError(f"{out} holds shards of another job ({field} differs); choose another --out "
                                 "or delete it")
        return old
    atomic_write(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def shard_complete(out: Path, i: int) -> bool:
    """True iff shard i's .bin exists and matches its .sha256."""
    bin_path, sum_path = out / shard_name(i), (out / shard_name(i)).with_suffix(".sha256")
    if not (bin_path.exists() and sum_path.exists()):
        return False
    return sum_path.read_text().split()[0] == sha256_hex(bin_path.read_bytes())


# ---- one shard ---------------------------------------------------------------------------------------------
def encode_shard(codec, docs: list[tuple[str, bytes]], path: Path, progress=None) -> None:
    """Encode (key, bytes) documents into `path` (+ its .sha256, written last)."""
    if hasattr(codec, "m1"):  # the neural codec reports bytes as segments finish
        symbols = codec.encode_many([d for _, d in docs], progress=progress)
    else:
        symbols = codec.encode_many([d for _, d in docs])
        if progress is not None:
            progress(sum(len(d) for _, d in docs))
    header, body = [], []
    for (key, data), s in zip(docs, symbols):
        if s is None:  # CannotEncode: no view; the loader emits the raw view as it would inline
            header.append([key, sha256_hex(data), len(data), -1])
            continue
        header.append([key, sha256_hex(data), len(data), len(s)])
        body.append(np.asarray(s, dtype=SYMBOL_DTYPE).tobytes())
    blob = MAGIC + json.dumps({"documents": header, "dtype": SYMBOL_DTYPE}).encode() + b"\n" + b"".join(body)
    atomic_write(path, blob)
    atomic_write(path.with_suffix(".sha256"), f"{sha256_hex(blob)}  {path.name}\n".encode())


def read_shard(path: Path) -> tuple[list, np.ndarray]:
    """-> (documents [[key, sha256, bytes, symbols]], all symbols (N,) uint32); a UserError naming the file
    when it is not a well-formed shard."""
    blob = path.read_bytes()
    try:
        assert blob.startswith(MAGIC)
        end = blob.index(b"\n", len(MAGIC))
        header = json.loads(blob[len(MAGIC):end])
        docs = header["documents"]
        symbols = np.frombuffer(blob, dtype=header["dtype"], offset=end + 1)
        assert all(len(d) == 4 and isinstance(d[0], str) and isinstance(d[3], int) for d in docs)
        assert sum(max(d[3], 0) for d in docs) == len(symbols)
    except (AssertionError, ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a well-formed proxylm shard; delete it and run `proxylm codec encode "
                        f"--out {path.parent}` again (it re-encodes only missing shards)") from None
    return docs, symbols


# ---- the whole job -----------------------------------------------------------------------------------------
@dataclass
class EncodeJob:
    codec_arg: str  # codec directory (or untrained codec name)
    data_cfg: object  # DataConfig of the corpus
    split: str
    out: Path
    shard_index: int = 0  # this machine's part: shards with number % shard_count == shard_index
    shard_count: int = 1
    workers: int = 1
    shard_bytes: int = DEFAULT_SHARD_BYTES
    lanes: int | None = None  # neural: segments coded at once
    threads: int = 0  # torch threads per process (0: torch's default alone, cores / workers with workers)
    max_shards: int | None = None  # stop after encoding this many shards (tests: an interrupted run)


def check_job(job: EncodeJob) -> None:
    """Refuse numbers that would silently mean something else, before any work."""
    for name, value, low in (("--workers", job.workers, 1), ("--shard-bytes", job.shard_bytes, 1),
                             ("--threads", job.threads, 0), ("--lanes", job.lanes if job.lanes is not None else 1, 1)):
        if value < low:
            raise UserError(f"{name} {value}: must be >= {low}")
    if not 0 <= job.shard_index < job.shard_count:
        raise UserError(f"--shard {job.shard_index}/{job.shard_count}: need 0 <= i < n")
    if job.out.exists() and not job.out.is_dir():
        raise UserError(f"--out {job.out} is a file, not a directory; choose another --out")


def _open(job: EncodeJob):
    codec = resolve_codec(job.codec_arg)
    if job.lanes is not None and hasattr(codec, "n_lanes"):
        codec.n_lanes = job.lanes
    return codec, open_corpus(job.data_cfg.corpus, job.data_cfg)


_worker: dict = {}


def _worker_init(job: EncodeJob, threads: int, counter, parent_pid: int | None = None) -> None:
    import torch

    die_with_parent(parent_pid)  # a kill -9 of `codec encode` would otherwise leave its workers writing shards
    torch.set_num_threads(threads)
    _worker["codec"], _worker["corpus"] = _open(job)
    _worker["counter"] = counter


def _count(counter, n: int) -> None:
    with counter.get_lock():
        counter.value += n


def _encode_one(job: EncodeJob, i: int, keys: list[str], codec=None, corpus=None, counter=None) -> int:
    codec = _worker["codec"] if codec is None else codec
    corpus = _worker["corpus"] if corpus is None else corpus
    counter = counter if counter is not None else _worker.get("counter")
    by_key = {r.key: r for r in corpus.documents(job.split)}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise ValueError(f"corpus changed since the plan: {len(missing)} planned documents are gone "
                         f"(e.g. {missing[0]}); use a new --out")
    docs = [(k, corpus.read(by_key[k])) for k in keys]
    encode_shard(codec, docs, job.out / shard_name(i), progress=(lambda n: _count(counter, n)) if counter else None)
    return sum(len(d) for _, d in docs)


def encode_corpus(job: EncodeJob, quiet: bool = False) -> dict:
    """Encode this machine's shards of the split (skipping complete ones) -> summary dict."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm

    check_job(job)
    codec, corpus = _open(job)
    refs = corpus.documents(job.split)
    if not refs:
        raise ValueError(f"corpus {job.data_cfg.corpus} has no {job.split} documents")
    plan = plan_shards(refs, job.shard_bytes)
    d = job.data_cfg
    manifest = write_or_check_manifest(job.out, {
        "format": FORMAT, "codec": codec.name, "codec_arg": str(job.codec_arg),
        "codec_fingerprint": codec_fingerprint(codec), "alphabet_size": codec.alphabet_size,
        "passthrough": codec.passthrough, "split": job.split,
        "corpus": {"spec": d.corpus, "glob": d.glob, "val_fraction": d.val_fraction, "max_doc_bytes": d.max_doc_bytes},
        "shards": plan})
    plan = manifest["shards"]
    size = {r.key: r.size for r in refs}
    mine = [i for i in range(len(plan)) if i % job.shard_count == job.shard_index]
    todo = [i for i in mine if not shard_complete(job.out, i)]
    if job.max_shards is not None:
        todo = todo[:job.max_shards]
    total = sum(size[k] for i in todo for k in plan[i])
    start = time.perf_counter()
    counter = mp.get_context("spawn").Value("q", 0)
    bar = tqdm(total=total, unit="B", unit_scale=True, disable=quiet, desc=f"encode {job.split}", dynamic_ncols=True)
    if job.workers <= 1 or len(todo) <= 1:
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        for i in todo:
            _encode_one(job, i, plan[i], codec, corpus, counter)
            bar.update(counter.value - bar.n)
    else:
        threads = job.threads or max(1, (os.cpu_count() or 1) // job.workers)
        with ProcessPoolExecutor(job.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(job, threads, counter, os.getpid())) as pool:
            pending = {pool.submit(_encode_one, job, i, plan[i]) for i in todo}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()  # re-raise a worker's error
                bar.update(counter.value - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    complete = [i for i in mine if shard_complete(job.out, i)]
    return {"out": str(job.out), "shards_total": len(plan), "shards_mine": len(mine), "encoded_now": len(todo),
            "complete_mine": len(complete), "bytes_encoded": total, "seconds": round(seconds, 2),
            "mb_per_s": total / 1e6 / seconds if seconds > 0 and total else 0.0}


# ---- reading views back ------------------------------------------------------------------------------------
class PrecomputedViews:
    """Precomputed compressed views of a corpus split, looked up by document key (or by content).

    Shards are verified against their .sha256 when first read; `codec` (optional) must be the codec that wrote
    them. Every complete shard is usable even while other machines are still encoding theirs."""

    def __init__(self, shards_dir, codec=None, verify: bool = True):
        self.dir = Path(shards_dir)
        path = self.dir / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{self.dir}: no {MANIFEST}; make it with `proxylm codec encode --out {self.dir}`")
        self.manifest = read_manifest(path)
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{self.dir}: unknown shard format {self.manifest.get('format')}")
        if codec is not None and codec_fingerprint(codec) != self.manifest["codec_fingerprint"]:
            raise ValueError(f"{self.dir} was encoded with another codec than the one given "
                             f"({self.manifest['codec_arg']}); encode again with this codec")
        self.codec, self.verify = codec, verify
        self.shard_of = {k: i for i, keys in enumerate(self.manifest["shards"]) for k in keys}
        self._loaded: dict[int, dict[str, tuple[str, np.ndarray | None]]] = {}
        self._by_digest: dict[str, tuple[int, str]] | None = None

    def __len__(self) -> int:
        return len(self.shard_of)

    def __contains__(self, key: str) -> bool:
        return key in self.shard_of

    def keys(self):
        return self.shard_of.keys()

    def missing_shards(self) -> list[int]:
        return [i for i in range(len(self.manifest["shards"])) if not shard_complete(self.dir, i)]

    def _shard(self, i: int) -> dict[str, tuple[str, np.ndarray | None]]:
        if i not in self._loaded:
            path = self.dir / shard_name(i)
            planned = self.manifest["shards"][i]
            which = f"documents {', '.join(planned[:3])}{' ...' if len(planned) > 3 else ''} ({len(planned)} in all)"
            if self.verify and not shard_complete(self.dir, i):
                raise MissingView(f"{path} (holding {which}) is missing or fails its checksum; run `proxylm codec "
                                  f"encode` again with --out {self.dir} (it re-encodes only that shard)")
            if not path.exists():
                raise MissingView(f"{path} (holding {which}) is missing; run `proxylm codec encode` again with "
                                  f"--out {self.dir}")
            docs, symbols = read_shard(path)
            keys = [d[0] for d in docs]
            if keys != planned:
                first = next((a, b) for a, b in zip(keys + [None] * len(planned), planned + [None] * len(keys))
                             if a != b)
                raise MissingView(f"{path}: a foreign shard (it holds document {first[0]!r} where {MANIFEST} plans "
                                  f"{first[1]!r}); delete it and run `proxylm codec encode --out {self.dir}` again")
            entries, at = {}, 0
            for key, digest, _n_bytes, n in docs:
                entries[key] = (digest, None if n < 0 else symbols[at:at + n].astype(np.int64))
                at += max(n, 0)
            self._loaded[i] = entries
        return self._loaded[i]

    def get(self, key: str, data: bytes | None = None) -> np.ndarray | None:
        """Symbols (n,) int64 of document `key`; None if it has no view, or if `data` is given and differs from
        the bytes that were encoded (a stale view)."""
        if key not in self.shard_of:
            return None
        digest, symbols = self._shard(self.shard_of[key])[key]
        if data is not None and sha256_hex(data) != digest:
            return None
        return symbols

    def __getitem__(self, key: str) -> np.ndarray:
        out = self.get(key)
        if out is None:
            raise MissingView(f"no precomputed view of '{key}' in {self.dir}")
        return out

    def lookup_bytes(self, data: bytes) -> np.ndarray | None:
        """Symbols of the document whose bytes are `data` (found by sha256); None if the codec could not encode
        it; raises MissingView if no such document was encoded."""
        if self._by_digest is None:
            self._by_digest = {}
            for i in range(len(self.manifest["shards"])):
                for key, (digest, _) in self._shard(i).items():
                    self._by_digest[digest] = (i, key)
        hit = self._by_digest.get(sha256_hex(data))
        if hit is None:
            raise MissingView(f"{self._describe(data)} has no precomputed view in {self.dir} (the corpus changed "
                              f"since it was encoded, or the shards are another corpus'); encode this corpus into a "
                              "new --out, or point views.precomputed at its shards")
        return self._shard(hit[0])[hit[1]][1]

    def _describe(self, data: bytes) -> str:
        """Name a document by its corpus key (found by content in the corpus the manifest names: an error
        path only), else by size and first bytes."""
        digest = sha256_hex(data)
        try:
            c = self.manifest["corpus"]
            cfg = DataConfig(corpus=c["spec"], glob=c["glob"], val_fraction=c["val_fraction"],
                             max_doc_bytes=c["max_doc_bytes"])
            corpus = open_corpus(cfg.corpus, cfg)
            for split in ("train", "val"):
                for ref in corpus.documents(split):
                    if ref.size == len(data) and sha256_hex(corpus.read(ref)) == digest:
                        return f"document {ref.key!r}"
        except Exception:  # the manifest's corpus is gone or unreadable: fall back to the bytes
            pass
        return f"a {len(data)}-byte document starting {data[:40]!r}"

    def as_codec(self, inline: bool = False):
        """A Codec for the data pipeline whose encode() is a lookup (by content); `inline=True` encodes a miss
        with the real codec instead of raising MissingView."""
        return PrecomputedCodec(self, inline)


class PrecomputedCodec:
    """Quacks like the codec that wrote the shards (name, alphabet_size, passthrough, decode), but encode()
    returns the stored view."""

    def __init__(self, views: PrecomputedViews, inline: bool = False):
        if views.codec is None:
            views.codec = resolve_codec(views.manifest["codec_arg"])
        self.views, self.codec, self.inline = views, views.codec, inline
        self.name, self.passthrough = self.codec.name, self.codec.passthrough

    @property
    def alphabet_size(self) -> int:
        return self.codec.alphabet_size

    def encode(self, data: bytes) -> np.ndarray:
        out = self.encode_many([data])[0]
        if out is None:
            raise CannotEncode("no view of this document (the codec could not encode it)")
        return out

    def encode_many(self, datas: list[bytes]) -> list[np.ndarray | None]:
        out = []
        for data in datas:
            try:
                out.append(self.views.lookup_bytes(data))
            except MissingView:
                if not self.inline:
                    raise
                out.append(self.codec.encode_many([data])[0])
        return out

    def decode(self, symbols) -> bytes:
        return self.codec.decode(symbols)

    def config(self) -> dict:
        return self.codec.config()

    def save(self, directory):
        return self.codec.save(directory)
