"""Backfill's removal check: S3 lets a put-if-absent through when an object's current version
is a delete marker, so a backfill version can land on an item the stream deleted meanwhile.
This pass finds every backfill version that is current on top of a removal and writes the
removal again on top of it, conditionally, so a newer stream write always wins."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from dynamo_backups.backup.reading import iter_key_histories, iter_versions
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import EVENT_REMOVE, WRITER_BACKFILL, TableLayout, VersionMetadata
from dynamo_backups.core.pitr import ObjectVersion, newest_first

logger = logging.getLogger("dynamo_backups.jobs.backfill")


def removals_check_key(layout: TableLayout) -> str:
    return layout.meta_prefix + "backfill/removals-check.json"


def restore_removals_under_backfill(
    writer: BackupWriter, layout: TableLayout, partition: str | None = None
) -> int:
    """Find backfill versions that are current on top of a removal (a delete marker or a
    tombstone) and write the removal again on top of each, if that version is still current.
    ``partition``: only objects whose names start with these hex digits. Returns how many
    removals were restored."""
    restored = 0
    for entries in _removal_suspects(writer, layout.items_prefix + (partition or "")):
        current = entries[0]
        metadata = writer.version_metadata(current.key, current.version_id)
        if metadata is None or metadata.writer != WRITER_BACKFILL:
            continue
        removal = _removal_below(writer, entries[1:], layout.key_hash)
        if writer.remove_item_if_current(current.key, removal, current):
            restored += 1
            logger.warning(
                "%s: the backfill wrote %s after the stream had deleted it; "
                "the deletion is restored",
                layout.table,
                current.key,
            )
    return restored


def _removal_suspects(writer: BackupWriter, prefix: str) -> Iterator[list[ObjectVersion]]:
    for entries in iter_key_histories(iter_versions(writer.objects, prefix)):
        ordered = newest_first(entries)
        if len(ordered) >= 2 and not ordered[0].is_removal and ordered[1].is_removal:
            yield ordered


def _removal_below(
    writer: BackupWriter, below: list[ObjectVersion], key_hash: str
) -> VersionMetadata:
    """The metadata of the removal recorded under a backfill version."""
    for entry in below[:2]:
        if entry.is_tombstone:
            found = writer.version_metadata(entry.key, entry.version_id)
            if found is not None:
                return VersionMetadata(
                    WRITER_BACKFILL,
                    EVENT_REMOVE,
                    found.change_time,
                    found.sequence_number,
                    key_hash,
                )
        elif not entry.is_delete_marker:
            break
    marker = below[0]
    return VersionMetadata(WRITER_BACKFILL, EVENT_REMOVE, marker.last_modified, None, key_hash)
