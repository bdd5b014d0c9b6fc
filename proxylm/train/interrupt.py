"""Ctrl-C during training: finish the step, save a checkpoint, say how to resume, then stop.

    with StopOnInterrupt(enabled=world_size == 1) as stop:
        while training:
            step()
            if stop.requested:
                save(); print("resume with ..."); break

The first SIGINT only sets `requested` (a step cut in half would leave weights and counters apart); a second
one interrupts at once, as usual. Off under torchrun (ranks would see the signal at different steps and stop at
different collectives) and outside the main thread (signal handlers live there).
"""

from __future__ import annotations

import signal
import threading


class StopOnInterrupt:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False
