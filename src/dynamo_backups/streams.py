"""Read a table's stream through the DynamoDB Streams API and feed the records, shaped
exactly as Lambda delivers them, to the same code the Lambda handler runs.

All shards are read, parents before children, from TRIM_HORIZON on the first start and from
the checkpoint after that. The checkpoint moves only after a batch has been applied, so a
crash or Ctrl-C loses nothing: the next run replays at most the batch that was in flight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from dynamo_backups.checkpoints import CheckpointStore, StreamCheckpoint
from dynamo_backups.records import BatchResult
from dynamo_backups.retry import RetryPolicy, describe_error, is_transient
from dynamo_backups.s3store import error_code
from dynamo_backups.workers import batched

logger = logging.getLogger("dynamo_backups.streams")

NEW_IMAGE_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
LAMBDA_BATCH_SIZE = 100
GET_RECORDS_LIMIT = 1000
# An open shard can answer an empty page with records still ahead of the iterator; this many
# empty pages in a row is taken as "caught up" when draining with --once.
EMPTY_PAGES_TO_CATCH_UP = 2
SHARD_LIST_REFRESH_SECONDS = 60.0

Processor = Callable[[Sequence[dict[str, Any]]], BatchResult]


class StreamError(RuntimeError):
    """The stream cannot be read or a batch cannot be applied; the message says what to do."""


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None
    closed: bool


@dataclass(frozen=True)
class _ShardOutcome:
    moved: bool
    finished: bool


def ready_shards(shards: Sequence[Shard], checkpoint: StreamCheckpoint) -> list[Shard]:
    """Unfinished shards whose parent is finished or no longer listed (trimmed)."""
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if not checkpoint.is_finished(shard.shard_id)
        and (
            shard.parent_id is None
            or shard.parent_id not in listed
            or checkpoint.is_finished(shard.parent_id)
        )
    ]


@dataclass
class ConsumerReport:
    """What one consumer did."""

    table: str
    stream_arn: str = ""
    records: int = 0
    batches: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    shards_finished: int = 0
    gaps: list[str] = field(default_factory=list)

    def count(self, result: BatchResult) -> None:
        self.records += result.applied_count
        self.batches += 1
        for event_name, count in result.applied.items():
            self.applied[event_name] = self.applied.get(event_name, 0) + count


def enable_raw_records(streams: Any) -> None:
    """Make GetRecords responses carry ``RawRecords``: the records as the service sent them
    (epoch numbers, base64 text), which is what Lambda delivers; boto3's parsed copy has
    datetimes and bytes instead."""
    streams.meta.events.register(
        "after-call.dynamodbstreams.GetRecords",
        _attach_raw_records,
        unique_id="dynamo-backups-raw-records",
    )


def _attach_raw_records(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
    if isinstance(parsed, dict) and http_response.status_code == 200:
        parsed["RawRecords"] = json.loads(http_response.content).get("Records", [])


def stream_of_table(dynamodb: Any, table: str) -> tuple[str, dict[str, Any]]:
    """The table's current stream ARN and description; a clear error when it has none, or
    one whose records lack the new image."""
    try:
        description = dynamodb.describe_table(TableName=table)["Table"]
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise StreamError(
                f"table {table} does not exist (check the name and --region)"
            ) from None
        raise StreamError(f"cannot describe table {table}: {describe_error(error)}") from None
    specification = description.get("StreamSpecification") or {}
    arn = description.get("LatestStreamArn")
    if not specification.get("StreamEnabled") or not arn:
        raise StreamError(
            f"table {table} has no stream: enable one with view type NEW_AND_OLD_IMAGES "
            f"(aws dynamodb update-table --table-name {table} --stream-specification "
            "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES)"
        )
    view = specification.get("StreamViewType")
    if view not in NEW_IMAGE_VIEWS:
        raise StreamError(
            f"table {table} has a stream with view type {view}, whose records carry no new "
            "image: the stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    return arn, description


class StreamConsumer:
    """Consumes one table's stream into a processor (the backup or replica applier)."""

    def __init__(
        self,
        dynamodb: Any,
        streams: Any,
        table: str,
        processor: Processor,
        store: CheckpointStore,
        *,
        batch_size: int = LAMBDA_BATCH_SIZE,
        poll_interval: float = 1.0,
        retry_policy: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        progress_interval: float = 10.0,
    ) -> None:
        self.dynamodb = dynamodb
        self.streams = streams
        self.table = table
        self.processor = processor
        self.store = store
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=8, base_delay=0.2, max_delay=30
        )
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.progress_interval = progress_interval
        self._progress_logged_at = time.monotonic()
        enable_raw_records(streams)

    # --- the run loop ------------------------------------------------------------------------

    def run(self, once: bool) -> ConsumerReport:
        """Consume until caught up (``once``) or until ``stop`` is set."""
        stream_arn, _ = stream_of_table(self.dynamodb, self.table)
        report = ConsumerReport(self.table, stream_arn)
        checkpoint = self._load_checkpoint(stream_arn, report)
        caught_up: set[str] = set()
        shards: list[Shard] | None = None
        listed_at = 0.0
        while not self.stop.is_set():
            if shards is None or time.monotonic() - listed_at > SHARD_LIST_REFRESH_SECONDS:
                shards, listed_at = self._list_shards(stream_arn), time.monotonic()
                self._note_vanished_shards(shards, checkpoint, report)
            todo = [s for s in ready_shards(shards, checkpoint) if s.shard_id not in caught_up]
            if once and not todo:
                break
            moved = False
            for shard in todo:
                if self.stop.is_set():
                    break
                outcome = self._read_shard(stream_arn, shard, checkpoint, report, once)
                moved |= outcome.moved
                if outcome.finished:
                    shards = None  # its children become readable: list them
                elif once:
                    caught_up.add(shard.shard_id)
            if not once and not moved:
                self.stop.wait(self.poll_interval)
        return report

    def _load_checkpoint(self, stream_arn: str, report: ConsumerReport) -> StreamCheckpoint:
        document = self.store.load()
        if document is None:
            logger.info(
                "%s: no checkpoint at %s; reading from TRIM_HORIZON",
                self.table,
                self.store.describe(),
            )
            return StreamCheckpoint(self.table, stream_arn)
        checkpoint = StreamCheckpoint.from_document(document)
        if checkpoint.stream_arn != stream_arn:
            gap = (
                f"{self.table}: the checkpoint is for stream {checkpoint.stream_arn}, but the "
                f"table's stream is now {stream_arn}; changes made while no stream was on were "
                "not seen: run a backfill to cover them"
            )
            logger.error(gap)
            report.gaps.append(gap)
            return StreamCheckpoint(self.table, stream_arn)
        return checkpoint

    def _note_vanished_shards(
        self, shards: list[Shard], checkpoint: StreamCheckpoint, report: ConsumerReport
    ) -> None:
        """A shard we had not finished that the stream no longer lists was trimmed (streams
        keep 24 hours) before we read all of it: say so, then stop tracking it."""
        listed = {shard.shard_id for shard in shards}
        for shard_id, position in list(checkpoint.shards.items()):
            if shard_id not in listed and not position.finished:
                gap = (
                    f"{self.table}: shard {shard_id} was trimmed from the stream before it was "
                    f"read to its end (last read: {position.sequence_number or 'nothing'}); "
                    "changes in it are missing from the backup: run a backfill to cover them"
                )
                logger.error(gap)
                report.gaps.append(gap)
                checkpoint.finish(shard_id)
        checkpoint.forget_finished_except(listed)

    def _list_shards(self, stream_arn: str) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for entry in description.get("Shards", []):
                ending = entry.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                shards.append(
                    Shard(entry["ShardId"], entry.get("ParentShardId"), ending is not None)
                )
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    # --- one shard -----------------------------------------------------------------------------

    def _read_shard(
        self,
        stream_arn: str,
        shard: Shard,
        checkpoint: StreamCheckpoint,
        report: ConsumerReport,
        once: bool,
    ) -> _ShardOutcome:
        """Read a shard until it ends, is caught up, or the consumer is stopped."""
        moved = False
        empty_pages = 0
        iterator = self._iterator(stream_arn, shard, checkpoint, report)
        while iterator and not self.stop.is_set():
            try:
                page = self.streams.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as error:
                if error_code(error) == "ExpiredIteratorException":
                    iterator = self._iterator(stream_arn, shard, checkpoint, report)
                    continue
                if is_transient(error):
                    logger.warning(
                        "%s: reading shard %s: %s; retrying",
                        self.table,
                        shard.shard_id,
                        describe_error(error),
                    )
                    self.sleep(self.poll_interval)
                    continue
                raise StreamError(
                    f"{self.table}: cannot read the stream: {describe_error(error)}"
                ) from None
            records = [
                dict(record, eventSourceARN=stream_arn) for record in page.get("RawRecords", [])
            ]
            if records:
                moved = True
                empty_pages = 0
                for batch in batched(records, self.batch_size):
                    self._apply(batch, shard, checkpoint, report)
                    if self.stop.is_set():
                        return _ShardOutcome(moved, finished=False)
            iterator = page.get("NextShardIterator")
            if iterator is None:
                checkpoint.finish(shard.shard_id)
                self.store.save(checkpoint.to_document())
                report.shards_finished += 1
                return _ShardOutcome(True, finished=True)
            if not records:
                empty_pages += 1
                if shard.closed:
                    continue
                if not once or empty_pages >= EMPTY_PAGES_TO_CATCH_UP:
                    return _ShardOutcome(moved, finished=False)
        return _ShardOutcome(moved, finished=False)

    def _iterator(
        self, stream_arn: str, shard: Shard, checkpoint: StreamCheckpoint, report: ConsumerReport
    ) -> str | None:
        position = checkpoint.position(shard.shard_id)
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard.shard_id}
        if position.sequence_number:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=position.sequence_number
            )
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            return self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        except ClientError as error:
            if error_code(error) != "TrimmedDataAccessException":
                raise StreamError(
                    f"{self.table}: cannot open shard {shard.shard_id}: {describe_error(error)}"
                ) from None
        gap = (
            f"{self.table}: shard {shard.shard_id} no longer holds the records after sequence "
            f"number {position.sequence_number} (streams keep 24 hours): changes in between are "
            "missing from the backup; run a backfill to cover them"
        )
        logger.error(gap)
        report.gaps.append(gap)
        kwargs = {
            "StreamArn": stream_arn,
            "ShardId": shard.shard_id,
            "ShardIteratorType": "TRIM_HORIZON",
        }
        return self.streams.get_shard_iterator(**kwargs)["ShardIterator"]

    def _apply(
        self,
        batch: list[dict[str, Any]],
        shard: Shard,
        checkpoint: StreamCheckpoint,
        report: ConsumerReport,
    ) -> None:
        """Apply one batch, retrying from the earliest failed record; checkpoint after each
        success. A record that can never be applied stops the consumer with its reason."""
        delays = self.retry_policy.delays()
        pending = batch
        while pending:
            result = self.processor(pending)
            report.count(result)
            logger.debug(
                "%s: batch of %d from shard %s: applied %s, %d failed",
                self.table,
                len(pending),
                shard.shard_id,
                dict(result.applied),
                len(result.failures),
            )
            self._log_progress(report)
            failure = result.first_failure
            done = pending if failure is None else pending[: failure.index]
            if done:
                checkpoint.advance(shard.shard_id, done[-1]["dynamodb"]["SequenceNumber"])
                self.store.save(checkpoint.to_document())
            if failure is None:
                return
            if not failure.retryable:
                raise StreamError(f"{self.table}: {failure.reason}")
            pending = pending[failure.index :]
            delay = next(delays, None)
            if delay is None:
                raise StreamError(
                    f"{self.table}: record {failure.sequence_number} still failing after "
                    f"{self.retry_policy.max_attempts} attempts: {failure.reason}"
                )
            logger.warning("%s: %s; retrying in %.1fs", self.table, failure.reason, delay)
            self.sleep(delay)

    def _log_progress(self, report: ConsumerReport) -> None:
        now = time.monotonic()
        if now - self._progress_logged_at >= self.progress_interval:
            self._progress_logged_at = now
            counts = ", ".join(
                f"{name} {count:,}" for name, count in sorted(report.applied.items())
            )
            logger.info("%s: %s records so far (%s)", self.table, f"{report.records:,}", counts)
