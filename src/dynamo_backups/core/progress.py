"""Progress of long work, as the jobs report it: counts, from any thread. The command line
shows them (``cli.progress``); nothing here does I/O.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def advance(self, count: int = 1) -> None: ...

    def set_total(self, total: int | None) -> None: ...


class NoProgress:
    def advance(self, count: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass
