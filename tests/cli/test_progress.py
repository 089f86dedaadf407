"""Progress lines for logs, and the shared rate limit."""

from __future__ import annotations

import io

from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.ratelimit import RateLimiter


def test_plain_progress_lines_show_count_rate_and_eta() -> None:
    stream = io.StringIO()
    with Progress("backfill Users", total=100, stream=stream, interval=0) as progress:
        progress.advance(40)
        progress.advance(10)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("backfill Users: 40/100 items (") and "/s, ETA" in lines[0]
    assert lines[-1].startswith("backfill Users: 50/100 items (") and lines[-1].endswith(" s)")


def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress("x", stream=stream, interval=0, enabled=False) as progress:
        progress.advance(5)
    assert stream.getvalue() == ""
    assert progress.done == 5


def test_rate_limiter_holds_the_rate() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        limiter.acquire(50)  # 500 items at 100/s: one second of credit, then four of waiting
    assert 3.9 <= now[0] <= 4.1
    unlimited = RateLimiter(None, clock=lambda: 0.0, sleep=lambda _: 1 / 0)
    unlimited.acquire(10**6)
