"""The interface every backup layout implements (docs/journal.md, "One interface, two
implementations"). A sketch: nothing implements it as one object yet. The item layout's existing
pieces map onto it as docs/journal.md's table says (``BackupApplier.apply``,
``partition_units``, ``BackupItems.for_each``, ``stream_order``); the journal layout's
implementation builds on ``core/journal`` and ``core/base``. Until ``backup/folder.open_folder``
picks the implementation from ``layout.json`` (``"layout": "items" | "journal"``), maps keyed
by layout choose it, once, so commands and jobs never branch on the layout:
``pipeline/appliers`` (``write_batch``), ``jobs/restorers`` (restore), ``jobs/readers``
(``history``: ``jobs/history.item_history`` / ``jobs/journal_history.journal_item_history``,
which answer with ``jobs/history.HistoryEntry``, what the command shows, rather than bare
``ItemState``; ``state_at`` as the snapshot jobs run it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from dynamo_backups.core.ddbjson import Item
from dynamo_backups.core.journal import ItemState
from dynamo_backups.core.layout import LayoutError
from dynamo_backups.core.stream_records import BatchResult
from dynamo_backups.core.units import WorkUnit

LAYOUT_ITEMS = "items"
LAYOUT_JOURNAL = "journal"
LAYOUTS = (LAYOUT_ITEMS, LAYOUT_JOURNAL)


class UnknownLayout(LayoutError):
    """A ``layout.json`` naming a layout this version does not know."""


class LayoutMismatch(LayoutError):
    """A writer told to write one layout into a folder that records the other."""


def layout_of(manifest: Mapping[str, Any] | None) -> str:
    """The layout ``layout.json`` records; a folder without one (or without the field, every
    folder written before the journal layout) is the item layout."""
    name = (manifest or {}).get("layout", LAYOUT_ITEMS)
    if name not in LAYOUTS:
        raise UnknownLayout(f"layout {name!r} is not one this version reads ({', '.join(LAYOUTS)})")
    return str(name)


def check_layout(recorded: str, wanted: str | None, where: str) -> str:
    """The folder's layout, refusing a writer told another (``wanted`` None: no opinion).
    The two layouts' objects could never be read as one history, so nothing is written."""
    if wanted is not None and wanted != recorded:
        raise LayoutMismatch(
            f"{where} holds a backup in the {recorded} layout (its layout.json says so), not "
            f"the {wanted} layout: pass --layout {recorded}, or use another prefix or bucket"
        )
    return recorded


def manifest_fields(layout: str) -> dict[str, str]:
    """What ``layout.json`` gains for ``layout``: nothing for the item layout (a folder without
    the field is one, so item folders' manifests stay as every earlier version wrote them)."""
    return {} if layout == LAYOUT_ITEMS else {"layout": layout}


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
