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
from dynamo_backups.core.pitr import ObjectVersion, newest_change, newest_first

logger = logging.getLogger("dynamo_backups.jobs.backfill")


def restore_removals_under_backfill(
    writer: BackupWriter, layout: TableLayout, partition: str | None = None
) -> int:
    """Find backfill versions that are current on top of a removal (a delete marker or a
    tombstone) and, where that removal is the item's newest change in the stream's order,
    write it again on top, if the backfill version is still current. ``partition``: only
    objects whose names start with these hex digits. Returns how many removals were
    restored."""
    restored = 0
    for entries in _removal_suspects(writer, layout.items_prefix + (partition or "")):
        current = entries[0]
        metadata = writer.version_metadata(current.key, current.version_id)
        if metadata is None or metadata.writer != WRITER_BACKFILL or metadata.copy_of:
            continue  # a copy was put on top as the newest state: no scan passed over anything
        removal = _newest_removal(writer, entries, metadata, layout.key_hash)
        if removal is None:
            continue
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


def _newest_removal(
    writer: BackupWriter,
    entries: list[ObjectVersion],
    current: VersionMetadata,
    key_hash: str,
) -> VersionMetadata | None:
    """The metadata of the removal to write again over the current backfill version: the
    item's newest change in the stream's order when that is a removal. None when it is not:
    the read came after the removal (dated later by more than the stream's precision), or a
    later stream change (a higher sequence number: a re-insert) follows the removal, so the
    removal under the backfill version is not the item's state (the scan read the item after
    it; a removal written late, by a replay or a retry, sits between them in S3)."""

    def inspect(entry: ObjectVersion) -> VersionMetadata | None:
        if entry.version_id == entries[0].version_id:
            return current
        return writer.version_metadata(entry.key, entry.version_id)

    newest = newest_change(entries, inspect)
    if newest is None or not newest.removed:
        return None
    if newest.metadata is None:  # a delete marker of another tool's: dated by S3 alone
        return VersionMetadata(WRITER_BACKFILL, EVENT_REMOVE, newest.change_time, None, key_hash)
    return VersionMetadata(
        WRITER_BACKFILL,
        EVENT_REMOVE,
        newest.metadata.change_time,
        newest.metadata.sequence_number,
        key_hash,
        precision=newest.metadata.precision,
    )
