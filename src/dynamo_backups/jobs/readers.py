"""Which code answers ``history`` and ``snapshot`` for a folder: its layout's, as its
``layout.json`` records it (docs/journal.md, "One interface, two implementations"), chosen in
this one place (as ``jobs/restorers`` chooses the restore job), so that the commands never ask
which layout they read. ``READERS`` maps each layout to its item history, its snapshot job
(the same constructor and ``run(engine)``) and the snapshot options it refuses.

Where the ``Layout`` protocol's readers are (``backup/layouts``): ``history`` is
``jobs/history.item_history`` (one object's versions, ``core/pitr.stream_order``) for the item
layout and ``jobs/journal_history.journal_item_history`` (every piece, the bases' index
entries) for the journal; ``state_at`` of a partition is ``backup/reader.BackupItems`` for the
item layout and ``jobs/journal_units`` (route, ``base_states``, ``core/journal.fold``) for the
journal, which ``Snapshot`` and ``JournalSnapshot`` write as export files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL, layout_of
from dynamo_backups.core.ddbjson import Item
from dynamo_backups.jobs.history import HistoryEntry, item_history
from dynamo_backups.jobs.journal_history import journal_item_history
from dynamo_backups.jobs.journal_snapshot import JournalSnapshot
from dynamo_backups.jobs.journal_snapshot import refusal as journal_snapshot_refusal
from dynamo_backups.jobs.journal_snapshot import unsupported as journal_snapshot_unsupported
from dynamo_backups.jobs.restorers import UnsupportedOption
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotOptions

# (s3 client, the bucket's objects, the folder, the item's typed key) -> (where, newest first)
HistoryReader = Callable[[Any, Any, BackupFolder, Item], tuple[str, list[HistoryEntry]]]


@dataclass(frozen=True)
class LayoutReaders:
    """A layout's readers for ``history`` and ``snapshot``."""

    history: HistoryReader
    snapshot: Callable[..., Snapshot]
    snapshot_unsupported: Callable[[SnapshotOptions], list[str]]
    snapshot_refusal: Callable[[str, list[str]], str]


def _item_layout_history(
    s3: Any, objects: Any, folder: BackupFolder, key: Item
) -> tuple[str, list[HistoryEntry]]:
    return item_history(objects, folder.bucket, folder.layout, key)


def _takes_every_option(options: SnapshotOptions) -> list[str]:
    return []


READERS: Mapping[str, LayoutReaders] = {
    LAYOUT_ITEMS: LayoutReaders(
        _item_layout_history, Snapshot, _takes_every_option, lambda where, flags: ""
    ),
    LAYOUT_JOURNAL: LayoutReaders(
        journal_item_history,
        JournalSnapshot,
        journal_snapshot_unsupported,
        journal_snapshot_refusal,
    ),
}


def readers_of(folder: BackupFolder) -> LayoutReaders:
    """The readers of the layout the folder's ``layout.json`` records (none: items)."""
    return READERS[layout_of(folder.manifest)]


def check_snapshot_options(folder: BackupFolder, options: SnapshotOptions) -> None:
    """Refuse (a LayoutError: exit 2) the snapshot options the folder's layout does not take,
    before anything is written."""
    readers = readers_of(folder)
    refused = readers.snapshot_unsupported(options)
    if refused:
        raise UnsupportedOption(readers.snapshot_refusal(folder.where, refused))
