"""Torch CPU threads: one policy for every verb that computes (train, resume, eval, generate, compare, codec).

    from proxylm.core.threads import set_threads
    n = set_threads(0)        # the default policy (below); returns the number of threads set
    n = set_threads(2)        # exactly 2 (the --threads flag, train.threads, codec m1.threads)

The default (0) is the number of cores left free by the rest of the machine, from the 1-minute load average:
max(1, cores - round(load)), at most the cores this process may use. On a quiet machine that is every core;
on a busy one it falls towards one thread. Why not torch's own default (every core): an OpenMP team waits for
its slowest thread at every barrier, so with the cores taken by other processes each step waits for a
descheduled thread; measured on 2 busy cores that made training 3-11x and decoding up to 100x slower than one
thread (bench/threads.py, BENCHMARKS.md "Threads"). PROXYLM_THREADS=N in the environment sets the default.
"""

from __future__ import annotations

import os

ENV = "PROXYLM_THREADS"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores not busy with other work, judged by the 1-minute load average (at least 1)."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - load)))


def default_threads() -> int:
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 1:
            from proxylm.core.errors import UserError

            raise UserError(f"{ENV}={value!r}: must be a whole number >= 1 (torch CPU threads)")
        return n
    return free_cores()


def set_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads: `threads` if > 0, else default_threads(). Returns the number set."""
    import torch

    n = threads if threads > 0 else default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


THREADS_HELP = ("torch CPU threads (default 0: the cores the load average leaves free, 1 on a busy machine; "
                "see README 'Threads')")
