"""Reading and writing a journal folder's objects (docs/journal.md): the journal's pieces as
their listing shows them (name, ``LastModified``), their records, a table's bases (which are
complete: a manifest), and a base's gzipped line files. Every request goes through the
retry policy; object bodies through the folder's object transport (``ObjectStore``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.errors import NOT_FOUND_CODES, PRECONDITION_CODES, ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.reading import READ_POLICY, iter_current_objects
from dynamo_backups.core.base import (
    BASES_FOLDER,
    BaseManifest,
    BasePaths,
    parse_base_id,
)
from dynamo_backups.core.journal import (
    TABLE_READ_STREAMS,
    JournalError,
    JournalRecord,
    PieceName,
    decode_piece,
    format_change_time,
    gunzip_lines,
    journal_prefix,
    parse_piece_name,
)
from dynamo_backups.core.layout import LayoutError
from dynamo_backups.core.retention import (
    RetentionPolicy,
    RetentionPolicyError,
    base_expiry_reason,
    journal_gap_reason,
)

GZIP_TYPE = "application/gzip"
JSON_TYPE = "application/json"
RETENTION_NAME = "retention.json"  # beside layout.json: the folder's policy (deploy writes it)
# A layout.json field: when the journal began, where that is before layout.json was written
# (a conversion writes it last, after its converted pieces; ``retention_clock``).
JOURNAL_SINCE = "journal_since"


class ExpiredByRetention(LayoutError):
    """A moment whose base or journal the folder's retention rules may have expired (exit 2):
    read from what is left, it would give old images as the state then."""


@dataclass(frozen=True)
class ListedPiece:
    """A journal object as its listing shows it."""

    key: str
    piece: PieceName
    last_modified: datetime


def listed_pieces(objects: Any, table_folder: str, folder: str) -> Iterator[ListedPiece]:
    """The pieces under ``journal/<folder>`` (a listing prefix: ``yyyy/mm/dd/`` or an hour),
    in name order; an object there that is not named as a piece is an error, never skipped."""
    root = journal_prefix(table_folder)
    for entry in iter_current_objects(objects, root + folder):
        name = entry["Key"][len(root) :]
        try:
            piece = parse_piece_name(name)
        except JournalError as error:
            raise JournalError(f"s3://{objects.bucket}/{entry['Key']}: {error}") from None
        yield ListedPiece(entry["Key"], piece, entry["LastModified"])


def first_piece_hour(objects: Any, table_folder: str) -> datetime | None:
    """The hour of the journal's earliest piece (names sort by hour), None for no journal."""
    first = first_piece(objects, table_folder)
    return first.hour if first is not None else None


def first_piece(objects: Any, table_folder: str) -> PieceName | None:
    """The journal's first piece by name: of its earliest hour, the one whose first change
    is earliest (names sort by hour, then first time). None for no journal."""
    root = journal_prefix(table_folder)
    page = call_with_retries(
        lambda: objects.list_objects_page(root), READ_POLICY, f"list s3://{objects.bucket}/{root}"
    )
    if not page.objects:
        return None
    return parse_piece_name(page.objects[0]["Key"][len(root) :])


def read_bytes(objects: Any, key: str, policy: RetryPolicy = READ_POLICY) -> bytes:
    data, _ = call_with_retries(
        lambda: objects.read_object(key), policy, f"get s3://{objects.bucket}/{key}"
    )
    return data  # type: ignore[no-any-return]


def read_piece(objects: Any, key: str) -> list[JournalRecord]:
    return decode_piece(read_bytes(objects, key), f"s3://{objects.bucket}/{key}")


def read_lines(objects: Any, key: str) -> list[bytes]:
    """The lines of a gzipped object (a base's data or index file, a routed scratch file)."""
    return gunzip_lines(read_bytes(objects, key), f"s3://{objects.bucket}/{key}")


