"""Parallel scans: the one copy of the segment loop backfill, verify, diff-tables and restore's
--delete-absent use. Each page is a consistent Scan, retried with backoff and jitter."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.core.cancel import CancelToken

Scan = Callable[[dict[str, Any]], dict[str, Any]]  # one Scan call, wire form in and out


def scan_pages(
    scan: Scan,
    table: str,
    segment: int,
    total: int,
    policy: RetryPolicy,
    *,
    limit: int | None = 1000,
    start_key: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[dict[str, Any]]:
    """The pages of one segment of a parallel scan, from ``start_key`` on. ``limit`` bounds
    each page's items (DynamoDB caps pages at 1 MB; DynamoDB Local does not). Once ``cancel``
    is set, no further page is read (``Cancelled`` is raised instead)."""
    request: dict[str, Any] = {
        "TableName": table,
        "Segment": segment,
        "TotalSegments": total,
        "ConsistentRead": True,
        **(extra or {}),
    }
    if limit:
        request["Limit"] = limit
    while True:
        if start_key:
            request["ExclusiveStartKey"] = start_key
        if cancel is not None:
            cancel.check()
        page = call_with_retries(
            lambda r=dict(request): scan(r),
            policy,
            f"scan {table} segment {segment}",
            sleep=cancel.sleep if cancel is not None else time.sleep,
        )
        yield page
        start_key = page.get("LastEvaluatedKey")
        if not start_key:
            return


def run_segments(
    segments: Iterable[int], work: Callable[[int], None], cancel: CancelToken | None = None
) -> None:
    """Run ``work`` for every segment at once; the first error is raised when all ended.
    Ctrl-C sets ``cancel`` (which ``work`` passes to ``scan_pages``) before waiting for them."""
    chosen = list(segments)
    with ThreadPoolExecutor(len(chosen) or 1, thread_name_prefix="scan") as pool:
        try:
            for future in [pool.submit(work, segment) for segment in chosen]:
                future.result()
        except KeyboardInterrupt:
            if cancel is not None:
                cancel.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
