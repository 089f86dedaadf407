"""Threads in this process: a pool made at first use and kept (a warm Lambda container
reuses it batch after batch), and the ``threads`` engine that runs a job's units."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

from dynamo_backups.core.cancel import CancelToken, Interrupted
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.core.ratelimit import RateLimiter
from dynamo_backups.core.units import (
    UnitContext,
    UnitFailed,
    UnitResult,
    UnitTask,
    WorkUnit,
    failure_text,
)

T = TypeVar("T")


class WorkerPool:
    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run the tasks (in this thread when there is only one) and wait for all of them;
        the first error any of them raised is raised."""
        if len(tasks) <= 1:
            for task in tasks:
                task()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
        for future in [self._pool.submit(task) for task in tasks]:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


_shared_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_shared_pools_lock = threading.Lock()


def shared_pool(name: str, size: int) -> ThreadPoolExecutor:
    """One pool per name and size for the whole process, kept: the units a worker process
    runs one after another (or at once) share it instead of each starting threads."""
    with _shared_pools_lock:
        pool = _shared_pools.get((name, size))
        if pool is None:
            pool = _shared_pools[(name, size)] = ThreadPoolExecutor(size, thread_name_prefix=name)
        return pool


def batched(things: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` things in order, the last one shorter (itertools.batched of 3.12)."""
    iterator = iter(things)
    while batch := list(islice(iterator, size)):
        yield batch


class ThreadEngine:
    """Units on a thread pool in this process: one rate limiter and one progress for all."""

    name = "threads"
    local = True

    def __init__(self, workers: int = 4) -> None:
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
        cancel = CancelToken()
        context = UnitContext(RateLimiter(rate, sleep=cancel.sleep), progress, cancel)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="unit")
        futures: list[tuple[WorkUnit, Future[UnitResult]]] = []
        try:
            futures.extend((unit, pool.submit(task, unit, context)) for unit in units)
            return gather_results(futures)
        except KeyboardInterrupt:
            # Ctrl-C: units not started are dropped, running ones stop at their next page.
            cancel.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise Interrupted(ended_results(futures), len(units)) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def ended_results(futures: Sequence[tuple[WorkUnit, Future[UnitResult]]]) -> list[UnitResult]:
    """The results of the units that returned (complete or not), once the others stopped."""
    return [
        future.result()
        for _, future in futures
        if future.done() and not future.cancelled() and future.exception() is None
    ]


def gather_results(
    futures: Sequence[tuple[WorkUnit, Future[UnitResult]]],
    failure_of: Callable[[BaseException], str] = failure_text,
) -> list[UnitResult]:
    """Every unit's result once all have ended; ``UnitFailed`` naming those that raised."""
    results: list[UnitResult] = []
    failures: list[tuple[str, str]] = []
    for unit, future in futures:
        try:
            results.append(future.result())
        except Exception as error:
            failures.append((unit.id, failure_of(error)))
    if failures:
        raise UnitFailed(failures, results)
    return results
