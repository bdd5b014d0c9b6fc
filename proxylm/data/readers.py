"""Corpus readers, chosen by what the data is (magic bytes and content, not only the file name).

    units, listing = list_units("data/*.parquet", cfg)     # one Unit per file, parquet row group or row range
    for key, data in read_unit(units[0], cfg.text_field, problem):   # (document key, bytes), in file order
        ...

Readers (one-line examples in README.md):
    folder    data.corpus=~/src/repo data.glob='**/*.py,**/*.js'   every matching text file is one document
    text      data.corpus='notes/*.md'                               a glob of text files: one document each
    jsonl     data.corpus='shards/*.jsonl' (or .jsonl.gz, .jsonl.zst)  one document per line, field data.text_field
    parquet   data.corpus='shards/*.parquet'                         one document per row; a row group is a unit
    dataset   data.corpus=path/saved_with_save_to_disk               HF `datasets` (Dataset or DatasetDict)
    arrow     data.corpus='cache/*.arrow'                            HF `datasets` local data files (.arrow)

A Unit is the smallest piece read on its own: a file (text, JSONL), a parquet row group, or a range of rows
of a dataset. Units, not documents, are listed at start-up (cost grows with the number of files) and are
sharded over ranks and loader workers. Document keys: the file's relative path (text), `file:LINE` (JSONL,
1-based), `file:ROW` (parquet, arrow, datasets; 0-based).

Refused before any work (UserError naming the file and what to do): a single-file corpus that no reader takes
(tar.gz, bz2, xz, zip), parquet, arrow or JSONL without the text field (their columns / the first record's fields
listed), a spec that names nothing (with a hint for Hugging Face hub names: save_to_disk first).
Skipped and counted (start-up summary, one example each): compressed or columnar files met by the folder reader
(with the reader that takes them), compressed files of a glob that are not JSONL, binary files (NUL bytes in a
first 8 KiB that is not UTF-8), symlinks pointing outside the corpus root, symlink loops, broken symlinks, symlinked
folders (not followed), hidden files and folders (names starting '.'). Counted by extension: a folder's files that
data.glob leaves out.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from proxylm.core.errors import UserError
from proxylm.core import records
from proxylm.data.splits import hub_hint
from proxylm.data.walk import STDLIB_EXCLUDE_DIRS, Listing, split_patterns, stdlib_files, stdlib_root, walk  # noqa: F401

SNIFF_BYTES = 8192
PARQUET_BATCH_ROWS = 256  # rows of a parquet row group decoded at a time
DATASET_ROWS_PER_UNIT = 4096  # rows of an HF dataset read as one unit (memory-mapped: cheap to slice)
DEFAULT_TEXT_FIELD = "text"
FALLBACK_TEXT_FIELD = "content"  # tried when text_field is the default and a record has no "text"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MAGIC = {  # prefix -> what the file is
    b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"PAR1": "parquet", b"ARROW1": "arrow",
    b"\xff\xff\xff\xff": "arrow", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7z",
}


class CorpusNotFound(UserError, FileNotFoundError):
    """The corpus spec names nothing readable."""


@dataclass(frozen=True)
class Unit:
    """One independently readable piece of a corpus."""

    key: str  # unique, sortable: "a/b.py", "part-0.jsonl", "x.parquet@rg3", "ds@r4096"
    reader: str  # "text" | "jsonl" | "parquet" | "arrow" | "dataset"
    path: str  # absolute path of the file (dataset: its folder)
    name: str  # relative name used in document keys
    ftype: str  # file type in the start-up summary: ".py", ".jsonl.gz", ".parquet", "dataset"
    compression: str = ""  # jsonl: "" | "gzip" | "zstd"
    start: int = 0  # parquet: row group; arrow/dataset: first row
    stop: int = 0  # arrow/dataset: end row (exclusive)
    row0: int = 0  # parquet: index of the row group's first row in the file (document keys)
    column: str = ""  # parquet/arrow/dataset: the text column
    split: str = ""  # dataset: the DatasetDict split ("" for a Dataset)
    size: int = 0  # bytes on disk this unit stands for (summary, epoch estimate)
    rows: int = -1  # documents (rows) when known without reading, else -1
    stride: int = 1  # a strided part of a unit: records with ordinal % stride == phase (few units, many ranks)
    phase: int = 0

    @property
    def doc_key(self) -> str | None:
        """The only document's key when it is known before reading (text files), else None."""
        return self.name if self.reader == "text" else None

    def part(self, phase: int, stride: int) -> "Unit":
        return Unit(**{**self.__dict__, "key": f"{self.key}%{phase}/{stride}", "phase": phase, "stride": stride})


