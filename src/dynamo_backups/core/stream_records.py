"""Stream records as Lambda delivers them, checked and turned into changes (pure; no I/O).

A record is the raw GetRecords JSON of one change plus ``eventSourceARN``. Anything this
module cannot use is an :class:`InvalidRecordError` that says which record and why; a record
is never skipped in silence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.core.ddbjson import repair_untyped_empty_maps
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    SECOND,
    STREAM_EVENTS,
    LayoutError,
    epoch_to_datetime,
    parse_stream_arn,
    stream_time_precision,
)


class InvalidRecordError(ValueError):
    """A stream record that cannot be applied; retrying it will not help."""

    def __init__(self, message: str, *, index: int, sequence_number: str | None) -> None:
        where = f"record {index}" + (
            f" (sequence number {sequence_number})" if sequence_number else ""
        )
        super().__init__(f"{where}: {message}")
        self.index = index
        self.sequence_number = sequence_number


@dataclass(frozen=True, slots=True)
class Change:
    """One insert, update or delete of one item, in the form the sinks apply."""

    index: int
    event_name: str
    table: str
    stream_arn: str
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    sequence_number: str
    change_time: datetime
    # How far the source rounded change_time down (the stream's, decided by its ARN).
    time_precision: timedelta = SECOND

    @property
    def is_removal(self) -> bool:
        return self.event_name == EVENT_REMOVE


def records_of(event: Any) -> list[Mapping[str, Any]]:
    """The ``Records`` list of a Lambda event, or a clear error for anything else."""
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        raise ValueError("event has no 'Records' list: is this a DynamoDB stream event?")
    return event["Records"]


def parse_change(record: Any, index: int, received: datetime | None = None) -> Change:
    """Check one record and return its change. A record without ApproximateCreationDateTime
    (real streams always carry it; hand-written test events such as the console's classic
    sample may not) is dated ``received``, the time the batch arrived."""
    if not isinstance(record, Mapping):
        raise InvalidRecordError("is not an object", index=index, sequence_number=None)
    body = record.get("dynamodb")
    sequence_number = body.get("SequenceNumber") if isinstance(body, Mapping) else None

    def invalid(message: str) -> InvalidRecordError:
        return InvalidRecordError(message, index=index, sequence_number=sequence_number)

    if not isinstance(body, Mapping):
        raise invalid("has no 'dynamodb' section")
    if not isinstance(sequence_number, str) or not sequence_number:
        raise invalid("has no dynamodb.SequenceNumber")
    event_name = record.get("eventName")
    if event_name not in STREAM_EVENTS:
        raise invalid(
            f"unknown eventName {event_name!r}; expected one of {', '.join(STREAM_EVENTS)}"
        )
    try:
        arn = parse_stream_arn(record.get("eventSourceARN"))
    except LayoutError as error:
        raise invalid(str(error)) from None
    keys = body.get("Keys")
    if not isinstance(keys, Mapping) or not keys:
        raise invalid("has no dynamodb.Keys")
    new_image = body.get("NewImage")
    if event_name != EVENT_REMOVE and not isinstance(new_image, Mapping):
        view = body.get("StreamViewType", "unknown")
        raise invalid(
            f"{event_name} of table {arn.table} has no NewImage (stream view type {view}): "
            "the stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    stamp = body.get("ApproximateCreationDateTime")
    try:
        change_time = epoch_to_datetime(stamp) if stamp is not None else received
    except ValueError:
        raise invalid(f"has an invalid dynamodb.ApproximateCreationDateTime {stamp!r}") from None
    if change_time is None:
        raise invalid("has no dynamodb.ApproximateCreationDateTime")
    image = None
    if event_name != EVENT_REMOVE:
        image, _ = repair_untyped_empty_maps(new_image)
    return Change(
        index=index,
        event_name=event_name,
        table=arn.table,
        stream_arn=arn.arn,
        keys=dict(keys),
        new_image=image,
        sequence_number=sequence_number,
        change_time=change_time,
        time_precision=stream_time_precision(arn),
    )


@dataclass(frozen=True)
class ParsedBatch:
    """The usable prefix of a batch, and the first record that could not be used."""

    changes: list[Change]
    invalid: InvalidRecordError | None


def parse_batch(records: Sequence[Any], received: datetime | None = None) -> ParsedBatch:
    """Parse records in stream order, stopping at the first invalid one: what follows it
    must not be applied before it, so it is left for the retry."""
    received = received or datetime.now(UTC)
    changes: list[Change] = []
    for index, record in enumerate(records):
        try:
            changes.append(parse_change(record, index, received))
        except InvalidRecordError as error:
            return ParsedBatch(changes, error)
    return ParsedBatch(changes, None)


def chains_by_key(changes: Iterable[Change], key_of: Any) -> list[list[Change]]:
    """Group changes by ``key_of(change)``, each group in stream order, groups in order of
    first appearance. Changes to one key must be applied one after another."""
    groups: dict[Any, list[Change]] = {}
    for change in changes:
        groups.setdefault(key_of(change), []).append(change)
    return list(groups.values())


@dataclass(frozen=True)
class RecordFailure:
    """A record that was not applied, and why."""

    index: int
    sequence_number: str | None
    reason: str
    retryable: bool

    @classmethod
    def invalid(cls, error: InvalidRecordError) -> RecordFailure:
        """A record that can never be applied: retrying it will not help."""
        return cls(error.index, error.sequence_number, str(error), retryable=False)


@dataclass
class BatchResult:
    """What happened to a batch: applied counts per event and the records not applied."""

    record_count: int
    applied: Counter[str] = field(default_factory=Counter)
    failures: list[RecordFailure] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)
    oldest_change: datetime | None = None  # the change time of the batch's oldest record

    def note_changes(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.tables.add(change.table)
            if self.oldest_change is None or change.change_time < self.oldest_change:
                self.oldest_change = change.change_time

    @property
    def first_failure(self) -> RecordFailure | None:
        return min(self.failures, key=lambda failure: failure.index, default=None)

    @property
    def applied_count(self) -> int:
        return sum(self.applied.values())

    def lambda_response(self) -> dict[str, list[dict[str, str]]]:
        """The ReportBatchItemFailures answer: the earliest failed record, so Lambda retries
        from there and nothing after it is lost or applied out of order."""
        first = self.first_failure
        if first is None:
            return {"batchItemFailures": []}
        if first.sequence_number is None:
            # Without a sequence number Lambda cannot resume mid-batch; failing the whole
            # batch is the only answer that loses nothing.
            raise RuntimeError(
                f"record {first.index} failed and has no sequence number: {first.reason}"
            )
        return {"batchItemFailures": [{"itemIdentifier": first.sequence_number}]}


def combine(results: list[BatchResult]) -> BatchResult:
    """One result for records applied by several sinks (backup and replica): applied where
    every sink applied them; failed from the earliest failure of any sink."""
    combined = BatchResult(record_count=results[0].record_count if results else 0)
    for result in results:
        combined.failures.extend(result.failures)
        combined.tables |= result.tables
        if result.oldest_change is not None:
            combined.oldest_change = min(
                result.oldest_change, combined.oldest_change or result.oldest_change
            )
    first = combined.first_failure
    counts = [result.applied for result in results]
    if first is None and counts:
        combined.applied = counts[0]
    return combined