def put_bytes(
    objects: Any,
    key: str,
    body: bytes,
    content_type: str,
    policy: RetryPolicy,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write ``key``; ``tags`` (a base's retention class) go with the put."""
    extra = {"tags": tags} if tags else {}
    call_with_retries(
        lambda: objects.put_object(key, body, content_type, {}, **extra),
        policy,
        f"put s3://{objects.bucket}/{key}",
    )


def put_if_absent(
    objects: Any,
    key: str,
    body: bytes,
    content_type: str,
    policy: RetryPolicy,
    tags: Mapping[str, str] | None = None,
) -> bool:
    """Write ``key`` unless it exists (``If-None-Match: *``); False when it did."""
    extra = {"tags": tags} if tags else {}

    def put() -> bool:
        try:
            objects.put_object(key, body, content_type, {}, if_none_match=True, **extra)
        except ClientError as error:
            if error_code(error) in PRECONDITION_CODES - {"ConditionalRequestConflict"}:
                return False
            raise
        return True

    return bool(call_with_retries(put, policy, f"put s3://{objects.bucket}/{key}"))


def read_json(objects: Any, key: str) -> dict[str, Any] | None:
    """A JSON document, or None when there is none."""

    def read() -> bytes | None:
        try:
            return objects.read_object(key)[0]  # type: ignore[no-any-return]
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise

    body = call_with_retries(read, READ_POLICY, f"get s3://{objects.bucket}/{key}")
    return None if body is None else json.loads(body)


def last_modified(objects: Any, key: str) -> datetime | None:
    """When S3 received ``key`` (its listing's LastModified), None when it is not there."""
    for entry in iter_current_objects(objects, key):
        if entry["Key"] == key:
            return entry["LastModified"]  # type: ignore[no-any-return]
    return None


def base_ids(s3: Any, bucket: str, table_folder: str) -> list[str]:
    """The names of the folders under ``bases/`` (complete bases or not), oldest first."""
    root = f"{table_folder}{BASES_FOLDER}/"
    ids: list[str] = []
    token: str | None = None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = call_with_retries(
            lambda extra=extra: s3.list_objects_v2(
                Bucket=bucket, Prefix=root, Delimiter="/", **extra
            ),
            READ_POLICY,
            f"list s3://{bucket}/{root}",
        )
        for entry in page.get("CommonPrefixes", []):
            name = entry["Prefix"][len(root) :].rstrip("/")
            parse_base_id(name)  # a stray folder is an error, not a base skipped
            ids.append(name)
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return sorted(ids)


def read_manifest(objects: Any, table_folder: str, moment: datetime) -> BaseManifest | None:
    """A base's manifest (None: the base is not complete)."""
    key = BasePaths(table_folder, moment).manifest_key
    document = read_json(objects, key)
    if document is None:
        return None
    return BaseManifest.from_dict(document, f"s3://{objects.bucket}/{key}")


def newest_base(
    s3: Any, objects: Any, table_folder: str, moment: datetime, before: bool = False
) -> BaseManifest | None:
    """The newest complete base at (or, with ``before``, strictly before) ``moment`` that a
    reader may start from (``usable_base``): a base folded from the journal alone is passed
    over once some complete base shows the journal began mid-way. None: no such base."""
    names = base_ids(s3, objects.bucket, table_folder)
    return usable_base(objects, table_folder, names, moment, before)


def usable_base(
    objects: Any, table_folder: str, names: list[str], moment: datetime, before: bool = False
) -> BaseManifest | None:
    """Of the bases ``names``, the newest complete one at (or strictly before) ``moment`` a
    reader may use. A base with ``reflects_before`` (a backfill's, a conversion's, or one
    folded from them) holds the whole table. One without it was folded from the journal
    alone: whole only when the journal began with the table, which no base can tell but a
    base with ``reflects_before`` disproves, wherever it is in time (a compaction that ran
    while a backfill wrote its base folds the journal alone at a later moment). So once such
    a base exists, a base of the journal alone is never used (None when no other is there)."""

    def eligible(name: str) -> bool:
        when = parse_base_id(name)
        return when < moment if before else when <= moment

    journal_alone: BaseManifest | None = None
    for name in sorted((name for name in names if eligible(name)), reverse=True):
        manifest = read_manifest(objects, table_folder, parse_base_id(name))
        if manifest is None:
            continue  # not complete: not a base
        if manifest.reflects_before is not None:
            return manifest
        journal_alone = journal_alone or manifest
    if journal_alone is None:
        return None
    later = [name for name in names if not eligible(name)]
    if _first_reflecting(objects, table_folder, sorted(later)) is not None:
        return None  # the journal began mid-way: the journal alone is part of the table
    return journal_alone


def _first_reflecting(objects: Any, table_folder: str, names: list[str]) -> BaseManifest | None:
    for name in names:
        manifest = read_manifest(objects, table_folder, parse_base_id(name))
        if manifest is not None and manifest.reflects_before is not None:
            return manifest
    return None


def earliest_reflecting_base(
    s3: Any, objects: Any, table_folder: str, after: datetime
) -> BaseManifest | None:
    """The earliest complete base after ``after`` made from a source older than the journal
    (``reflects_before`` set: a backfill's scan, a converted item folder, or one folded from
    them), None when there is none: before it the journal alone holds part of the table.
    None too when that base is a conversion with ``--history`` (``converted_history``): the
    journal's ``converted`` pieces hold the item folder's history before it, so the journal
    from its beginning is the whole table (bases of the journal alone stay passed over:
    ``usable_base``)."""
    first = first_reflecting_base(s3, objects, table_folder, after)
    return None if first is not None and first.converted_history else first


def first_reflecting_base(
    s3: Any, objects: Any, table_folder: str, after: datetime
) -> BaseManifest | None:
    """The earliest complete base after ``after`` with ``reflects_before``: one that shows the
    journal's stream began mid-way, whatever a conversion copied into it."""
    names = base_ids(s3, objects.bucket, table_folder)
    return _first_reflecting(objects, table_folder, [n for n in names if parse_base_id(n) > after])


def first_stream_piece(objects: Any, table_folder: str) -> PieceName | None:
    """The journal's first piece written by a stream writer (the earliest by name, ``converted``
    and ``repair`` pieces passed over): where the journal trigger's changes begin."""
    root = journal_prefix(table_folder)
    for entry in iter_current_objects(objects, root):
        piece = parse_piece_name(entry["Key"][len(root) :])
        if piece.stream_tag not in TABLE_READ_STREAMS:
            return piece
    return None


def read_retention(objects: Any, meta_prefix: str) -> RetentionPolicy | None:
    """The folder's retention policy (``retention.json`` beside ``layout.json``, written by
    deploy); None: no rules of ours expire anything. ``RetentionPolicyError`` for a bad one."""
    key = meta_prefix + RETENTION_NAME
    document = read_json(objects, key)
    if document is None:
        return None
    try:
        return RetentionPolicy.from_dict(document)
    except RetentionPolicyError as error:
        raise RetentionPolicyError(f"s3://{objects.bucket}/{key}: {error}") from None


def base_created(base: BaseManifest) -> datetime:
    """When a base's first object was written: its cutoff (cutoff.json's LastModified); a
    backfill base, which has none, at its moment."""
    return base.cutoff or base.moment


@dataclass(frozen=True)
class RetentionClock:
    """What a reader weighs against the folder's retention rules: the policy (None: nothing
    of ours expires), S3's clock now, and when the journal began (``layout.json`` written)."""

    policy: RetentionPolicy | None
    now: datetime
    began: datetime


def readable_base(
    s3: Any, objects: Any, table_folder: str, moment: datetime, clock: RetentionClock, where: str
) -> BaseManifest | None:
    """The base a reader of ``moment`` folds the journal onto, as compaction chooses its
    previous base (``core/retention``): the newest complete base at or before ``moment`` the
    rules cannot have begun to expire, passing over one near its expiry (its manifest, written
    last, may outlive its data files). None: the journal alone, from its beginning.
    ``ExpiredByRetention`` when the journal from that base (or from the journal's beginning)
    to ``moment`` may have lost objects, or when only an expired base held the rows older than
    the journal: what is left would give old images as the state then. At a base's own moment
    the base alone is the state."""
    policy = clock.policy
    if policy is None:
        return newest_base(s3, objects, table_folder, moment)
    names = base_ids(s3, objects.bucket, table_folder)
    # As usable_base: once a base shows the journal began mid-way, a base of the journal
    # alone is part of the table, never a start.
    mid_way = _first_reflecting(objects, table_folder, names) is not None
    passed_over: list[tuple[BaseManifest, str]] = []
    chosen: BaseManifest | None = None
    for name in reversed(names):
        if parse_base_id(name) > moment:
            continue
        manifest = read_manifest(objects, table_folder, parse_base_id(name))
        if manifest is None:
            continue  # not complete
        if mid_way and manifest.reflects_before is None:
            continue
        expired = base_expiry_reason(
            name, manifest.retention, base_created(manifest), clock.now, policy
        )
        if expired is None:
            chosen = manifest
            break
        passed_over.append((manifest, expired))
    reason: str | None
    if chosen is not None and chosen.moment >= moment:
        reason = None
    elif chosen is not None:
        reason = journal_gap_reason(chosen.moment, clock.now, policy, f"base {chosen.id}")
    else:
        reason = journal_gap_reason(
            clock.began, clock.now, policy, "the journal (no base kept at or before it)"
        )
    if reason is None and (chosen is None or chosen.reflects_before is None):
        # A journal begun mid-way: only a base from the table holds the rows before it.
        reason = next((why for base, why in passed_over if base.reflects_before), None)
    if reason is None:
        return chosen
    raise ExpiredByRetention(retention_refusal(where, moment, reason, policy, chosen))


def retention_refusal(
    where: str, moment: datetime, reason: str, policy: RetentionPolicy, kept: BaseManifest | None
) -> str:
    """The one error line of a read the retention rules may have made incomplete."""
    bases = f"daily {policy.daily_days}, weekly {policy.weekly_days}"
    if policy.monthly_days is not None:
        bases += f", monthly {policy.monthly_days}"
    hint = f" (--at {format_change_time(kept.moment)})" if kept is not None else ""
    return (
        f"{where} cannot be read as of {format_change_time(moment)}: {reason}. The folder's "
        f"retention policy ({RETENTION_NAME}: the journal kept {policy.changes_days} days, "
        f"bases {bases} days) keeps any moment of the last {policy.restorable_days} days and "
        f"each kept base's own moment{hint}; a base from the table (backfill) makes later "
        "moments readable again (nothing was written)"
    )