# ---- what a file is -----------------------------------------------------------------------------------------
def sniff(path: Path) -> tuple[str, str]:
    """(kind, compression): kind is jsonl | parquet | arrow | text | binary | compressed."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            if what in ("gzip", "zstd"):
                inner = _decompressed_head(path, what)
                return ("jsonl", what) if inner.lstrip()[:1] in (b"{", b"") else ("compressed", what)
            return (what, "") if what in ("parquet", "arrow") else ("compressed", what)
    if b"\0" in head and not _utf8_head(head):  # NUL bytes in text that is not UTF-8: an image, a binary, ...
        return "binary", ""
    if path.name.endswith(JSONL_SUFFIXES):
        return "jsonl", ""
    return "text", ""


def _utf8_head(head: bytes) -> bool:
    """True if `head` is valid UTF-8, allowing a character cut at its end."""
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        return len(head) == SNIFF_BYTES and e.start >= len(head) - 3


def _decompressed_head(path: Path, compression: str) -> bytes:
    try:
        with open_binary(path, compression) as f:
            return f.read(SNIFF_BYTES)
    except (OSError, EOFError, ValueError) as e:
        raise UserError(f"{path}: {compression} data that cannot be decompressed ({e}); fix or remove the file")


def open_binary(path, compression: str = ""):
    """A binary file object of the decompressed bytes."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def _ftype(path: Path) -> str:
    name = path.name.lower()
    for double in (".jsonl.gz", ".jsonl.zst", ".ndjson.gz", ".ndjson.zst", ".json.gz", ".json.zst"):
        if name.endswith(double):
            return double
    return path.suffix.lower() or "(no extension)"


def _reader_hint(path: Path, kind: str, compression: str) -> str:
    """What reads such a file: "the JSONL reader: data.corpus='DIR/*.jsonl.gz'", or how to make it readable."""
    parent = path.parent
    if kind == "jsonl":
        return f"the JSONL reader: data.corpus='{parent}/*{_ftype(path)}'"
    if kind in ("parquet", "arrow"):
        return f"the {kind} reader: data.corpus='{parent}/*{path.suffix}'"
    return "decompress it (the JSONL reader takes .jsonl.gz and .jsonl.zst)"


def _not_text(kind: str, compression: str) -> str:
    if compression:
        return f"{compression}-compressed {'JSONL' if kind == 'jsonl' else 'data'}"
    return f"{kind} data"


# ---- listing units --------------------------------------------------------------------------------------------
def file_units(path: Path, name: str, cfg, listing: Listing, folder: bool, single: bool = False) -> list[Unit]:
    """The units of one file, by what it is. `folder`: met by the folder reader (text files only); `single`: the
    corpus is this one file (what cannot be read is refused, not skipped)."""
    try:
        kind, compression = sniff(path)
        size = path.stat().st_size
    except OSError:
        listing.skip("unreadable", path)
        return []
    if folder and (compression or kind in ("compressed", "parquet", "arrow")):
        # skipped and counted, one kind per line of the summary with an example and the reader that takes it: a
        # mixed folder (site-packages) then trains on its text in one go instead of one refusal per file type
        what = _not_text(kind, compression)
        listing.skip(f"{what} (folder reader reads text; {_reader_hint(path, kind, compression)})", path)
        return []
    if kind == "compressed":
        if not single:  # one of a glob's files: skipped and counted like the folder reader's
            listing.skip(f"{compression}-compressed data, not JSONL ({_reader_hint(path, kind, compression)})", path)
            return []
        raise UserError(f"{path}: {compression}-compressed data that is not JSONL; no reader takes it: "
                        f"{_reader_hint(path, kind, compression)}")
    if kind == "binary":
        listing.skip("binary", path)
        return []
    ftype = _ftype(path)
    if kind == "jsonl" and (not folder or path.name.endswith(JSONL_SUFFIXES)):
        field, rows, text_bytes = _jsonl_facts_cached(path, compression, cfg.text_field, listing, size)
        listing.add(ftype, size, rows, text_bytes)
        return [Unit(key=name, reader="jsonl", path=str(path), name=name, ftype=ftype, compression=compression,
                     size=size, rows=rows, column=field)]
    if kind == "parquet":
        return _parquet_units(path, name, cfg.text_field, listing)
    if kind == "arrow":
        return _arrow_units(path, name, cfg.text_field, listing)
    listing.add(ftype, size, 1)
    return [Unit(key=name, reader="text", path=str(path), name=name, ftype=ftype, size=size, rows=1)]


