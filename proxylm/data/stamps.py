"""What a resume checks about the data it reads again: each unit's size and modification time.

    stamps = unit_stamps(doc_stream.units)          # {unit key: [size, mtime_ns]}, kept in the loader state
    changed_units(saved, doc_stream.units)          # keys whose file differs now (edited since the checkpoint)

Size + mtime, not a digest of the content: a digest means reading every byte of the rank's corpus at every
checkpoint (or at every resume), minutes for a large corpus; a stat per file costs microseconds. An edit that
keeps both the size and the modification time (`touch -d` back, or a copy made with `cp -p` of other bytes)
is not seen; a copy of the corpus without preserved times (`cp` without -p) is reported as changed, and
`proxylm resume --accept-changed-data` takes it (the accepted units are recorded in resume.jsonl).
"""

from __future__ import annotations

import os


def _stat(path: str) -> list[int]:
    """[size, mtime_ns] of a file; of a folder (a saved HF dataset), of its largest-dated data file."""
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    if not os.path.isdir(path):
        return [st.st_size, st.st_mtime_ns]
    size, newest = 0, st.st_mtime_ns
    for root, _, files in os.walk(path):
        for name in files:
            try:
                s = os.stat(os.path.join(root, name))
            except OSError:
                continue
            size, newest = size + s.st_size, max(newest, s.st_mtime_ns)
    return [size, newest]


def unit_stamps(units) -> dict[str, list[int]]:
    """{unit key: [size, mtime_ns]} of each unit's file (one stat per file: row groups share theirs)."""
    by_path: dict[str, list[int]] = {}
    out = {}
    for u in units:
        if u.path not in by_path:
            by_path[u.path] = _stat(u.path)
        out[u.key] = by_path[u.path]
    return out


def changed_units(saved: dict | None, units) -> list[str]:
    """Keys of units whose file changed since `saved` (None: a checkpoint made before stamps; nothing known)."""
    if not saved:
        return []
    now = unit_stamps(units)
    return [key for key, stamp in now.items() if key in saved and list(saved[key]) != stamp]
