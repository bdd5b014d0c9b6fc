"""What a run's start-up summary and final report say beyond the basics (assemble.startup_summary calls these):
the text field, files a folder's glob left out, JSONL counts, the validation split (size, documents, how it was
chosen, how much of it is scored), the codec (trained now or read, and where), the torch threads.

    lines = corpus_lines(corpus.summary(), cfg.data)
    facts = validation_facts(corpus)          # {"bytes", "documents", "exact", "how"}
    text = covers_text(result, facts, bound)   # "the whole val split (529,515 bytes, 37 documents)" or a share
"""

from __future__ import annotations

from pathlib import Path

from proxylm.core.io import printable


def _kb(n: int) -> str:
    return f"{n:,} bytes" if n < 10_000_000 else f"{n / 1e6:,.1f} MB"


def corpus_lines(s: dict, data_cfg) -> list[str]:
    """Lines under the per-type table: uncompressed JSONL size, what data.glob left out, the text field."""
    lines = []
    for ftype, t in sorted(s["types"].items()):
        if ftype.startswith((".jsonl", ".ndjson", ".json")) and t.get("text_bytes", -1) > t["bytes"]:
            lines.append(f"  {ftype}: {t['text_bytes'] / 1e6:.2f} MB of JSON lines uncompressed")
    left = s.get("left_out") or {}
    if left:
        top = sorted(left.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{ext} {n}" for ext, n in top[:8]) + (", ..." if len(top) > 8 else "")
        lines.append(f"  left out by data.glob='{data_cfg.glob}': {sum(left.values())} files ({shown}); "
                     "data.glob='**/*' reads every text file, data.glob='**/*.py,**/*.c' a list")
    if s.get("text_fields"):
        lines.append(f"  text field: {', '.join(s['text_fields'])} (data.text_field={data_cfg.text_field})")
    return lines


def validation_facts(corpus) -> dict:
    """The val split's size in bytes and documents, exact where listing knows it (text files: their split is known
    from their names; named splits: their rows), else estimated from data.val_fraction; and how it was chosen."""
    units = corpus.split_units("val")
    all_units = corpus.split_units("all")
    how = corpus.split_how
    if all(u.doc_key is not None or corpus.role(u) == "val" for u in units) and all(u.rows >= 0 for u in units):
        text = all(u.reader == "text" for u in units)  # else: a share of the saved files' size (about)
        return {"bytes": sum(u.size for u in units), "documents": sum(u.rows for u in units), "exact": text,
                "documents_exact": True, "how": how}
    types = corpus.summary()["types"].values()
    text = sum(t["text_bytes"] if t.get("text_bytes", -1) >= 0 else t["bytes"] for t in types)
    rows = sum(u.rows for u in all_units) if all(u.rows >= 0 for u in all_units) else -1
    f = corpus.val_fraction
    return {"bytes": int(text * f), "documents": int(rows * f) if rows >= 0 else -1, "exact": False, "how": how}


def corpus_record(corpus, facts: dict, scored: list[bytes]) -> dict:
    """What the run directory keeps of its corpus (rundir.CORPUS): the listing start-up made (no document read
    for it), the validation split's facts, and the digest of the text each periodic eval scores, so that a model
    card needs the run directory only."""
    from proxylm.eval.bpb import text_digest

    listing = corpus.summary()
    return {"corpus": corpus.spec, "fingerprint": corpus.fingerprint(), "units": listing["units"],
            "bytes_on_disk": sum(t["bytes"] for t in listing["types"].values()),
            "validation": facts, "eval_text": text_digest(scored)}


def validation_line(facts: dict, prepared: tuple[int, int] | None, eval_cfg) -> str:
    """The summary's validation line: the split, and what each eval and the final eval score."""
    about = "" if facts["exact"] else "about "
    size = f"{about}{_kb(facts['bytes'])}" if facts["bytes"] >= 0 else "size known once read"
    doc_about = "" if facts.get("documents_exact") or facts["exact"] else "about "
    docs = f", {doc_about}{facts['documents']:,} documents" if facts["documents"] >= 0 else ""
    line = f"validation: {size}{docs}; {facts['how']}"
    if prepared:
        line += (f"\n  scored: {_kb(prepared[0])} ({prepared[1]} documents or pieces sampled over the split; eval.max_bytes="
                 f"{eval_cfg.max_bytes}) at each eval; the final eval: ")
        line += ("the whole split" if not eval_cfg.final_max_bytes else
                 f"the whole split up to {_kb(eval_cfg.final_max_bytes)} (eval.final_max_bytes)")
    return line


def covers_text(result: dict, split_bytes: int, bound: int) -> str:
    """Which bytes a final val BPB covers, in words (summary.json's val_covers, the train report)."""
    n, docs = result.get("bytes", 0), result.get("documents")
    d = f", {docs} documents" if docs is not None else ""
    if not bound or (split_bytes >= 0 and n >= split_bytes * 0.999) or result.get("whole"):
        return f"the whole val split ({n:,} raw bytes{d})"
    total = f" of the {split_bytes:,}-byte val split" if split_bytes >= 0 else " of the val split"
    return (f"{n:,} raw bytes{d} sampled{total} (bound eval.final_max_bytes={bound}; `proxylm eval bpb RUN "
            "--split val` scores all of it)")


def codec_source(cfg, run_dir: Path | None, resume: bool, corpus) -> tuple[str, Path | None, bool]:
    """(words, directory, to be trained now) for the run's codec, before it is built; `corpus` is the run's."""
    from proxylm.codecs.base import CODEC_FILE
    from proxylm.core.rundir import CODEC_DIR
    from proxylm.prepare.codec_cache import codec_options, default_codec_dir, needs_training

    v = cfg.views
    if v.codec is None:
        return "raw bytes only", None, False
    if resume and run_dir is not None:
        return f"the run's own codec ({run_dir / CODEC_DIR})", run_dir / CODEC_DIR, False
    if not needs_training(v.codec):
        return f"{v.codec} (needs no training)", None, False
    directory = Path(v.codec_dir).expanduser() if v.codec_dir else default_codec_dir(
        v.codec, codec_options(v), corpus, cfg.data)
    where = "views.codec_dir" if v.codec_dir else "the codec cache"
    if (directory / CODEC_FILE).exists():
        return f"{v.codec}, read from {where} {directory}", directory, False
    sample = f"up to {cfg.data.codec_sample_bytes / 1e6:g} MB" if cfg.data.codec_sample_bytes else "all"
    return (f"{v.codec}, trained now on {sample} of the train split, cached at {directory} ({where})",
            directory, True)


def startup_summary(cfg, corpus, rep, codec, model, total_steps: int, world_size: int, lossless: dict | None = None,
                    extra: dict | None = None) -> str:
    """What the run will do, before it does it (printed on stderr): data, model, vocabulary, steps, epochs; with
    `extra` ({"facts": validation_facts(), "prepared": (bytes, documents) of the periodic evals, "codec": words,
    "threads": n}) also the validation split, the codec's source and the threads."""
    s = corpus.summary()
    lines = [f"corpus {printable(s['corpus'])}: {s['units']} units (files, row groups or row ranges)"]
    text_bytes = 0
    for ftype, t in sorted(s["types"].items()):
        docs = f"{t['documents']} documents" if t["documents"] >= 0 else "documents counted as read"
        lines.append(f"  {ftype:<12} {t['files']:>7} files  {t['bytes'] / 1e6:>10.2f} MB  {docs}")
        text_bytes += t["bytes"]
    if s["skipped"]:
        lines.append("  skipped: " + ", ".join(f"{k} {v} (e.g. {printable(s['skipped_examples'][k])})" for k, v in
                                            sorted(s["skipped"].items())))
    lines += corpus_lines(s, cfg.data)
    extra = extra or {}
    if extra.get("facts"):
        lines.append(validation_line(extra["facts"], extra.get("prepared"), cfg.eval))
    if extra.get("codec"):
        lines.append(f"codec: {extra['codec']}")
    if extra.get("threads"):
        lines.append(f"threads: {extra['threads']} torch CPU thread(s) (train.threads={cfg.train.threads}; "
                     "README 'Threads')")
    n_params = sum(p.numel() for p in model.parameters())
    per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.train.grad_accum * world_size
    codec_line = "raw bytes only" if codec is None else f"codec {codec!r}"
    if lossless:
        codec_line += (f", round trip checked on {lossless['checked']} train documents"
                       + (f", {lossless['unencodable']} not UTF-8 (emitted raw)" if lossless.get("unencodable") else ""))
    lines += [f"model: {n_params / 1e6:.2f}M parameters; vocabulary {rep.vocab_size} ({codec_line})",
              f"steps: {total_steps} planned x {per_step} symbols per step ({cfg.data.batch_size} x {cfg.data.seq_len} "
              f"x accumulation {cfg.train.grad_accum} x {world_size} rank(s)); data workers {cfg.data.num_workers}"]
    if text_bytes:
        share = 1.0 - cfg.data.val_fraction
        lines.append(f"epochs: about {total_steps * per_step / (text_bytes * share):.2f} at one symbol per byte on disk "
                     "(compressed views and compressed files make it fewer/more)")
    return "\n".join(lines)
