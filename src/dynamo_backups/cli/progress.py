"""Progress on the command line: on a terminal a rich progress bar with items/s and ETA;
otherwise (logs, CI) a plain line every few seconds. Safe to advance from many threads.

Where the item total is unknown (a restore reads a folder that records no count), the units
of the stage give it: "3/16 units" done, and an ETA from the share of units done (units are
even: hash-named partitions or parallel-scan segments). Nothing is shown until work has
started or a second has passed, so a command that fails at once prints only its error.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from dynamo_backups.cli.lines import json_lines, say

START_AFTER = 1.0  # seconds before an idle progress shows at all


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
        self.units_total: int | None = None
        self.units_done = 0
        self.units_label = "units"
        self._units_started_at = 0  # units already done (an earlier run's) when counted
        self._units_clock = time.monotonic()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._printed_at = self._started
        self._bar: Any = None
        self._task: Any = None
        self._timer: threading.Timer | None = None
        self._shown = False

    def __enter__(self) -> Progress:
        if self.enabled and self._terminal():
            self._timer = threading.Timer(START_AFTER, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, error_type: object, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._bar is not None:
            with self._lock:
                self._refresh_bar()
            self._bar.stop()
        elif self.enabled and not self._terminal() and (error_type is None or self._worked):
            self._print(final=True)

    @property
    def _worked(self) -> bool:
        return bool(self.done) or self.units_done > self._units_started_at

    # --- what the job reports -------------------------------------------------------------

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._refresh_bar()

    def advance(self, count: int = 1) -> None:
        self._show()
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(self._task, advance=count)
                self._refresh_bar()
                return
            if not self._due():
                return
        self._print()

    def begin_units(self, total: int, done: int = 0, label: str = "units") -> None:
        """A stage of ``total`` units starts, ``done`` of them by an earlier run."""
        with self._lock:
            self.units_total, self.units_done, self.units_label = total, done, label
            self._units_started_at = done
            self._units_clock = time.monotonic()
            if self._bar is not None:
                self._refresh_bar()

    def unit_done(self) -> None:
        self._show()
        with self._lock:
            self.units_done += 1
            if self._bar is not None:
                self._refresh_bar()
                return
            if not self._due():
                return
        self._print()

    # --- showing it -----------------------------------------------------------------------

    def _terminal(self) -> bool:
        """A bar on a terminal; plain lines elsewhere, and JSON lines with -v."""
        return self.stream.isatty() and not json_lines()

    def _due(self) -> bool:
        now = time.monotonic()
        if not self.enabled or self._bar is not None or now - self._printed_at < self.interval:
            return False
        self._printed_at = now
        return True

    def _show(self) -> None:
        """Start the terminal's bar, once work has started (or a second has passed)."""
        if self._shown or not self.enabled or not self._terminal():
            return
        with self._lock:
            if self._shown:
                return
            self._shown = True
            self._bar = _make_bar(self.stream, self.unit)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
            self._bar.update(self._task, completed=self.done)
            self._refresh_bar()

    def _refresh_bar(self) -> None:
        """The bar's total: the items' when known, else estimated from the units done."""
        total = self.total or self._estimated_total()
        self._bar.update(self._task, total=total, description=self._label())

    def _label(self) -> str:
        if self.units_total is None:
            return self.description
        return f"{self.description} [{self.units_done}/{self.units_total} {self.units_label}]"

    def _estimated_total(self) -> int | None:
        if not self.units_total or self.units_done <= 0:
            return None
        return max(self.done, round(self.done * self.units_total / self.units_done))

    def _units_remaining_seconds(self) -> float | None:
        finished_here = self.units_done - self._units_started_at
        if not self.units_total or finished_here <= 0:
            return None
        elapsed = time.monotonic() - self._units_clock
        return elapsed / finished_here * max(self.units_total - self.units_done, 0)

    def _print(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        line = f"{self.description}: {self.done:,}"
        if self.total:
            line += f"/{self.total:,}"
        line += f" {self.unit}"
        if self.units_total is not None:
            line += f", {self.units_done}/{self.units_total} {self.units_label}"
        line += f" ({rate:,.0f}/s"
        remaining = None
        if self.total and rate > 0:
            remaining = max(self.total - self.done, 0) / rate
        elif self.units_total is not None:
            remaining = self._units_remaining_seconds()
        if remaining is not None and not final:
            line += f", ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        line += f", {elapsed:,.1f} s)" if final else ")"
        fields = {
            "progress": self.description,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "rate": round(rate, 1),
            "seconds": round(elapsed, 1),
            "final": final,
        }
        if self.units_total is not None:
            fields |= {"units_done": self.units_done, "units_total": self.units_total}
        if remaining is not None and not final:
            fields["eta_seconds"] = round(remaining)
        say(line, "progress", fields, stream=self.stream)


def _make_bar(stream: TextIO, unit: str) -> Any:
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

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} {unit}/s")

    return Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )
