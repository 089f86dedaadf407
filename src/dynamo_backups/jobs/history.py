"""One item's history: every version of its object, newest first, with what each one means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.aws.s3objects import ObjectReader
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.reading import READ_POLICY, object_versions
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, loads_item
from dynamo_backups.core.foreign_names import candidate_names
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    TableLayout,
    VersionMetadata,
    format_time,
)
from dynamo_backups.core.pitr import AUTHORITATIVE_WRITERS, ObjectVersion


@dataclass(frozen=True)
class HistoryEntry:
    version_id: str
    received: datetime  # when S3 stored it
    event: str  # insert, modify, delete, backfill, repair, delete-marker, unknown
    change_time: datetime | None
    writer: str | None
    sequence_number: str | None
    item: dict[str, Any] | None
    problem: str | None = None
    object_key: str | None = None  # set when the version is under another tool's name

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "received": format_time(self.received),
            "event": self.event,
            "change_time": format_time(self.change_time) if self.change_time else None,
            "writer": self.writer,
            "sequence_number": self.sequence_number,
            "item": self.item,
            "problem": self.problem,
            "object": self.object_key,
        }


def layout_for(
    s3: Any, bucket: str, prefix: str, table: str
) -> tuple[TableLayout, dict[str, str] | None]:
    """The table's layout (with the key hash its manifest records) and its key types."""
    folder = open_folder(s3, bucket, prefix, table)
    return folder.layout, folder.key_types


def item_history(
    reader: ObjectReader, bucket: str, layout: TableLayout, key: dict[str, Any]
) -> tuple[str, list[HistoryEntry]]:
    """The object key of the item, and its history newest first: the versions under its own
    name and, for a folder another tool wrote too, under the replicator's names, in the
    order of their change times (S3's LastModified for versions without our metadata)."""
    object_key = layout.item_object_key(key)
    history: list[HistoryEntry] = []
    names_used = 0
    for name in candidate_names(key, layout.key_hash):
        named_key = layout.items_prefix + name
        entries = [
            _history_entry(reader, bucket, named_key, entry, named_key != object_key)
            for entry in object_versions(reader, named_key)
        ]
        names_used += bool(entries)
        history.extend(entries)
    if names_used > 1:
        history = merged_order(history)
    return object_key, history


def merged_order(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """Newest first by change time, as point-in-time selection orders them: from the first
    change our stream handler recorded on, the own name records every change, so versions
    under other names (dated by S3's LastModified, later than the change) are never placed
    above it."""
    recorded = [
        entry.change_time
        for entry in history
        if entry.object_key is None and entry.writer in AUTHORITATIVE_WRITERS and entry.change_time
    ]
    handover = min(recorded) if recorded else None

    def when(entry: HistoryEntry) -> tuple[datetime, int, datetime]:
        moment = entry.change_time or entry.received
        if entry.object_key is None:
            return moment, 1, moment
        return (min(moment, handover) if handover else moment), 0, moment

    return sorted(history, key=when, reverse=True)


def _history_entry(
    reader: ObjectReader, bucket: str, object_key: str, entry: ObjectVersion, other_name: bool
) -> HistoryEntry:
    where = object_key if other_name else None
    if entry.is_delete_marker:
        change_time = entry.last_modified if other_name else None
        return HistoryEntry(
            entry.version_id,
            entry.last_modified,
            "delete-marker",
            change_time,
            None,
            None,
            None,
            object_key=where,
        )
    body, raw = call_with_retries(
        lambda: reader.read_object(object_key, entry.version_id),
        READ_POLICY,
        f"read s3://{bucket}/{object_key}?versionId={entry.version_id}",
    )
    metadata = VersionMetadata.from_s3(raw)
    item, problem = None, None
    if body:
        try:
            item = loads_item(body, f"s3://{bucket}/{object_key}?versionId={entry.version_id}")
        except InvalidDynamoJSON as error:
            problem = str(error)
    return HistoryEntry(
        entry.version_id,
        entry.last_modified,
        _event(metadata, entry.is_tombstone),
        metadata.change_time if metadata else entry.last_modified,
        metadata.writer if metadata else None,
        metadata.sequence_number if metadata else None,
        item,
        problem,
        object_key=where,
    )


def _event(metadata: VersionMetadata | None, tombstone: bool) -> str:
    if metadata is None:
        return "delete" if tombstone else "unknown"
    if metadata.event_name == EVENT_REMOVE:
        return "delete"
    if metadata.event_name == EVENT_SNAPSHOT:
        return metadata.writer  # backfill or repair
    return metadata.event_name.lower()
