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


def test_units_give_the_count_and_eta_when_the_item_total_is_unknown() -> None:
    stream = io.StringIO()
    with Progress("restore Users", stream=stream, interval=0) as progress:
        progress.begin_units(16, 0, "partitions")
        progress.advance(20)
        progress.unit_done()
        progress.advance(20)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("restore Users: 20 items, 0/16 partitions (")
    assert lines[1].startswith("restore Users: 20 items, 1/16 partitions (") and "ETA" in lines[1]
    assert "/?" not in stream.getvalue()


def test_a_command_failing_at_once_prints_no_progress_line() -> None:
    stream = io.StringIO()
    try:
        with Progress("restore Users", stream=stream, interval=0):
            raise RuntimeError("no backup")
    except RuntimeError:
        pass
    assert stream.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_terminal_bar_waits_for_work_and_estimates_the_total_from_units() -> None:
    stream = _Terminal()
    try:
        with Progress("restore Users", stream=stream):
            raise RuntimeError("no backup")
    except RuntimeError:
        pass
    assert stream.getvalue() == ""  # nothing shown before the error
    with Progress("restore Users", stream=stream) as progress:
        progress.begin_units(4, 0, "partitions")
        progress.advance(25)
        progress.unit_done()
        bar_total = progress._bar.tasks[0].total
    assert bar_total == 100  # 25 items in 1 of 4 even partitions
    assert "1/4 partitions" in stream.getvalue()
