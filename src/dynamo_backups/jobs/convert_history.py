"""``convert --history``: an item-layout folder's versions as journal records of the
pseudo-stream ``converted`` (docs/journal.md, "Converting an item-layout folder").

Each object's versions are placed in the stream's order as the item layout places them
(``core/pitr.stream_order``: a delete marker stands for the removal its tombstone records, a
copy of a change S3 already held is passed over), and every change made at or before the
base's moment becomes one record (``core/journal.converted_record``): a stream change keeps
its event, change time and precision, sequence number, keys and image; a version without a
sequence number (a backfill's or repair's read, another tool's version or delete marker) is a
``SNAPSHOT`` at its change time. A stream change the journal holds already (a record of the
same item with the same sequence number, found by the conversion's ``route`` stage) is not
copied: a copy has another identity than the journal's, and would show twice in history.

A partition's records are written as pieces of at most ``PIECE_RECORDS`` records, one hour
folder per change hour, in a fixed order and named from their records (``piece_name``), with
``If-None-Match``: a unit done again makes the same pieces, and an existing piece of the same
name must hold the same bytes (anything else is a ``JournalConflict``, never overwritten).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.journal_store import (
    GZIP_TYPE,
    ListedPiece,
    put_if_absent,
    read_bytes,
)
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.core.base import BaseError
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, Item, loads_item
from dynamo_backups.core.journal import (
    TABLE_READ_STREAMS,
    JournalConflict,
    JournalRecord,
    converted_record,
    encode_piece,
    hour_of,
    journal_prefix,
    piece_name,
)
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import (
    EVENT_INSERT,
    EVENT_MODIFY,
    EVENT_REMOVE,
    VersionMetadata,
)
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.pitr import (
    ObjectVersion,
    PlacedVersion,
    marker_tombstones,
    newest_first,
    stream_order,
)
from dynamo_backups.jobs.journal_units import JournalView

PIECE_RECORDS = 10_000  # records a converted piece holds at most
_STREAM_EVENTS = (EVENT_INSERT, EVENT_MODIFY, EVENT_REMOVE)


@dataclass(frozen=True)
class StreamChanges(JournalView):
    """The journal's stream changes up to the base's moment, from its beginning: what the
    conversion must not copy again. ``converted`` pieces (an earlier attempt's) and repair
    pieces (table reads, never an item version's sequence number) are not read."""

    def needs(self, listed: ListedPiece) -> bool:
        return listed.piece.stream_tag not in TABLE_READ_STREAMS and super().needs(listed)


@dataclass
class ObjectChanges:
    """One object's records, and what was passed over."""

    records: list[JournalRecord]
    in_journal: int = 0  # stream changes the journal holds already
    keyless_removals: int = 0  # removals of an object no version of which holds the item


def object_changes(
    objects: Any,
    entries: Sequence[ObjectVersion],
    key_names: list[str],
    key_hash: str,
    moment: datetime,
    in_journal: set[tuple[str, int]],
    policy: RetryPolicy,
) -> ObjectChanges:
    """The records of one object's changes made at or before ``moment`` (see the module)."""
    ordered = newest_first(list(entries))
    if not ordered:
        return ObjectChanges([])
    object_key = ordered[0].key
    metadata: dict[str, VersionMetadata | None] = {}
    items: dict[str, Item] = {}
    for entry in ordered:
        if entry.is_delete_marker:
            continue
        found, item = _read_version(objects, object_key, entry, policy)
        metadata[entry.version_id] = found
        if item is not None:
            items[entry.version_id] = item
    keys = _object_keys(ordered, items, key_names)
    markers = set(marker_tombstones(ordered))
    placed_versions = stream_order(ordered, metadata)
    ranks = tie_ranks(placed_versions)
    got = ObjectChanges([])
    for placed in placed_versions:
        decision = placed.decision
        if placed.duplicate_of is not None or decision.position in markers:
            continue  # a copy of a change S3 held already; a marker of a tombstone's removal
        if decision.change_time > moment:
            continue
        item = None if decision.removed else items.get(decision.entry.version_id)
        if not decision.removed and item is None:
            raise BaseError(
                f"s3://{objects.bucket}/{object_key}?versionId={decision.entry.version_id}: "
                "not an item; the partition is not converted (no change is left out): repair "
                "the object, or run again with --resume"
            )
        if keys is None:
            got.keyless_removals += 1  # removed, never held here: nothing to name it by
            continue
        found = decision.metadata
        stream = found is not None and found.event_name in _STREAM_EVENTS
        sequence = found.sequence_number if stream and decision.sequence >= 0 else None
        if sequence is not None and (object_name(keys, key_hash), decision.sequence) in in_journal:
            got.in_journal += 1
            continue
        event = EVENT_REMOVE if decision.removed else found.event_name if found else ""
        got.records.append(
            converted_record(
                keys, item, event, decision.change_time, decision.precision, sequence,
                ranks[decision.position],
            )
        )  # fmt: skip
    return got


def tie_ranks(placed_versions: Sequence[PlacedVersion]) -> dict[int, int]:
    """Each version's place (by its position in S3's order) among the versions of the same
    latest moment and sequence number, oldest received first: the item layout gives such a
    tie to the version S3 received last (``change_key``)."""
    groups: dict[tuple[datetime, int], list[int]] = {}
    for placed in placed_versions:
        decision = placed.decision
        groups.setdefault((decision.latest_time, decision.sequence), []).append(decision.position)
    return {
        position: rank
        for positions in groups.values()
        for rank, position in enumerate(sorted(positions, reverse=True))  # oldest first
    }


def _read_version(
    objects: Any, object_key: str, entry: ObjectVersion, policy: RetryPolicy
) -> tuple[VersionMetadata | None, Item | None]:
    """A version's metadata (ours, or None), and its item (None for a tombstone); a body that
    is not an item is an error."""
    where = f"s3://{objects.bucket}/{object_key}?versionId={entry.version_id}"
    if entry.is_tombstone:
        raw = call_with_retries(
            lambda: objects.head_object(object_key, entry.version_id), policy, f"head {where}"
        )
        return VersionMetadata.from_s3(raw), None
    body, raw = call_with_retries(
        lambda: objects.read_object(object_key, entry.version_id), policy, f"get {where}"
    )
    if not body:
        return VersionMetadata.from_s3(raw), None
    try:
        return VersionMetadata.from_s3(raw), loads_item(body, where)
    except InvalidDynamoJSON as error:
        raise BaseError(f"{error}: the partition is not converted") from None


def _object_keys(
    ordered: Sequence[ObjectVersion], items: dict[str, Item], key_names: list[str]
) -> Item | None:
    """The item's key, from the newest version holding it (a removal's record needs it)."""
    for entry in ordered:
        item = items.get(entry.version_id)
        if item is not None:
            return extract_key(item, key_names)
    return None


def partition_changes(
    objects: Any,
    object_histories: Iterable[list[ObjectVersion]],
    key_names: list[str],
    key_hash: str,
    moment: datetime,
    in_journal: set[tuple[str, int]],
    policy: RetryPolicy,
    cancel: CancelToken,
    concurrency: int,
) -> ObjectChanges:
    """Every object's records (``concurrency`` objects read at a time)."""
    total = ObjectChanges([])

    def one(entries: list[ObjectVersion]) -> ObjectChanges:
        cancel.check()
        return object_changes(objects, entries, key_names, key_hash, moment, in_journal, policy)

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="convert-history") as pool:
        for chunk in batched(object_histories, max(1, concurrency) * 4):
            for got in pool.map(one, chunk):
                total.records.extend(got.records)
                total.in_journal += got.in_journal
                total.keyless_removals += got.keyless_removals
    return total


def converted_pieces(records: Iterable[JournalRecord], key_hash: str) -> list[list[JournalRecord]]:
    """Records as pieces: by change hour, in a fixed order, ``PIECE_RECORDS`` at most each."""
    by_hour: dict[datetime, list[JournalRecord]] = {}
    for record in records:
        by_hour.setdefault(hour_of(record.change_time), []).append(record)
    pieces: list[list[JournalRecord]] = []
    for hour in sorted(by_hour):
        ordered = sorted(
            by_hour[hour],
            key=lambda r: (r.change_time, r.name(key_hash), r.sequence, r.event_id or ""),
        )
        pieces.extend(list(chunk) for chunk in batched(ordered, PIECE_RECORDS))
    return pieces


def write_pieces(
    objects: Any, table_folder: str, pieces: Sequence[Sequence[JournalRecord]], policy: RetryPolicy
) -> int:
    """Each piece with ``If-None-Match``; one already there must hold the same bytes (a unit
    done again writes the same pieces). The count of pieces this call wrote."""
    written = 0
    root = journal_prefix(table_folder)
    for records in pieces:
        key = root + piece_name(records)
        body = encode_piece(records)
        if put_if_absent(objects, key, body, GZIP_TYPE, policy):
            written += 1
            continue
        if read_bytes(objects, key, READ_POLICY) != body:
            raise JournalConflict(
                f"s3://{objects.bucket}/{key} exists and holds other records than the "
                "conversion's piece of that name"
            )
    return written
