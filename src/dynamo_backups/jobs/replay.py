"""Replay: re-apply the ranges of stream records the Lambda trigger gave up on.

When the trigger gives up on records (retries exhausted, records too old), Lambda sends a
report of the range to the failure destination: the stream, the shard, the first and last
sequence numbers, and when the records arrived. The records themselves are still in the
stream for the rest of their 24 hours. Replay reads exactly that range again and applies it
through the handler's own code; a report is settled (its queue message deleted) only after
its whole range is written.

Since the trigger went on with later records meanwhile, an item may already hold a newer
state than the replayed one, and the trigger may write newer ones while replay runs. Replay
keeps the stream's order: after writing an item's replayed changes it looks at the item's
whole history and, while its current version is not the newest change in the stream's order
(the rule point-in-time selection follows), writes that newest change again on top (its
body, metadata and change time unchanged), conditionally on the current version it saw, and
looks again. It stops only when a look after its last write finds the newest change
current: whatever the trigger writes later is newer and lands on top.

One report that cannot be replayed (not a report, a range that cannot be read or written)
is reported with its reason and the object concerned; the others are replayed all the same.

A range the stream no longer holds is reported with its table and time span, and with the
command that repairs it (``verify --repair``).

How a range is written is the folder's layout's (``jobs/layouts.Layout.replay_writer``, the
layout chosen from the folder's ``layout.json``): the item layout writes a version per change
through the handler's ``BackupApplier`` and settles each item as above; the journal layout
writes the range through the handler's ``JournalApplier`` as journal pieces (named from their
records, ``If-None-Match``: a range replayed again makes the same names and never doubles),
and needs no settling, since its readers order every item's changes by the stream's order
whatever the order their pieces arrived in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy, call_with_retries
from dynamo_backups.aws.streams import enable_raw_records
from dynamo_backups.backup.reading import object_versions
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, parse_stream_arn
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.pitr import Decision, ObjectVersion, newest_change
from dynamo_backups.core.stream_records import BatchResult, parse_batch
from dynamo_backups.core.wording import counted
from dynamo_backups.pipeline.backup_applier import BackupApplier

logger = logging.getLogger("dynamo_backups.jobs.replay")

GONE_CODES = ("TrimmedDataAccessException", "ResourceNotFoundException")
EMPTY_PAGES_LIMIT = 200  # how far to walk empty pages toward a range's end before giving up
SETTLE_ATTEMPTS = 20  # looks at one item before giving up on a trigger that keeps writing it
SETTLE_CONCURRENCY = 16


class ReportError(ValueError):
    """A failure-destination message that is not a report of records given up on."""


@dataclass(frozen=True)
class GivenUp:
    """One report of records the trigger gave up on."""

    stream_arn: str
    table: str
    shard_id: str
    first_sequence: str
    last_sequence: str
    first_arrival: str
    last_arrival: str
    condition: str
    function_arn: str
    size: int

    @property
    def span(self) -> str:
        return (
            f"table {self.table}, records that arrived from {self.first_arrival or '?'} to "
            f"{self.last_arrival or '?'} (shard {self.shard_id}, sequence numbers "
            f"{self.first_sequence} to {self.last_sequence})"
        )


def parse_report(text: str | bytes) -> GivenUp:
    """A report as Lambda sends it to SQS (or wrapped in an SNS notification)."""
    try:
        document = json.loads(text)
        if isinstance(document, dict) and document.get("Type") == "Notification":
            document = json.loads(document["Message"])  # delivered through SNS
        info = document["DDBStreamBatchInfo"]
        context = document.get("requestContext") or {}
        arn = info["streamArn"]
        for name in ("startSequenceNumber", "endSequenceNumber"):
            if not str(info[name]).isdigit():
                raise ValueError(f"{name} {info[name]!r} is not a sequence number")
        return GivenUp(
            stream_arn=arn,
            table=parse_stream_arn(arn).table,
            shard_id=info["shardId"],
            first_sequence=str(info["startSequenceNumber"]),
            last_sequence=str(info["endSequenceNumber"]),
            first_arrival=str(info.get("approximateArrivalOfFirstRecord") or ""),
            last_arrival=str(info.get("approximateArrivalOfLastRecord") or ""),
            condition=str(context.get("condition") or ""),
            function_arn=str(context.get("functionArn") or ""),
            size=int(info.get("batchSize") or 0),
        )
    except (ValueError, KeyError, TypeError, LayoutError) as error:
        raise ReportError(f"not a report of DynamoDB stream records given up on: {error}") from None


def reports_in_file(lines: Iterable[str]) -> Iterator[str]:
    """Reports kept in a file: one JSON document per line, or one JSON list of them.
    Raises ReportError for a list that is not JSON (a file cut off)."""
    text = "".join(lines).strip()
    if text.startswith("["):
        try:
            documents = json.loads(text)
        except ValueError as error:  # cut off, say: no report in it can be trusted
            raise ReportError(f"not a JSON list of reports: {error}") from None
        for document in documents:
            yield json.dumps(document)
        return
    for line in text.splitlines():
        if line.strip():
            yield line


@dataclass
class ReplayOutcome:
    report: GivenUp
    records: int = 0
    written: bool = False
    problem: str | None = None  # why the range could not be written
    gone: bool = False  # the stream no longer holds the range
    newer_states_kept: int = 0


@dataclass
class ReplayReport:
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(outcome.written for outcome in self.outcomes)


class Replayer:
    """Reads reported ranges from a stream and applies them in the stream's order."""

    def __init__(
        self,
        streams: Any,
        applier: BackupApplier | ReplayWriter,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``applier``: the folder's ``ReplayWriter`` (its layout's ``replay_writer``), or an
        item layout's ``BackupApplier`` (its writer made here)."""
        self.streams = streams
        self.target: ReplayWriter = (
            ItemReplayWriter(applier) if isinstance(applier, BackupApplier) else applier
        )
        self.policy = policy or RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=10)
        self.sleep = sleep
        enable_raw_records(streams)

    def replay(self, report: GivenUp) -> ReplayOutcome:
        """Read and write one reported range. Never raises for a problem of this report: the
        outcome says what went wrong, so that the other reports are replayed all the same."""
        outcome = ReplayOutcome(report)
        try:
            records = self._read_range(report)
        except ClientError as error:
            outcome.gone = error_code(error) in GONE_CODES
            outcome.problem = describe_error(error)
            return outcome
        except (RetriesExhausted, ReplayFailed) as error:
            outcome.problem = str(error)
            return outcome
        except Exception as error:  # one report's problem, reported with it
            outcome.problem = f"reading the range: {describe_error(error)}"
            return outcome
        outcome.records = len(records)
        try:
            outcome.newer_states_kept = self.target.write_range(records)
        except ReplayFailed as failure:
            outcome.problem = str(failure)
            return outcome
        except Exception as error:  # one report's problem, reported with it
            outcome.problem = f"writing the range: {describe_error(error)}"
            return outcome
        outcome.written = True
        return outcome

    # --- reading the range ---------------------------------------------------------------

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        return call_with_retries(operation, self.policy, what)

    def _read_range(self, report: GivenUp) -> list[dict[str, Any]]:
        """Every record of the range, as Lambda would deliver them."""
        first, last = int(report.first_sequence), int(report.last_sequence)
        iterator = self._call(
            f"open shard {report.shard_id}",
            lambda: self.streams.get_shard_iterator(
                StreamArn=report.stream_arn,
                ShardId=report.shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=report.first_sequence,
            )["ShardIterator"],
        )
        records: list[dict[str, Any]] = []
        empty = 0
        while iterator:
            page = self._call(
                f"read shard {report.shard_id}",
                lambda iterator=iterator: self.streams.get_records(
                    ShardIterator=iterator, Limit=1000
                ),
            )
            raw = page.get("RawRecords", [])
            for record in raw:
                number = int(record["dynamodb"]["SequenceNumber"])
                if number > last:
                    return records
                if number >= first:
                    records.append(dict(record, eventSourceARN=report.stream_arn))
            if records and int(records[-1]["dynamodb"]["SequenceNumber"]) == last:
                return records
            empty = 0 if raw else empty + 1
            if empty >= EMPTY_PAGES_LIMIT:
                raise ReplayFailed(f"the stream answered {empty} empty pages before {last}")
            iterator = page.get("NextShardIterator")
        return records


