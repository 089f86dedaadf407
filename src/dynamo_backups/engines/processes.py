"""Units on worker processes of this host, one per core by default: no interpreter lock to
share, so a big host's cores all work. Each worker gets the job as settings (its clients are
made there), the rate budget lives in shared memory, and progress comes back on a queue."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dynamo_backups.core.cancel import CancelToken, Interrupted
from dynamo_backups.core.parallel import ended_results, gather_results
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.core.ratelimit import take_tokens
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    UnitTask,
    WorkUnit,
    failure_text,
)

_worker: dict[str, UnitContext] = {}  # in each worker process, set by _start_worker
UNIT_DONE = "unit-done"  # on the progress queue, beside item counts


class SharedRateLimiter:
    """The token bucket of ``core.ratelimit`` with its state in shared memory: one budget
    for every worker process (``time.monotonic`` is one clock for the whole host)."""

    def __init__(self, rate: float | None, state: Any, cancel: CancelToken | None = None) -> None:
        self.rate = rate
        self.state = state  # multiprocessing.Array("d", [available, updated]), with its lock
        self.cancel = cancel or CancelToken()

    def acquire(self, count: int = 1) -> None:
        if self.rate is None or count <= 0:
            return
        with self.state.get_lock():
            now = time.monotonic()
            self.state[0], wait = take_tokens(self.rate, self.state[0], self.state[1], now, count)
            self.state[1] = now
        if wait > 0:
            self.cancel.sleep(wait)


class QueueProgress:
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def advance(self, count: int = 1) -> None:
        self.queue.put(count)

    def set_total(self, total: int | None) -> None:
        pass

    def begin_units(self, total: int, done: int = 0, label: str = "units") -> None:
        pass  # the driver counts the stage

    def unit_done(self) -> None:
        self.queue.put(UNIT_DONE)


def _start_worker(rate: float | None, state: Any, queue: Any, stop: Any) -> None:
    # Ctrl-C on a terminal reaches the whole process group: the driver alone decides, and
    # tells the workers through ``stop`` (a worker killed by it would break the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    cancel = CancelToken(stop)
    _worker["context"] = UnitContext(
        SharedRateLimiter(rate, state, cancel), QueueProgress(queue), cancel
    )


PARENT_CHECK_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """A worker stops the moment its driver dies (SIGKILL, the OOM killer): a resume run at
    once must not race the killed run's workers on the same units (their writes, their
    records). On Linux the kernel kills the worker with its parent (PR_SET_PDEATHSIG);
    elsewhere, and in case the parent died before that was set, a thread checks the parent
    every PARENT_CHECK_SECONDS and ends the worker without recording anything."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still watches
    threading.Thread(
        target=_watch_parent, args=(parent.pid,), name="parent-watch", daemon=True
    ).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(70)  # orphaned: whatever this worker was doing, it records nothing more


def _run_unit(task: UnitTask, unit: WorkUnit) -> UnitResult:
    return task(unit, _worker["context"])


class ProcessEngine:
    name = "processes"
    local = True

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    @property
    def slots(self) -> int:
        return self.workers

    def run(
        self,
        task: UnitTask,
        units: Sequence[WorkUnit],
        rate: float | None,
        progress: ProgressSink,
    ) -> list[UnitResult]:
        if not units:
            return []
        # spawn, not fork: the parent has threads (clients, progress) that fork would copy
        # in whatever state they were.
        spawn = multiprocessing.get_context("spawn")
        state = spawn.Array("d", [rate or 0.0, time.monotonic()])
        queue = spawn.Queue()
        stop = spawn.Event()
        relay = threading.Thread(target=_relay, args=(queue, progress), daemon=True)
        relay.start()
        pool = ProcessPoolExecutor(
            min(self.workers, len(units)),
            mp_context=spawn,
            initializer=_start_worker,
            initargs=(rate, state, queue, stop),
        )
        futures: list[tuple[WorkUnit, Any]] = []
        try:
            futures.extend((unit, pool.submit(_run_unit, task, unit)) for unit in units)
            return gather_results(futures, _failure_text)
        except KeyboardInterrupt:
            stop.set()  # running units stop at their next page; the others never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise Interrupted(ended_results(futures), len(units)) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            queue.put(None)
            relay.join(timeout=10)


def _failure_text(error: BaseException) -> str:
    if isinstance(error, BrokenProcessPool):
        return "its worker process died"
    return failure_text(error)


def _relay(queue: Any, progress: ProgressSink) -> None:
    while (message := queue.get()) is not None:
        if message == UNIT_DONE:
            progress.unit_done()
        else:
            progress.advance(message)
