"""Progress on the command line: on a terminal a rich progress bar with items/s and ETA;
otherwise (logs, CI) a plain line every few seconds. Safe to advance from many threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


class Progress:
    """``with Progress("backfill Users", total=None) as progress: progress.advance(25)``"""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        unit: str = "items",
        stream: TextIO | None = None,
        interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._printed_at = self._started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar
            from rich.text import Text

            unit = self.unit

            class RateColumn(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed or 0:,.0f} {unit}/s")

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled:
            self._print(final=True)

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(self._task, advance=count)
                return
            now = time.monotonic()
            if not self.enabled or now - self._printed_at < self.interval:
                return
            self._printed_at = now
        self._print()

    def _print(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        line = f"{self.description}: {self.done:,}"
        if self.total:
            line += f"/{self.total:,}"
        line += f" {self.unit} ({rate:,.0f}/s"
        if self.total and rate > 0 and not final:
            remaining = max(self.total - self.done, 0) / rate
            line += f", ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        line += f", {elapsed:,.1f} s)" if final else ")"
        print(line, file=self.stream, flush=True)
