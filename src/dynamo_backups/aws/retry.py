"""Retries with exponential backoff and full jitter, for every path that must not lose data.

botocore retries a little on its own; this policy sits on top with a larger budget and a
deadline, and tells transient failures (throttling, 5xx, dropped connections) from permanent
ones (access denied, no such bucket, see ``errors.is_transient``), which fail at once with
the service's own message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from dynamo_backups.aws.errors import describe_error, is_transient

T = TypeVar("T")


class RetriesExhausted(Exception):
    """A transient failure outlasted the retry budget (or the deadline)."""

    def __init__(self, what: str, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempts: {describe_error(last_error)}")
        self.attempts = attempts
        self.last_error = last_error


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base*2^n))."""

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 5.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts (``max_attempts - 1`` of them)."""
        draw = (rng or random).uniform
        for attempt in range(self.max_attempts - 1):
            yield draw(0, min(self.max_delay, self.base_delay * 2**attempt))


def call_with_retries(
    operation: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``operation`` until it succeeds, a permanent error is raised, the attempts run
    out, or the next wait would pass ``deadline`` (a ``clock()`` value)."""
    delays = policy.delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            return operation()
        except Exception as error:
            if not retryable(error):
                raise
            delay = next(delays, None)
            if delay is None or (deadline is not None and clock() + delay > deadline):
                raise RetriesExhausted(what, attempts, error) from error
            sleep(delay)
