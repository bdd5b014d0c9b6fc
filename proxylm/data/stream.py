"""The document stream of one rank: units in a per-epoch order, read in the training process or by workers.

    stream = DocStream(corpus, "train", rank=0, world_size=2, seed=0, shuffle=True, num_workers=2,
                       prepare=lambda key, data, epoch: symbols)     # runs in the workers (encoding)
    item = stream.next()       # Item(key, data, epoch, unit, ordinal, prepared)
    state = stream.state_dict()   # {"g", "cursor", "problems", ...}: a few numbers, whatever the corpus size
    data = stream.reread(unit_key, ordinal)                           # resume: one document again

Sharding: the split's units (files, parquet row groups, dataset row ranges; see readers.py) sorted by key are
dealt to ranks round-robin; with fewer than STRIDED_BELOW multi-document units (not text files) per rank every
rank instead takes a strided part of each of them (records with ordinal % world_size == rank), so a small corpus stays balanced.

Order: epoch e reads the rank's units in the order of a hash of (seed, e, unit key) (key order with shuffle
off), each unit's documents in file order. Unit number g = e * n_units + position counts units over epochs;
the state is (g, cursor = documents of unit g already handed out). That order does not depend on the number
of workers: worker w reads the units with g % num_workers == w, ahead, into its own bounded queue, and the
stream takes unit g's documents from worker g % num_workers, unit after unit. Resume restarts the workers at
(g, cursor). Workers are forked (they share the parent's corpus and codec), die with the parent
(PR_SET_PDEATHSIG, and they exit when the parent's pid changes), and are stopped by close().

Problems (malformed lines, invalid UTF-8, ...) travel with the document after them and are counted when the
stream hands that document out, during epoch 0 only (later epochs meet the same ones again): so the counts
are exact after a resume.
"""

from __future__ import annotations

import os
import queue as queue_lib
import signal
from collections import Counter
from dataclasses import dataclass

import numpy as np

from proxylm.core.errors import UserError
from proxylm.core.hashing import stable_hash64
from proxylm.core.process import die_with_parent
from proxylm.data.corpus import count_problem

STATE_VERSION = 3  # 3: the loader state holds the shuffle buffer
STRIDED_BELOW = 4  # units per rank under which every rank takes a strided part of every unit
QUEUE_MESSAGES = 64  # documents a worker may read ahead
_ORDER_SALT = "proxylm-order-v1"
UNPREPARED = "unprepared"  # prepare() had nothing to do for this document


@dataclass
class Item:
    key: str
    data: bytes
    epoch: int
    unit: str  # unit key
    ordinal: int  # position among the unit's documents of the split
    prepared: object = UNPREPARED  # what prepare() returned (workers), else UNPREPARED


