"""A corpus: documents (bytes with a stable string key) streamed from units of files, never indexed.

    corpus = open_corpus("stdlib", DataConfig())          # the running Python's stdlib .py sources
    corpus = open_corpus("data/*.jsonl.gz", cfg)           # any reader of proxylm/data/readers.py
    units = corpus.split_units("train")                    # what is sharded over ranks and loader workers
    for doc in corpus.iter_unit(units[0], "train"):         # Doc(key, data), pieces of long documents included
        ...
    docs = corpus.sample("val", max_bytes=200_000)          # spread over the corpus, same for every model
    corpus.summary()                                        # files, bytes, documents per file type; skipped
    corpus.problems                                         # Counter: malformed_json, invalid_utf8, ...

Start-up lists units (files, parquet row groups, dataset row ranges): its cost grows with the number of files,
not of documents. A document over `max_doc_bytes` is cut into pieces keyed `key#0`, `key#1`, ... (cut after a
newline when there is one, never inside a UTF-8 character); nothing is dropped. The train/val split hashes the
document key (never the piece key, so the pieces of one document stay together) and does not depend on any
seed, so every run shares one val set.

`documents(split)` and `read(ref)` are the random-access form that small tools use (manifests, codec stats,
precomputed shards): `documents` streams the whole split once to list them, `read` re-reads a ref's unit
(the last unit read is kept). Training never uses them.

Problems never crash a run and are never silent: each one is a `CorpusWarning` naming the file (and line),
counted in `corpus.problems`. Empty documents are skipped and counted. Bytes are kept as they are: a text file
that is not valid UTF-8 is still a document (a codec that cannot encode it raises CannotEncode and the pipeline
emits it raw).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from proxylm.core.hashing import stable_hash64, stable_unit
from proxylm.data.config import DataConfig
from proxylm.data.splits import split_roles
from proxylm.data.readers import STDLIB_EXCLUDE_DIRS, Listing, Unit, list_units, read_unit, stdlib_files, stdlib_root  # noqa: F401

SPLITS = ("train", "val", "all")
MAX_WARNINGS_PER_KIND = 20  # after this many warnings of one kind, only count (one notice says so)
_SPLIT_SALT = "proxylm-split-v1"  # fixed: the val set must not move with the training seed
_SAMPLE_SALT = "proxylm-sample-v1"  # order in which units and documents are sampled (eval, codec training)
EVAL_OVERSAMPLE = 4  # read units until this many times the asked bytes, then take documents by hash order


class CorpusWarning(UserWarning):
    """A document or line that could not be used as is (see Corpus.problems)."""


# ---- stable hashing: the only source of "randomness" in the data pipeline -------------------------
def is_val_key(doc_key: str, val_fraction: float) -> bool:
    return val_fraction > 0 and stable_unit(_SPLIT_SALT, doc_key) < val_fraction


def in_split(doc_key: str, split: str, val_fraction: float) -> bool:
    return split == "all" or is_val_key(doc_key, val_fraction) == (split == "val")


def cut_points(data: bytes, max_bytes: int) -> list[tuple[int, int]]:
    """Split `data` into [start, end) pieces of at most max_bytes, preferring to cut after a newline
    in the second half of a piece, else before a UTF-8 lead byte (never inside a character)."""
    if max_bytes < 4:
        raise ValueError("max_doc_bytes must be >= 4 (one UTF-8 character)")
    pieces, start, n = [], 0, len(data)
    while n - start > max_bytes:
        end = start + max_bytes
        nl = data.rfind(b"\n", start + max_bytes // 2, end)
        if nl >= 0:
            end = nl + 1
        else:
            while end > start + 1 and (data[end] & 0xC0) == 0x80:  # continuation byte: move back
                end -= 1
        pieces.append((start, end))
        start = end
    pieces.append((start, n))
    return pieces


@dataclass(frozen=True)
class Doc:
    """One document or piece, as streamed."""

    key: str  # "rel/path.py", "file.jsonl:17", "x.parquet:42", plus "#k" for piece k
    data: bytes
    doc_key: str  # key of the whole document (pieces share it; the split hashes it)


@dataclass(frozen=True)
class DocRef:
    """Where one listed document (or piece) lives: its unit and its ordinal among the unit's documents."""

    key: str
    size: int
    unit: Unit
    ordinal: int  # position in corpus.iter_unit(unit, "all")
    doc_key: str

    @property
    def source(self) -> str:
        return self.unit.path

    @property
    def sort_key(self) -> tuple:
        return (self.unit.key, self.ordinal)