# --- writing a range, as the folder's layout does --------------------------------------------


class ReplayWriter(Protocol):
    """How a folder's layout writes a replayed range (``jobs/layouts.Layout.replay_writer``)."""

    def write_range(self, records: Sequence[dict[str, Any]]) -> int:
        """Write the range so that every item's changes keep the stream's order; returns how
        many items had a newer state written again on top. Raises ReplayFailed."""
        ...


class ItemReplayWriter:
    """The item layout's: the handler's ``BackupApplier``, then each item settled (its
    newest change in the stream's order made its current version again)."""

    def __init__(self, applier: BackupApplier) -> None:
        self.applier = applier
        self.writer: BackupWriter = applier.writer

    def write_range(self, records: Sequence[dict[str, Any]]) -> int:
        return self._apply_in_stream_order(records)

    def _apply_in_stream_order(self, records: Sequence[dict[str, Any]]) -> int:
        """Apply the records; then (also when some could not be written) make each item's
        newest change in the stream's order its current version again. Returns how many
        items needed it."""
        parsed = parse_batch(records)
        if parsed.invalid is not None:
            raise ReplayFailed(str(parsed.invalid))
        object_keys = list(
            dict.fromkeys(
                self.applier.layout(change.table).item_object_key(change.keys)
                for change in parsed.changes
            )
        )
        problems: list[str] = []
        for batch in batched(records, 100):
            result: BatchResult = self.applier.apply(batch)
            if result.failures:
                failure = result.first_failure
                problems.append(failure.reason if failure else "a record was not written")
                break
        # Also after a failure: the changes written so far must not stay above newer ones.
        with ThreadPoolExecutor(SETTLE_CONCURRENCY, "replay-settle") as pool:
            settled = list(pool.map(self._settle_reporting, object_keys))
        problems += [problem for _, problem in settled if problem]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise ReplayFailed(problems[0] + more)
        return sum(1 for rewritten, _ in settled if rewritten)

    def _settle_reporting(self, object_key: str) -> tuple[bool, str | None]:
        try:
            return self._settle(object_key), None
        except Exception as error:  # reported with the object's name
            detail = str(error) if isinstance(error, ReplayFailed) else describe_error(error)
            return False, f"s3://{self.writer.bucket}/{object_key}: {detail}"

    def _settle(self, object_key: str) -> bool:
        """Look at the item's history until its newest change in the stream's order is its
        current version, writing that change again on top (conditionally on the current
        version seen) whenever it is not. True when it had to be written."""
        rewritten = False
        for _ in range(SETTLE_ATTEMPTS):
            entries = object_versions(self.writer.objects, object_key)
            newest = self._newest_change(object_key, entries)
            if newest is None or _is_current(entries, newest):
                return rewritten
            rewritten = True
            self.writer.put_state_if_current(object_key, entries, newest.position, entries[0])
        raise ReplayFailed(
            f"kept changing: its newest change could not be made current in "
            f"{counted(SETTLE_ATTEMPTS, 'attempt')} (run replay again)"
        )

    def _newest_change(self, object_key: str, entries: list[ObjectVersion]) -> Decision | None:
        """The item's newest change in the stream's order, by the rule of point-in-time
        selection (change time, then sequence number, then S3's order)."""
        return newest_change(
            entries, lambda entry: self.writer.version_metadata(object_key, entry.version_id)
        )


def _is_current(entries: list[ObjectVersion], newest: Decision) -> bool:
    """Whether the object's current entry is ``newest`` (a removal: its tombstone, or the
    delete markers right on it: a delete sent again adds a marker on the marker)."""
    if entries[0].version_id == newest.entry.version_id:
        return True
    above = entries[: newest.position]
    return newest.removed and bool(above) and all(entry.is_delete_marker for entry in above)


class ReplayFailed(RuntimeError):
    """Records of the range could not be written."""


class JournalReplayWriter:
    """The journal layout's: the range as the handler's ``JournalApplier`` writes a delivered
    batch (pieces named from their records, ``If-None-Match``), in one call, so the same
    report replayed again makes the same names and never doubles. Nothing to settle: readers
    order each item's changes by the stream's order (``core/journal.fold``), so a replayed,
    older change never buries a newer one, and a base made since places it as a late change."""

    def __init__(self, applier: Any) -> None:
        self.applier = applier

    def write_range(self, records: Sequence[dict[str, Any]]) -> int:
        result: BatchResult = self.applier.apply(records)
        if result.failures:
            failure = result.first_failure
            raise ReplayFailed(failure.reason if failure else "a record was not written")
        return 0