JSONL_COUNT_BYTES = 256 * 2**20  # JSONL on disk whose records and text bytes are counted at listing (then: as read)


def jsonl_facts(path: Path, compression: str, text_field: str, listing: Listing, size: int) -> tuple[str, int, int]:
    """(text field, records, uncompressed bytes) of a JSONL file. The first record's fields are checked now: a
    file without the field is refused listing its fields (as parquet's columns). Records (lines that are not
    blank) and bytes are counted while the corpus' JSONL stays under JSONL_COUNT_BYTES on disk (one pass in
    1 MiB blocks), else -1 (counted as read)."""
    fields = (text_field, FALLBACK_TEXT_FIELD) if text_field == DEFAULT_TEXT_FIELD else (text_field,)
    count = size <= JSONL_COUNT_BYTES - listing.count_budget
    try:
        with open_binary(path, compression) as f:
            lineno, line, consumed = 0, b"", 0
            for lineno, line in enumerate(f, start=1):  # the first record
                consumed += len(line)
                if line.strip():
                    break
            field, missing = text_field, None
            try:
                obj = json.loads(line) if line.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None  # counted as malformed when read
            if isinstance(obj, dict):
                field = next((k for k in fields if k in obj), None)
                missing = list(obj) if field is None else None
            if missing is None and not count:
                return field, -1, -1
            rows, text_bytes, open_line = (1 if line.strip() else 0), consumed, False  # open_line: unfinished, not blank
            while missing is None and (block := f.read(1 << 20)):
                text_bytes += len(block)
                parts = block.split(b"\n")
                open_line = open_line or bool(parts[0].strip())
                if len(parts) > 1:  # the open line ends in this block; whole lines; a new open line
                    rows += open_line + sum(1 for x in parts[1:-1] if x.strip())
                    open_line = bool(parts[-1].strip())
            rows += open_line
    except (OSError, EOFError, ValueError):  # unreadable or truncated: said when read
        return text_field, -1, -1
    if missing is not None:
        pick_column(missing, text_field, f"{path}:{lineno} (the first record; JSONL fields)")  # raises
    listing.count_budget += size
    return field, rows, text_bytes


_FACTS: dict = {}  # (path, size, mtime, field) -> jsonl_facts(): a run opens its corpus several times


def _jsonl_facts_cached(path: Path, compression: str, text_field: str, listing: Listing, size: int):
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, text_field)
    if key in _FACTS:
        facts = _FACTS[key]
        if facts[1] >= 0:
            listing.count_budget += size
        return facts
    facts = jsonl_facts(path, compression, text_field, listing, size)
    _FACTS[key] = facts
    return facts


def pick_column(names: list[str], text_field: str, where, schema=None) -> str:
    """The text column; with an arrow `schema`, also refused when it holds no text (an int64 column would
    otherwise give only skipped rows and an error about the val split)."""
    column = text_field if text_field in names else (
        FALLBACK_TEXT_FIELD if text_field == DEFAULT_TEXT_FIELD and FALLBACK_TEXT_FIELD in names else None)
    if column is not None and schema is not None:
        import pyarrow as pa

        t = schema.field(column).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t)):
            texts = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            raise UserError(f"{where}: column '{column}' holds {t}, not text; set data.text_field to a string "
                            f"column" + (f" ({', '.join(texts)})" if texts else " (this file has none)"))
    if column is not None:
        return column
    raise UserError(f"{where}: no column '{text_field}'"
                    + (f" or '{FALLBACK_TEXT_FIELD}'" if text_field == DEFAULT_TEXT_FIELD else "")
                    + f"; columns: {', '.join(names)}; set data.text_field")


def _parquet_units(path: Path, name: str, text_field: str, listing: Listing) -> list[Unit]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises ArrowInvalid & co for a damaged footer
        raise UserError(f"{path}: not a readable parquet file ({e})") from None
    schema = meta.schema.to_arrow_schema()
    column = pick_column(schema.names, text_field, path, schema)
    units, row0, size = [], 0, path.stat().st_size
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        units.append(Unit(key=f"{name}@rg{g:06d}", reader="parquet", path=str(path), name=name, ftype=".parquet",
                          start=g, row0=row0, column=column, size=rg.total_byte_size, rows=rg.num_rows))
        row0 += rg.num_rows
    listing.add(".parquet", size, meta.num_rows)
    return units