def unit_order(units, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """(n,) int64 permutation of the units for one epoch: a pure function of (seed, epoch, unit keys)."""
    if not shuffle:
        return np.arange(len(units), dtype=np.int64)
    h = np.fromiter((stable_hash64(_ORDER_SALT, seed, epoch, u.key) for u in units), dtype=np.uint64,
                    count=len(units))
    return np.argsort(h, kind="stable").astype(np.int64)


def rank_units(units: list, rank: int, world_size: int) -> list:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    single = [u for u in units if u.reader == "text"]  # one document each: nothing to stride
    many = [u for u in units if u.reader != "text"]
    if world_size > 1 and len(many) < STRIDED_BELOW * world_size:
        many = [u.part(rank, world_size) for u in many]
    else:
        many = many[rank::world_size]
    return sorted(single[rank::world_size] + many, key=lambda u: u.key)


def produce(corpus, split: str, units: list, seed: int, shuffle: bool, start_g: int, cursor: int, step: int = 1,
            prepare=None):
    """Messages of units start_g, start_g + step, ...: ("doc", g, ordinal, key, data, prepared, problems) and
    ("end", g, problems). The first unit starts at document `cursor`; problems before it are dropped."""
    n, orders = len(units), {}
    g = start_g
    while True:
        epoch = g // n
        if epoch not in orders:
            orders = {epoch: unit_order(units, seed, epoch, shuffle)}
        unit = units[int(orders[epoch][g % n])]
        pending: list = []
        collect = lambda kind, where, message: pending.append((kind, where, message))  # noqa: E731
        for i, doc in enumerate(corpus.iter_unit(unit, split, problem=collect)):
            if g == start_g and i < cursor:
                pending = []
                continue
            prepared = prepare(doc.key, doc.data, epoch) if prepare is not None else UNPREPARED
            yield ("doc", g, i, doc.key, doc.data, prepared, pending)
            pending = []
        yield ("end", g, pending)
        g += step


def _worker(q, parent: int, args: tuple, kwargs: dict) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    try:
        for msg in produce(*args, **kwargs):
            while True:
                try:
                    q.put(msg, timeout=1.0)
                    break
                except queue_lib.Full:
                    if os.getppid() != parent:
                        os._exit(0)
    except BaseException as e:  # reported to the parent, which raises it
        q.put(("error", f"{type(e).__name__}: {e}", isinstance(e, UserError)))


class DocStream:
    def __init__(self, corpus, split: str, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 num_workers: int = 0, prepare=None):
        self.corpus, self.split, self.seed, self.shuffle = corpus, split, seed, shuffle
        self.num_workers, self.prepare = num_workers, prepare
        split_units = corpus.split_units(split)
        self.units = rank_units(split_units, rank, world_size)
        if not split_units:
            raise UserError(f"the '{split}' split of corpus '{corpus.spec}' is empty (data.val_fraction decides the "
                            f"split: lower it for a train split, raise it for a val split), or add documents")
        if not self.units:
            raise ValueError(f"rank {rank} of {world_size} has no '{split}' units (corpus '{corpus.spec}' has "
                             f"{len(split_units)}: files, row groups or row ranges); use fewer ranks")
        self._by_key = {u.key: u for u in self.units}
        self.g, self.cursor = 0, 0
        self.problems: Counter = Counter()
        self._warned: Counter = Counter()
        self._source = None  # in-process generator, or the workers' queues
        self._procs: list = []
        self._empty_units = 0  # consecutive units that held no document of the split
        self._order_cache = None  # (epoch, unit order) for naming the unit of a document

    @property
    def epoch(self) -> int:
        return self.g // len(self.units)

    # ---- sources ---------------------------------------------------------------------------------------
    def _args(self) -> tuple:
        return (self.corpus, self.split, self.units, self.seed, self.shuffle)

    def _start(self) -> None:
        if self.num_workers == 0:
            self._source = produce(*self._args(), self.g, self.cursor)
            return
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked children: no Rust thread pool warning
        self._source = []
        for w in range(self.num_workers):
            first = self.g + (w - self.g) % self.num_workers  # worker w's first unit number >= g
            q = ctx.Queue(QUEUE_MESSAGES)
            kwargs = {"step": self.num_workers, "prepare": self.prepare}
            p = ctx.Process(target=_worker, args=(q, os.getpid(), (*self._args(), first,
                                                                    self.cursor if first == self.g else 0), kwargs),
                            daemon=True, name=f"proxylm-loader-{w}")
            p.start()
            self._procs.append(p)
            self._source.append(q)

    def _get(self):
        if self.num_workers == 0:
            return next(self._source)
        w = self.g % self.num_workers
        while True:
            try:
                msg = self._source[w].get(timeout=1.0)
                break
            except queue_lib.Empty:
                if not self._procs[w].is_alive():
                    raise RuntimeError(f"loader worker {w} died (exit code {self._procs[w].exitcode})") from None
        if msg[0] == "error":
            self.close()
            raise (UserError if msg[2] else RuntimeError)(f"loader worker {w}: {msg[1]}")
        return msg

    def close(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
        self._procs, self._source = [], None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    # ---- items -------------------------------------------------------------------------------------------
    def next(self) -> Item:
        if self._source is None:
            self._start()
        while True:
            msg = self._get()
            if msg[1] != self.g:
                raise RuntimeError(f"loader stream out of step: got unit {msg[1]}, expected {self.g}")
            self._count(msg[-1])
            if msg[0] == "end":
                self.g, self.cursor = self.g + 1, 0
                self._empty_units += 1
                if self._empty_units > len(self.units):
                    raise ValueError(f"corpus '{self.corpus.spec}': this rank's {len(self.units)} units hold no "
                                     f"'{self.split}' documents (all empty, unreadable or in the other split)")
                continue
            _, g, ordinal, key, data, prepared, _ = msg
            if ordinal != self.cursor:
                raise RuntimeError(f"loader stream out of step in unit {g}: document {ordinal}, expected {self.cursor}")
            self.cursor += 1
            self._empty_units = 0
            return Item(key, data, g // len(self.units), self._unit_key(g), ordinal, prepared)

    def _unit_key(self, g: int) -> str:
        order = self._order_cache
        epoch = g // len(self.units)
        if order is None or order[0] != epoch:
            order = self._order_cache = (epoch, unit_order(self.units, self.seed, epoch, self.shuffle))
        return self.units[int(order[1][g % len(self.units)])].key

    def _count(self, problems) -> None:
        if self.epoch != 0:
            return
        for kind, where, message in problems:
            count_problem(self.problems, self._warned, self.corpus.spec, kind, where, message, stacklevel=5)

    def reread(self, unit_key: str, ordinal: int) -> tuple[str, bytes]:
        """(key, bytes) of document `ordinal` of a unit of this stream (resume: re-render a buffered document)."""
        return self.reread_many(unit_key, {ordinal})[ordinal]

    def reread_many(self, unit_key: str, ordinals) -> dict[int, tuple[str, bytes]]:
        """{ordinal: (key, bytes)} of several documents of one unit, reading the unit once."""
        unit = self._by_key.get(unit_key)
        if unit is None:
            raise ValueError(f"cannot resume: unit '{unit_key}' is not in this rank's share of the corpus any more")
        wanted, found = set(ordinals), {}
        for i, doc in enumerate(self.corpus.iter_unit(unit, self.split, problem=lambda *a: None)):
            if i in wanted:
                found[i] = (doc.key, doc.data)
                if len(found) == len(wanted):
                    return found
        missing = min(wanted - set(found))
        raise ValueError(f"cannot resume: unit '{unit_key}' has no document {missing} any more (corpus changed)")

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"g": self.g, "cursor": self.cursor, "problems": dict(self.problems), "n_units": len(self.units),
                "empty_units": self._empty_units}

    def load_state_dict(self, state: dict) -> None:
        if state["n_units"] != len(self.units):
            raise ValueError(f"cannot resume the data stream: this rank had {state['n_units']} units, now "
                             f"{len(self.units)} (corpus or number of ranks changed)")
        self.close()
        self.g, self.cursor = state["g"], state["cursor"]
        self.problems = Counter(state.get("problems", {}))
        self._empty_units = state.get("empty_units", 0)
        self._source = None
