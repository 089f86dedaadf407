"""Which job backfills a folder: the one of the layout its ``layout.json`` records (or
``--layout`` asks for, for a new folder), chosen in this one place, so that the ``backfill``
command never asks which layout it writes: the item layout copies each row into its object
(``jobs/backfill``), the journal layout writes a base of the table (``jobs/journal_backfill``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL
from dynamo_backups.backup.manifest import folder_layout_for
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions, BackfillReport
from dynamo_backups.jobs.journal_backfill import JournalBackfill


class BackfillJob(Protocol):
    report: BackfillReport

    def default_workers(self) -> int: ...

    def run(self, engine: Any = None) -> BackfillReport: ...


BACKFILLERS: Mapping[str, type[Backfill] | type[JournalBackfill]] = {
    LAYOUT_ITEMS: Backfill,
    LAYOUT_JOURNAL: JournalBackfill,
}


def backfill_job(
    dynamodb: Any,
    scan: Any,
    writer: BackupWriter,
    layout: TableLayout,
    options: BackfillOptions,
    *args: Any,
    **kwargs: Any,
) -> BackfillJob:
    """The backfill job of ``layout``'s folder (read, not written: a layout that contradicts
    the folder's is a ``LayoutMismatch``, before anything is written)."""
    chosen = folder_layout_for(writer, layout, options.folder_layout)
    job: BackfillJob = BACKFILLERS[chosen](dynamodb, scan, writer, layout, options, *args, **kwargs)
    return job
