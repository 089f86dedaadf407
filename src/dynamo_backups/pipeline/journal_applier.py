"""Write a delivered batch of stream records as journal objects (docs/journal.md, "Writing:
one object per batch").

A batch becomes one object per stream and UTC hour of its records' change times (almost
always one), named from its records alone and written with ``If-None-Match: *``: a batch
delivered again with the same boundaries makes the same name, S3 refuses the copy (412), and
the object there is read and must hold the same records (a different one is an error, never
a skip). Pieces are written in the batch's order; the first that cannot be written stops the
batch, and the result names its first record, so Lambda (or the ``stream`` consumer) resends
from there and the pieces already written become duplicates that readers drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.errors import (
    PRECONDITION_CODES,
    ClientError,
    describe_error,
    error_code,
    is_transient,
)
from dynamo_backups.aws.retry import RetriesExhausted, call_with_retries, deadline_clock
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.journal import (
    JOURNAL_CONTENT_TYPE,
    RECORD_FORMAT_VERSION,
    JournalError,
    JournalRecord,
    check_piece,
    decode_piece,
    drop_duplicates,
    encode_piece,
    journal_prefix,
    piece_name,
    record_of_change,
    split_batch,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import (
    WRITER_REPAIR,
    WRITER_STREAM,
    LayoutError,
    TableLayout,
    parse_stream_arn,
)
from dynamo_backups.core.stream_records import BatchResult, RecordFailure, parse_batch

# S3 answers 409 ConditionalRequestConflict to a conditional put racing another on the same
# key ("retry the request", S3 user guide, conditional writes): the retry meets the 412.
_CONFLICT = "ConditionalRequestConflict"


def _retryable(error: BaseException) -> bool:
    conflict = isinstance(error, ClientError) and error_code(error) == _CONFLICT
    return conflict or is_transient(error)


class JournalApplier:
    """Writes stream batches into ``<prefix>/<table>/journal/`` of one bucket, through the
    writer's object transport (the fast one where configured) and retry policy."""

    def __init__(
        self,
        writer: BackupWriter,
        prefix: str = "",
        key_hash: str = DEFAULT_KEY_HASH,
        clock: Callable[[], float] = deadline_clock,
        shard: str | None = None,
    ) -> None:
        self.writer = writer
        self.prefix = prefix
        self.key_hash = key_hash
        self.clock = clock
        self.shard = shard  # recorded on each line when the writer knows it
        self._layouts: dict[str, TableLayout] = {}

    def layout(self, table: str) -> TableLayout:
        if table not in self._layouts:
            self._layouts[table] = TableLayout.of(self.prefix, table, self.key_hash)
        return self._layouts[table]

    def apply(self, records: Sequence[Any], deadline: float | None = None) -> BatchResult:
        """Write Lambda-shaped stream records; ``deadline`` is a ``clock()`` value after which
        no new write starts (what is left is reported as failed, to be retried)."""
        parsed = parse_batch(records, datetime.now(UTC))
        result = BatchResult(record_count=len(records))
        result.note_changes(parsed.changes)
        failure = RecordFailure.invalid(parsed.invalid) if parsed.invalid is not None else None
        entries: dict[int, tuple[int, JournalRecord]] = {}  # id(record) -> (index, record)
        for change in parsed.changes:
            raw = records[change.index]
            try:
                _require_change_time(raw)
                record = record_of_change(
                    change, raw.get("eventID"), raw.get("userIdentity"), self.shard
                )
            except JournalError as error:
                failure = RecordFailure(change.index, change.sequence_number, str(error), False)
                break
            entries[id(record)] = (change.index, record)
        pieces = split_batch([record for _, record in entries.values()])
        for piece in pieces:
            first = min(entries[id(record)][0] for record in piece)
            if failure is not None and first >= failure.index:
                break  # nothing at or after a failed record is written
            problem = self._write_or_explain(piece, deadline)
            if problem is not None:
                reason, retryable = problem
                failure = RecordFailure(first, piece[0].sequence_number, reason, retryable)
                break
            for record in piece:
                result.applied[record.event_name] += 1
        if failure is not None:
            result.failures.append(failure)
        return result

    def _write_or_explain(
        self, piece: list[JournalRecord], deadline: float | None
    ) -> tuple[str, bool] | None:
        """Write one piece; None when it is in the bucket, else why not and whether a retry
        can help."""
        if deadline is not None and self.clock() >= deadline:
            return "stopped at the write deadline (the invocation's end or the lease's)", True
        try:
            self._write_piece(piece, deadline)
        except RetriesExhausted as error:
            return str(error), True
        except (JournalError, LayoutError) as error:
            return str(error), False
        except Exception as error:
            return f"journal piece of {len(piece)} records: {describe_error(error)}", False
        return None

    def piece_key(self, piece: Sequence[JournalRecord], table: str | None = None) -> str:
        """The object key of a piece: its name under its table's journal folder (the table
        its stream ARN names, unless given: table reads have a pseudo-stream)."""
        table = table or parse_stream_arn(piece[0].stream_arn).table
        return journal_prefix(self.layout(table).items_prefix) + piece_name(piece)

    def write_table_reads(
        self, table: str, records: Sequence[JournalRecord], deadline: float | None = None
    ) -> int:
        """Table reads (``SNAPSHOT`` records: ``verify --repair``) as pieces of their own
        pseudo-stream (``repair``: never a stream batch's name), each written as a batch's
        piece is (``If-None-Match``, a copy there checked). Returns the pieces written;
        raises when one cannot be."""
        pieces = split_batch(records)
        for piece in pieces:
            if any(not record.is_table_read for record in piece):
                raise JournalError("table reads and stream changes are never in one piece")
            self._write_piece(piece, deadline, table, WRITER_REPAIR)
        return len(pieces)

    def _write_piece(
        self,
        piece: list[JournalRecord],
        deadline: float | None,
        table: str | None = None,
        writer: str = WRITER_STREAM,
    ) -> None:
        key = self.piece_key(piece, table)
        body = encode_piece(piece)
        metadata = {
            "writer": writer,
            "journal-format": str(RECORD_FORMAT_VERSION),
            "records": str(len(piece)),
        }
        objects = self.writer.objects
        where = f"s3://{self.writer.bucket}/{key}"

        def put() -> bool:
            try:
                objects.put_object(key, body, JOURNAL_CONTENT_TYPE, metadata, if_none_match=True)
            except ClientError as error:
                if error_code(error) in PRECONDITION_CODES - {_CONFLICT}:
                    return False  # already there: checked below
                raise
            return True

        written = call_with_retries(
            put, self.writer.policy, f"put {where}", deadline=deadline, retryable=_retryable
        )
        if not written:
            self._check_existing(key, piece, deadline)

    def _check_existing(self, key: str, piece: list[JournalRecord], deadline: float | None) -> None:
        """The object a refused put met must hold this piece's records, change for change: a
        retried batch. Anything else (a digest collision, a corrupt object) is an error."""
        where = f"s3://{self.writer.bucket}/{key}"
        data, _ = call_with_retries(
            lambda: self.writer.objects.read_object(key),
            self.writer.policy,
            f"read {where}",
            deadline=deadline,
        )
        theirs = decode_piece(data, where)
        check_piece(piece_name(piece), theirs)
        both = drop_duplicates([*piece, *theirs])  # a differing copy is a JournalConflict
        if both.duplicates != len(piece) or len(theirs) != len(piece):
            raise JournalError(f"{where} holds other records than the batch it is named for")


def _require_change_time(raw: Any) -> None:
    """A record must carry its own change time: the item layout dates a hand-written event
    without one by its arrival, but a journal object's name and folder come from the change
    times, so a resent copy dated otherwise would be another object that contradicts it."""
    if raw["dynamodb"].get("ApproximateCreationDateTime") is None:
        raise JournalError(
            f"sequence number {raw['dynamodb']['SequenceNumber']}: no "
            "dynamodb.ApproximateCreationDateTime, which the journal layout names and places "
            "each change by (every record DynamoDB Streams delivers has one)"
        )


def journal_applier(
    writer: BackupWriter, prefix: str, key_hash: str, concurrency: int
) -> JournalApplier:
    """The journal layout's applier (its pieces are written one after another, in order, so
    the concurrency of item writes does not apply)."""
    del concurrency
    return JournalApplier(writer, prefix, key_hash)
