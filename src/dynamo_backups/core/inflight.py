"""How many reads a process keeps in flight, adapted to their latency.

A fixed number is wrong somewhere: against S3 a read waits tens of milliseconds, so a restore
needs many in flight to keep busy, while on a small host whose cores the client shares (or
whose client is the bottleneck) every read beyond a few only adds threads waiting for the
interpreter, which costs CPU and wins nothing. The rule is the gradient one of TCP Vegas and
Netflix's concurrency-limits: while the latency stays near the lowest seen, the limit grows;
once it rises above ``tolerance`` times that (requests queue somewhere: the servers, the
network, this process's CPU), the limit shrinks in proportion.
"""

from __future__ import annotations

import math
import threading

WINDOW_MINIMUM = 16  # observations per adjustment, at least
GROWTH = 0.25  # of the limit, added per window while latency stays flat
SMOOTHING = 0.25  # share of a lower estimate taken at each adjustment


class InFlightLimit:
    """A limit on work in flight (thread-safe): ``acquire`` before a piece of work,
    ``release`` with how long each of its requests took once it is done."""

    def __init__(
        self, initial: int = 8, minimum: int = 4, maximum: int = 128, tolerance: float = 2.0
    ) -> None:
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum)
        self.tolerance = tolerance
        self._limit = float(min(max(initial, self.minimum), self.maximum))
        self._in_flight = 0
        self._changed = threading.Condition()
        self._window: list[float] = []
        self._saturated = False  # the limit was reached during this window
        self._baseline = math.inf  # the lowest window median seen (seconds)

    @property
    def limit(self) -> int:
        return int(self._limit)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for room; False (nothing acquired) when ``stop`` is set first."""
        with self._changed:
            while self._in_flight >= int(self._limit):
                self._saturated = True
                if stop is not None and stop.is_set():
                    return False
                self._changed.wait(0.1)  # a stop is noticed within this
            self._in_flight += 1
            if self._in_flight >= int(self._limit):
                self._saturated = True
            return True

    def release(self, latency: float | None = None, requests: int = 1) -> None:
        """One piece of work done; ``latency``: the mean seconds of its ``requests``."""
        with self._changed:
            self._in_flight -= 1
            if latency is not None and requests > 0:
                self._window.extend([latency] * min(requests, 4))
                if len(self._window) >= max(WINDOW_MINIMUM, int(self._limit)):
                    self._adjust()
            self._changed.notify()

    def _adjust(self) -> None:
        window, self._window = sorted(self._window), []
        # The window's median, not its fastest request: one answer from a cache must not
        # set the pace for every later one.
        median = window[len(window) // 2]
        self._baseline = min(self._baseline, median)
        mean = sum(window) / len(window)
        limit = self._limit
        if mean <= self.tolerance * self._baseline:
            if self._saturated:  # flat latency and every slot taken: more may help
                limit += max(1.0, limit * GROWTH)
        else:  # queueing: shrink in proportion, keeping a little headroom
            gradient = max(0.5, self.tolerance * self._baseline / mean)
            estimate = limit * gradient + math.sqrt(limit)
            limit = (1 - SMOOTHING) * limit + SMOOTHING * estimate
        self._limit = min(float(self.maximum), max(float(self.minimum), limit))
        self._saturated = False
        self._changed.notify_all()  # a higher limit lets waiters in
