"""Walking a corpus folder: glob patterns over relative paths, symlinks checked, hidden names skipped.

    files = walk(Path("~/src/repo").expanduser(), ["**/*.py", "**/*.js"], ["**/tests/**"], listing)

Symlinked folders are not followed (no loops, no escape from the root); a file symlink is kept only if it
resolves to a file inside the root. What is skipped is counted in `listing.skipped` (one example path each).
"""

from __future__ import annotations

import os
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Listing:
    """What listing the corpus found: per file type {files, bytes, documents (-1: known only once read)}."""

    types: dict = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # binary, symlink_outside, symlink_loop, ...
    examples: dict = field(default_factory=dict)  # skip kind -> one path, for the message
    left_out: Counter = field(default_factory=Counter)  # extension -> files of a folder that data.glob did not match
    count_budget: int = 0  # JSONL bytes on disk still to be counted at listing (readers.JSONL_COUNT_BYTES)

    def add(self, ftype: str, size: int, rows: int, text_bytes: int = -1) -> None:
        """One file: `rows` documents (-1: unknown until read), `text_bytes` uncompressed (-1: unknown; default:
        the size on disk when rows are known)."""
        t = self.types.setdefault(ftype, {"files": 0, "bytes": 0, "documents": 0, "text_bytes": 0})
        t["files"] += 1
        t["bytes"] += size
        t["documents"] = -1 if rows < 0 or t["documents"] < 0 else t["documents"] + rows
        text_bytes = size if text_bytes < 0 and rows >= 0 and ftype != "dataset" else text_bytes
        t["text_bytes"] = -1 if text_bytes < 0 or t["text_bytes"] < 0 else t["text_bytes"] + text_bytes

    def skip(self, kind: str, path) -> None:
        self.skipped[kind] += 1
        self.examples.setdefault(kind, str(path))


# stdlib folders that are test suites or installed packages, not library source
STDLIB_EXCLUDE_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[tuple[Path, str]]:
    root = stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):  # prune while walking: site-packages can be huge
        dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDE_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                p = Path(dirpath, name)
                out.append((p, p.relative_to(root).as_posix()))
    return sorted(out, key=lambda t: t[1])


# ---- walking a folder ----------------------------------------------------------------------------------------
def glob_regex(pattern: str) -> re.Pattern:
    """A path glob as a regex over '/'-separated relative paths: `**/` any folders, `*` and `?` within one name."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def split_patterns(text: str) -> list[str]:
    """`data.glob` / `data.exclude`: one or several patterns separated by commas."""
    return [p.strip() for p in text.split(",") if p.strip()]


def walk(root: Path, patterns: list[str], exclude: list[str], listing: Listing) -> list[tuple[Path, str]]:
    """(path, relative name) of the files under root matching a pattern and no exclude, sorted by name.

    Symlinked folders are not followed (no loops, no escape); a file symlink is kept only if it resolves to a
    file inside root. Hidden names are skipped, like shell globs."""
    want = [glob_regex(p) for p in patterns]
    drop = [glob_regex(p) for p in exclude]
    real_root = root.resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        keep_dirs = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if (base / d).is_symlink():
                listing.skip("symlink_folder", base / d)
                continue
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for name in filenames:
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(root).as_posix()
            if not any(r.match(rel) for r in want):
                listing.left_out[extension(name)] += 1
                continue
            if any(r.match(rel) for r in drop):
                continue
            if path.is_symlink() and not _symlink_ok(path, real_root, listing):
                continue
            out.append((path, rel))
    return sorted(out, key=lambda t: t[1])


def extension(name: str) -> str:
    """A file name's extension for the summary: ".py", ".tar.gz", "(none)"."""
    parts = name.lower().split(".")[1:]
    if not parts:
        return "(none)"
    return "." + ".".join(parts[-2:]) if len(parts) > 1 and parts[-1] in ("gz", "zst", "bz2", "xz") else "." + parts[-1]


def _symlink_ok(path: Path, real_root: Path, listing: Listing) -> bool:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: "Symlink loop"
        listing.skip("symlink_loop", path)
        return False
    except OSError as e:
        listing.skip("symlink_loop" if e.errno == 40 else "symlink_broken", path)  # 40: ELOOP
        return False
    if not target.is_relative_to(real_root):
        listing.skip("symlink_outside", path)
        return False
    if not target.is_file():
        listing.skip("symlink_not_file", path)
        return False
    return True
