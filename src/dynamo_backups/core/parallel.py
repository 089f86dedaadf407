"""A thread pool made at first use and kept: a warm Lambda container reuses it batch after
batch, instead of starting threads for every invocation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

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


def batched(things: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` things in order, the last one shorter (itertools.batched of 3.12)."""
    iterator = iter(things)
    while batch := list(islice(iterator, size)):
        yield batch