def shard(refs: list[DocRef], rank: int, world_size: int) -> list[DocRef]:
    """Every `world_size`-th of the sorted refs, starting at `rank` (for tools; training shards units)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return sorted(refs, key=lambda r: r.sort_key)[rank::world_size]


def count_problem(problems: Counter, warned: Counter, spec: str, kind: str, where: str, message: str,
                  stacklevel: int = 4) -> None:
    """Count one problem of `kind`; warn with `message` for the first MAX_WARNINGS_PER_KIND of each kind
    (no message: counted, not warned; empty files and long documents are common and harmless)."""
    problems[kind] += 1
    if not message:
        return
    warned[kind] += 1
    if warned[kind] <= MAX_WARNINGS_PER_KIND:
        warnings.warn(f"{where}: {message}", CorpusWarning, stacklevel=stacklevel)
    if warned[kind] == MAX_WARNINGS_PER_KIND:
        warnings.warn(f"corpus {spec}: further '{kind}' problems are counted, not shown", CorpusWarning,
                      stacklevel=stacklevel)


class Corpus:
    """Documents streamed from `units` (see proxylm/data/readers.py); no per-document state is kept."""

    def __init__(self, spec: str, units: list[Unit], listing: Listing | None = None, val_fraction: float = 0.05,
                 max_doc_bytes: int = 1_000_000, text_field: str = "text", splits: str = "auto"):
        self.spec, self.units, self.listing = spec, units, listing or Listing()
        # named splits (DatasetDict): {split: "train" | "val" | "hash"}; a unit of a split not in it is left out
        self.split_roles, self.split_how = split_roles([u.split for u in units], splits, val_fraction)
        self.val_fraction, self.max_doc_bytes, self.text_field = val_fraction, max_doc_bytes, text_field
        self.problems: Counter = Counter()
        self._warned: Counter = Counter()
        self._index: list[DocRef] | None = None
        self._cached: tuple[str, list[Doc]] | None = None  # read(): the last unit's documents

    def __repr__(self) -> str:
        return f"Corpus({self.spec!r}, units={len(self.units)})"

    # ---- problems ---------------------------------------------------------------------------------
    def _problem(self, kind: str, where: str, message: str) -> None:
        count_problem(self.problems, self._warned, self.spec, kind, where, message)

    # ---- streaming ---------------------------------------------------------------------------------
    def role(self, unit: Unit) -> str | None:
        """"train" or "val" (a named split), "hash" (split by key hash), None (a named split left out)."""
        if not self.split_roles or not unit.split:
            return "hash"
        return self.split_roles.get(unit.split)

    def _keeps(self, unit: Unit, doc_key: str, split: str) -> bool:
        role = self.role(unit)
        if role == "hash":
            return in_split(doc_key, split, self.val_fraction)
        return split == "all" or role == split

    def split_units(self, split: str) -> list[Unit]:
        """Units that may hold documents of `split`, sorted by key (a text file's split is known from its
        name, so the other split's files are left out without being read; a named split's units by its role)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        out = []
        for u in self.units:
            role = self.role(u)
            if role == "hash":
                if u.doc_key is None or in_split(u.doc_key, split, self.val_fraction):
                    out.append(u)
            elif split == "all" or role == split:
                out.append(u)
        return out

    def iter_unit(self, unit: Unit, split: str = "all", problem=None):
        """Doc of every document (or piece) of `split` in the unit, in file order.

        `problem(kind, where, message)` receives the unit's problems (default: counted and warned here)."""
        problem = problem or self._problem
        for key, data in read_unit(unit, self.text_field, problem):
            if not self._keeps(unit, key, split):
                continue
            if not data:
                problem("empty", key, "")
                continue
            if unit.reader == "text":
                _check_utf8(data, unit.path, problem)
            if len(data) <= self.max_doc_bytes:
                yield Doc(key, data, key)
            else:
                problem("split", key, "")
                for k, (a, b) in enumerate(cut_points(data, self.max_doc_bytes)):
                    yield Doc(f"{key}#{k}", data[a:b], key)

    def iter_documents(self, split: str = "all"):
        for unit in self.split_units(split):
            yield from self.iter_unit(unit, split)

    def sample(self, split: str, max_bytes: int = 0, oversample: int = 1):
        """Documents of `split` spread over the corpus, until `max_bytes` (0: the whole split, corpus order).

        Units are read in the order of a fixed hash of their keys (never the training seed), so every model of
        a comparison gets the same sample. With `oversample` > 1, units are read until oversample * max_bytes and
        the documents are then taken in the order of a hash of their keys (a spread for small samples)."""
        if not max_bytes:
            yield from self.iter_documents(split)
            return
        units = sorted(self.split_units(split), key=lambda u: stable_hash64(_SAMPLE_SALT, u.key))
        pool, total = [], 0
        for unit in units:
            for doc in self.iter_unit(unit, split):
                if oversample > 1:
                    pool.append(doc)
                else:
                    yield doc
                total += len(doc.data)
                if total >= max_bytes * oversample:
                    break
            if total >= max_bytes * oversample:
                break
        if oversample > 1:
            yield from sorted(pool, key=lambda d: stable_hash64(_SAMPLE_SALT, d.key))

    # ---- random access for tools ----------------------------------------------------------------------
    def documents(self, split: str = "train") -> list[DocRef]:
        """Every document (or piece) of a split, listed by streaming the corpus once (kept for this object)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        if self._index is None:
            self._index = [DocRef(d.key, len(d.data), unit, i, d.doc_key)
                           for unit in self.units for i, d in enumerate(self.iter_unit(unit, "all"))]
        return [r for r in self._index if self._keeps(r.unit, r.doc_key, split)]

    def read(self, ref: DocRef) -> bytes:
        """The bytes of one listed document or piece; b"" (warned and counted) if it is gone."""
        if self._cached is None or self._cached[0] != ref.unit.key:
            quiet = lambda *a: None  # noqa: E731  (its problems were counted when it was listed)
            self._cached = (ref.unit.key, list(self.iter_unit(ref.unit, "all", problem=quiet)))
        docs = self._cached[1]
        if ref.ordinal >= len(docs) or docs[ref.ordinal].key != ref.key:
            self._problem("unreadable", ref.key, "changed or gone since the corpus was listed; skipped")
            return b""
        return docs[ref.ordinal].data

    # ---- summary and manifest -----------------------------------------------------------------------
    def summary(self) -> dict:
        """What start-up found, without reading documents: per file type files, bytes, documents (-1: unknown
        until read), and what was skipped."""
        return {"corpus": self.spec, "units": len(self.units), "types": self.listing.types,
                "skipped": dict(self.listing.skipped), "skipped_examples": self.listing.examples,
                "left_out": dict(self.listing.left_out), "split_how": self.split_how,
                "text_fields": sorted({u.column for u in self.units if u.column})}

    def fingerprint(self) -> str:
        """sha256 over the units (key, size): changes when files are added, removed or resized."""
        h = hashlib.sha256()
        for u in self.units:
            h.update(f"{u.key}\0{u.size}\0{u.rows}\n".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def manifest(self, split: str = "val") -> dict:
        """Every whole document of a split: {"path": key, "size", "sha256"}, plus totals."""
        docs: dict[str, list[bytes]] = {}
        for doc in self.iter_documents(split):
            docs.setdefault(doc.doc_key, []).append(doc.data)
        entries, total = [], hashlib.sha256()
        for key, parts in docs.items():
            data = b"".join(parts)
            digest = hashlib.sha256(data).hexdigest()
            total.update(f"{key}\0{digest}\n".encode("utf-8", "surrogatepass"))
            entries.append({"path": key, "size": len(data), "sha256": digest})
        out = {"corpus": self.spec, "split": split, "val_fraction": self.val_fraction,
               "n_documents": len(entries), "total_bytes": sum(e["size"] for e in entries),
               "sha256": total.hexdigest(), "problems": dict(self.problems), "documents": entries}
        if self.spec == "stdlib":
            out["python"] = sys.version.split()[0]
        return out

    def write_manifest(self, path, split: str = "val") -> dict:
        m = self.manifest(split)
        Path(path).write_text(json.dumps(m, indent=1) + "\n")
        return m


def _check_utf8(data: bytes, where: str, problem) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        problem("invalid_utf8", where, f"not valid UTF-8 at byte {e.start}; kept as bytes")


def open_corpus(spec: str | None = None, data_cfg=None) -> Corpus:
    """Open a corpus by spec (default: data_cfg.corpus): lists its units, reads no document."""

    cfg = data_cfg or DataConfig()
    spec = spec or cfg.corpus
    units, listing = list_units(spec, cfg)
    return Corpus(spec, units, listing, val_fraction=cfg.val_fraction, max_doc_bytes=cfg.max_doc_bytes,
                  text_field=cfg.text_field, splits=getattr(cfg, "splits", "auto"))
