"""Backfill: copy every existing row of a table into its backup, so the stream's changes have
a base. Safe while the stream handler is live:

- an item is written only if its object has no current version (``If-None-Match: *``), so a
  state the stream already wrote is never replaced by an older scanned image;
- S3 lets that write through when the current version is a delete marker. A pass over the
  version listing after the copy finds every backfill version that landed on top of a removal
  and writes the removal again on top of it, conditionally on the backfill version still being
  current (so a newer stream write always wins). A deleted item never comes back: the pass is
  recorded as pending, per run, before the first write and cleared only once a pass has run
  over the run's writes; it runs even when a unit fails or the run is interrupted (Ctrl-C), and
  a completed pass also clears the pending pass of a run that has provably ended (its run
  lease released or lapsed: see ``backup.removal_check``).
- Versions are dated by DynamoDB's clock, not the host's, so a host whose clock is off cannot
  misdate them for point-in-time restores: a page's reads by the ``Date`` of a clock probe
  sent just before the page (``DatedScan``: the same Scan, one item, ``Select=COUNT``), never
  by the page's own answer, which comes after its reads: a change made between a read and
  that answer, in an earlier second, would be placed before the read and lose to it. Dated
  no later than the read, a read never wins over a change made after it (docs/layout.md,
  "The stream's order, exactly"); dated just before it, a read is not placed before changes
  it reflects that were made while the previous page was written. An export's rows by its
  time.

The work is split into units (``core.units``): one per parallel-scan segment, or one per
data file of a DynamoDB export (``--from-export``: no read capacity used); then the removal
check, one unit per partition of the folder. Units run on any engine; each is recorded in the
job's ledger when done, and a segment also keeps its place after every page, so ``--resume``
continues where an interrupted run stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.errors import describe_error
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.description import (
    check_same_table,
    describe_table,
    key_types_of,
    save_description,
)
from dynamo_backups.backup.layouts import LAYOUT_ITEMS
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.manifest import ensure_manifest, folder_layout_for
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.removal_check import (
    PendingRemovalCheck,
    RunMarker,
    ended_runs_pending,
    mark_check_done,
    mark_check_pending,
)
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.writer import BackupWriter, ItemPuts
from dynamo_backups.core.cancel import Cancelled, Interrupted
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import (
    EVENT_SNAPSHOT,
    WRITER_BACKFILL,
    LayoutError,
    TableLayout,
    VersionMetadata,
    format_time,
    utc_now,
)
from dynamo_backups.core.parallel import ThreadEngine, shared_pool
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    SAMPLE_LIMIT,
    UnitContext,
    UnitResult,
    WorkUnit,
    file_units,
    merge_results,
    partition_units,
    segment_units,
)
from dynamo_backups.jobs.backfill_removals import restore_removals_under_backfill
from dynamo_backups.jobs.export_source import (
    ExportSource,
    iter_export_items,
    missed_before_stream,
    open_export,
    request_export,
)
from dynamo_backups.jobs.scan_segments import scan_pages
from dynamo_backups.jobs.units import Engine, StageOutcome, run_stage

logger = logging.getLogger("dynamo_backups.jobs.backfill")

CHECKPOINT_FORMAT = "dynamo-backups-backfill-segment"
EXPORT_PAGE = 1000  # items of an export file written between two rate-limit checks
NEW_EXPORT = "new"


@dataclass(frozen=True)
class BackfillOptions:
    total_segments: int = 8
    segment: int | None = None  # only this one of total_segments (spread over hosts)
    max_items_per_second: float | None = None
    resume: bool = False
    concurrency: int = 64  # S3 puts in flight per worker process, shared by its units
    page_size: int | None = 1000  # items per Scan page: bounds memory (DynamoDB caps pages at 1 MB)
    from_export: str | None = None  # "new": ask DynamoDB for an export; or an export's s3:// URL
    partitions: int = 16  # of the folder, for the removal check
    folder_layout: str | None = None  # --layout: None, the folder's own (items when new)


class JournalFolderForItemBackfill(LayoutError):
    """The item layout's backfill given a journal folder (``jobs/layouts.backfill_job`` chooses
    the journal's own backfill for one): item objects there would be read by no reader."""


