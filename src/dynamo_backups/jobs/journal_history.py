"""One item's history in a journal folder (docs/journal.md, "Reading"): its changes newest
first in the stream's order, as ``jobs/history`` gives them for an item folder.

A piece's name tells its hour, times and sequence range, not the items it holds, so every
piece of the journal is read (one LIST per 1,000 pieces, one GET per piece) and its records
of the item kept, each change once however many redelivered batches hold it (by identity:
stream, sequence number, eventID; two copies that differ are a ``JournalConflict``). The
bases add what the journal no longer holds (its objects expire before a monthly base's): each
complete base's index file of the item's partition (one GET a base) names the change that
decided the item's state at the base's moment; one the journal does not hold is shown too,
its image read from the base's data files of that partition (only then).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.journal_store import (
    ListedPiece,
    base_ids,
    listed_pieces,
    read_bytes,
    read_lines,
    read_manifest,
)
from dynamo_backups.core.base import (
    BaseError,
    BaseManifest,
    BasePaths,
    decode_base_line,
    decode_index_line,
    parse_base_id,
    partition_of,
)
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, Item, validate_item
from dynamo_backups.core.journal import (
    CONVERTED_STREAM,
    REPAIR_STREAM,
    ChangeOrder,
    ItemState,
    JournalConflict,
    JournalRecord,
    decode_record,
    drop_duplicates,
    format_change_time,
    gunzip_lines,
    journal_prefix,
)
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    WRITER_BACKFILL,
    WRITER_REPAIR,
    WRITER_STREAM,
)
from dynamo_backups.jobs.history import HistoryEntry

# A change's identity: stream, sequence number (as an integer: a base's index writes it
# without the leading zeros DynamoDB Local's stream gives), eventID.
Identity = tuple[str, int, str]


@dataclass(frozen=True)
class _Change:
    """One change of the item, where it was found, and the order it takes."""

    order: ChangeOrder
    entry: HistoryEntry


def journal_item_history(
    s3: Any,
    objects: Any,
    folder: BackupFolder,
    key: Item,
    until: datetime | None = None,
    concurrency: int = 16,
) -> tuple[str, list[HistoryEntry]]:
    """The journal folder's address (what the item layout's answer names as the item's
    object), and the item's changes newest first (``until``: those made at or before it)."""
    table_folder = folder.layout.items_prefix
    key_hash = folder.layout.key_hash
    name = object_name(key, key_hash)
    found = [
        (record, listed)
        for record, listed in journal_changes(objects, table_folder, name, key_hash, concurrency)
        if until is None or record.change_time <= until
    ]
    streamed = {
        (record.sequence, record.change_time): record
        for record, _ in found
        if record.stream_arn != CONVERTED_STREAM and record.sequence >= 0
    }
    changes = {
        identity_of(record): _Change(record.order, _journal_entry(record, listed))
        for record, listed in found
        if not _copied_by_stream(record, streamed)
    }
    made = {
        (change.order.sequence, change.entry.change_time)
        for change in changes.values()
        if change.order.sequence >= 0 or change.order.stream_arn == CONVERTED_STREAM
    }
    for identity, change in base_changes(
        s3, objects, table_folder, name, key_hash, folder.key_names, set(changes), made
    ):
        if until is None or (change.entry.change_time and change.entry.change_time <= until):
            changes.setdefault(identity, change)
    ordered = sorted(changes.values(), key=lambda change: change.order, reverse=True)
    return journal_prefix(table_folder), [change.entry for change in ordered]


def journal_changes(
    objects: Any, table_folder: str, name: str, key_hash: str, concurrency: int = 16
) -> list[tuple[JournalRecord, ListedPiece]]:
    """Every change of the item named ``name`` in the journal, once each, with the piece S3
    received its first copy in (a redelivered batch's copies are dropped)."""
    listed = list(listed_pieces(objects, table_folder, ""))

    def items_records(entry: ListedPiece) -> list[JournalRecord]:
        # The item's records alone are kept: memory holds its changes, not the journal.
        where = f"s3://{objects.bucket}/{entry.key}"
        return records_of_item(read_bytes(objects, entry.key), name, key_hash, where)

    found: list[tuple[JournalRecord, ListedPiece]] = []
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="history-read") as pool:
        for entry, records in zip(listed, pool.map(items_records, listed), strict=True):
            found.extend((record, entry) for record in records)
    found.sort(key=lambda pair: (pair[1].last_modified, pair[1].key))  # first received first
    drop_duplicates(record for record, _ in found)  # two copies that differ: an error
    first: dict[Identity, tuple[JournalRecord, ListedPiece]] = {}
    for record, entry in found:
        first.setdefault(identity_of(record), (record, entry))
    return list(first.values())


