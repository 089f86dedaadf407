"""The interface every backup layout implements (docs/journal.md, "One interface, two
implementations"). A sketch: nothing implements or uses it yet. The item layout's existing
pieces map onto it as docs/journal.md's table says (``BackupApplier.apply``,
``partition_units``, ``BackupItems.for_each``, ``stream_order``); the journal layout's
implementation builds on ``core/journal`` and ``core/base``. ``backup/folder.open_folder``
will pick the implementation from ``layout.json`` (``"layout": "items" | "journal"``), so
commands and jobs never branch on the layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from dynamo_backups.core.ddbjson import Item
from dynamo_backups.core.journal import ItemState
from dynamo_backups.core.stream_records import BatchResult
from dynamo_backups.core.units import WorkUnit

LAYOUT_ITEMS = "items"
LAYOUT_JOURNAL = "journal"
LAYOUTS = (LAYOUT_ITEMS, LAYOUT_JOURNAL)


def layout_of(manifest: Mapping[str, Any] | None) -> str:
    """The layout ``layout.json`` records; a folder without one (or without the field, every
    folder written before the journal layout) is the item layout."""
    name = (manifest or {}).get("layout", LAYOUT_ITEMS)
    if name not in LAYOUTS:
        raise ValueError(f"layout {name!r} is not one this version reads ({', '.join(LAYOUTS)})")
    return str(name)


class Layout(Protocol):
    """One table's backup folder, whichever way its changes are kept."""

    def write_batch(
        self, records: Sequence[Mapping[str, Any]], deadline: float | None = None
    ) -> BatchResult:
        """Write a delivered batch of stream records; the result names the earliest record
        not written (Lambda resends from there)."""
        ...

    def units(self, job: str, at: datetime | None, partitions: int) -> list[WorkUnit]:
        """The work units a job reading the folder as of ``at`` (None: the latest) runs, in
        stage order (the journal layout's ``route`` stage before its ``partition`` units)."""
        ...

    def state_at(self, unit: WorkUnit, at: datetime | None) -> Iterator[ItemState]:
        """The state of every item of a partition unit at ``at``, absent items included (with
        no image), each with the change that decided it."""
        ...

    def history(self, key: Item, until: datetime | None = None) -> list[ItemState]:
        """One item's changes, newest first in the stream's order."""
        ...
