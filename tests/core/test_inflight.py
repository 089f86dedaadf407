"""The adaptive limit on reads in flight: grows while latency stays flat, shrinks when it
rises with the load, stays within its bounds, and lets a stopped waiter go."""

from __future__ import annotations

import threading
import time

from dynamo_backups.core.inflight import InFlightLimit


def drive(limit: InFlightLimit, latency_of: object, rounds: int = 200) -> int:
    """Fill the limit, then finish every piece with the latency the load gives it."""
    for _ in range(rounds):
        taken = 0
        while limit.acquire(stop=_set_when_full(limit, taken)):
            taken += 1
            if taken >= limit.limit:
                break
        for _ in range(taken):
            limit.release(latency_of(taken))  # type: ignore[operator]
    return limit.limit


def _set_when_full(limit: InFlightLimit, taken: int) -> threading.Event:
    stop = threading.Event()
    if taken >= limit.limit:
        stop.set()
    return stop


def test_grows_to_its_maximum_while_latency_stays_flat() -> None:
    # Like S3 from afar: 30 ms whatever the number in flight.
    limit = InFlightLimit(initial=8, minimum=4, maximum=128)
    assert drive(limit, lambda in_flight: 0.030) == 128


def test_settles_low_when_latency_grows_with_the_load() -> None:
    # Like a saturated host: the rate is fixed (2,000/s), so each piece waits its turn.
    limit = InFlightLimit(initial=8, minimum=4, maximum=128)
    settled = drive(limit, lambda in_flight: 0.0005 + in_flight / 2000)
    assert 4 <= settled <= 32


def test_settles_near_what_the_rate_needs_at_a_distance() -> None:
    # Like S3 from a host whose client tops out at 2,500 reads/s: 20 ms, then queueing.
    # Some 50 in flight reach that rate; 128 would only queue.
    limit = InFlightLimit(initial=8, minimum=4, maximum=128)
    settled = drive(limit, lambda in_flight: 0.020 + in_flight / 2500)
    assert 40 <= settled <= 100


def test_a_stopped_waiter_takes_nothing() -> None:
    limit = InFlightLimit(initial=1, minimum=1, maximum=1)
    assert limit.acquire()
    stop = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(limit.acquire(stop)))
    waiter.start()
    time.sleep(0.05)
    assert waiter.is_alive()  # no room
    stop.set()
    waiter.join(1)
    assert result == [False]
    limit.release()
    assert limit.acquire(stop=None)  # the stopped waiter took no room
