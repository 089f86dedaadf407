"""A shared cap on items per second (a token bucket holding at most one second's worth)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def take_tokens(
    rate: float, available: float, updated: float, now: float, count: int
) -> tuple[float, float]:
    """One step of the bucket: the tokens left after taking ``count`` at ``now``, and how
    long the taker must wait. Borrowing ahead keeps large pages moving; the debt is paid by
    waiting."""
    available = min(rate, available + (now - updated) * rate) - count
    return available, (-available / rate if available < 0 else 0.0)


class RateLimiter:
    """``acquire(n)`` blocks until ``n`` more items fit under ``rate`` per second. A rate of
    None lets everything through."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._available = rate or 0.0
        self._updated = clock()

    def acquire(self, count: int = 1) -> None:
        if self.rate is None or count <= 0:
            return
        with self._lock:
            now = self._clock()
            self._available, wait = take_tokens(
                self.rate, self._available, self._updated, now, count
            )
            self._updated = now
        if wait > 0:
            self._sleep(wait)
