"""Which applier writes a table's folder: the one of the layout its ``layout.json`` records
(docs/journal.md, "One interface, two implementations"), chosen once per folder, so that the
Lambda handler and the ``stream`` consumer never ask which layout they write.

``APPLIERS`` maps each layout to its writer of delivered batches: the item layout's
``BackupApplier`` (a version per change) and the journal layout's ``JournalApplier`` (an
object per batch). ``FolderAppliers`` is the handler's: it opens each table's folder the
first time that table's records arrive (once per cold start) and hands its records to that
folder's applier.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from dynamo_backups.aws.errors import (
    ACCESS_DENIED_CODES,
    PRECONDITION_CODES,
    ClientError,
    describe_error,
    error_code,
)
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy, call_with_retries
from dynamo_backups.backup.layouts import (
    LAYOUT_ITEMS,
    LAYOUT_JOURNAL,
    check_layout,
    layout_of,
    manifest_fields,
)
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, TableLayout, parse_stream_arn
from dynamo_backups.core.stream_records import BatchResult, RecordFailure
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.journal_applier import journal_applier

logger = logging.getLogger("dynamo_backups.handler")


class BatchApplier(Protocol):
    """Writes a delivered batch of Lambda-shaped stream records: a layout's ``write_batch``."""

    def apply(self, records: Sequence[Any], deadline: float | None = None) -> BatchResult: ...


ApplierFactory = Callable[[BackupWriter, str, str, int], BatchApplier]


def _item_applier(writer: BackupWriter, prefix: str, key_hash: str, concurrency: int) -> Any:
    return BackupApplier(writer, prefix, key_hash, concurrency)


APPLIERS: Mapping[str, ApplierFactory] = {
    LAYOUT_ITEMS: _item_applier,
    LAYOUT_JOURNAL: journal_applier,
}


def applier_for(
    layout: str, writer: BackupWriter, prefix: str, key_hash: str, concurrency: int
) -> BatchApplier:
    """The applier writing a folder of ``layout`` (a name ``layout_of`` gave)."""
    return APPLIERS[layout](writer, prefix, key_hash, concurrency)


def folder_layout(
    writer: BackupWriter,
    layout: TableLayout,
    declared: str | None,
    policy: RetryPolicy = READ_POLICY,
) -> str:
    """The layout a stream writer writes ``layout``'s folder in: the one its ``layout.json``
    records, which must be ``declared`` (the function's ``BACKUP_LAYOUT``) when that is set.
    Without a ``layout.json`` (a function installed from the template, with no ``deploy`` to
    write one): ``declared``, recorded for readers when it is not the item layout. A role
    that may not read ``layout.json`` (functions deployed before the journal layout) writes
    the item layout, as it always has; told another layout, it refuses."""
    where = f"s3://{writer.bucket}/{layout.items_prefix}"
    try:
        manifest = read_document(writer.s3, writer.bucket, layout.manifest_key, policy)
    except ClientError as error:
        if error_code(error) not in ACCESS_DENIED_CODES:
            raise
        if (declared or LAYOUT_ITEMS) != LAYOUT_ITEMS:
            # S3 answers a missing key with 403, not 404, to a role without s3:ListBucket
            # (deploy grants the read of layout.json, no listing): a folder without one, as a
            # function from the template finds. Recording it then succeeds; a layout.json
            # that exists but cannot be read refuses the put (412) and the denial stands.
            return _record_layout(writer, layout, declared or LAYOUT_ITEMS, where, policy)
        logger.warning(
            "cannot read s3://%s/%s (%s): writing the item layout, as the function is set to",
            writer.bucket,
            layout.manifest_key,
            describe_error(error),
        )
        return LAYOUT_ITEMS
    if manifest is not None:
        return check_layout(layout_of(manifest), declared, where)
    chosen = declared or LAYOUT_ITEMS
    if chosen != LAYOUT_ITEMS:
        return _record_layout(writer, layout, chosen, where, policy)
    return chosen


