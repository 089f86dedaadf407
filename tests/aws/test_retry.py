"""The retry policy: transient failures retried with jittered backoff, permanent ones not."""

from __future__ import annotations

import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from dynamo_backups.aws.errors import is_transient
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy, call_with_retries


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("ProvisionedThroughputExceededException", 400), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (ValueError("x"), False),
    ],
)
def test_transient_or_permanent(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_delays_grow_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.1, max_delay=1.0)
    delays = list(policy.delays(random.Random(7)))
    assert len(delays) == 5
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(1.0, 0.1 * 2**attempt)


def test_retries_until_success() -> None:
    outcomes = [client_error("SlowDown", 503), client_error("InternalError", 500), "done"]
    slept: list[float] = []

    def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(operation, RetryPolicy(), "op", sleep=slept.append) == "done"
    assert len(slept) == 2


def test_permanent_error_is_raised_at_once() -> None:
    calls = []

    def operation() -> None:
        calls.append(1)
        raise client_error("AccessDenied", 403)

    with pytest.raises(ClientError, match="AccessDenied"):
        call_with_retries(operation, RetryPolicy(), "op", sleep=lambda _: None)
    assert len(calls) == 1


def test_exhausted_budget_reports_what_and_why() -> None:
    def operation() -> None:
        raise client_error("SlowDown", 503)

    with pytest.raises(RetriesExhausted, match="put s3://b/k: gave up after 3 attempts: SlowDown"):
        call_with_retries(
            operation, RetryPolicy(max_attempts=3), "put s3://b/k", sleep=lambda _: None
        )


def test_deadline_stops_retrying_early() -> None:
    now = [0.0]

    def operation() -> None:
        raise client_error("SlowDown", 503)

    with pytest.raises(RetriesExhausted, match="gave up after 1 attempt: "):
        call_with_retries(
            operation,
            RetryPolicy(base_delay=10, max_delay=10),
            "op",
            deadline=0.001,
            sleep=lambda s: None,
            clock=lambda: now[0] + 0.0009,
        )
