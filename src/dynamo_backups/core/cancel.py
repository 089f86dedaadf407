"""Stopping a bulk job early (Ctrl-C): a token the engine sets and every loop of a unit checks,
and what an interrupted stage hands back. A unit that sees the token stops between pages and
is not recorded as done, so ``--resume`` does it again (or continues it from its own place).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol


class Flag(Protocol):
    """An event shared with the units: threading.Event, or multiprocessing's across processes."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Cancelled(Exception):
    """Raised inside a unit that saw the token: the unit stops, and is not recorded as done."""

    def __init__(self, message: str = "interrupted") -> None:
        # The message is the one argument, so the exception pickles back from a worker.
        super().__init__(message)


class CancelToken:
    """Set once, by whoever stops the job; checked in every loop of a unit."""

    def __init__(self, flag: Flag | None = None) -> None:
        self.flag: Any = flag if flag is not None else threading.Event()

    @property
    def cancelled(self) -> bool:
        return bool(self.flag.is_set())

    def cancel(self) -> None:
        self.flag.set()

    def check(self) -> None:
        """Raise ``Cancelled`` once the job is being stopped."""
        if self.flag.is_set():
            raise Cancelled()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise ``Cancelled`` as soon as the job is being stopped."""
        if self.flag.wait(seconds):
            raise Cancelled()


class Interrupted(KeyboardInterrupt):
    """A stage was stopped by Ctrl-C: the units that ended are in ``results`` (their
    ``UnitResult``s; complete ones are in the ledger too); the job names its run and what is
    left (``job``, ``run_id``, ``total``)."""

    def __init__(self, results: Sequence[Any] = (), total: int | None = None) -> None:
        super().__init__("interrupted")
        self.results = list(results)
        self.total = total
        self.job: str | None = None
        self.run_id: str | None = None
        self.stage: str | None = None
        self.done: int | None = None  # of the stage's units, earlier runs' included
        self.detail: str | None = None  # the job's own counts so far
        # False when the engine could not see every unit stop (a cancelled Spark task still
        # running after the wait): the stage's units may still write.
        self.settled = True

    def summary(self) -> str:
        """What was done, in one line."""
        parts = []
        if self.done is not None and self.total is not None:
            stage = f" ({self.stage})" if self.stage else ""
            parts.append(f"{self.done} of {self.total} units{stage} done and recorded")
        if self.detail:
            parts.append(self.detail)
        if self.job and self.run_id:
            parts.append(f"run {self.run_id} of job {self.job} kept unfinished")
        return "; ".join(parts) or "nothing recorded"