def _row_units(base: dict, n_rows: int) -> list[Unit]:
    return [Unit(**base, key=f"{base['name']}@r{a:010d}", start=a, stop=min(a + DATASET_ROWS_PER_UNIT, n_rows),
                 rows=min(a + DATASET_ROWS_PER_UNIT, n_rows) - a)
            for a in range(0, n_rows, DATASET_ROWS_PER_UNIT)]


def _arrow_units(path: Path, name: str, text_field: str, listing: Listing) -> list[Unit]:
    table = _arrow_table(str(path))
    column = pick_column(table.column_names, text_field, path, table.schema)
    listing.add(".arrow", path.stat().st_size, table.num_rows)
    return _row_units({"reader": "arrow", "path": str(path), "name": name, "ftype": ".arrow", "column": column,
                       "size": path.stat().st_size}, table.num_rows)


def is_dataset_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or ((path / "state.json").exists()
                                                      and (path / "dataset_info.json").exists())


def _dataset_units(path: Path, text_field: str, listing: Listing) -> list[Unit]:
    splits = _dataset(str(path))
    units = []
    size = sum(p.stat().st_size for p in path.rglob("*.arrow"))
    for split, ds in sorted(splits.items()):
        column = pick_column(ds.column_names, text_field, f"{path} (split {split or 'default'})",
                             getattr(getattr(ds, "data", None), "schema", None))
        name = f"{path.name}/{split}" if split else path.name
        units += _row_units({"reader": "dataset", "path": str(path), "name": name, "ftype": "dataset",
                             "column": column, "split": split, "size": size * ds.num_rows // max(1, sum(
                                 d.num_rows for d in splits.values()))}, ds.num_rows)
    listing.add("dataset", size, sum(ds.num_rows for ds in splits.values()))
    return units


def list_units(spec: str, cfg) -> tuple[list[Unit], Listing]:
    """Every unit of a corpus spec (folder, file, glob, dataset folder, or "stdlib"), sorted by key."""
    listing = Listing()
    expanded = Path(os.path.expanduser(spec))
    if spec == "stdlib":
        units = []
        for path, name in stdlib_files():
            size = path.stat().st_size
            listing.add(".py", size, 1)
            units.append(Unit(key=name, reader="text", path=str(path), name=name, ftype=".py", size=size, rows=1))
        return units, listing
    if any(c in spec for c in "*?["):
        root = _glob_root(expanded)
        rel = expanded.relative_to(root).as_posix() if expanded.is_absolute() or root != Path(".") else str(expanded)
        files = walk(root, [rel], split_patterns(cfg.exclude), listing) if root.is_dir() else []
        if not files:
            raise CorpusNotFound(f"corpus glob '{spec}' matches no files")
        units = [u for p, n in files for u in file_units(p, n, cfg, listing, folder=False)]
    elif expanded.is_dir() and is_dataset_dir(expanded):
        units = _dataset_units(expanded, cfg.text_field, listing)
    elif expanded.is_dir():
        files = walk(expanded, split_patterns(cfg.glob), split_patterns(cfg.exclude), listing)
        if not files:
            raise CorpusNotFound(f"corpus folder '{spec}' has no files matching '{cfg.glob}' (set data.glob, e.g. "
                            "data.glob='**/*' for every file)")
        units = [u for p, n in files for u in file_units(p, n, cfg, listing, folder=True)]
    elif expanded.is_file():
        units = file_units(expanded.resolve(), expanded.name, cfg, listing, folder=False, single=True)
    else:
        raise CorpusNotFound(f"corpus '{spec}' not found: expected 'stdlib', a folder, a file, a glob, or a folder "
                             "saved by datasets' save_to_disk" + hub_hint(spec))
    if not units:
        skipped = "; ".join(f"{n} {kind} (e.g. {listing.examples[kind]})" for kind, n in sorted(listing.skipped.items()))
        raise UserError(f"corpus '{spec}' has no readable text; skipped: {skipped or 'nothing'}")
    return sorted(units, key=lambda u: u.key), listing


def _glob_root(pattern: Path) -> Path:
    parts = pattern.parts
    k = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    return Path(*parts[:k]) if k else Path(".")


# ---- reading a unit -------------------------------------------------------------------------------------------
_OPEN: dict = {}  # per process: memory-mapped arrow tables and datasets, opened once


