"""BatchWriteItem until every request is in: the one copy every bulk writer uses (restore,
replication, table repair). Unprocessed items and throttling are retried with exponential
backoff and full jitter; what outlasts the budget is handed back, never dropped. Every wait
goes through ``sleep``: a bulk job passes its cancel token's (``CancelToken.sleep``), so a
Ctrl-C ends a throttled write at once (``Cancelled`` raised) instead of after its backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.errors import describe_error
from dynamo_backups.aws.retry import (
    RetriesExhausted,
    RetryPolicy,
    call_with_retries,
    deadline_clock,
)
from dynamo_backups.core.cancel import Cancelled

BATCH_LIMIT = 25  # requests per BatchWriteItem
BatchWrite = Callable[[dict[str, Any]], dict[str, Any]]  # wire-form request -> answer


@dataclass
class WriteOutcome:
    written: int = 0
    not_written: list[dict[str, Any]] = field(default_factory=list)  # the requests themselves
    reason: str | None = None


def write_all(
    batch_write: BatchWrite,
    table: str,
    requests: list[dict[str, Any]],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_written: Callable[[int], None] | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = deadline_clock,
) -> WriteOutcome:
    """Write up to 25 Put/Delete requests into ``table``; no new attempt starts after
    ``deadline`` (a ``clock()`` value). ``sleep`` waits out every backoff, the retries of
    throttled calls included; ``Cancelled`` from it is raised (the requests' fate is then
    unknown to the caller, which redoes its unit)."""
    outcome = WriteOutcome()
    delays = policy.delays()
    pending = list(requests)
    while pending:
        if deadline is not None and clock() >= deadline:
            outcome.not_written, outcome.reason = (
                pending,
                "stopped at the write deadline (the invocation's end or the lease's)",
            )
            return outcome
        try:
            answer = call_with_retries(
                lambda batch=pending: batch_write({"RequestItems": {table: batch}}),
                policy,
                f"BatchWriteItem into {table}",
                deadline=deadline,
                sleep=sleep,
                clock=clock,
            )
        except Cancelled:
            raise
        except RetriesExhausted as error:
            outcome.not_written, outcome.reason = pending, str(error)
            return outcome
        except Exception as error:
            outcome.not_written = pending
            outcome.reason = f"writing into {table}: {describe_error(error)}"
            return outcome
        sent = len(pending)
        pending = (answer.get("UnprocessedItems") or {}).get(table, [])
        outcome.written += sent - len(pending)
        if on_written is not None:
            on_written(sent - len(pending))
        if pending:
            delay = next(delays, None)
            if delay is None or (deadline is not None and clock() + delay > deadline):
                outcome.not_written = pending
                outcome.reason = (
                    f"{len(pending)} items still unprocessed by {table} after every retry"
                )
                return outcome
            sleep(delay)
    return outcome
