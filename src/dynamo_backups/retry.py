"""Retries with exponential backoff and full jitter, for every path that must not lose data.

botocore retries a little on its own; this policy sits on top with a larger budget and a
deadline, and tells transient failures (throttling, 5xx, dropped connections) from permanent
ones (access denied, no such bucket), which fail at once with the service's own message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ResponseStreamingError,
)

T = TypeVar("T")

TRANSIENT_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)


def is_transient(error: BaseException) -> bool:
    """True for failures that a later attempt can cure."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_ERROR_CODES or status >= 500 or status == 429
    return isinstance(
        error, ConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError
    )


def describe_error(error: BaseException) -> str:
    """A one-line description: the service's error code and message where there is one."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or error.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode"
        )
        return f"{code}: {details.get('Message') or error}"
    if isinstance(error, BotoCoreError):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


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
