"""`proxylm codec ...`: train codecs and measure them.

    proxylm codec train bpe --corpus stdlib --vocab-size 4096 --out runs/codecs/bpe-4096
    proxylm codec train bpe-bytes --vocab-size 4096 --gray --out runs/codecs/bpe-bytes-gray
    proxylm codec train gzip --level 9 --out runs/codecs/gzip        # no training: writes codec.json
    proxylm codec stats --codec runs/codecs/bpe-4096 --corpus stdlib --split val [--limit-docs N] [--json]
    proxylm codec stability --codec runs/codecs/bpe-4096 --codec gzip --corpus stdlib --split val [--json]
    proxylm codec encode --codec runs/codecs/bpe-4096 --text 'def f(): pass'
    proxylm codec import --tokenizer tokenizer.json --out codecs/mine   # then views.codec_dir=codecs/mine

`--codec` takes a codec directory, or the name of a codec that needs no training (gzip, halfbyte, ...).
Without `--out`, `train` writes to the same cache directory a run would use (see proxylm/prepare/codec_cache.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from proxylm.codecs.options import BpeBytesOptions, BpeOptions, CodecOptions, GzipOptions
from proxylm.core.io import print_json
from proxylm.codecs.base import CODEC_FILE, codec_class
from proxylm.cli import neural as neural_cli
from proxylm.cli.args import threads_arg
from proxylm.codecs.stability import DEFAULT_MAX_CHARS, DEFAULT_WINDOW_CHARS, EDIT_FAMILIES, make_edit_pairs, stability
from proxylm.codecs.stats import codec_stats, evenly_spaced
from proxylm.prepare.codec_cache import (codec_options, resolve_codec, corpus_texts, default_codec_dir, locked, needs_training, open_corpus,
                                  save_atomic, train_codec)
from proxylm.data.config import DataConfig, ViewsConfig

SPLITS = ("train", "val", "all")
DEFAULT_STABILITY_DOCS = 200
MEGABYTE = 1e6


def cli_codec_options(args) -> CodecOptions:
    """CodecOptions from `codec train` flags (--vocab-size, --gray, --level, neural's --window-bits/--steps)."""
    o = CodecOptions()
    o.bpe = BpeOptions(args.vocab_size)
    o.bpe_bytes = BpeBytesOptions(args.vocab_size, args.gray)
    o.gzip = GzipOptions(args.level)
    o.neural = neural_cli.neural_options(args)
    return o


def data_config(args) -> DataConfig:
    extra = {"codec_sample_bytes": args.max_bytes} if getattr(args, "max_bytes", None) is not None else {}
    return DataConfig(corpus=args.corpus, glob=args.glob, val_fraction=args.val_fraction,
                      max_doc_bytes=args.max_doc_bytes, text_field=args.text_field, exclude=args.exclude, **extra)


# ---- train ---------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    codec_class(args.name)  # unknown name -> ValueError listing the known ones
    options = codec_options(ViewsConfig(codec=args.name, codec_options=cli_codec_options(args)))
    if not needs_training(args.name):
        codec = train_codec(args.name, **options)
        if not args.out:
            print(f"codec '{args.name}' needs no training: pass --codec {args.name} directly, "
                  "or --out DIR to write its codec.json")
            return 0
        with locked(Path(args.out)):
            save_atomic(codec, args.out, overwrite=args.force)
        print(f"{codec!r} -> {args.out}")
        return 0

    data_cfg = data_config(args)
    corpus = open_corpus(data_cfg.corpus, data_cfg)
    directory = Path(args.out).expanduser() if args.out else default_codec_dir(args.name, options, corpus, data_cfg)
    if (directory / CODEC_FILE).exists() and not args.force:
        raise ValueError(f"{directory} already holds a codec; pass --force to train it again")
    seen = {"documents": 0, "bytes": 0}

    def texts():
        for data in corpus_texts(corpus, "train", data_cfg.codec_sample_bytes):
            seen["documents"] += 1
            seen["bytes"] += len(data)
            yield data

    start = time.perf_counter()
    with locked(directory):
        codec = train_codec(args.name, texts(), **options)
        save_atomic(codec, directory, overwrite=args.force)
    print(f"{codec!r} trained on {seen['documents']} documents ({seen['bytes'] / MEGABYTE:.1f} MB, sampled over "
          f"the train split of {data_cfg.corpus}) in {time.perf_counter() - start:.1f} s -> {directory}")
    return 0


# ---- import --------------------------------------------------------------------------------------------
def cmd_import(args) -> int:
    from proxylm.codecs.imported import import_tokenizer

    out = Path(args.out or Path("runs") / "codecs" / f"imported-{Path(args.tokenizer).expanduser().resolve().stem}")
    if (out / CODEC_FILE).exists() and not args.force:
        raise ValueError(f"{out} already holds a codec; pass --force to replace it")
    data_cfg = data_config(args)
    corpus = open_corpus(data_cfg.corpus, data_cfg)
    docs = ((d.key, d.data) for d in corpus.sample("all", args.max_bytes))
    codec, report = import_tokenizer(args.tokenizer, docs, keep_special=args.keep_special)
    with locked(out):
        save_atomic(codec, out, overwrite=args.force)
    report.update({"out": str(out), "corpus": data_cfg.corpus})
    if args.json:
        print_json(report)
    else:
        print(f"{codec!r}: lossless on {report['checked_documents']} documents of {data_cfg.corpus} and the probes "
              f"({report['unencodable_documents']} not UTF-8), {report['special_tokens_dropped']} special tokens "
              f"dropped -> {out}\nuse it with views.codec=bpe views.codec_dir={out}")
    return 0


# ---- stats ---------------------------------------------------------------------------------------------
def cmd_stats(args) -> int:
    codec = resolve_codec(args.codec)
    data_cfg = data_config(args)
    corpus = open_corpus(data_cfg.corpus, data_cfg)
    refs = evenly_spaced(corpus.documents(args.split), args.limit_docs)
    if not refs:
        raise ValueError(f"corpus {data_cfg.corpus} has no {args.split} documents")
    result = codec_stats(codec, [corpus.read(r) for r in refs])
    result.update({"codec_arg": args.codec, "corpus": data_cfg.corpus, "split": args.split})
    if args.json:
        print_json(result)
        return 0
    print(f"codec {args.codec} ({result['codec']}, {result['alphabet_size']} symbols) on {data_cfg.corpus} "
          f"{args.split}: {result['documents']} documents, {result['bytes']} bytes -> {result['symbols']} symbols")
    print(f"  raw bytes per symbol  {result['bytes_per_symbol']:.3f}")
    print(f"  fallback documents    {result['fallback_documents']}  (cannot encode: emitted raw)")
    print(f"  round-trip failures   {result['roundtrip_failures']}")
    print(f"  passthrough share     {result['passthrough_share']:.3f}")
    print(f"  encode                {result['encode_mb_per_s']:.2f} MB/s")
    print(f"  decode                {result['decode_mb_per_s']:.2f} MB/s")
    return 0


# ---- stability -----------------------------------------------------------------------------------------
def cmd_stability(args) -> int:
    families = tuple(f.strip() for f in args.edits.split(",") if f.strip())
    codecs = {arg: resolve_codec(arg) for arg in args.codec}
    data_cfg = data_config(args)
    corpus = open_corpus(data_cfg.corpus, data_cfg)
    refs = evenly_spaced(corpus.documents(args.split), args.limit_docs)
    pairs, skipped = make_edit_pairs([(r.key, corpus.read(r)) for r in refs], families, trials=args.trials,
                                     window_chars=args.window_chars, max_chars=args.max_chars, seed=args.seed)
    if not pairs:
        raise ValueError(f"no usable (UTF-8, non-empty) {args.split} documents in corpus {data_cfg.corpus}")
    results = {arg: stability(codec, pairs) for arg, codec in codecs.items()}
    report = {"corpus": data_cfg.corpus, "split": args.split, "documents": len(refs) - skipped,
              "skipped_documents": skipped, "edits": list(families), "trials": args.trials,
              "window_chars": args.window_chars, "max_chars": args.max_chars, "seed": args.seed,
              "metric": "levenshtein(before, after) / max(len(before), len(after)), symbols of each codec",
              "codecs": {arg: {"codec": codecs[arg].name, "families": fam} for arg, fam in results.items()}}
    if args.json:
        print_json(report)
        return 0
    label_width = max(len("codec"), *(len(a) for a in results))
    print(f"mean normalised edit distance of the compressed view after one edit ({report['documents']} documents "
          f"x {args.trials} trial(s), {args.window_chars}-character windows; 0 = unchanged, 1 = all changed)")
    print(f"{'codec':<{label_width}}  " + "  ".join(f"{f:>10}" for f in families))
    for arg, fam in results.items():
        cells = [f"{fam[f]['mean']:>10.4f}" if fam[f]["mean"] is not None else f"{'n/a':>10}" for f in families]
        print(f"{arg:<{label_width}}  " + "  ".join(cells))
    return 0


# ---- encode --------------------------------------------------------------------------------------------
def cmd_encode(args) -> int:
    if args.out:  # a whole corpus split into shards
        return neural_cli.cmd_encode_corpus(args)
    codec = resolve_codec(args.codec)
    if (args.text is None) == (args.file is None):
        raise ValueError("give exactly one of --text or --file")
    data = args.text.encode("utf-8") if args.text is not None else Path(args.file).read_bytes()
    symbols = codec.encode(data)
    result = {"bytes": len(data), "symbols": len(symbols), "roundtrip_ok": codec.decode(symbols) == data,
              "ids": symbols.tolist()}
    if args.json:
        print_json(result)
    else:
        verdict = "ok" if result["roundtrip_ok"] else "FAILED"
        print(f"{len(data)} bytes -> {len(symbols)} symbols (round trip {verdict})")
        print(" ".join(map(str, result["ids"])))
    return 0


# ---- wiring --------------------------------------------------------------------------------------------
def _add_corpus_args(p, split: bool = True, split_help: str = "documents to measure (default val)") -> None:
    defaults = DataConfig()
    p.add_argument("--corpus", default=defaults.corpus, help="stdlib | folder | text glob | .jsonl[.gz|.zst] | .parquet | .arrow | saved dataset (see README 'Your data'); default stdlib")
    p.add_argument("--glob", default=defaults.glob, help=f"files of a folder corpus (default {defaults.glob})")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                   help=f"share of documents held out as val (default {defaults.val_fraction})")
    p.add_argument("--max-doc-bytes", type=int, default=defaults.max_doc_bytes,
                   help="longer documents are cut into pieces")
    p.add_argument("--text-field", default=defaults.text_field,
                   help="JSONL / parquet / dataset field holding the text (default text, then content)")
    p.add_argument("--exclude", default=defaults.exclude, help="files to leave out, e.g. '**/tests/**'")
    if split:
        p.add_argument("--split", default="val", choices=SPLITS, help=split_help)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("codec", help="train codecs, measure compression, speed and stability")
    sub = p.add_subparsers(dest="codec_command", required=True, metavar="VERB")

    t = sub.add_parser("train", help="train a codec on the corpus' train split and save it")
    t.add_argument("name", help="codec name: bpe, bpe-bytes, gzip, doublebyte, halfbyte, doublebit, bit, ...")
    t.add_argument("--out", default=None, help="codec directory (default: the cache directory a run would use)")
    t.add_argument("--vocab-size", type=int, default=BpeOptions.vocab_size, help="bpe, bpe-bytes: tokens")
    t.add_argument("--gray", action="store_true", help="bpe-bytes: Gray-coded rank instead of the token id")
    t.add_argument("--level", type=int, default=GzipOptions.level, help="gzip: compression level 0-9")
    t.add_argument("--force", action="store_true", help="replace a codec already in the directory")
    t.add_argument("--max-bytes", type=int, default=DataConfig().codec_sample_bytes,
                   help="train text sampled over the corpus (default 50 MB; 0: the whole train split)")
    neural_cli.add_train_args(t)
    _add_corpus_args(t, split=False)
    threads_arg(t)  # torch runs here for the neural codec (its m1.threads, default 1, still applies while training)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("import", help="an existing tokenizer (tokenizer.json or HF folder) as a bpe codec, checked "
                       "lossless")
    i.add_argument("--tokenizer", required=True, help="tokenizer.json, or a folder holding one")
    i.add_argument("--out", default=None, help="codec directory (default runs/codecs/imported-NAME)")
    i.add_argument("--keep-special", action="store_true",
                   help="keep added special tokens (default: dropped, text spelling them is tokenized as text)")
    i.add_argument("--max-bytes", type=int, default=1_000_000,
                   help="corpus bytes the round trip is checked on, sampled over the corpus (default 1 MB)")
    i.add_argument("--force", action="store_true", help="replace a codec already in the directory")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    _add_corpus_args(i, split=False)
    i.set_defaults(func=cmd_import)

    s = sub.add_parser("stats", help="bytes per symbol, fallbacks, round-trip failures, encode/decode speed")
    s.add_argument("--codec", required=True, help="codec directory or untrained codec name (gzip, halfbyte, ...)")
    s.add_argument("--limit-docs", type=int, default=None, help="measure N documents spread over the split")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    _add_corpus_args(s)
    threads_arg(s)  # the neural codec runs torch
    s.set_defaults(func=cmd_stats)

    b = sub.add_parser("stability", help="edit distance of compressed views after small seeded text edits")
    b.add_argument("--codec", required=True, action="append", help="codec directory or name; repeat to compare")
    b.add_argument("--edits", default=",".join(EDIT_FAMILIES),
                   help=f"comma-separated edit families (default {','.join(EDIT_FAMILIES)})")
    b.add_argument("--limit-docs", type=int, default=DEFAULT_STABILITY_DOCS,
                   help=f"documents spread over the split (default {DEFAULT_STABILITY_DOCS})")
    b.add_argument("--trials", type=int, default=1, help="edits per document and family (default 1)")
    b.add_argument("--window-chars", type=int, default=DEFAULT_WINDOW_CHARS,
                   help=f"characters of each document compared around the edit (default {DEFAULT_WINDOW_CHARS})")
    b.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help=f"an edit touches 1..N characters (default {DEFAULT_MAX_CHARS})")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    _add_corpus_args(b)
    threads_arg(b)
    b.set_defaults(func=cmd_stability)

    e = sub.add_parser("encode", help="encode one text and print its symbols")
    e.add_argument("--codec", required=True, help="codec directory or untrained codec name")
    e.add_argument("--text", default=None, help="text to encode (UTF-8)")
    e.add_argument("--file", default=None, help="file whose bytes to encode")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    neural_cli.add_encode_args(e)  # --out SHARDS [--shard i/n] [--workers K]: encode a corpus split
    _add_corpus_args(e, split_help="with --out: the corpus split encoded into shards (default val; train for "
                                   "views.precomputed)")
    e.set_defaults(func=cmd_encode)
