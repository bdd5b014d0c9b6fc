"""Corpus readers: where documents come from. Documents are bytes with a stable string key.

    corpus = open_corpus("stdlib", DataConfig())          # the running Python's stdlib .py sources
    corpus = open_corpus("data/*.jsonl", cfg)              # JSONL: "text" field, else "content"
    corpus = open_corpus("~/src/project", cfg)             # folder: files matching cfg.glob
    refs = corpus.documents("train")                       # list[DocRef], sorted, index only (lazy)
    data = corpus.read(refs[0])                            # bytes of one document (or one piece of it)
    mine = shard(refs, rank=1, world_size=4)               # round-robin over sorted refs
    corpus.write_manifest("val.json", "val")               # path, size, sha256 of every document
    corpus.problems                                        # Counter: malformed_json, invalid_utf8, ...

Keys: the path relative to the corpus root for files (`json/decoder.py`), `file:line` for JSONL
(`part-0.jsonl:17`, 1-based lines). A document over `max_doc_bytes` is cut into pieces keyed
`key#0`, `key#1`, ... (cut after a newline when there is one, never inside a UTF-8 character);
nothing is dropped. The train/val split hashes the document key (never the piece key, so the pieces
of one document stay together) and does not depend on any seed, so every run shares one val set.

Problems never crash a run and are never silent: each one is a `CorpusWarning` naming the file
(and line), counted in `corpus.problems`. Empty documents are skipped and counted. Bytes are kept
as they are: a file that is not valid UTF-8 is still a document (a codec that cannot encode it
raises CannotEncode and the pipeline emits it raw).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys
import sysconfig
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "all")
# stdlib folders that are test suites or installed packages, not library source
STDLIB_EXCLUDE_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                                 "__pycache__"})
MAX_WARNINGS_PER_KIND = 20  # after this many warnings of one kind, only count (one notice says so)
_SPLIT_SALT = "proxylm-split-v1"  # fixed: the val set must not move with the training seed
_GLOB_MAGIC = ("*", "?", "[")


class CorpusWarning(UserWarning):
    """A document or line that could not be used as is (see Corpus.problems)."""


# ---- stable hashing: the only source of "randomness" in the data pipeline -------------------------
def stable_hash64(*parts) -> int:
    """A 64-bit hash of the parts' string forms; same value on every machine, Python and run."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def stable_unit(*parts) -> float:
    """A uniform float in [0, 1) derived from the parts (53 bits, exact in a double)."""
    return (stable_hash64(*parts) >> 11) / float(1 << 53)


def is_val_key(doc_key: str, val_fraction: float) -> bool:
    return val_fraction > 0 and stable_unit(_SPLIT_SALT, doc_key) < val_fraction


@dataclass(frozen=True)
class DocRef:
    """Where one document (or piece of one) lives. Cheap: no text is held."""

    key: str  # stable id: "rel/path.py", "file.jsonl:17", plus "#k" for piece k
    size: int  # bytes of this document or piece
    source: str  # absolute path of the file holding it
    line: int = 0  # JSONL: 1-based line number; 0 for plain files
    offset: int = 0  # JSONL: byte offset of the line in the file
    length: int = 0  # JSONL: byte length of the line
    start: int = 0  # byte range [start, start + size) of the piece inside the document
    piece: int = -1  # piece index, -1 when the document is whole

    @property
    def doc_key(self) -> str:
        """Key of the whole document (pieces share it)."""
        return self.key if self.piece < 0 else self.key.rsplit("#", 1)[0]

    @property
    def sort_key(self) -> tuple:
        return (self.doc_key.rsplit(":", 1)[0] if self.line else self.doc_key, self.line, self.piece)


