"""A backup layout as one object: every capability a command or job needs from a folder,
whichever way it keeps its changes (docs/journal.md, "One interface, two implementations";
docs/architecture.md, "Layouts"). ``LAYOUTS`` holds the two implementations, ``ITEM_LAYOUT``
and ``JOURNAL_LAYOUT``; ``layout_for(folder)`` chooses one, once, from the folder's
``layout.json`` (``backup/layouts.layout_of``: none, or no ``layout`` field, is the item
layout), and the commands and jobs then call its members without asking which it is.

Writing a batch is ``pipeline/appliers.APPLIERS``' (the Lambda handler chooses there, below
this layer); ``Layout.applier`` refers to it. How a job lists its units and reads a
partition's state at a moment live inside each layout's jobs (``backup/reader.BackupItems``
for the item layout, ``jobs/journal_units`` for the journal), which is why they are not
members of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL, layout_of
from dynamo_backups.backup.manifest import folder_layout_for
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import Item
from dynamo_backups.core.layout import LayoutError, TableLayout
from dynamo_backups.jobs import journal_native
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions, BackfillReport
from dynamo_backups.jobs.history import HistoryEntry, item_history
from dynamo_backups.jobs.journal_backfill import JournalBackfill
from dynamo_backups.jobs.journal_history import journal_item_history
from dynamo_backups.jobs.journal_restore import JournalRestore, earliest_journal_change
from dynamo_backups.jobs.journal_restore import not_yet_message as journal_restore_refusal
from dynamo_backups.jobs.journal_restore import unsupported as journal_restore_unsupported
from dynamo_backups.jobs.journal_snapshot import JournalSnapshot
from dynamo_backups.jobs.journal_snapshot import refusal as journal_snapshot_refusal
from dynamo_backups.jobs.journal_snapshot import unsupported as journal_snapshot_unsupported
from dynamo_backups.jobs.journal_verify import JournalVerify
from dynamo_backups.jobs.replay import ItemReplayWriter, JournalReplayWriter, ReplayWriter
from dynamo_backups.jobs.restore import (
    Restore,
    RestoreOptions,
    RestoreReport,
    earliest_change_found,
)
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotOptions
from dynamo_backups.jobs.verify import Verify
from dynamo_backups.pipeline.appliers import BatchApplier, applier_for


class UnsupportedOption(LayoutError):
    """An option the folder's layout does not support (yet): refused before anything runs."""


class RestoreJob(Protocol):
    report: RestoreReport

    def run(self, engine: Any = None) -> RestoreReport: ...


class BackfillJob(Protocol):
    report: BackfillReport

    def default_workers(self) -> int: ...

    def run(self, engine: Any = None) -> BackfillReport: ...


# (s3 client, the bucket's objects, the folder, the item's typed key) -> (where, newest first)
HistoryReader = Callable[[Any, Any, BackupFolder, Item], tuple[str, list[HistoryEntry]]]