def _copied_by_stream(
    record: JournalRecord, streamed: dict[tuple[int, datetime], JournalRecord]
) -> bool:
    """Whether a converted stream change is also in the journal as its stream writer wrote it
    (same sequence number and change time): a copy ``convert --history`` made of a change the
    journal received after the conversion read it (in flight), shown once. Two copies that
    differ are a ``JournalConflict``, never one shown in silence."""
    if record.stream_arn != CONVERTED_STREAM or record.sequence < 0:
        return False
    original = streamed.get((record.sequence, record.change_time))
    if original is None:
        return False
    if original.is_removal != record.is_removal or json.dumps(
        original.image, sort_keys=True
    ) != json.dumps(record.image, sort_keys=True):
        raise JournalConflict(
            f"two different copies of sequence number {record.sequence_number}: the journal's "
            f"({original.stream_arn}) and the converted item folder's"
        )
    return True


def identity_of(record: JournalRecord) -> Identity:
    return (record.stream_arn, record.sequence, record.event_id or "")


def records_of_item(data: bytes, name: str, key_hash: str, where: str) -> list[JournalRecord]:
    """The records of the item named ``name`` in a piece's body. Each line's keys are checked
    and hashed; only the item's lines are decoded whole (the rest of another item's record,
    its image, is not the history's to check: restore, compact and verify do), which is most
    of the time a history takes. A line that is not JSON, or whose keys are not valid, is
    decoded whole, so that its error is reported, never skipped."""
    kept = []
    for number, line in enumerate(gunzip_lines(data, where), start=1):
        try:
            keys = validate_item(json.loads(line)["keys"])
            mine = object_name(keys, key_hash) == name
        except (ValueError, KeyError, TypeError, InvalidDynamoJSON):
            mine = True  # decode_record names what is wrong
        if mine:
            record = decode_record(line, f"{where} line {number}")
            if record.name(key_hash) == name:
                kept.append(record)
    return kept


def base_changes(
    s3: Any,
    objects: Any,
    table_folder: str,
    name: str,
    key_hash: str,
    key_names: list[str] | None,
    known: set[Identity],
    known_made: set[tuple[int, datetime | None]] | None = None,
) -> Iterable[tuple[Identity, _Change]]:
    """The changes that decided the item's state in each complete base, oldest base first,
    that are not among ``known`` (the journal's): read from the index file of the item's
    partition, the image from the base's data files of that partition. A converted base's
    entry names no stream or eventID (the item folder keeps neither): it is the journal's
    change of the same sequence number and change time (``known_made``) when there is one."""
    seen = set(known)
    made = set(known_made or ())
    manifests = [
        manifest
        for base_name in base_ids(s3, objects.bucket, table_folder)
        if (manifest := read_manifest(objects, table_folder, parse_base_id(base_name)))
    ]  # the complete ones
    midway = any(manifest.reflects_before is not None for manifest in manifests)
    for manifest in manifests:
        if midway and manifest.reflects_before is None:
            continue  # the journal alone, begun mid-way: not a base readers use (usable_base)
        state = _indexed_state(objects, table_folder, manifest, name, key_hash)
        if state is None or state.order is None:
            continue
        identity = _base_identity(state.order)
        if identity in seen or _converted_copy(state, made):
            continue
        seen.add(identity)
        made.add((state.order.sequence, state.change_time))
        image = None
        if state.event_name != EVENT_REMOVE:
            image = _based_image(objects, table_folder, manifest, name, key_hash, key_names)
        yield identity, _Change(state.order, _base_entry(manifest, table_folder, state, image))


def _converted_copy(state: ItemState, made: set[tuple[int, datetime | None]]) -> bool:
    """Whether a converted base's entry (a stream change without stream or eventID) is a
    change already shown (the journal's copy, or another base's entry of it)."""
    order = state.order
    assert order is not None
    if order.stream_arn:
        return False
    # A read (sequence -1) is the same only as a converted read of the same time: the item
    # folder's version the converted base and ``convert --history`` both took.
    return (order.sequence, state.change_time) in made