def shard(refs: list[DocRef], rank: int, world_size: int) -> list[DocRef]:
    """Rank `rank`'s documents: every `world_size`-th of the sorted refs, starting at `rank`.

    The shards of all ranks partition `refs` exactly (nothing dropped, nothing duplicated); their sizes
    differ by at most one document.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return sorted(refs, key=lambda r: r.sort_key)[rank::world_size]


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


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


class Corpus:
    """An index of documents over plain files and/or JSONL files (built on first use, no text kept)."""

    def __init__(self, spec: str, files: list[tuple[Path, str, str]], val_fraction: float = 0.05,
                 max_doc_bytes: int = 1_000_000):
        self.spec = spec
        self.files = files  # (absolute path, relative name, kind "file" | "jsonl"), sorted by name
        self.val_fraction = val_fraction
        self.max_doc_bytes = max_doc_bytes
        self.problems: Counter = Counter()
        self._warned: Counter = Counter()
        self._seen_problem: set[tuple[str, str]] = set()  # (kind, where) of problems counted once
        self._read_problems: list[tuple[str, str]] = []  # those found while reading (not re-derived by the index)
        self._index: dict[str, list[DocRef]] | None = None

    def __repr__(self) -> str:
        return f"Corpus({self.spec!r}, files={len(self.files)})"

    # ---- problems ---------------------------------------------------------------------------------
    def _problem(self, kind: str, where: str, message: str, once: bool = False) -> None:
        if once:
            if (kind, where) in self._seen_problem:
                return
            self._seen_problem.add((kind, where))
            if self._index is not None:
                self._read_problems.append((kind, where))
        self.problems[kind] += 1
        self._warned[kind] += 1
        if self._warned[kind] <= MAX_WARNINGS_PER_KIND:
            warnings.warn(f"{where}: {message}", CorpusWarning, stacklevel=3)
        if self._warned[kind] == MAX_WARNINGS_PER_KIND:
            warnings.warn(f"corpus {self.spec}: further '{kind}' problems are counted, not shown",
                          CorpusWarning, stacklevel=3)

    # ---- index -------------------------------------------------------------------------------------
    def documents(self, split: str = "train") -> list[DocRef]:
        """Documents of a split (`train`, `val` or `all`), in corpus order (sorted files, line order)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        if self._index is None:
            self._index = self._build_index()
        if split == "all":
            return sorted(self._index["train"] + self._index["val"], key=lambda r: r.sort_key)
        return list(self._index[split])

    def _build_index(self) -> dict[str, list[DocRef]]:
        index: dict[str, list[DocRef]] = {"train": [], "val": []}
        for path, name, kind in self.files:
            refs = self._index_jsonl(path, name) if kind == "jsonl" else self._index_file(path, name)
            for ref in refs:
                index["val" if is_val_key(ref.doc_key, self.val_fraction) else "train"].append(ref)
        return index

    def _pieces(self, key: str, data: bytes | None, size: int, **where) -> list[DocRef]:
        if size == 0:
            self.problems["empty"] += 1  # counted, not warned: empty files are common and harmless
            return []
        if size <= self.max_doc_bytes:
            return [DocRef(key=key, size=size, **where)]
        self.problems["split"] += 1
        return [DocRef(key=f"{key}#{k}", size=b - a, start=a, piece=k, **where)
                for k, (a, b) in enumerate(cut_points(data, self.max_doc_bytes))]

    def _index_file(self, path: Path, name: str) -> list[DocRef]:
        try:
            size = path.stat().st_size
            data = path.read_bytes() if size > self.max_doc_bytes else None  # only big ones are read now
        except OSError as e:
            self._problem("unreadable", str(path), f"cannot read ({e.strerror or e}); skipped")
            return []
        return self._pieces(name, data, size if data is None else len(data), source=str(path))

    def _index_jsonl(self, path: Path, name: str) -> list[DocRef]:
        refs: list[DocRef] = []
        try:
            f = open(path, "rb")
        except OSError as e:
            self._problem("unreadable", str(path), f"cannot read ({e.strerror or e}); skipped")
            return refs
        with f:
            offset = 0
            for lineno, line in enumerate(f, start=1):
                text = self._parse_line(line, f"{path}:{lineno}")
                if text is not None:
                    refs += self._pieces(f"{name}:{lineno}", text if len(text) > self.max_doc_bytes else None,
                                         len(text), source=str(path), line=lineno, offset=offset,
                                         length=len(line))
                offset += len(line)
        return refs

    def _parse_line(self, line: bytes, where: str) -> bytes | None:
        """The document bytes of one JSONL line, or None (blank, malformed, no text: counted)."""
        if not line.strip():
            return None  # blank lines (e.g. a trailing newline) are not documents
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._problem("malformed_json", where, f"malformed JSON line ({e}); skipped", once=True)
            return None
        text = obj.get("text", obj.get("content")) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            self._problem("no_text", where, "no string 'text' or 'content' field; skipped", once=True)
            return None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates ("\ud800"): keep them, as the bytes JSON asked for
            self._problem("invalid_utf8", where, "text holds lone surrogates (not valid UTF-8); kept as bytes",
                          once=True)
            return text.encode("utf-8", "surrogatepass")

    # ---- reading -----------------------------------------------------------------------------------
    def read(self, ref: DocRef) -> bytes:
        """The bytes of one document or piece. Returns b"" (warned and counted) if it cannot be read."""
        try:
            if ref.line:
                with open(ref.source, "rb") as f:
                    f.seek(ref.offset)
                    line = f.read(ref.length)
                data = self._parse_line(line, f"{ref.source}:{ref.line}")
                if data is None:
                    raise OSError("the line changed since the corpus was indexed")
            else:
                data = Path(ref.source).read_bytes()
        except OSError as e:
            self._problem("unreadable", ref.key, f"cannot read ({getattr(e, 'strerror', None) or e}); skipped",
                          once=True)
            return b""
        if ref.piece >= 0:
            data = data[ref.start:ref.start + ref.size]
        elif len(data) != ref.size:
            self._problem("changed", ref.key, f"size changed since indexing ({ref.size} -> {len(data)})", once=True)
        if not ref.line:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                self._problem("invalid_utf8", f"{ref.source}", f"not valid UTF-8 at byte {ref.start + e.start}; "
                              "kept as bytes", once=True)
        return data

    # ---- state: problems found while reading, so that a resumed run's counts continue -----------------
    def state_dict(self) -> dict:
        return {"read_problems": [list(p) for p in self._read_problems]}

    def load_state_dict(self, state: dict) -> None:
        self.documents("all")  # index first: its problems are re-derived, not restored
        for kind, where in state.get("read_problems", []):
            if (kind, where) not in self._seen_problem:
                self._seen_problem.add((kind, where))
                self._read_problems.append((kind, where))
                self.problems[kind] += 1

    # ---- manifest ----------------------------------------------------------------------------------
    def manifest(self, split: str = "val") -> dict:
        """Every whole document of a split: {"path": key, "size", "sha256"}, plus totals."""
        docs: dict[str, list[DocRef]] = {}
        for ref in self.documents(split):
            docs.setdefault(ref.doc_key, []).append(ref)
        entries, total = [], hashlib.sha256()
        for key, refs in docs.items():
            data = b"".join(self.read(r) for r in sorted(refs, key=lambda r: r.piece))
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


