"""Progress of long work, as the jobs report it: counts, from any thread. The command line
shows them (``cli.progress``); nothing here does I/O.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def advance(self, count: int = 1) -> None:
        """``count`` more items (or objects) done."""

    def set_total(self, total: int | None) -> None:
        """How many items there are, when known."""

    def begin_units(self, total: int, done: int = 0, label: str = "units") -> None:
        """A stage of ``total`` units starts, ``done`` of them by an earlier run."""

    def unit_done(self) -> None:
        """One more unit of the stage done (and recorded)."""


class NoProgress:
    def advance(self, count: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def begin_units(self, total: int, done: int = 0, label: str = "units") -> None:
        pass

    def unit_done(self) -> None:
        pass