@dataclass
class BackfillReport:
    table: str
    scanned: int = 0
    written: int = 0
    already_backed_up: int = 0
    removals_restored: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    segments_done: list[int] = field(default_factory=list)
    units: int = 0
    unfinished_units: list[str] = field(default_factory=list)
    export: dict[str, Any] | None = None
    unit_seconds: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False  # the copy did not run to its end (Ctrl-C)
    not_whole: str | None = None  # why a full copy is still no whole copy of the table

    @property
    def complete(self) -> bool:
        return not self.failed and not self.unfinished_units and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def details(self) -> list[str]:
        """Lines the command adds to its summary (the journal's backfill names its base)."""
        return []


class Backfill:
    """Backfills one table into ``layout``'s folder. The clients given are used in this
    process; workers elsewhere make their own from ``aws``."""

    def __init__(
        self,
        dynamodb: Any,
        scan: Callable[[dict[str, Any]], dict[str, Any]],
        writer: BackupWriter,
        layout: TableLayout,
        options: BackfillOptions,
        progress: ProgressSink | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        aws: AwsContext | None = None,
    ) -> None:
        self.clock = clock  # only where DynamoDB's own clock is not at hand
        self.bucket = writer.bucket
        self.clients = ClientSource(aws, dynamodb=dynamodb, scan=scan, writer=writer)
        self.layout = layout
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=10, base_delay=0.1, max_delay=10
        )
        self.report = BackfillReport(layout.table)
        self.key_names: list[str] = []
        self.job_run: JobRun | None = None
        self.export: ExportSource | None = None
        self.described: dict[str, Any] = {}  # DescribeTable's, as the run began

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress()}

    # --- clients, here or in a worker ----------------------------------------------------------

    def writer(self) -> BackupWriter:
        concurrency = self.options.concurrency

        def make(aws: AwsContext) -> BackupWriter:
            s3 = aws.client("s3", pool=concurrency, retries=1)
            return BackupWriter(s3, self.bucket, objects=aws.objects(s3, self.bucket, concurrency))

        return self.clients.get("writer", make, variant=f"{self.bucket}:{concurrency}")

    ledger_writer = writer

    def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        def make(aws: AwsContext) -> Callable[[dict[str, Any]], dict[str, Any]]:
            api = aws.dynamodb_api(aws.client("dynamodb", pool=16, retries=1))
            return lambda scan_request: api.call("Scan", scan_request)

        return self.clients.get("scan", make)(request)

    def dynamodb(self) -> Any:
        return self.clients.get("dynamodb", lambda aws: aws.client("dynamodb"))

    # --- the run ------------------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> BackfillReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(self.default_workers())
        writer = self.writer()
        chosen = self._check_layout(writer)
        description = describe_table(self.dynamodb(), self.layout.table)
        check_same_table(writer.s3, self.bucket, self.layout, description["table"])
        save_description(writer, self.layout, description)
        ensure_manifest(
            writer,
            self.layout,
            description["table"]["KeySchema"],
            key_types_of(description),
            chosen,
        )
        self.key_names = key_attribute_names(description["table"]["KeySchema"])
        self.described = description["table"]  # its stream's state, for an export's run
        self.progress.set_total(description["table"].get("ItemCount") or None)
        ledger = JobLedger(writer, self.layout, self._job_name(), self.clock)
        self.job_run = ledger.begin(self._parameters(), self.options.resume)
        # One live attempt of a run at a time; the lease also tells other runs' removal checks
        # whether this one still writes.
        lease = RunLease(writer, self.job_run)
        lease.acquire()
        settled = True
        try:
            marker = self._note_pending_check(writer, lease)
            return self._run_attempt(engine, writer, ledger, marker, started)
        except Interrupted as stop:
            settled = stop.settled
            raise
        finally:
            if settled:
                lease.release()
            else:  # units may still write: the run must not look ended until its lease lapses
                lease.abandon()

    def _run_attempt(
        self,
        engine: Engine,
        writer: BackupWriter,
        ledger: JobLedger,
        marker: RunMarker,
        started: float,
    ) -> BackfillReport:
        assert self.job_run is not None
        copied = StageOutcome()
        units: list[WorkUnit] = []
        stopped: Interrupted | None = None
        copy_ended = False
        try:
            units = self._copy_units(writer)
            copied = run_stage(
                self,
                ledger,
                self.job_run,
                units,
                engine,
                self.options.max_items_per_second,
                self.progress,
            )
            copy_ended = True
        except KeyboardInterrupt as stop:  # Ctrl-C, in the engine's stage or around it
            stopped = stop if isinstance(stop, Interrupted) else Interrupted()
            if stopped.job is None:  # stopped outside the stage: the run is still the job's
                stopped.job, stopped.run_id = ledger.job, self.job_run.run_id
            copied = StageOutcome(results=stopped.results)
        finally:
            # Whatever ended the copy early (Ctrl-C, an error) leaves the run unfinished:
            # --resume continues it, never a fresh run that believes it is complete.
            self.report.interrupted = not copy_ended
            if stopped is not None:
                logger.warning(
                    "%s: stopping; checking the rows written so far against deletions "
                    "(Ctrl-C again to quit at once: the next run checks them)",
                    self.layout.table,
                )
            # Whatever was written must be checked against deletions, however the run ends;
            # the check runs in full every time (a unit done earlier may predate new writes).
            # It lists the whole folder, so it also covers the writes of runs that had ended
            # before it began: their markers are found now, before it begins.
            covered = self._ended_runs(writer, marker)
            checked = run_stage(
                self,
                ledger,
                self.job_run,
                partition_units(self.options.partitions, "removals"),
                engine,
                None,
                self.progress,
                resumable=False,
            )
            unsettled = stopped is not None and not stopped.settled  # units may still write
            self._report(copied, checked, started, units)
            if (
                not unsettled
                and not checked.failures
                and all(result.complete for result in checked.results)
            ):
                # Whether the run copied every row of its job: readers date the folder's
                # first whole copy of the table by it (``removal_check.whole_since``).
                whole_from = self.export.export_time if self.export is not None else None
                copied_whole = self.report.complete and self.report.not_whole is None
                mark_check_done(writer, marker, covered, self.clock(), copied_whole, whole_from)
            ledger.finish(self.job_run, self.report.complete, self.report.to_dict())
        if stopped is not None:
            stopped.detail = (
                f"{self.report.scanned:,} rows read, {self.report.written:,} written so far"
            )
            raise stopped
        return self.report

    def _check_layout(self, writer: BackupWriter) -> str:
        """The folder's layout, before anything is written: item objects copied into a
        journal folder would be read by no journal reader (lost to restores), so a journal
        folder is refused here; ``jobs/layouts.backfill_job`` gives it the journal's
        backfill."""
        chosen = folder_layout_for(writer, self.layout, self.options.folder_layout)
        if chosen == LAYOUT_ITEMS:
            return chosen
        raise JournalFolderForItemBackfill(
            f"s3://{writer.bucket}/{self.layout.items_prefix} is (or would become) a "
            f"{chosen} folder: the item layout's backfill does not write there (nothing was "
            "written); jobs.layouts.backfill_job chooses the backfill of its layout"
        )

    def default_workers(self) -> int:
        """Units at once on the threads engine: every segment, as one scan would; never more
        than ``concurrency``, which bounds the puts in flight (each unit keeps one at least)."""
        units = 8 if self.options.from_export else self.options.total_segments
        if self.options.segment is not None:
            units = 1
        return max(1, min(64, units, self.options.concurrency))

    def _job_name(self) -> str:
        """The ledger's job: scans of the whole table, of one segment, and export copies
        each keep their own runs (a --resume of one never meets a run of another)."""
        if self.options.from_export:
            return "backfill-from-export"
        if self.options.segment is None:
            return "backfill"
        return f"backfill-segment-{self.options.segment}-of-{self.options.total_segments}"

    def _parameters(self) -> dict[str, Any]:
        return {
            "total_segments": self.options.total_segments,
            "segment": self.options.segment,
            "from_export": self.options.from_export,
            "key_hash": self.layout.key_hash,
        }

    def _note_pending_check(self, writer: BackupWriter, lease: RunLease) -> RunMarker:
        """This run's marker (in S3, for readers anywhere) says its removal check is pending
        from before its first write until a check has run in full over its writes."""
        assert self.job_run is not None
        marker = mark_check_pending(
            writer,
            self.layout,
            self._job_name(),
            self.job_run.run_id,
            lease.key,
            self._parameters(),
            self.clock(),
        )
        if marker.earlier is not None:
            logger.warning(
                "%s: the attempt of this run begun at %s stopped before checking its writes "
                "against deletions; this one checks them",
                self.layout.table,
                marker.earlier.document.get("since"),
            )
        return marker

    def _ended_runs(self, writer: BackupWriter, marker: RunMarker) -> list[PendingRemovalCheck]:
        """The pending checks of ended runs that this run's check will cover; none when they
        cannot be read (they stay pending: this run's own check is never held up by them)."""
        try:
            covered = ended_runs_pending(writer, self.layout, marker)
        except Exception as error:
            logger.warning(
                "%s: the pending checks of other runs could not be read (%s): they stay pending",
                self.layout.table,
                describe_error(error),
            )
            return []
        for check in covered:
            logger.warning(
                "%s: a backfill run (%s, begun %s) ended before checking its writes against "
                "deletions; this run's check covers them",
                self.layout.table,
                check.job,
                check.document.get("since"),
            )
        return covered

    def _copy_units(self, writer: BackupWriter) -> list[WorkUnit]:
        if not self.options.from_export:
            return segment_units(self.options.total_segments, self.options.segment)
        self.export = self._export_source(writer)
        self.report.not_whole = missed_before_stream(self.export, self.described)
        if self.report.not_whole is not None:
            logger.warning("%s", self.report.not_whole)
        logger.info(
            "%s: export of %s, %d data files",
            self.layout.table,
            format_time(self.export.export_time),
            len(self.export.data_keys),
        )
        return file_units(self.export.data_keys, "file")

    def _export_source(self, writer: BackupWriter) -> ExportSource:
        assert self.job_run is not None
        saved_key = self.job_run.scratch_prefix + "export.json"
        if self.job_run.resumed:
            saved = read_document(writer.s3, writer.bucket, saved_key)
            if saved is not None:
                return ExportSource.from_dict(saved)  # never ask DynamoDB for a second export
        if self.options.from_export == NEW_EXPORT:
            source = request_export(
                self.dynamodb(),
                writer.s3,
                self.layout.table,
                self.bucket,
                f"{self.layout.meta_prefix}exports/{self.job_run.run_id}",
            )
        else:
            source = open_export(writer.s3, str(self.options.from_export))
        writer.put_document(saved_key, source.to_dict())
        return source

    # --- one unit, wherever it runs -----------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        if unit.stage == "removals":
            restored = restore_removals_under_backfill(self.writer(), self.layout, unit.partition)
            return UnitResult(unit.id, {"removals_restored": restored})
        if unit.stage == "file":
            return self._copy_export_file(unit, context)
        return self._copy_segment(unit, context)

    def _copy_segment(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.job_run is not None and unit.segment is not None
        writer = self.writer()
        place_key = f"{self.job_run.scratch_prefix}{unit.id}.json"
        place = read_document(writer.s3, writer.bucket, place_key) if self.job_run.resumed else None
        place = place or {}
        result = UnitResult(unit.id, dict(place.get("counts") or {}))
        result.outputs = [{"segment": unit.segment}]
        if place.get("done"):
            return result
        if place:
            logger.info(
                "%s: resuming %s after %s rows",
                self.layout.table,
                unit.id,
                result.counts.get("scanned", 0),
            )
        dated = DatedScan(self.scan, self.layout.table)
        pages = scan_pages(
            dated,
            self.layout.table,
            unit.segment,
            int(unit.total_segments or 1),
            self.retry_policy,
            limit=self.options.page_size,
            start_key=place.get("last_evaluated_key"),
            cancel=context.cancel,
        )
        puts = self._item_puts(writer)
        try:
            return self._copy_pages(unit, pages, dated, place_key, result, context, puts)
        except Cancelled:
            # Stopped between pages: its place (the last page written) is saved, and the
            # unit is not recorded as done, so --resume continues it from there.
            result.complete = False
            return result
        finally:
            if puts is not None:
                puts.close()

    def _item_puts(self, writer: BackupWriter) -> ItemPuts | None:
        """This unit's first attempts of its puts, from its own thread, where the writer's
        transport offers them (``BackupWriter.item_puts``)."""
        return writer.item_puts(self.puts_in_flight())

    def puts_in_flight(self) -> int:
        """Puts one unit keeps in flight: ``concurrency`` shared by the units that run at once
        (8 each for the default 64 and 8 segments, which on SeaweedFS costs the client less CPU
        than 32 each and is as fast: docs/performance.md, "Backfill's conditional puts through
        libcurl"), at least one."""
        return max(1, self.options.concurrency // self.default_workers())

    def _copy_pages(
        self,
        unit: WorkUnit,
        pages: Iterator[dict[str, Any]],
        dated: DatedScan,
        place_key: str,
        result: UnitResult,
        context: UnitContext,
        puts: ItemPuts | None = None,
    ) -> UnitResult:
        writer = self.writer()
        for page in pages:
            items = page.get("Items", [])
            context.cancel.check()
            context.limiter.acquire(len(items))
            assert dated.read_after is not None  # the page's probe came first
            if not self._copy_items(items, dated.read_after, result, context, puts):
                logger.error(
                    "%s: %s stopped at a failed page; --resume retries it",
                    self.layout.table,
                    unit.id,
                )
                result.complete = False
                return result
            start_key = page.get("LastEvaluatedKey")
            place = {
                "format": CHECKPOINT_FORMAT,
                "unit": unit.id,
                "last_evaluated_key": start_key,
                "done": start_key is None,
                "counts": result.counts,
            }
            writer.put_document(place_key, place)
        return result

    def _copy_export_file(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.export is not None and unit.source is not None
        result = UnitResult(unit.id)
        items = iter_export_items(self.writer().s3, self.export.bucket, unit.source)
        puts = self._item_puts(self.writer())
        try:
            while page := list(islice(items, EXPORT_PAGE)):
                context.cancel.check()  # a file stopped midway is done again on --resume
                context.limiter.acquire(len(page))
                if not self._copy_items(page, self.export.export_time, result, context, puts):
                    result.complete = False
                    return result
        finally:
            if puts is not None:
                puts.close()
        return result

    def _copy_items(
        self,
        items: list[dict[str, Any]],
        read_at: datetime,
        result: UnitResult,
        context: UnitContext,
        puts: ItemPuts | None = None,
    ) -> bool:
        """Write the items the backup lacks; False when some could not be written. With
        ``puts``, each item's first attempt goes from this thread, many in flight; the items
        it does not settle (an error, a reset, a key it cannot send) are put by the pool."""
        metadata = VersionMetadata(
            WRITER_BACKFILL, EVENT_SNAPSHOT, read_at, None, self.layout.key_hash
        )
        writer = self.writer()
        outcomes = self._first_attempts(puts, items, metadata) if puts else [None] * len(items)
        rest = [number for number, outcome in enumerate(outcomes) if outcome is None]
        if rest:

            def put(number: int) -> str:
                return self._copy_item(writer, items[number], metadata)

            pool = shared_pool("backfill-put", self.options.concurrency)
            for number, outcome in zip(rest, pool.map(put, rest), strict=True):
                outcomes[number] = outcome
        result.add("scanned", len(items))
        for outcome in outcomes:
            if outcome in ("written", "already_backed_up"):
                result.add(outcome)
            else:
                result.add("failed")
                result.sample("failures", outcome)
        context.progress.advance(len(items))
        return result.counts.get("failed", 0) == 0

    def _first_attempts(
        self, puts: ItemPuts, items: list[dict[str, Any]], metadata: VersionMetadata
    ) -> list[str | None]:
        """Each item's outcome as its first attempt through ``puts`` settled it; None for
        those it did not (``_copy_item`` puts them)."""
        writes = [
            (self.layout.item_object_key(extract_key(item, self.key_names)), dumps_item(item))
            for item in items
        ]
        return [
            None
            if not attempt.settled
            else "already_backed_up"
            if attempt.version is None
            else "written"
            for attempt in puts.put_items_if_absent(writes, metadata)
        ]

    def _copy_item(
        self, writer: BackupWriter, item: dict[str, Any], metadata: VersionMetadata
    ) -> str:
        key = extract_key(item, self.key_names)
        try:
            version = writer.put_item_if_absent(
                self.layout.item_object_key(key), dumps_item(item), metadata
            )
        except Exception as error:
            return f"{dumps_item(key).decode()}: {describe_error(error)}"
        return "already_backed_up" if version is None else "written"

    # --- the report ---------------------------------------------------------------------------

    def _report(
        self,
        copied: StageOutcome,
        checked: StageOutcome,
        started: float,
        units: list[WorkUnit],
    ) -> None:
        merged = merge_results(copied.results)
        report = self.report
        for name in ("scanned", "written", "already_backed_up", "failed"):
            setattr(report, name, merged.count(name))
        report.failures = (
            merged.samples.get("failures", [])
            + [f"{unit}: {reason}" for unit, reason in copied.failures + checked.failures]
        )[:SAMPLE_LIMIT]
        report.segments_done = sorted(
            output["segment"]
            for result in copied.results
            if result.complete
            for output in result.outputs
            if "segment" in output
        )
        report.units = len(copied.results) + len(copied.failures)
        report.unit_seconds = round(merged.unit_seconds, 3)
        removals = merge_results(checked.results)
        report.removals_restored = removals.count("removals_restored")
        report.unfinished_units = sorted(
            {*merged.unfinished, *removals.unfinished}
            | {unit for unit, _ in copied.failures + checked.failures}
        )
        if report.interrupted:  # units that never returned are unfinished too
            ended = {result.unit for result in copied.results if result.complete}
            report.unfinished_units = sorted(
                {*report.unfinished_units} | {unit.id for unit in units if unit.id not in ended}
            )
        report.export = self.export.to_dict() if self.export else None
        report.seconds = round(time.monotonic() - started, 3)


class UndatedAnswer(RuntimeError):
    """DynamoDB answered without a Date header: the reads cannot be dated by its clock."""


class DatedScan:
    """Scan, each page preceded by a probe of DynamoDB's clock: the same request for one item,
    counted only and not strongly consistent (half a read unit), whose answer's ``Date`` is a
    moment DynamoDB's clock had passed before the page was asked for (``read_after``). Every
    attempt of a page, a retried one too, probes again just before it. An answer without a
    Date is an error (``UndatedAnswer``, the unit fails): this host's clock is not
    DynamoDB's, and a read dated late would win over a change made after it."""

    def __init__(self, scan: Callable[[dict[str, Any]], dict[str, Any]], table: str) -> None:
        self.scan = scan
        self.table = table
        self.read_after: datetime | None = None

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        probe = {**request, "Limit": 1, "Select": "COUNT", "ConsistentRead": False}
        self.read_after = answer_time(self.scan(probe))
        if self.read_after is None:
            raise UndatedAnswer(
                f"DynamoDB's answer to a Scan of {self.table} carries no Date header: the "
                "backfill's reads cannot be dated by DynamoDB's clock"
            )
        return self.scan(request)
