"""`proxylm data ...`: look at what the data pipeline feeds the model.

    proxylm data show                                   # default config: stdlib corpus, raw bytes
    proxylm data show proxy-bpe-tiny --windows 3        # a shipped config (proxylm/configs/*.yaml)
    proxylm data show views.codec=gzip views.rate=0.9 data.seq_len=256 --step 0
    proxylm data manifest --corpus stdlib --split val --out val-manifest.json

`show` starts a fresh stream (epoch 0) and reads documents at optimizer step `--step` (so with a views
schedule, `--step 0` shows the warm-up mode), prints the first N packed windows with sentinels and views
visible (raw spans as text, compressed symbols as <cN>), then the stream's stats.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from proxylm.core.representation import Representation

MAX_SYMBOLS_SHOWN = 24  # compressed symbols printed per run before eliding


def split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """[CONFIG] [key=value ...] -> (config or None, overrides)."""
    names = [i for i in items if "=" not in i]
    if len(names) > 1:
        raise ValueError(f"expected at most one config name before the key=value overrides, got {names}")
    return (names[0] if names else None), [i for i in items if "=" in i]


def _symbol_name(i: int, rep: Representation, codec=None) -> str:
    """A compressed id as [its text] when the codec decodes single symbols to UTF-8 (BPE), else <cN>."""
    if codec is not None:
        try:
            text = codec.decode(rep.symbols_from_compressed_ids(np.array([i]))).decode("utf-8")
            return "[" + text.encode("unicode_escape").decode("ascii") + "]"
        except Exception:  # gzip & co: one symbol alone is no valid stream
            pass
    return rep.token_name(i) if not rep.is_raw_byte(i) else f"<b{i - rep.raw_offset}>"


def format_ids(ids, is_compressed, rep: Representation, max_chars: int = 400, codec=None) -> str:
    """Readable form of ids: specials by name, raw-byte runs as text, compressed runs as [token text] (BPE) or
    <cN> (elided after a few)."""
    ids = np.asarray(ids, dtype=np.int64)
    comp = np.asarray(is_compressed, dtype=bool)
    out, i, n = [], 0, len(ids)
    while i < n:
        if comp[i] or not rep.is_raw_byte(ids[i]):
            if not comp[i]:  # a special
                out.append(rep.token_name(int(ids[i])))
                i += 1
                continue
            j = i
            while j < n and comp[j]:
                j += 1
            names = [_symbol_name(int(t), rep, codec) for t in ids[i:min(j, i + MAX_SYMBOLS_SHOWN)]]
            more = j - i - len(names)
            out.append("".join(names) + (f"…(+{more} symbols)" if more > 0 else ""))
            i = j
        else:
            j = i
            while j < n and not comp[j] and rep.is_raw_byte(ids[j]):
                j += 1
            text = rep.bytes_from_ids(ids[i:j]).decode("utf-8", "backslashreplace")
            out.append(text if len(text) <= max_chars else text[:max_chars] + f"…(+{len(text) - max_chars} chars)")
            i = j
    return "".join(out)


def cmd_show(args) -> int:
    from proxylm.assemble import build_codec, representation_for, training_codec  # torch: not for `--help`
    from proxylm.config import load_config
    from proxylm.data.loader import TrainLoader
    from proxylm.data.views import schedule_at

    name, overrides = split_config_args(args.config)
    cfg = load_config(name, overrides)
    codec = build_codec(cfg)
    rep = representation_for(cfg, codec)
    loader = TrainLoader(cfg.data, cfg.views, rep, training_codec(cfg, codec), split=args.split, total_steps=cfg.train.max_steps,
                         n_future=cfg.model.n_future)
    rate, mode = schedule_at(cfg.views, args.step, cfg.train.max_steps)
    print(f"# config {cfg.name}: corpus {cfg.data.corpus} ({args.split}, {len(loader.stream.units)} units), "
          f"codec {cfg.views.codec}, vocab {rep.vocab_size}; step {args.step}: rate {rate:.3f}, mode {mode}")
    shown = 0
    while shown < args.windows:
        batch = loader.next_batch(args.step)
        S = batch.positions.shape[1]
        for b in range(batch.tokens.shape[0]):
            if shown >= args.windows:
                break
            ids, comp = batch.tokens[b, :S].numpy(), batch.is_compressed[b].numpy()
            docs = int(batch.doc_ids[b, :S].max()) + 1
            print(f"\n=== window {shown} (row {b}): {S} inputs, {docs} document(s), "
                  f"{comp.mean():.0%} compressed symbols, first position {int(batch.positions[b, 0])} ===")
            print(format_ids(ids, comp, rep, args.max_chars, codec))
            shown += 1
    print("\n=== stats ===")
    print(json.dumps(loader.stats(), indent=2))
    return 0


def cmd_manifest(args) -> int:
    from proxylm.config import load_config
    from proxylm.data.corpus import open_corpus

    name, overrides = split_config_args(args.config)
    cfg = load_config(name, overrides)
    corpus = open_corpus(args.corpus or cfg.data.corpus, cfg.data)
    if args.out:
        m = corpus.write_manifest(args.out, args.split)
        print(f"{args.out}: {m['n_documents']} documents, {m['total_bytes']} bytes, sha256 {m['sha256'][:16]}…",
              file=sys.stderr)
    else:
        print(json.dumps(corpus.manifest(args.split), indent=1))
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect the data pipeline (packed windows, manifests)")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="VERB")

    s = sub.add_parser("show", help="print packed example windows with their views, and stream stats")
    s.add_argument("config", nargs="*", metavar="[CONFIG] [key=value]",
                   help="shipped config name or YAML path, then overrides like views.rate=0.9")
    s.add_argument("--windows", type=int, default=2, help="windows to print (default 2)")
    s.add_argument("--step", type=int, default=0, help="optimizer step whose views schedule applies (default 0)")
    s.add_argument("--split", default="train", choices=("train", "val", "all"))
    s.add_argument("--max-chars", type=int, default=400, help="characters shown per raw span (default 400)")
    s.set_defaults(func=cmd_show)

    m = sub.add_parser("manifest", help="path, size and sha256 of every document of a split, as JSON")
    m.add_argument("config", nargs="*", metavar="[CONFIG] [key=value]", help="config and overrides")
    m.add_argument("--corpus", default=None, help="stdlib | folder | text glob | .jsonl[.gz|.zst] | .parquet | .arrow | saved dataset (see README 'Your data'); default: data.corpus")
    m.add_argument("--split", default="val", choices=("train", "val", "all"))
    m.add_argument("--out", default=None, help="JSON file to write (default: print)")
    m.set_defaults(func=cmd_manifest)
