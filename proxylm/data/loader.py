"""Training batches: corpus -> per-document views -> ids -> packed windows, exactly resumable.

    loader = TrainLoader(cfg.data, cfg.views, rep, codec, split="train", rank=0, world_size=1,
                         total_steps=cfg.train.max_steps, n_future=cfg.model.n_future,
                         max_position=cfg.model.max_seq_len)   # keep positions inside the RoPE table
    batch = loader.next_batch(step)        # step = optimizer step (drives the views schedule)
    rate, mode = loader.schedule(step)     # what documents read at that step get
    batch.tokens (B, S+F)  batch.doc_ids (B, S+F)  batch.positions (B, S)  batch.is_compressed (B, S)
    state = loader.state_dict()            # JSON-serializable; load_state_dict(state) resumes exactly
    loader.stats()                         # documents, views, compressed shares, symbols per byte, problems

Order: the rank's document stream (proxylm/data/stream.py: units of files dealt to ranks, read in a per-epoch
order that is a pure function of (data.seed, epoch), optionally by `data.num_workers` background processes that
also encode), drawn at random from a buffer of `data.shuffle_buffer` documents (proxylm/data/shuffle.py), feeds
B rows; each row is its own packer and pulls the next document whenever it runs short, so a
long document continues in one row over consecutive batches instead of filling a whole batch. The stream loops
forever; the epoch counter is in the state.

Each document's rate and mode are looked up when it is read, at the step passed to `next_batch`, and
stored with it (tag: key, epoch, rate, mode), so a resumed run re-renders a half-consumed document
identically. A document the codec cannot encode is emitted raw and counted (`fallback_raw`).

Positions continue across windows for a document that spans several; with `max_position` (the model's RoPE
table size) a continued document's positions are shifted by a constant per window so they stay below it,
which RoPE cannot tell apart (packing.py). Without it, positions grow up to the longest document's length.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from proxylm.core.errors import UserError
from proxylm.core.io import printable
from proxylm.data.config import DataConfig, ViewsConfig
from proxylm.data.corpus import Corpus, open_corpus
from proxylm.data.packing import Packer
from proxylm.data.shuffle import ShuffleBuffer
from proxylm.data.stamps import changed_units, unit_stamps
from proxylm.data.stream import STATE_VERSION, UNPREPARED, DocStream
from proxylm.data.views import (COMPRESSED, RAW, Decision, Part, decide, encode_or_none, is_translation, render,
                                render_fitted, schedule_at)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, S+F) int64: inputs tokens[:, :S]; head k's target tokens[:, k+1 : S+k+1]
    doc_ids: torch.Tensor  # (B, S+F) int64: same value = same document (per row, from 0)
    positions: torch.Tensor  # (B, S) int64: position of each input in its document
    is_compressed: torch.Tensor  # (B, S) bool: input is a compressed payload symbol
    raw_bytes: int  # raw text bytes the B*S inputs stand for (a paired document counts both views)
    step: int = 0  # the optimizer step it was made for
    compressed_bytes: int = 0  # of raw_bytes, those behind compressed symbols (raw view: the rest)
    compressed_symbols: int = 0  # inputs that are compressed payload symbols

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, : self.positions.shape[1]]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(mv(self.tokens), mv(self.doc_ids), mv(self.positions), mv(self.is_compressed),
                     self.raw_bytes, self.step, self.compressed_bytes, self.compressed_symbols)


class _Known:
    """A codec whose symbols for this one document are already known (encoded by a loader worker)."""

    def __init__(self, codec, symbols):
        self.codec, self.symbols = codec, symbols
        self.name, self.alphabet_size = codec.name, codec.alphabet_size

    def encode_many(self, datas):
        return [self.symbols]


class TrainLoader:
    def __init__(self, data_cfg: DataConfig, views_cfg: ViewsConfig, rep, codec=None, split: str = "train",
                 rank: int = 0, world_size: int = 1, total_steps: int | None = None, n_future: int = 1,
                 corpus: Corpus | None = None, max_position: int = 0):
        self.data_cfg, self.views_cfg, self.rep, self.codec = data_cfg, views_cfg, rep, codec
        self.split, self.rank, self.world_size = split, rank, world_size
        self.total_steps, self.n_future = total_steps, n_future
        self._check_codec()
        if views_cfg.schedule.enabled and not total_steps:
            raise ValueError("views.schedule.enabled needs total_steps (the run's optimizer steps)")
        self.corpus = corpus if corpus is not None else open_corpus(data_cfg.corpus, data_cfg)
        # doc_stream: the rank's documents in unit order; stream: what the rows read (through the shuffle buffer)
        self.doc_stream = DocStream(self.corpus, split, rank, world_size, data_cfg.seed, data_cfg.shuffle,
                                    data_cfg.num_workers, self._prepare if data_cfg.num_workers else None)
        self.stream = self.doc_stream
        if data_cfg.shuffle and data_cfg.shuffle_buffer:
            self.stream = ShuffleBuffer(self.doc_stream, data_cfg.shuffle_buffer, data_cfg.seed)
        # max_position: pass the model's RoPE table size (model.max_seq_len); see packing.py
        self.rows = [Packer(data_cfg.seq_len, n_future, rep.bos_id, max_position) for _ in range(data_cfg.batch_size)]
        self.counts: Counter = Counter()  # stream statistics (see stats()), saved in the state

    def _check_codec(self) -> None:
        v, rep, codec = self.views_cfg, self.rep, self.codec
        may_compress = v.rate > 0 or (v.schedule.enabled and max(v.schedule.initial_rate, v.schedule.final_rate) > 0)
        if may_compress and codec is None:
            raise ValueError("views.rate > 0 needs a codec")
        if codec is not None:
            if rep.codec_name != codec.name or rep.codec_alphabet < codec.alphabet_size:
                raise ValueError(f"representation (codec {rep.codec_name}, {rep.codec_alphabet} symbols) does not "
                                 f"match the codec ({codec.name}, {codec.alphabet_size} symbols)")

    def schedule(self, step: int) -> tuple[float, str]:
        """(rate, mode) that documents read at optimizer step `step` get."""
        return schedule_at(self.views_cfg, step, self.total_steps)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def close(self) -> None:
        """Stop the loader's workers (they also die with this process)."""
        self.stream.close()

    # ---- documents ---------------------------------------------------------------------------------------
    def _modes(self) -> list[tuple[float, str]]:
        """The highest rate of each mode the run can use (a document needs its compressed view at some rate
        iff it needs it at the highest: decisions are monotonic in the rate)."""
        v, s = self.views_cfg, self.views_cfg.schedule
        if not s.enabled:
            return [(v.rate, v.mode)]
        return [(max(v.rate, s.initial_rate), s.warmup_mode), (v.rate, v.mode), (max(v.rate, s.final_rate), s.final_mode)]

    def _prepare(self, key: str, data: bytes, epoch: int):
        """In a worker: the codec's symbols when some step of the run may need them (None: CannotEncode)."""
        if self.codec is None or not any(decide(self.views_cfg.seed, key, epoch, r, m).needs_codec
                                         for r, m in self._modes()):
            return UNPREPARED
        return encode_or_none(self.codec, data)

    def _codec_for(self, decision: Decision, prepared):
        if decision.needs_codec and not (isinstance(prepared, str) and prepared == UNPREPARED):
            return _Known(self.codec, prepared)
        return self.codec

    def _render(self, key: str, data: bytes, epoch: int, rate: float, mode: str, prepared=UNPREPARED,
                span=None, filler: bool = False):
        """One pushed document; `span` (and `filler`): a translation sub-piece, re-rendered from its tag."""
        decision = decide(self.views_cfg.seed, key, epoch, rate, mode)
        if span is not None:
            data = data[span[0]:span[1]]
            if filler:
                decision = Decision.single(RAW, decision.sentinels)
            return render(decision, data, self.codec, self.rep)
        return render(decision, data, self._codec_for(decision, prepared), self.rep)

    def _parts(self, key: str, data: bytes, epoch: int, rate: float, mode: str, row: Packer, prepared=UNPREPARED):
        """(decision, parts): translation pairs cut to fit the windows of `row` (views.fit_pairs; precomputed
        views are of whole pieces, so they keep one pair per piece). Sub-pieces are encoded here."""
        decision = decide(self.views_cfg.seed, key, epoch, rate, mode)
        if is_translation(decision) and self.views_cfg.fit_pairs and not self.views_cfg.precomputed:
            S = self.data_cfg.seq_len
            return decision, render_fitted(decision, data, self.codec, self.rep, S, S - row.available() % S)
        return decision, [Part((0, len(data)), render(decision, data, self._codec_for(decision, prepared), self.rep))]

    def _count(self, decision: Decision, parts: list, n_bytes: int) -> None:
        """One decision per piece read; each view's bytes and symbols counted once (a pair's text is in
        both views' byte counts, never twice in either)."""
        c = self.counts
        c["documents"] += 1
        c["bytes"] += n_bytes
        rendered = [p.rendered for p in parts]
        c["symbols"] += sum(len(r.ids) for r in rendered)
        whole = parts[0].rendered if len(parts) == 1 else None
        if whole is not None:  # one document: the layout it rendered to (the raw one after a fallback)
            c["fallback_raw"] += whole.fallback
            decision = whole.decision
        c["layout:" + decision.layout] += 1
        for v in decision.views:
            c["views:" + v] += 1
        for p in parts:
            span = p.span[1] - p.span[0]
            for v in p.rendered.decision.views:
                c["view_bytes:" + v] += span
            c["pair_parts"] += len(parts) > 1 and not p.filler
            c["filler_parts"] += p.filler
            c["filler_bytes"] += span if p.filler else 0
        c["symbols:raw"] += sum(r.n_raw_symbols for r in rendered)
        c["symbols:compressed"] += sum(r.n_compressed_symbols for r in rendered)

    def _fill(self, row: Packer, step: int) -> None:
        rate, mode = self.schedule(step)
        while row.available() < row.window_len:
            item = self.stream.next()
            decision, parts = self._parts(item.key, item.data, item.epoch, rate, mode, row, item.prepared)
            self._count(decision, parts, len(item.data))
            for p in parts:
                r = p.rendered
                tag = {"key": item.key, "unit": item.unit, "ord": item.ordinal, "epoch": item.epoch,
                       "rate": rate, "mode": mode, "n": len(r.ids)}
                if p.filler or p.span != (0, len(item.data)):  # a sub-piece: resume re-renders its span
                    tag["span"] = list(p.span)
                    if p.filler:
                        tag["filler"] = True
                row.push(r.ids, r.is_compressed, r.nbytes, tag=tag)

    # ---- batches -----------------------------------------------------------------------------------------
    def next_batch(self, step: int) -> Batch:
        """The next B windows; documents read now use the views schedule at `step`."""
        windows = []
        for row in self.rows:
            self._fill(row, step)
            windows.append(row.pop_window())
        self.counts["batches"] += 1
        stack = lambda name: torch.from_numpy(np.stack([getattr(w, name) for w in windows]))  # noqa: E731
        return Batch(tokens=stack("tokens"), doc_ids=stack("doc_ids"), positions=stack("positions"),
                     is_compressed=stack("is_compressed"), raw_bytes=sum(w.raw_bytes for w in windows), step=step,
                     compressed_bytes=sum(w.compressed_bytes for w in windows),
                     compressed_symbols=sum(int(w.is_compressed.sum()) for w in windows))

    def __iter__(self):
        step = 0
        while True:
            yield self.next_batch(step)
            step += 1

    # ---- state -------------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {"split": self.split, "rank": self.rank, "world_size": self.world_size,
                "seq_len": self.data_cfg.seq_len, "batch_size": self.data_cfg.batch_size,
                "n_future": self.n_future, "n_units": len(self.stream.units)}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, **self._identity(), "stream": self.stream.state_dict(),
                "rows": [row.state_dict() for row in self.rows], "counts": dict(self.counts),
                "unit_stamps": unit_stamps(self.corpus.units)}   # every rank: all refuse alike

    def check_unchanged(self, state: dict, accept_changed: bool = False) -> list[str]:
        """The corpus units whose files changed since `state` was saved (stamps.py): refused by name unless
        `accept_changed` (then returned, for the run's record)."""
        changed = changed_units(state.get("unit_stamps"), self.corpus.units)
        if changed and not accept_changed:
            shown = ", ".join(printable(k) for k in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise UserError(f"cannot resume: {len(changed)} corpus unit(s) changed since the checkpoint (size or "
                            f"modification time): {shown}. Put the data back, or `proxylm resume RUN "
                            f"--accept-changed-data` to go on with the new bytes (recorded in resume.jsonl)")
        return changed

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data state version {state.get('version')} != {STATE_VERSION}: the checkpoint was made "
                             "by an older data pipeline; start a new run")
        mismatch = {k: (state.get(k), v) for k, v in self._identity().items() if state.get(k) != v}
        if mismatch:
            detail = ", ".join(f"{k}: saved {a} now {b}" for k, (a, b) in mismatch.items())
            raise ValueError(f"cannot resume the data stream: {detail}")
        self.stream.load_state_dict(state["stream"])
        for row, rs in zip(self.rows, state["rows"]):
            row.clear()
            for i, tag in enumerate(rs["tags"]):
                key, data = self.stream.reread(tag["unit"], tag["ord"])
                if key != tag["key"]:
                    raise ValueError(f"cannot resume: document {tag['ord']} of unit '{tag['unit']}' is now '{key}', "
                                     f"saved '{tag['key']}' (corpus changed)")
                r = self._render(key, data, tag["epoch"], tag["rate"], tag["mode"], span=tag.get("span"),
                                 filler=tag.get("filler", False))
                if len(r.ids) != tag["n"]:
                    raise ValueError(f"cannot resume: document '{tag['key']}' now renders to {len(r.ids)} ids, "
                                     f"saved {tag['n']} (corpus or codec changed)")
                row.push(r.ids, r.is_compressed, r.nbytes, tag=tag, skip=rs["offset"] if i == 0 else 0)
        self.counts = Counter(state.get("counts", {}))

    # ---- stats -------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """What the stream held so far (documents as read, before packing)."""
        c = self.counts
        n_views = c["views:raw"] + c["views:compressed"]
        payload = c["symbols:raw"] + c["symbols:compressed"]
        layouts = {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("layout:")}
        return {
            "documents": c["documents"],
            "batches": c["batches"],
            "epoch": self.epoch,
            "raw_documents": layouts.get(RAW, 0),
            "compressed_documents": layouts.get(COMPRESSED, 0),
            "pair_documents": sum(v for k, v in layouts.items() if Decision.from_layout(k).paired),
            "layouts": layouts,
            "raw_views": c["views:raw"],
            "compressed_views": c["views:compressed"],
            "compressed_view_share": c["views:compressed"] / n_views if n_views else 0.0,
            "compressed_symbol_share": c["symbols:compressed"] / c["symbols"] if c["symbols"] else 0.0,
            "compressed_payload_share": c["symbols:compressed"] / payload if payload else 0.0,
            "symbols_per_byte": {v: c[f"symbols:{v}"] / c[f"view_bytes:{v}"] if c[f"view_bytes:{v}"] else None
                                 for v in (RAW, COMPRESSED)},
            "symbols_per_document_byte": c["symbols"] / c["bytes"] if c["bytes"] else None,
            # each counted once: text read (pieces), and the bytes/symbols of each view
            "text_bytes": c["bytes"],
            "raw_view_bytes": c["view_bytes:raw"],
            "compressed_view_bytes": c["view_bytes:compressed"],
            "raw_view_symbols": c["symbols:raw"],
            "compressed_view_symbols": c["symbols:compressed"],
            "pair_parts": c["pair_parts"],
            "filler_parts": c["filler_parts"],
            "filler_bytes": c["filler_bytes"],
            "fallback_raw": c["fallback_raw"],
            "unreadable_skipped": self.stream.problems["unreadable"],
            "corpus_problems": dict(self.stream.problems),
        }
