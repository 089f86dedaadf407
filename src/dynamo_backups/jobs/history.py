"""One item's history: every version of its object, newest first, with what each one means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.aws.s3objects import ObjectReader
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.reading import READ_POLICY, iter_versions
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, loads_item
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    TableLayout,
    VersionMetadata,
    format_time,
)
from dynamo_backups.core.pitr import newest_first


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
    """The object key of the item, and its history newest first."""
    object_key = layout.item_object_key(key)
    entries = newest_first(
        [entry for entry in iter_versions(reader, object_key) if entry.key == object_key]
    )
    history = []
    for entry in entries:
        if entry.is_delete_marker:
            history.append(
                HistoryEntry(
                    entry.version_id, entry.last_modified, "delete-marker", None, None, None, None
                )
            )
            continue
        body, raw = call_with_retries(
            lambda version=entry.version_id: reader.read_object(object_key, version),
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
        history.append(
            HistoryEntry(
                entry.version_id,
                entry.last_modified,
                _event(metadata, entry.is_tombstone),
                metadata.change_time if metadata else entry.last_modified,
                metadata.writer if metadata else None,
                metadata.sequence_number if metadata else None,
                item,
                problem,
            )
        )
    return object_key, history


def _event(metadata: VersionMetadata | None, tombstone: bool) -> str:
    if metadata is None:
        return "delete" if tombstone else "unknown"
    if metadata.event_name == EVENT_REMOVE:
        return "delete"
    if metadata.event_name == EVENT_SNAPSHOT:
        return metadata.writer  # backfill or repair
    return metadata.event_name.lower()
