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
also encode) feeds B rows; each row is its own packer and pulls the next document whenever it runs short, so a
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

from proxylm.data.config import DataConfig, ViewsConfig
from proxylm.data.corpus import Corpus, open_corpus
from proxylm.data.packing import Packer
from proxylm.data.stream import STATE_VERSION, UNPREPARED, DocStream
from proxylm.data.views import COMPRESSED, RAW, Decision, decide, encode_or_none, render, schedule_at


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, S+F) int64: inputs tokens[:, :S]; head k's target tokens[:, k+1 : S+k+1]
    doc_ids: torch.Tensor  # (B, S+F) int64: same value = same document (per row, from 0)
    positions: torch.Tensor  # (B, S) int64: position of each input in its document
    is_compressed: torch.Tensor  # (B, S) bool: input is a compressed payload symbol
    raw_bytes: int  # raw text bytes the B*S inputs stand for (a paired document counts both views)
    step: int = 0  # the optimizer step it was made for

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, : self.positions.shape[1]]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(mv(self.tokens), mv(self.doc_ids), mv(self.positions), mv(self.is_compressed),
                     self.raw_bytes, self.step)


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
        self.stream = DocStream(self.corpus, split, rank, world_size, data_cfg.seed, data_cfg.shuffle,
                                data_cfg.num_workers, self._prepare if data_cfg.num_workers else None)
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

    def _render(self, key: str, data: bytes, epoch: int, rate: float, mode: str, prepared=UNPREPARED):
        decision = decide(self.views_cfg.seed, key, epoch, rate, mode)
        codec = self.codec
        if decision.needs_codec and not (isinstance(prepared, str) and prepared == UNPREPARED):
            codec = _Known(self.codec, prepared)
        return render(decision, data, codec, self.rep)

    def _count(self, r, n_bytes: int) -> None:
        c = self.counts
        c["documents"] += 1
        c["bytes"] += n_bytes
        c["symbols"] += len(r.ids)
        c["fallback_raw"] += r.fallback
        layout = r.decision.layout
        c["layout:" + layout] += 1
        for v in r.decision.views:
            c["views:" + v] += 1
            c["view_bytes:" + v] += n_bytes
        c["symbols:raw"] += r.n_raw_symbols
        c["symbols:compressed"] += r.n_compressed_symbols

    def _fill(self, row: Packer, step: int) -> None:
        rate, mode = self.schedule(step)
        while row.available() < row.window_len:
            item = self.stream.next()
            r = self._render(item.key, item.data, item.epoch, rate, mode, item.prepared)
            self._count(r, len(item.data))
            row.push(r.ids, r.is_compressed, r.nbytes,
                     tag={"key": item.key, "unit": item.unit, "ord": item.ordinal, "epoch": item.epoch,
                          "rate": rate, "mode": mode, "n": len(r.ids)})

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
                     is_compressed=stack("is_compressed"), raw_bytes=sum(w.raw_bytes for w in windows), step=step)

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
                "rows": [row.state_dict() for row in self.rows], "counts": dict(self.counts)}

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
                r = self._render(key, data, tag["epoch"], tag["rate"], tag["mode"])
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
            "fallback_raw": c["fallback_raw"],
            "unreadable_skipped": self.stream.problems["unreadable"],
            "corpus_problems": dict(self.stream.problems),
        }
