"""One item's history: every version of its object, newest change first (the order point-in-time
selection follows, not the order S3 received them), with what each one means."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from dynamo_backups.core.pitr import AUTHORITATIVE_WRITERS, ObjectVersion, stream_order


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
    # A copy of a change S3 already held (a retry, a replay, a second writer): that version.
    duplicate_of: str | None = None
    # S3 received it after a version recording a later change: it is never the item's state
    # after that change, though S3 lists it above.
    late: bool = False

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
            "duplicate_of": self.duplicate_of,
            "received_late": self.late,
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
    """The object key of the item, and its history newest change first: the versions under
    its own name and, for a folder another tool wrote too, under the replicator's names. Each
    name's versions are in the stream's order (change time, then sequence number, then S3's
    order), as point-in-time selection takes them; the names are merged by change time (S3's
    LastModified for versions without our metadata)."""
    object_key = layout.item_object_key(key)
    named_keys = [layout.items_prefix + name for name in candidate_names(key, layout.key_hash)]
    histories = [
        _object_history(reader, bucket, named_key, named_key != object_key)
        for named_key in named_keys
    ]
    used = [history for history in histories if history]
    if len(used) == 1:
        return object_key, [entry for entry, _ in used[0]]
    return object_key, merged_order([dated for history in used for dated in history])


def _object_history(
    reader: ObjectReader, bucket: str, object_key: str, other_name: bool
) -> list[tuple[HistoryEntry, datetime]]:
    """One object's versions, read, in the stream's order, each with the change time
    selection dates it by (a delete marker: its tombstone's)."""
    versions = object_versions(reader, object_key)
    read = {
        entry.version_id: _read_version(reader, bucket, object_key, entry)
        for entry in versions
        if not entry.is_delete_marker
    }
    metadata = {version_id: found[0] for version_id, found in read.items()}
    history = []
    for placed in stream_order(versions, metadata):
        entry = placed.entry
        found = read.get(entry.version_id)
        shown = _history_entry(object_key, entry, other_name, *(found or (None, None, None)))
        original = placed.duplicate_of
        marked = replace(
            shown, duplicate_of=original.version_id if original else None, late=placed.late
        )
        history.append((marked, placed.decision.change_time))
    return history


def merged_order(history: list[tuple[HistoryEntry, datetime]]) -> list[HistoryEntry]:
    """Several names' histories (each in the stream's order, with the change time each entry
    is dated by) as one, newest first by change time, as point-in-time selection orders them:
    from the first change our stream handler recorded on, the own name records every change,
    so versions under other names (dated by S3's LastModified, later than the change) are
    never placed above it. The own name's entries keep their order."""
    recorded = [
        entry.change_time
        for entry, _ in history
        if entry.object_key is None and entry.writer in AUTHORITATIVE_WRITERS and entry.change_time
    ]
    handover = min(recorded) if recorded else None
    rank = {id(entry): -place for place, (entry, _) in enumerate(history)}

    def when(dated: tuple[HistoryEntry, datetime]) -> tuple[datetime, int, float]:
        entry, moment = dated
        if entry.object_key is None:
            return moment, 1, rank[id(entry)]
        return (min(moment, handover) if handover else moment), 0, moment.timestamp()

    return [entry for entry, _ in sorted(history, key=when, reverse=True)]


def _read_version(
    reader: ObjectReader, bucket: str, object_key: str, entry: ObjectVersion
) -> tuple[VersionMetadata | None, dict[str, Any] | None, str | None]:
    """A version's metadata, and its item or why it is not one."""
    where = f"s3://{bucket}/{object_key}?versionId={entry.version_id}"
    if entry.is_tombstone:  # no body to show: its metadata alone
        raw = call_with_retries(
            lambda: reader.head_object(object_key, entry.version_id), READ_POLICY, f"head {where}"
        )
        return VersionMetadata.from_s3(raw), None, None
    body, raw = call_with_retries(
        lambda: reader.read_object(object_key, entry.version_id), READ_POLICY, f"read {where}"
    )
    item, problem = None, None
    if body:
        try:
            item = loads_item(body, where)
        except InvalidDynamoJSON as error:
            problem = str(error)
    return VersionMetadata.from_s3(raw), item, problem


def _history_entry(
    object_key: str,
    entry: ObjectVersion,
    other_name: bool,
    metadata: VersionMetadata | None,
    item: dict[str, Any] | None,
    problem: str | None,
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
