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

from dynamo_backups.aws.errors import describe_error, is_timeout, is_transient
from dynamo_backups.aws.timeouts import Timeouts, timeouts_from_environment
from dynamo_backups.aws.waiting import WATCH
from dynamo_backups.core.wording import counted

T = TypeVar("T")


def _boot_time() -> float:
    """Seconds since boot, suspended time included, where the system has CLOCK_BOOTTIME."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


_BOOT_OFFSET = _boot_time() - time.monotonic()


def deadline_clock() -> float:
    """The clock that write deadlines (a lease's, an invocation's) are given on and compared
    with: ``time.monotonic()``, except that it also counts time the host spent suspended
    (``CLOCK_BOOTTIME``), which ``time.monotonic()`` does not on Linux: a holder that slept
    past its lease must find its deadline passed when it wakes."""
    return _boot_time() - _BOOT_OFFSET


class DeadlinePassed(Exception):
    """The deadline passed before a request could start: it was not sent."""


class RetriesExhausted(Exception):
    """A transient failure outlasted the retry budget (or the deadline)."""

    def __init__(self, what: str, attempts: int, last_error: BaseException) -> None:
        tries = counted(attempts, "attempt")
        super().__init__(f"{what}: gave up after {tries}: {describe_error(last_error)}")
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
    clock: Callable[[], float] = deadline_clock,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``operation`` until it succeeds, a permanent error is raised, the attempts run
    out, or the next wait would pass ``deadline`` (a ``clock()`` value). No attempt, the
    first included, starts once ``deadline`` has passed: a write fenced by a lease must not
    be sent after the lease may have lapsed (RetriesExhausted, with DeadlinePassed as its
    last error when no attempt was made). Timeouts count
    apart: an endpoint that does not answer is given up on once the tries that timed out
    (the SDK's own tries inside them included) have waited ``attempts`` read timeouts
    (``timeouts``), not after the whole budget meant for throttling."""
    delays = policy.delays()
    timeout_budget: float | None = None  # read from the environment at the first failure
    attempts = 0
    waited_for_answers = 0.0
    last_error: BaseException | None = None
    while True:
        if deadline is not None and clock() >= deadline:
            passed = DeadlinePassed("the write deadline passed before the request was sent")
            raise RetriesExhausted(what, attempts, last_error or passed) from last_error
        attempts += 1
        started = clock()
        try:
            with WATCH.retrying(what, attempts, policy.max_attempts):
                return operation()
        except Exception as error:
            if not retryable(error):
                if not getattr(error, "__notes__", None):  # the innermost call's names it
                    error.add_note(what)  # what an "error:" line names (cli/common)
                raise
            last_error = error
            if is_timeout(error):
                waited_for_answers += clock() - started
            delay = next(delays, None)
            if timeout_budget is None:
                timeout_budget = _timeout_budget()
            if (
                delay is None
                or waited_for_answers >= timeout_budget
                or (deadline is not None and clock() + delay > deadline)
            ):
                raise RetriesExhausted(what, attempts, error) from error
            sleep(delay)


def _timeout_budget() -> float:
    """Seconds a call may spend in tries that got no answer: its attempts' read timeouts
    (a little less, so that the last one is not followed by one more)."""
    try:
        timeouts = timeouts_from_environment()
    except ValueError:  # reported where the command starts
        timeouts = Timeouts()
    return timeouts.attempts * timeouts.read * 0.9