@dataclass(frozen=True)
class Layout:
    """One layout's implementation of every capability (each job: the same constructor and
    ``run(engine)`` on both layouts)."""

    name: str
    restore: Callable[..., RestoreJob]
    # (restore options, --native-import) -> the flags the layout's restore refuses
    restore_refuses: Callable[[RestoreOptions, bool], list[str]]
    restore_refusal: Callable[[str, list[str]], str]  # (where, flags) -> the error line
    # (s3 client, folder) -> the folder's earliest change and whether it was sampled: what an
    # --at that found no item names as the first restorable moment.
    earliest_change: Callable[[Any, Any], tuple[datetime, bool] | None]
    # restore_natively(aws, bucket, folder, table, options, progress, engine) -> a report with
    # ``complete`` and ``to_dict()``; None: the command's own, a snapshot then ImportTable.
    native_import: Callable[..., Any] | None
    history: HistoryReader
    snapshot: Callable[..., Snapshot]
    snapshot_refuses: Callable[[SnapshotOptions], list[str]]
    snapshot_refusal: Callable[[str, list[str]], str]
    verify: type[Verify]
    backfill: Callable[..., BackfillJob]
    replay: Callable[[Any], ReplayWriter]  # (the layout's applier) -> how a range is written

    def applier(
        self, writer: BackupWriter, prefix: str, key_hash: str, concurrency: int
    ) -> BatchApplier:
        """The writer of delivered batches (``pipeline/appliers.APPLIERS``)."""
        return applier_for(self.name, writer, prefix, key_hash, concurrency)

    def replay_writer(
        self, writer: BackupWriter, prefix: str, key_hash: str, concurrency: int = 32
    ) -> ReplayWriter:
        """How a replayed range is written: over the applier the stream handler uses."""
        return self.replay(self.applier(writer, prefix, key_hash, concurrency))

    def check_restore_options(
        self, where: str, options: RestoreOptions, native_import: bool = False
    ) -> None:
        """Refuse (a LayoutError: exit 2) the restore options this layout does not take."""
        refused = self.restore_refuses(options, native_import)
        if refused:
            raise UnsupportedOption(self.restore_refusal(where, refused))

    def check_snapshot_options(self, where: str, options: SnapshotOptions) -> None:
        """Refuse (a LayoutError: exit 2) the snapshot options this layout does not take,
        before anything is written."""
        refused = self.snapshot_refuses(options)
        if refused:
            raise UnsupportedOption(self.snapshot_refusal(where, refused))


def _item_layout_history(
    s3: Any, objects: Any, folder: BackupFolder, key: Item
) -> tuple[str, list[HistoryEntry]]:
    return item_history(objects, folder.bucket, folder.layout, key)


def _no_restore_refusals(options: RestoreOptions, native_import: bool) -> list[str]:
    return []


def _no_snapshot_refusals(options: SnapshotOptions) -> list[str]:
    return []


def _no_refusal(where: str, flags: list[str]) -> str:
    return ""


ITEM_LAYOUT = Layout(
    name=LAYOUT_ITEMS,
    restore=Restore,
    restore_refuses=_no_restore_refusals,
    restore_refusal=_no_refusal,
    earliest_change=earliest_change_found,
    native_import=None,
    history=_item_layout_history,
    snapshot=Snapshot,
    snapshot_refuses=_no_snapshot_refusals,
    snapshot_refusal=_no_refusal,
    verify=Verify,
    backfill=Backfill,
    replay=ItemReplayWriter,
)

JOURNAL_LAYOUT = Layout(
    name=LAYOUT_JOURNAL,
    restore=JournalRestore,
    restore_refuses=journal_restore_unsupported,
    restore_refusal=journal_restore_refusal,
    earliest_change=earliest_journal_change,
    native_import=journal_native.restore_natively,
    history=journal_item_history,
    snapshot=JournalSnapshot,
    snapshot_refuses=journal_snapshot_unsupported,
    snapshot_refusal=journal_snapshot_refusal,
    verify=JournalVerify,
    backfill=JournalBackfill,
    replay=JournalReplayWriter,
)

# The one place a layout's name is looked at to choose its implementation.
LAYOUTS: Mapping[str, Layout] = {layout.name: layout for layout in (ITEM_LAYOUT, JOURNAL_LAYOUT)}


def layout_named(name: str) -> Layout:
    """The implementation of the layout ``name`` (one ``layout_of`` gave)."""
    return LAYOUTS[name]


def layout_for(folder: BackupFolder) -> Layout:
    """The implementation of the layout the folder's ``layout.json`` records (none: items);
    an unknown one is an ``UnknownLayout`` (a LayoutError: exit 2)."""
    return LAYOUTS[layout_of(folder.manifest)]


def backfill_job(
    dynamodb: Any,
    scan: Any,
    writer: BackupWriter,
    layout: TableLayout,
    options: BackfillOptions,
    *args: Any,
    **kwargs: Any,
) -> BackfillJob:
    """The backfill job of ``layout``'s folder, whose layout is the one its ``layout.json``
    records, else ``--layout``'s, else items (read, not written: a layout that contradicts
    the folder's is a ``LayoutMismatch``, before anything is written)."""
    chosen = folder_layout_for(writer, layout, options.folder_layout)
    return layout_named(chosen).backfill(dynamodb, scan, writer, layout, options, *args, **kwargs)