# ---- opening -----------------------------------------------------------------------------------------
def _stdlib_files() -> list[tuple[Path, str, str]]:
    root = stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):  # prune while walking: site-packages can be huge
        dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDE_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                p = Path(dirpath, name)
                out.append((p, p.relative_to(root).as_posix(), "file"))
    return sorted(out, key=lambda t: t[1])


def _glob_root(pattern: str) -> Path:
    """The folder before the first glob magic character (names are relative to it)."""
    parts = Path(pattern).parts
    k = next(i for i, p in enumerate(parts) if any(c in p for c in _GLOB_MAGIC))
    return Path(*parts[:k]) if k else Path(".")


def resolve_files(spec: str, file_glob: str = "**/*.py") -> list[tuple[Path, str, str]]:
    """(absolute path, relative name, kind) of every file of a corpus spec, sorted by name."""
    if spec == "stdlib":
        return _stdlib_files()
    expanded = os.path.expanduser(spec)
    kind = lambda p: "jsonl" if p.name.endswith(".jsonl") else "file"  # noqa: E731
    if any(c in expanded for c in _GLOB_MAGIC):
        root = _glob_root(expanded)
        paths = [Path(p) for p in globlib.glob(expanded, recursive=True) if Path(p).is_file()]
        if not paths:
            raise FileNotFoundError(f"corpus glob '{spec}' matches no files")
        out = [(p.resolve(), p.relative_to(root).as_posix(), kind(p)) for p in paths]
    else:
        path = Path(expanded)
        if path.is_dir():
            out = [(p.resolve(), p.relative_to(path).as_posix(), kind(p))
                   for p in path.glob(file_glob) if p.is_file()]
            if not out:
                raise FileNotFoundError(f"corpus folder '{spec}' has no files matching '{file_glob}' "
                                        "(set data.glob)")
        elif path.is_file():
            out = [(path.resolve(), path.name, kind(path))]
        else:
            raise FileNotFoundError(f"corpus '{spec}' not found: expected 'stdlib', a .jsonl file, a folder "
                                    "or a glob of .jsonl files")
    return sorted(out, key=lambda t: t[1])


def open_corpus(spec: str | None = None, data_cfg=None) -> Corpus:
    """Open a corpus by spec (default: data_cfg.corpus). The index is built on first use."""
    from proxylm.data.config import DataConfig

    cfg = data_cfg or DataConfig()
    spec = spec or cfg.corpus
    return Corpus(spec, resolve_files(spec, cfg.glob), val_fraction=cfg.val_fraction,
                  max_doc_bytes=cfg.max_doc_bytes)
