"""The engines' side of Ctrl-C, without servers: a KeyboardInterrupt in the driver stops the
running units at their next check (a rate-limit wait included), drops the units not started,
and raises ``Interrupted`` with the results of the units that ended, within a second or two."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dynamo_backups.core.cancel import Cancelled, CancelToken, Interrupted
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import NoProgress
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.engines.processes import ProcessEngine


def quick_or_long(unit: WorkUnit, context: UnitContext) -> UnitResult:
    """Unit "0" ends at once; "slow" waits on the rate budget; the others work page by page
    for a minute, checking the token between pages."""
    if unit.name == "0":
        return UnitResult(unit.id, {"pages": 1})
    if unit.name == "slow":
        context.limiter.acquire(1_000_000)  # a wait of days at the test's budget
    for _ in range(600):
        context.cancel.check()
        time.sleep(0.1)
    return UnitResult(unit.id, {"pages": 600})


@pytest.fixture
def ctrl_c_after() -> Iterator[Any]:
    """Ctrl-C in this (main) thread after some seconds, as a terminal would send it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers: list[threading.Timer] = []

    def arm(seconds: float) -> None:
        main = threading.main_thread().ident
        assert main is not None
        # A real signal to the main thread: it ends a blocked wait, as a terminal's does.
        timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGINT))
        timers.append(timer)
        timer.start()

    yield arm
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    "engine", [ThreadEngine(3), ProcessEngine(3)], ids=["threads", "processes"]
)
def test_ctrl_c_stops_the_running_units_and_hands_back_the_ended_ones(
    engine: Any, ctrl_c_after: Any
) -> None:
    units = [WorkUnit("segment", name) for name in ("0", "slow", "2", "3", "4")]
    started = time.monotonic()
    ctrl_c_after(1.0 if engine.name == "threads" else 6.0)  # worker processes start slowly
    with pytest.raises(Interrupted) as stopped:
        engine.run(quick_or_long, units, 1.0, NoProgress())
    took = time.monotonic() - started
    assert took < (4 if engine.name == "threads" else 12), took
    assert [result.unit for result in stopped.value.results] == ["segment-0"]
    assert stopped.value.total == 5


def test_the_token_ends_a_wait_at_once() -> None:
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        token.sleep(30)
    assert time.monotonic() - started < 2
    with pytest.raises(Cancelled):
        token.check()


def stop_now_or_finish_the_page(unit: WorkUnit, context: UnitContext) -> UnitResult:
    """Unit "quick" raises ``Cancelled`` as soon as the token is set (as verify's, snapshot's
    and an export backfill's units do); unit "page" then finishes the page it is writing, as
    backfill's segments do, and hands back an unfinished result."""
    while not context.cancel.cancelled:
        time.sleep(0.05)
    if unit.name == "quick":
        context.cancel.check()
    time.sleep(1.5)  # the rest of the page's writes
    return UnitResult(unit.id, {"pages": 1}, complete=False)


def test_a_unit_cancelled_in_a_worker_process_does_not_break_the_pool(ctrl_c_after: Any) -> None:
    """``Cancelled`` goes back to the driver by pickle. It cannot be unpickled (its __init__
    takes no argument), so the pool breaks and terminates the other workers mid-page: the
    "page" unit never hands back its result."""
    units = [WorkUnit("segment", "quick"), WorkUnit("segment", "page")]
    ctrl_c_after(6.0)  # worker processes start slowly
    with pytest.raises(Interrupted) as stopped:
        ProcessEngine(2).run(stop_now_or_finish_the_page, units, None, NoProgress())
    assert [result.unit for result in stopped.value.results] == ["segment-page"]


def test_cancelled_survives_a_trip_between_processes() -> None:
    import pickle

    assert isinstance(pickle.loads(pickle.dumps(Cancelled())), Cancelled)
