"""Read a table's stream through the DynamoDB Streams API and feed the records, shaped
exactly as Lambda delivers them, to the same code the Lambda handler runs.

All shards are read, parents before children, from TRIM_HORIZON on the first start and from
the checkpoint after that. The checkpoint moves only after a batch has been applied, so a
crash or Ctrl-C loses nothing: the next run replays at most the batch that was in flight.

Each shard's iterator is kept from one GetRecords call to the next (empty pages included) and
renewed from the checkpoint only when it expires, so an empty stretch of a shard is walked
once. When a shard counts as read to its end is ``draining``'s to say. When the table's
stream was replaced, the old one is first read to its end (streams stay readable 24 hours
after they are turned off); only what is really gone is reported as a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.aws.retry import (
    RetriesExhausted,
    RetryPolicy,
    call_with_retries,
    deadline_clock,
)
from dynamo_backups.aws.streams import enable_raw_records
from dynamo_backups.backup.checkpoints import (
    CheckpointError,
    CheckpointStore,
    LeaseHeld,
    LeaseLost,
    StreamCheckpoint,
)
from dynamo_backups.core.draining import CLOSED, DrainRule, ShardCursor
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.stream_records import BatchResult, RecordFailure
from dynamo_backups.core.wording import counted
from dynamo_backups.pipeline.stream_source import Shard, StreamError, ready_shards, stream_of_table

logger = logging.getLogger("dynamo_backups.streams")

LAMBDA_BATCH_SIZE = 100
GET_RECORDS_LIMIT = 1000
SHARD_LIST_REFRESH_SECONDS = 60.0
LEASE_RECHECK_SECONDS = 10.0  # how often a consumer waiting for a lease reads it again
# A consumer run with --once gives up taking the lease after this many rounds of failed
# attempts (S3 unreachable); a follow-mode consumer (a standby) keeps trying.
ONCE_TAKE_ROUNDS = 3
WAITING_SAID_EVERY_SECONDS = 60.0

# ``processor(records)``, or ``processor(records, deadline=...)`` when the checkpoint's lease
# bounds the writes: a ``deadline_clock()`` value after which no write may start.
Processor = Callable[..., BatchResult]


@dataclass(frozen=True)
class _Taken:
    """A checkpoint whose lease this consumer took: the document it held (None: none yet)."""

    document: dict[str, Any] | None


@dataclass(frozen=True)
class _Step:
    records: int = 0
    finished: bool = False


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
    shard_ends: dict[str, str] = field(default_factory=dict)  # how each shard's reading ended

    def count(self, result: BatchResult) -> None:
        self.records += result.applied_count
        self.batches += 1
        for event_name, count in result.applied.items():
            self.applied[event_name] = self.applied.get(event_name, 0) + count


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
        drain: DrainRule | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self.drain = drain or DrainRule()
        self.clock = clock
        self._progress_logged_at = time.monotonic()
        self._waiting_said_at: float | None = None
        enable_raw_records(streams)

    # --- the run loop ------------------------------------------------------------------------

    def run(self, once: bool) -> ConsumerReport:
        """Consume until every shard is drained (``once``) or until ``stop`` is set."""
        stream_arn, _ = stream_of_table(self.dynamodb, self.table, self.retry_policy)
        report = ConsumerReport(self.table, stream_arn)
        try:
            taken = self._take_lease(stream_arn, once)
            if taken is None:
                return report  # asked to stop while waiting for another consumer's lease
            checkpoint = self._load_checkpoint(stream_arn, taken.document, report)
            self._consume(stream_arn, checkpoint, report, once)
        finally:
            self._release()
        return report

    def _release(self) -> None:
        """Release the lease at the end of a run; a failure is logged, never raised (it
        would mask the run's own outcome; the lease then lapses on its own)."""
        try:
            self.store.release()
        except Exception as error:
            logger.warning(
                "%s: could not release the lease of %s: %s",
                self.table,
                self.store.describe(),
                describe_error(error),
            )

    # --- the checkpoint's lease: one consumer writes at a time ---------------------------------

    def _take_lease(self, stream_arn: str, once: bool) -> _Taken | None:
        """Load the checkpoint and take its lease (a save of what was loaded) before writing
        anything. While another consumer holds it: in follow mode, wait as its standby until
        it lapses or is released; with ``once``, wait only for a lease nobody renews (a
        crashed holder elsewhere), and refuse one whose holder is seen running. None when
        asked to stop meanwhile. S3 failures that outlast the retries (an outage, a takeover
        that landed unanswered) are waited out and the lease tried again."""
        failed_rounds = 0
        while not self.stop.is_set():
            try:
                document = self.store.load()
                fresh = StreamCheckpoint(self.table, stream_arn).to_document()
                self.store.save(document if document is not None else fresh)
                if not self._settle():
                    return None
                return _Taken(document)
            except RetriesExhausted as error:
                failed_rounds += 1
                if once and failed_rounds >= ONCE_TAKE_ROUNDS:
                    raise
                logger.warning(
                    "%s: cannot read or take the lease of %s for now (%s); trying again",
                    self.table,
                    self.store.describe(),
                    error,
                )
                self.stop.wait(min(LEASE_RECHECK_SECONDS, self.poll_interval * 2**failed_rounds))
            except LeaseHeld as held:
                if once and (held.running_here or held.renewed):
                    raise CheckpointError(
                        f"{held}: --once does not wait for a consumer that is running; stop "
                        "it, or run without --once to wait as its standby"
                    ) from None
                self._say_waiting(held, once)
                self.stop.wait(max(0.05, min(held.expires_in, LEASE_RECHECK_SECONDS)))
            except LeaseLost:  # taken by another consumer between our read and our write
                self.stop.wait(self.poll_interval)
        return None

    def _settle(self) -> bool:
        """After taking a lease over from a holder that did not release it, wait out the
        writes it may still have had in flight before writing anything (renewing the lease
        meanwhile). False when asked to stop meanwhile."""
        wait_until = time.monotonic() + self.store.settle_seconds()
        while (left := wait_until - time.monotonic()) > 0:
            if self.stop.wait(min(left, 1.0)):
                return False
            self._renew_lease()
        return not self.stop.is_set()

    def _say_waiting(self, held: LeaseHeld, once: bool) -> None:
        now = time.monotonic()
        if self._waiting_said_at is None or now - self._waiting_said_at >= (
            WAITING_SAID_EVERY_SECONDS
        ):
            self._waiting_said_at = now
            logger.warning(
                "%s: %s; waiting for it to lapse or be released%s",
                self.table,
                held,
                " (--once: as long as nobody renews it)" if once else "",
            )

    def _renew_lease(self) -> float | None:
        """Renew the checkpoint's lease when due; the ``deadline_clock()`` value after which
        no write may start (None: no limit). A renewal that fails for now is tried again on
        the next call; meanwhile the deadline it did not extend stops the writes."""
        try:
            self.store.heartbeat()
        except RetriesExhausted as error:
            logger.warning(
                "%s: could not renew the lease of %s (%s); no write starts once it may lapse",
                self.table,
                self.store.describe(),
                error,
            )
        return self.store.write_deadline()

    def _save(self, checkpoint: StreamCheckpoint) -> None:
        self.store.save(checkpoint.to_document())

    def _consume(
        self, stream_arn: str, checkpoint: StreamCheckpoint, report: ConsumerReport, once: bool
    ) -> None:
        """One GetRecords call per ready shard per round, each shard's iterator kept."""
        cursors: dict[str, ShardCursor] = {}
        drained: set[str] = set()
        shards: list[Shard] | None = None
        listed_at = 0.0
        while not self.stop.is_set():
            if shards is None or self.clock() - listed_at > SHARD_LIST_REFRESH_SECONDS:
                shards, listed_at = self._list_shards(stream_arn), self.clock()
                self._note_vanished_shards(shards, checkpoint, report)
            todo = [s for s in ready_shards(shards, checkpoint) if s.shard_id not in drained]
            if once and not todo:
                return
            records = 0
            for shard in todo:
                if self.stop.is_set():
                    return
                step = self._step(stream_arn, shard, cursors, checkpoint, report)
                records += step.records
                cursor = cursors.get(shard.shard_id)
                if step.finished:
                    report.shard_ends[shard.shard_id] = CLOSED
                    shards = None  # its children become readable: list them
                elif (
                    once
                    and not shard.closed  # a closed shard ends only without NextShardIterator
                    and cursor is not None
                    and cursor.drained(self.drain, self.clock())
                ):
                    drained.add(shard.shard_id)
                    report.shard_ends[shard.shard_id] = cursor.drained_description(self.clock())
            self._renew_lease()
            if not records:
                self.stop.wait(self.drain.page_interval if once else self.poll_interval)

    def _load_checkpoint(
        self, stream_arn: str, document: dict[str, Any] | None, report: ConsumerReport
    ) -> StreamCheckpoint:
        if document is None:
            logger.info(
                "%s: no checkpoint at %s; reading from TRIM_HORIZON",
                self.table,
                self.store.describe(),
            )
            return StreamCheckpoint(self.table, stream_arn)
        checkpoint = StreamCheckpoint.from_document(document)
        if checkpoint.stream_arn == stream_arn:
            return checkpoint
        self._finish_old_stream(checkpoint, report)
        gap = (
            f"{self.table}: the table's stream was turned off and on: the old stream "
            f"{checkpoint.stream_arn} was read to its end, and the new one, {stream_arn}, is "
            "read from its start; changes made while no stream was on were seen by neither: "
            "run a backfill to cover them"
        )
        logger.error(gap)
        report.gaps.append(gap)
        fresh = StreamCheckpoint(self.table, stream_arn)
        self._save(fresh)
        return fresh

    def _finish_old_stream(self, checkpoint: StreamCheckpoint, report: ConsumerReport) -> None:
        """Read a replaced stream from the checkpoint to its end, while it is still kept."""
        try:
            self._list_shards(checkpoint.stream_arn)
        except StreamError as error:
            gap = (
                f"{self.table}: the old stream {checkpoint.stream_arn} can no longer be read "
                f"({error}); its changes after the checkpoint are missing from the backup: "
                "run a backfill to cover them"
            )
            logger.error(gap)
            report.gaps.append(gap)
            return
        logger.warning(
            "%s: the table has a new stream; reading the old one, %s, to its end first",
            self.table,
            checkpoint.stream_arn,
        )
        self._consume(checkpoint.stream_arn, checkpoint, report, once=True)

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

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        """A Streams call with the retry policy; a clear StreamError when it cannot succeed."""
        try:
            return call_with_retries(operation, self.retry_policy, f"{self.table}: {what}")
        except RetriesExhausted as error:
            raise StreamError(str(error)) from None

    def _list_shards(self, stream_arn: str) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            try:
                answer = self._call(
                    f"describe stream {stream_arn}",
                    lambda kwargs=dict(kwargs): self.streams.describe_stream(**kwargs),
                )
            except ClientError as error:
                raise StreamError(
                    f"cannot describe stream {stream_arn}: {describe_error(error)}"
                ) from None
            description = answer["StreamDescription"]
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

    def _step(
        self,
        stream_arn: str,
        shard: Shard,
        cursors: dict[str, ShardCursor],
        checkpoint: StreamCheckpoint,
        report: ConsumerReport,
    ) -> _Step:
        """One GetRecords call on a shard with the iterator it holds; apply what it returns."""
        cursor = cursors.get(shard.shard_id)
        if cursor is None or cursor.must_renew(self.clock()):
            cursor = self._open(stream_arn, shard, checkpoint, report, cursor)
            cursors[shard.shard_id] = cursor
        try:
            page = self._call(
                f"read shard {shard.shard_id}",
                lambda: self.streams.get_records(
                    ShardIterator=cursor.iterator, Limit=GET_RECORDS_LIMIT
                ),
            )
        except ClientError as error:
            if error_code(error) in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                del cursors[shard.shard_id]  # renewed from the checkpoint on the next round
                return _Step()
            raise StreamError(
                f"{self.table}: cannot read the stream: {describe_error(error)}"
            ) from None
        records = [dict(record, eventSourceARN=stream_arn) for record in page.get("RawRecords", [])]
        for batch in batched(records, self.batch_size):
            self._apply(batch, shard, checkpoint, report)
            if self.stop.is_set():
                return _Step(len(records))
        next_iterator = page.get("NextShardIterator")
        if next_iterator is None:
            checkpoint.finish(shard.shard_id)
            self._save(checkpoint)
            report.shards_finished += 1
            del cursors[shard.shard_id]
            return _Step(len(records), finished=True)
        cursor.advance(next_iterator, bool(records), self.clock())
        return _Step(len(records))

    def _open(
        self,
        stream_arn: str,
        shard: Shard,
        checkpoint: StreamCheckpoint,
        report: ConsumerReport,
        previous: ShardCursor | None,
    ) -> ShardCursor:
        """An iterator from the checkpoint: after its sequence number, or TRIM_HORIZON."""
        position = checkpoint.position(shard.shard_id)
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard.shard_id}
        if position.sequence_number:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=position.sequence_number
            )
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            iterator = self._call(
                f"open shard {shard.shard_id}",
                lambda: self.streams.get_shard_iterator(**kwargs)["ShardIterator"],
            )
        except ClientError as error:
            if error_code(error) != "TrimmedDataAccessException":
                raise StreamError(
                    f"{self.table}: cannot open shard {shard.shard_id}: {describe_error(error)}"
                ) from None
            gap = (
                f"{self.table}: shard {shard.shard_id} no longer holds the records after "
                f"sequence number {position.sequence_number} (streams keep 24 hours): changes "
                "in between are missing from the backup; run a backfill to cover them"
            )
            logger.error(gap)
            report.gaps.append(gap)
            kwargs = {
                "StreamArn": stream_arn,
                "ShardId": shard.shard_id,
                "ShardIteratorType": "TRIM_HORIZON",
            }
            iterator = self._call(
                f"open shard {shard.shard_id}",
                lambda: self.streams.get_shard_iterator(**kwargs)["ShardIterator"],
            )
        cursor = ShardCursor(iterator, self.clock())
        if previous is not None:  # a renewal keeps the run of empty pages it had counted
            cursor.empty_pages, cursor.empty_since = previous.empty_pages, previous.empty_since
        return cursor

    def _apply(
        self,
        batch: list[dict[str, Any]],
        shard: Shard,
        checkpoint: StreamCheckpoint,
        report: ConsumerReport,
    ) -> None:
        """Apply one batch, retrying from the earliest failed record; checkpoint after each
        success. A record that can never be applied stops the consumer with its reason.
        Every attempt renews the checkpoint's lease when due and writes only while it holds
        (see docs/layout.md, "One consumer at a time")."""
        delays = self.retry_policy.delays()
        pending = batch
        while pending:
            deadline = self._renew_lease()
            if deadline is not None and deadline <= deadline_clock():
                result = self._lease_lapsed(pending)
            else:
                options = {} if deadline is None else {"deadline": deadline}
                result = self.processor(pending, **options)
                report.count(result)
            logger.debug(
                "%s: batch of %d from shard %s: %d applied, %d failed",
                self.table,
                len(pending),
                shard.shard_id,
                sum(result.applied.values()),
                len(result.failures),
                extra={
                    "fields": {
                        "table": self.table,
                        "shard": shard.shard_id,
                        "records": len(pending),
                        "applied": dict(result.applied),
                        "failed": len(result.failures),
                    }
                },
            )
            self._log_progress(report)
            failure = result.first_failure
            done = pending if failure is None else pending[: failure.index]
            if done:
                checkpoint.advance(shard.shard_id, done[-1]["dynamodb"]["SequenceNumber"])
                self._save(checkpoint)
                # Only attempts that got nowhere count against the budget: one cut short by
                # the write deadline after some progress starts a fresh one.
                delays = self.retry_policy.delays()
            if failure is None:
                return
            if not failure.retryable:
                raise StreamError(f"{self.table}: {failure.reason}")
            pending = pending[failure.index :]
            delay = next(delays, None)
            if delay is None:
                raise StreamError(
                    f"{self.table}: record {failure.sequence_number} still failing after "
                    f"{counted(self.retry_policy.max_attempts, 'attempt')}: {failure.reason}"
                )
            logger.warning("%s: %s; retrying in %.1fs", self.table, failure.reason, delay)
            self.sleep(delay)

    def _lease_lapsed(self, pending: list[dict[str, Any]]) -> BatchResult:
        """Nothing written: the lease may have lapsed since its last renewal."""
        result = BatchResult(record_count=len(pending))
        reason = (
            f"the lease of {self.store.describe()} was not renewed in time: writing nothing "
            "until it is"
        )
        sequence_number = pending[0].get("dynamodb", {}).get("SequenceNumber")
        result.failures.append(RecordFailure(0, sequence_number, reason, retryable=True))
        return result

    def _log_progress(self, report: ConsumerReport) -> None:
        now = time.monotonic()
        if now - self._progress_logged_at >= self.progress_interval:
            self._progress_logged_at = now
            counts = ", ".join(
                f"{name} {count:,}" for name, count in sorted(report.applied.items())
            )
            logger.info("%s: %s records so far (%s)", self.table, f"{report.records:,}", counts)
