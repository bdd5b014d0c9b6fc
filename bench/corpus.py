"""Streaming corpus readers at scale: time to the first batch, loader memory, read throughput per format.

    nice .venv/bin/python bench/corpus.py                 # 2 GB of text: 1 GB as JSONL shards, 1 GB as parquet
    nice .venv/bin/python bench/corpus.py --gb 0.2        # a quick look

Builds a synthetic corpus in a temporary folder (removed at the end) from the running Python's stdlib sources,
each copy mutated (identifiers renamed per copy, lines of a file rotated) so it is not one file repeated, then
for each format, in a fresh child process each:
- first batch: seconds from opening the corpus to the first TrainLoader batch (raw bytes, 8 x 512);
- loader memory: peak RSS of a child that opens the corpus and draws 200 batches, minus the peak RSS of a child
  that only imports the same modules (goal <= 300 MB, independent of the number of documents);
- stream: raw text MB per CPU-second (process time: a busy machine does not change it) to read every document
  of the format and split it into documents (goal >= 50 MB/s per core).
Ends with RESULT lines (the worst format): corpus_first_batch_s, corpus_loader_rss_mb, corpus_stream_mb_s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARD_TEXT_BYTES = 64_000_000  # raw text per shard


def stdlib_texts() -> list[str]:
    sys.path.insert(0, str(REPO))
    from proxylm.data.readers import stdlib_files

    out = []
    for path, _ in stdlib_files():
        try:
            out.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def mutated(texts: list[str], copy: int):
    """Copy number `copy` of every text: identifiers renamed, lines rotated by a per-copy amount."""
    for i, text in enumerate(texts):
        lines = text.split("\n")
        k = (copy * 7 + i) % max(1, len(lines))
        body = "\n".join(lines[k:] + lines[:k])
        yield body.replace("self", f"self{copy}").replace("def ", f"def c{copy}_").replace("return ", f"return {copy} and ")


def build(root: Path, fmt: str, target_bytes: int, texts: list[str]) -> int:
    """Write shards of `fmt` under root until target_bytes of text; returns the text bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    total, shard, batch, batch_bytes, copy = 0, 0, [], 0, 0

    def flush():
        nonlocal shard, batch, batch_bytes
        if fmt == "jsonl":
            with open(root / f"part-{shard:05d}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t}) + "\n" for t in batch)
        else:
            pq.write_table(pa.table({"text": batch}), root / f"part-{shard:05d}.parquet", row_group_size=2048)
        shard, batch, batch_bytes = shard + 1, [], 0

    while total < target_bytes:
        for t in mutated(texts, copy):
            batch.append(t)
            n = len(t.encode("utf-8"))
            batch_bytes += n
            total += n
            if batch_bytes >= SHARD_TEXT_BYTES:
                flush()
            if total >= target_bytes:
                break
        copy += 1
    if batch:
        flush()
    return total


CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {repo!r})
import torch  # noqa: F401  (the empty process imports the same)
from proxylm.core.representation import Representation
from proxylm.data.config import DataConfig, ViewsConfig
from proxylm.data.corpus import open_corpus
from proxylm.data.loader import TrainLoader
mode, spec = sys.argv[1], sys.argv[2]
out = {{}}
if mode == "loader":
    t0 = time.perf_counter()
    cfg = DataConfig(corpus=spec, seq_len=512, batch_size=8)
    loader = TrainLoader(cfg, ViewsConfig(), Representation.bytes_only())
    loader.next_batch(0)
    out["first_batch_s"] = time.perf_counter() - t0
    for s in range(1, 200):
        loader.next_batch(s)
    out["units"] = len(loader.stream.units)
elif mode == "stream":
    corpus = open_corpus(spec, DataConfig(corpus=spec, val_fraction=0.0))
    c0, t0, n, docs = time.process_time(), time.perf_counter(), 0, 0
    for doc in corpus.iter_documents("all"):
        n += len(doc.data)
        docs += 1
    out.update(bytes=n, documents=docs, cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - t0)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, spec: str = "") -> dict:
    code = CHILD.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, mode, spec], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="text in all (split evenly over the formats)")
    ap.add_argument("--dir", default=None, help="where to build (default: a temporary folder, removed after)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="proxylm-bench-corpus-", dir=args.dir))
    try:
        free = shutil.disk_usage(base).free
        want = int(args.gb * 1e9)
        if free < 2.5 * want:
            want = int(free / 2.5)
            print(f"only {free / 1e9:.1f} GB free: building {want / 1e9:.2f} GB of text instead", flush=True)
        texts = stdlib_texts()
        empty = child("empty")
        results = {}
        for fmt, glob in (("jsonl", "*.jsonl"), ("parquet", "*.parquet")):
            t0 = time.perf_counter()
            n = build(base / fmt, fmt, want // 2, texts)
            disk = sum(p.stat().st_size for p in (base / fmt).iterdir())
            print(f"{fmt}: {n / 1e9:.2f} GB of text ({disk / 1e9:.2f} GB on disk) built in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            spec = str(base / fmt / glob)
            loader = child("loader", spec)
            stream = child("stream", spec)
            results[fmt] = {"text_gb": n / 1e9, "disk_gb": disk / 1e9, "units": loader["units"],
                            "documents": stream["documents"], "first_batch_s": loader["first_batch_s"],
                            "loader_rss_mb": loader["peak_rss_mb"] - empty["peak_rss_mb"],
                            "stream_mb_s_per_core": stream["bytes"] / 1e6 / stream["cpu_s"],
                            "stream_mb_s_wall": stream["bytes"] / 1e6 / stream["wall_s"]}
            shutil.rmtree(base / fmt)
        print(f"empty process peak RSS {empty['peak_rss_mb']:.0f} MB (python + torch + proxylm)")
        print(f"{'format':<8} {'text GB':>8} {'disk GB':>8} {'units':>6} {'documents':>10} {'first batch s':>14} "
              f"{'loader +RSS MB':>15} {'MB/s/core':>10} {'MB/s wall':>10}")
        for fmt, r in results.items():
            print(f"{fmt:<8} {r['text_gb']:>8.2f} {r['disk_gb']:>8.2f} {r['units']:>6} {r['documents']:>10} "
                  f"{r['first_batch_s']:>14.2f} {r['loader_rss_mb']:>15.0f} {r['stream_mb_s_per_core']:>10.1f} "
                  f"{r['stream_mb_s_wall']:>10.1f}")
        print("goals: first batch <= 5 s, loader <= 300 MB above an empty process, >= 50 MB/s per core")
        print(f"RESULT corpus_first_batch_s {max(r['first_batch_s'] for r in results.values()):.2f}")
        print(f"RESULT corpus_loader_rss_mb {max(r['loader_rss_mb'] for r in results.values()):.0f}")
        print(f"RESULT corpus_stream_mb_s {min(r['stream_mb_s_per_core'] for r in results.values()):.1f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