def _arrow_table(path: str):
    if ("arrow", path) not in _OPEN:
        from datasets import Dataset

        _OPEN[("arrow", path)] = Dataset.from_file(path).data
    return _OPEN[("arrow", path)]


def _dataset(path: str) -> dict:
    """{split: Dataset} of a save_to_disk folder ("" for a plain Dataset)."""
    if ("dataset", path) not in _OPEN:
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(path)
        except Exception as e:  # datasets raises several kinds for a damaged folder
            raise UserError(f"{path}: cannot load the saved dataset ({e})") from None
        _OPEN[("dataset", path)] = dict(ds) if isinstance(ds, DatasetDict) else {"": ds}
    return _OPEN[("dataset", path)]


def read_unit(unit: Unit, text_field: str, problem):
    """Yield (document key, bytes) of a unit's records in file order (a strided part: its own records).

    `problem(kind, where, message)` is called for each record that cannot be used (skipped, or kept as bytes)."""
    records = _records(unit, text_field, problem)
    for ordinal, record in enumerate(records):
        if unit.stride > 1 and ordinal % unit.stride != unit.phase:
            continue
        if record is not None:
            yield record


def _records(unit: Unit, text_field: str, problem):
    """(key, bytes) or None per record: the record ordinals strided parts are cut by."""
    if unit.reader == "text":
        try:
            yield unit.name, Path(unit.path).read_bytes()
        except OSError as e:
            problem("unreadable", unit.path, f"cannot read ({e.strerror or e}); skipped")
            yield None
    elif unit.reader == "jsonl":
        yield from _jsonl_records(unit, text_field, problem)
    elif unit.reader == "parquet":
        import pyarrow.parquet as pq

        # in batches of rows, not the whole row group at once: the loader's memory follows the batch, not the group
        row = unit.row0
        for batch in pq.ParquetFile(unit.path).iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[unit.start],
                                                            columns=[unit.column], use_threads=False):
            yield from _column_records(batch.column(0), unit.name, row, unit.path, problem)
            row += batch.num_rows
    else:
        table = _arrow_table(unit.path) if unit.reader == "arrow" else _dataset(unit.path)[unit.split].data
        col = table.slice(unit.start, unit.stop - unit.start).column(unit.column)
        yield from _column_records(col, unit.name, unit.start, unit.path, problem)


def _column_records(col, name: str, row0: int, path: str, problem):
    import pyarrow as pa

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):  # arrow strings are valid UTF-8 already:
        col = col.cast(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary())  # bytes, no str copy
    for i, value in enumerate(col.to_pylist()):
        key = f"{name}:{row0 + i}"
        if isinstance(value, bytes):
            yield key, value
        elif isinstance(value, str):
            yield key, _utf8(value, f"{path}:{row0 + i}", problem)
        else:
            problem("no_text", f"{path}:{row0 + i}", "text column holds no string; skipped")
            yield None


def _utf8(text: str, where: str, problem) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates ("\ud800"): keep them, as the bytes the data asked for
        problem("invalid_utf8", where, "text holds lone surrogates (not valid UTF-8); kept as bytes")
        return text.encode("utf-8", "surrogatepass")


def _jsonl_records(unit: Unit, text_field: str, problem):
    try:
        f = open_binary(unit.path, unit.compression)
    except OSError as e:
        problem("unreadable", unit.path, f"cannot read ({e.strerror or e}); skipped")
        return
    fields = (text_field, FALLBACK_TEXT_FIELD) if text_field == DEFAULT_TEXT_FIELD else (text_field,)
    with f:
        try:
            for lineno, line in records.capped_lines(f, records.MAX_LINE_BYTES):   # a longer line: skipped unread
                where = f"{unit.path}:{lineno}"
                if line is None:
                    problem("line_too_long", where, f"a line over {records.MAX_LINE_BYTES} bytes; skipped")
                    yield None
                    continue
                if not line.strip():
                    continue  # blank lines (e.g. a trailing newline) are not records
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    problem("malformed_json", where, f"malformed JSON line ({e}); skipped")
                    yield None
                    continue
                text = next((obj[k] for k in fields if k in obj), None) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    problem("no_text", where, f"no string {' or '.join(repr(k) for k in fields)} field; skipped "
                            "(set data.text_field)")
                    yield None
                    continue
                yield f"{unit.name}:{lineno}", _utf8(text, where, problem)
        except (OSError, EOFError) as e:  # truncated .gz / .zst: what was read is kept
            problem("truncated", unit.path, f"stream ends early ({e}); the rest of the file is skipped")