def _base_identity(order: ChangeOrder) -> Identity:
    """A base's deciding change as an identity. A read of the table (a backfill's, sequence
    -1) has no stream or eventID: its read time tells two reads apart (two backfill bases),
    while a base folded on top of one keeps the same read, and time, for an unchanged item."""
    if order.sequence < 0:
        return (order.stream_arn, order.sequence, format_change_time(order.latest_time))
    return (order.stream_arn, order.sequence, order.event_id)


def _partition_files(manifest: BaseManifest, name: str, kind: str) -> list[dict[str, Any]]:
    partition = partition_of(name, manifest.partition_digits)
    return [
        entry
        for entry in manifest.files
        if entry["kind"] == kind and str(entry["partition"]) == partition
    ]


def _indexed_state(
    objects: Any, table_folder: str, manifest: BaseManifest, name: str, key_hash: str
) -> ItemState | None:
    prefix = BasePaths(table_folder, manifest.moment).prefix
    for entry in _partition_files(manifest, name, "index"):
        where = f"s3://{objects.bucket}/{prefix}{entry['name']}"
        for number, line in enumerate(read_lines(objects, prefix + entry["name"]), 1):
            state = decode_index_line(line, f"{where} line {number}")
            if object_name(state.keys, key_hash) == name:
                return state
    return None


def _based_image(
    objects: Any,
    table_folder: str,
    manifest: BaseManifest,
    name: str,
    key_hash: str,
    key_names: list[str] | None,
) -> Item:
    """The item's image in a base's data (its index says it is present there)."""
    if not key_names:
        raise BaseError(
            f"base {manifest.id}: the folder records no key schema, so its data cannot be "
            "matched to the item"
        )
    prefix = BasePaths(table_folder, manifest.moment).prefix
    for entry in _partition_files(manifest, name, "data"):
        where = f"s3://{objects.bucket}/{prefix}{entry['name']}"
        for number, line in enumerate(read_lines(objects, prefix + entry["name"]), 1):
            item = decode_base_line(line, f"{where} line {number}")
            if object_name(extract_key(item, key_names), key_hash) == name:
                return item
    raise BaseError(f"base {manifest.id}: item {name} is in its index but not its data")


def _journal_entry(record: JournalRecord, listed: ListedPiece) -> HistoryEntry:
    # A read of the table has no sequence number (as a base's entry of one); a repair piece's
    # is verify's, a converted one the item folder's backfill or repair (the record keeps no
    # more).
    read = record.is_table_read
    writer = WRITER_STREAM
    if read:
        writer = WRITER_REPAIR if record.stream_arn == REPAIR_STREAM else WRITER_BACKFILL
    # A read that found no item is a removal, as the item layout shows its tombstone.
    removal = read and record.image is None
    return HistoryEntry(
        version_id=listed.key,  # the journal object holding the change's first copy
        received=listed.last_modified,
        event="delete" if removal else _event(record.event_name),
        change_time=record.change_time,
        writer=writer,
        sequence_number=None if read else record.sequence_number,
        item=record.image,
    )


def _base_entry(
    manifest: BaseManifest, table_folder: str, state: ItemState, image: Item | None
) -> HistoryEntry:
    """A change the journal no longer holds, as the base records it (its received time: when
    the base's compaction began reading, its cutoff; a backfill base's: its moment)."""
    assert state.order is not None and state.event_name is not None
    read = state.order.sequence < 0
    return HistoryEntry(
        version_id=BasePaths(table_folder, manifest.moment).prefix,
        received=manifest.cutoff or manifest.moment,
        event=_event(state.event_name),
        change_time=state.change_time,
        writer=WRITER_BACKFILL if read else WRITER_STREAM,
        sequence_number=None if read else str(state.order.sequence),
        item=image,
    )


def _event(event_name: str) -> str:
    """As ``jobs/history`` names it: insert, modify, delete, backfill (a read of the table)."""
    if event_name == EVENT_REMOVE:
        return "delete"
    if event_name == EVENT_SNAPSHOT:
        return WRITER_BACKFILL
    return event_name.lower()