def _record_layout(
    writer: BackupWriter, layout: TableLayout, chosen: str, where: str, policy: RetryPolicy
) -> str:
    """Write a ``layout.json`` naming ``chosen`` where there is none (If-None-Match: a
    manifest written meanwhile by another writer is read and must agree)."""
    document = {**layout.manifest(), **manifest_fields(chosen)}
    body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")  # as put_document

    def put() -> bool:
        try:
            writer.s3.put_object(
                Bucket=writer.bucket,
                Key=layout.manifest_key,
                Body=body,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as error:
            if error_code(error) in PRECONDITION_CODES - {"ConditionalRequestConflict"}:
                return False
            raise
        return True

    if call_with_retries(put, policy, f"put s3://{writer.bucket}/{layout.manifest_key}"):
        return chosen
    existing = read_document(writer.s3, writer.bucket, layout.manifest_key, policy)
    return check_layout(layout_of(existing), chosen, where)


class FolderAppliers:
    """The Lambda handler's applier: each table's records go to the applier of the layout
    its folder records, opened the first time the table is met and kept."""

    def __init__(
        self,
        writer: BackupWriter,
        prefix: str,
        key_hash: str,
        concurrency: int,
        declared: str | None = None,
    ) -> None:
        self.writer = writer
        self.prefix = prefix
        self.key_hash = key_hash
        self.concurrency = concurrency
        self.declared = declared
        self._appliers: dict[str | None, BatchApplier] = {}
        self._lock = threading.Lock()

    def applier(self, table: str | None) -> BatchApplier:
        """The applier of ``table``'s folder (None: records naming no table, which any
        applier reports as invalid)."""
        with self._lock:
            if table not in self._appliers:
                chosen = LAYOUT_ITEMS
                if table is not None:
                    layout = TableLayout.of(self.prefix, table, self.key_hash)
                    chosen = folder_layout(self.writer, layout, self.declared)
                self._appliers[table] = applier_for(
                    chosen, self.writer, self.prefix, self.key_hash, self.concurrency
                )
            return self._appliers[table]

    def apply(self, records: Sequence[Any], deadline: float | None = None) -> BatchResult:
        """Each run of one table's records by that folder's applier, in order; the first
        failure ends the batch (indexes are the batch's)."""
        combined = BatchResult(record_count=len(records))
        for start, end, table in _runs(records):
            run = records[start:end]
            try:
                applier = self.applier(table)
            except RetriesExhausted as error:
                combined.failures.append(_failure_at(records, start, str(error), True))
                break
            except (LayoutError, ClientError) as error:
                reason = f"cannot open the backup folder of table {table}: {describe_error(error)}"
                if isinstance(error, LayoutError):
                    reason = str(error)
                combined.failures.append(_failure_at(records, start, reason, False))
                break
            result = applier.apply(run, deadline)
            _merge(combined, result, start)
            if result.failures:
                break
        return combined

    def close(self) -> None:
        for applier in self._appliers.values():
            close = getattr(applier, "close", None)
            if close is not None:
                close()


def _runs(records: Sequence[Any]) -> list[tuple[int, int, str | None]]:
    """The batch as runs of consecutive records of one table: (start, end, table)."""
    runs: list[tuple[int, int, str | None]] = []
    for index, record in enumerate(records):
        table = _table_of(record)
        if runs and runs[-1][2] == table:
            runs[-1] = (runs[-1][0], index + 1, table)
        else:
            runs.append((index, index + 1, table))
    return runs


def _table_of(record: Any) -> str | None:
    try:
        return parse_stream_arn(record.get("eventSourceARN")).table
    except (LayoutError, AttributeError):
        return None


def _failure_at(records: Sequence[Any], index: int, reason: str, retryable: bool) -> RecordFailure:
    body = records[index].get("dynamodb") if isinstance(records[index], Mapping) else None
    sequence = body.get("SequenceNumber") if isinstance(body, Mapping) else None
    return RecordFailure(index, sequence, reason, retryable)


def _merge(combined: BatchResult, result: BatchResult, offset: int) -> None:
    combined.applied.update(result.applied)
    combined.tables |= result.tables
    if result.oldest_change is not None:
        combined.oldest_change = min(
            result.oldest_change, combined.oldest_change or result.oldest_change
        )
    combined.failures.extend(
        replace(failure, index=failure.index + offset) for failure in result.failures
    )
