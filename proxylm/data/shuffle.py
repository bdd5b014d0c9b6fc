"""A shuffle buffer over a document stream, with a state that resumes exactly.

    stream = ShuffleBuffer(DocStream(corpus, "train", ...), size=4096, seed=0)
    item = stream.next()             # a random one of the `size` documents read ahead; its slot is refilled
    state = stream.state_dict()      # the inner stream's state + (unit, ordinal, epoch, key) of each buffered one
    stream.load_state_dict(state)    # re-reads the buffered documents (each unit once), then goes on as before

Why: the stream reads units (files, row groups) in a shuffled order but each unit's documents in file order, and a
long file is cut into many pieces. Without a buffer a batch of 8 rows holds 8 consecutive pieces of one file and a
short run sees a few dozen files: less diverse batches and larger seed-to-seed spread than a shuffle over pieces.
The buffer spreads the pieces of ~size / (pieces per file) files over the draws (lingua and torchtitan mix their
streams the same way).

The draw is a pure function of (seed, number of draws so far): slot = hash(seed, draws) % held, so the order does
not depend on workers or timing and a resumed run draws what the uninterrupted one would have. Documents the
workers prepared (encoded) keep their symbols; after a resume the re-read ones are encoded again in-process
(the same symbols: codecs are deterministic). The buffer holds `size` documents, or fewer when they reach
MAX_BUFFER_BYTES (a corpus of very long documents) or one epoch of the stream (a small corpus).
"""

from __future__ import annotations

from collections import defaultdict

from proxylm.core.hashing import stable_hash64
from proxylm.data.stream import UNPREPARED, Item

_SHUFFLE_SALT = "proxylm-shuffle-v1"
# the buffer stops filling at this many bytes even when it holds fewer documents: 8192 whole stdlib-sized files
# (~17 KB) are ~140 MB, which put the loader at 359 MB over the 300 MB goal (BENCHMARKS.md, bench/corpus.py)
MAX_BUFFER_BYTES = 64 << 20


class ShuffleBuffer:
    def __init__(self, stream, size: int, seed: int):
        if size < 1:
            raise ValueError(f"shuffle buffer size must be >= 1, got {size}")
        self.stream, self.size, self.seed = stream, size, seed
        self.buffer: list[Item] = []
        self.draws = 0

    # the parts of DocStream's interface the loader uses
    @property
    def units(self):
        return self.stream.units

    @property
    def problems(self):
        return self.stream.problems

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def close(self) -> None:
        self.stream.close()

    def reread(self, unit_key: str, ordinal: int) -> tuple[str, bytes]:
        return self.stream.reread(unit_key, ordinal)

    def next(self) -> Item:
        if not self.buffer:  # the first call fills the buffer; then one in for one out (the stream loops)
            held, epoch = 0, self.stream.epoch
            while len(self.buffer) < self.size and held < MAX_BUFFER_BYTES:
                self.buffer.append(self.stream.next())
                held += len(self.buffer[-1].data)
                if self.buffer[-1].epoch != epoch:  # at most one epoch: a small corpus is not read many times over
                    break
        slot = stable_hash64(_SHUFFLE_SALT, self.seed, self.draws) % len(self.buffer)
        self.draws += 1
        item, self.buffer[slot] = self.buffer[slot], self.stream.next()
        return item

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"inner": self.stream.state_dict(), "draws": self.draws, "size": self.size,
                "buffer": [[it.unit, it.ordinal, it.epoch, it.key] for it in self.buffer]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("size") != self.size:
            raise ValueError(f"cannot resume the data stream: shuffle buffer of {state.get('size')} documents, now "
                             f"{self.size} (data.shuffle_buffer changed)")
        self.stream.load_state_dict(state["inner"])
        self.draws = state["draws"]
        wanted = defaultdict(set)
        for unit, ordinal, _, _ in state["buffer"]:
            wanted[unit].add(ordinal)
        texts = {}
        for unit, ordinals in wanted.items():  # each unit read once, however many of its documents are buffered
            texts.update({(unit, o): doc for o, doc in self.stream.reread_many(unit, ordinals).items()})
        self.buffer = []
        for unit, ordinal, epoch, key in state["buffer"]:
            found_key, data = texts[(unit, ordinal)]
            if found_key != key:
                raise ValueError(f"cannot resume: document {ordinal} of unit '{unit}' is now '{found_key}', saved "
                                 f"'{key}' (corpus changed)")
            self.buffer.append(Item(key, data, epoch, unit, ordinal, UNPREPARED))
