"""``backfill`` into a journal folder: a base of the table made from a scan (docs/journal.md,
"The backfill base"), safe while the stream keeps writing journal pieces.

The scan's start S (DynamoDB's clock, the ``Date`` of an answer before the first read,
recorded in the run's scratch folder so every attempt of the run keeps it) is the base's
``reflects_before``: a journal change whose latest moment is at or before it happened before
every read, and readers skip it. Each read is an ``ItemState.snapshot`` (sequence -1) dated
by a moment DynamoDB's clock had passed before the page was asked for: the ``Date`` of the
segment's previous answer, or of an answer before the segment's first page in this attempt.
Dated no later than the read, a read never wins over a change made after it (that change's
latest moment is later, or equal with a sequence number); a change it wins over, or loses to
though it came before the read, is one the read reflects, or is followed by one the read
reflects, which is in the journal too (the trigger was writing before S). The base's moment M
is the second after the last answer of the scan; its ``cutoff`` is none, so readers weigh every
journal change made in (S, M] against the reads (placed, through the index) and apply those
after M.

Two stages of units on the engine, each recorded in the job's ledger (``--resume``): ``segment``
(a parallel-scan segment: its reads buffered and written to the run's scratch folder by
partition every ``flush_items`` rows, the segment's place saved after each write) and
``partition`` (a partition's reads, written as the base's data and index files by
``base_files``). The manifest is written last. Before the partition stage the base's folder
is claimed (``cutoff.json`` naming the run, ``If-None-Match``), so a compaction of the same
moment cannot write into it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.description import (
    check_same_table,
    describe_table,
    key_types_of,
    save_description,
)
from dynamo_backups.backup.journal_store import (
    GZIP_TYPE,
    JSON_TYPE,
    first_piece,
    put_bytes,
    put_if_absent,
    read_json,
    read_lines,
)
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.base import (
    BaseError,
    BaseManifest,
    BasePaths,
    partition_label,
    partition_of,
)
from dynamo_backups.core.cancel import Cancelled, Interrupted
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, Item, validate_item
from dynamo_backups.core.journal import ItemState, format_change_time, gzip_lines
from dynamo_backups.core.keys import extract_key, key_attribute_names, object_name
from dynamo_backups.core.layout import LayoutError, TableLayout, parse_time, utc_now
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    PARTITION_COUNTS,
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
    segment_units,
)
from dynamo_backups.jobs.backfill import BackfillOptions, BackfillReport
from dynamo_backups.jobs.base_files import manifest_files, put_manifest, write_partition
from dynamo_backups.jobs.compact import CUTOFF_FORMAT
from dynamo_backups.jobs.journal_units import PRECISION_BOUND
from dynamo_backups.jobs.scan_segments import scan_pages
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage

logger = logging.getLogger("dynamo_backups.jobs.journal_backfill")

SCAN_FORMAT = "dynamo-backups-backfill-scan"
PLACE_FORMAT = "dynamo-backups-backfill-base-segment"
FLUSH_ITEMS = 20_000  # reads a segment holds before writing them to the scratch folder
SEGMENT_STAGE = "segment"


class JournalBackfillUnsupported(LayoutError):
    """An option a backfill into a journal folder does not take: refused before any write."""


@dataclass
class JournalBackfillReport(BackfillReport):
    base: str | None = None  # the base's folder
    moment: str | None = None
    reflects_before: str | None = None
    existed: bool = False  # the base's manifest was there already
    warnings: list[str] = field(default_factory=list)

    def details(self) -> list[str]:
        lines = [f"  warning: {warning}" for warning in self.warnings]
        if self.base is None:
            return lines
        return [
            f"  base {self.base} as of {self.moment} (scan began {self.reflects_before})"
            + (": there already" if self.existed else ""),
            *lines,
        ]


class JournalBackfill(BucketClients):
    """Backfills one table into its journal folder as a base: ``JournalBackfill(...).run()``,
    constructed as ``jobs.backfill.Backfill`` is."""

    flush_items = FLUSH_ITEMS

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
        self.bucket = self.backup_bucket = writer.bucket
        self.read_concurrency = options.concurrency
        self.clients = ClientSource(
            aws, dynamodb=dynamodb, scan=scan, s3=writer.s3, reader=writer.objects
        )
        self.layout = layout
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=10, base_delay=0.1, max_delay=10
        )
        self.clock = clock
        self.report = JournalBackfillReport(layout.table)
        self.key_names: list[str] = []
        self.job_run: JobRun | None = None
        self.attempt_start: datetime | None = None  # DynamoDB's clock when this attempt began
        self.scanned: list[dict[str, Any]] = []  # the segments' scratch files
        self.paths: BasePaths | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress()}

    # --- clients, here or in a worker ------------------------------------------------------

    def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        def make(aws: AwsContext) -> Callable[[dict[str, Any]], dict[str, Any]]:
            api = aws.dynamodb_api(aws.client("dynamodb", pool=16, retries=1))
            return lambda scan_request: api.call("Scan", scan_request)

        return self.clients.get("scan", make)(request)

    def dynamodb(self) -> Any:
        return self.clients.get("dynamodb", lambda aws: aws.client("dynamodb"))

    def ledger_writer(self) -> BackupWriter:
        return BackupWriter(self.s3(), self.bucket, objects=self.reader())

    def default_workers(self) -> int:
        return min(64, self.options.total_segments)

    # --- the driver ------------------------------------------------------------------------

    def check_options(self) -> None:
        """Refuse, before anything is written, what a base cannot be made from."""
        where = f"s3://{self.bucket}/{self.layout.items_prefix}"
        if self.options.from_export:
            raise JournalBackfillUnsupported(
                f"{where} is a journal folder: its backfill is a base made from a scan of the "
                "table; --from-export is not supported there yet (nothing was written)"
            )
        if self.options.segment is not None:
            raise JournalBackfillUnsupported(
                f"{where} is a journal folder: its backfill base needs every segment in one "
                "run; --segment is not supported there (nothing was written)"
            )
        if self.options.partitions not in PARTITION_COUNTS:
            raise JournalBackfillUnsupported(f"--partitions {self.options.partitions}")

    def run(self, engine: Engine | None = None) -> JournalBackfillReport:
        started = time.monotonic()
        self.check_options()
        engine = engine or ThreadEngine(self.default_workers())
        writer = self.ledger_writer()
        description = describe_table(self.dynamodb(), self.layout.table)
        check_same_table(writer.s3, writer.bucket, self.layout, description["table"])
        save_description(writer, self.layout, description)
        key_schema = description["table"]["KeySchema"]
        ensure_manifest(writer, self.layout, key_schema, key_types_of(description), LAYOUT_JOURNAL)
        self.key_names = key_attribute_names(key_schema)
        self.progress.set_total(description["table"].get("ItemCount") or None)
        ledger = JobLedger(writer, self.layout, "backfill", self.clock)
        parameters = {
            "total_segments": self.options.total_segments,
            "partitions": self.options.partitions,
            "key_hash": self.layout.key_hash,
            "layout": LAYOUT_JOURNAL,
        }
        self.job_run = ledger.begin(parameters, self.options.resume)
        lease = RunLease(writer, self.job_run)
        lease.acquire()
        settled = True
        try:
            self._run_attempt(engine, ledger)
        except Interrupted as stop:
            settled = stop.settled
            self.report.interrupted = True
            raise
        finally:
            if settled:
                lease.release()
            else:
                lease.abandon()
            self.report.seconds = round(time.monotonic() - started, 3)
            ledger.finish(self.job_run, self.report.complete, self.report.to_dict())
        return self.report

    def _run_attempt(self, engine: Engine, ledger: JobLedger) -> None:
        assert self.job_run is not None
        self.attempt_start = self._dynamodb_clock()
        scan_start = self._scan_start()
        self.report.reflects_before = format_change_time(scan_start)
        self._warn_if_no_writer()
        units = segment_units(self.options.total_segments, None)
        scanned = run_stage(
            self, ledger, self.job_run, units, engine, self.options.max_items_per_second,
            self.progress,
        )  # fmt: skip
        if self._note(scanned, units, scan=True):
            return
        merged = merge_results(scanned.results)
        self.scanned = [output for output in merged.outputs if "scanned" in output]
        answers = [parse_time(o["last_answer"]) for o in merged.outputs if "last_answer" in o]
        last_answer = max(answers)
        moment = last_answer.replace(microsecond=0) + timedelta(seconds=1)
        self.paths = BasePaths(self.layout.items_prefix, moment)
        self.report.moment = format_change_time(moment)
        self.report.base = f"s3://{self.bucket}/{self.paths.prefix}"
        self._claim(moment)
        parts = partition_units(self.options.partitions)
        written = run_stage(self, ledger, self.job_run, parts, engine, None, self.progress)
        if self._note(written, parts, scan=False):
            return
        self._write_manifest(scan_start, moment, merge_results(written.results))

    def _warn_if_no_writer(self) -> None:
        """The base holds the rows as the scan read them; the changes made during and after
        the scan are the journal's. An empty journal when the scan begins means no stream
        writer has written to the folder yet: unless one is on, those changes are missed."""
        if first_piece(self.reader(), self.layout.items_prefix) is not None:
            return
        self.report.warnings.append(
            f"the journal of s3://{self.bucket}/{self.layout.items_prefix} is empty: no stream "
            "writer has written to it yet, so changes made during or after this scan are "
            "backed up only if one is on (deploy --layout journal, or stream --layout "
            "journal); otherwise they are missed"
        )

    def _dynamodb_clock(self) -> datetime:
        """DynamoDB's clock now, to the second (an answer's ``Date``): no read of this attempt
        happens before it."""
        answer = call_with_retries(
            lambda: self.dynamodb().describe_table(TableName=self.layout.table),
            self.retry_policy,
            f"describe table {self.layout.table}",
        )
        moment = answer_time(answer)
        if moment is None:
            raise BaseError(
                "DynamoDB's answer carries no Date header: the scan's reads cannot be dated "
                "by DynamoDB's clock"
            )
        return moment.astimezone(UTC).replace(microsecond=0)

    def _scan_start(self) -> datetime:
        """The run's scan start S: recorded by its first attempt, before any read."""
        assert self.job_run is not None and self.attempt_start is not None
        key = f"{self.job_run.scratch_prefix}scan.json"
        body = json.dumps(
            {"format": SCAN_FORMAT, "scan_start": format_change_time(self.attempt_start)}
        ).encode()
        objects = self.reader()
        put_if_absent(objects, key, body, JSON_TYPE, self.retry_policy)
        document = read_json(objects, key) or {}
        if document.get("format") != SCAN_FORMAT:
            raise BaseError(f"s3://{self.bucket}/{key} is not a backfill's scan record")
        return parse_time(str(document["scan_start"]))

    def _claim(self, moment: datetime) -> None:
        """Claim the base's folder for this run (a compaction of the same moment, or another
        backfill, finds it taken), or find this run's own claim."""
        assert self.paths is not None and self.job_run is not None
        document = {
            "format": CUTOFF_FORMAT,
            "moment": format_change_time(moment),
            "previous": None,
            "partition_digits": PARTITION_COUNTS[self.options.partitions],
            "backfill": self.job_run.run_id,
        }
        body = json.dumps(document, indent=2, sort_keys=True).encode()
        objects = self.reader()
        if put_if_absent(objects, self.paths.cutoff_key, body, JSON_TYPE, self.retry_policy):
            return
        found = read_json(objects, self.paths.cutoff_key) or {}
        if found.get("backfill") != self.job_run.run_id:
            raise BaseError(
                f"s3://{self.bucket}/{self.paths.prefix}: another job is writing the base of "
                f"{format_change_time(moment)}: run the backfill again (a new run ends at "
                "another moment)"
            )

    def _note(self, outcome: StageOutcome, units: list[WorkUnit], scan: bool) -> bool:
        """Add a stage's counts to the report; True when the stage did not complete."""
        merged = merge_results(outcome.results)
        report = self.report
        if scan:
            report.scanned = merged.count("scanned")
            report.segments_done = sorted(
                int(output["segment"])
                for result in outcome.results
                if result.complete
                for output in result.outputs
                if "segment" in output
            )
            report.units = len(units)
        else:
            report.written = merged.count("items")
        report.failures.extend(f"{unit}: {reason}" for unit, reason in outcome.failures)
        report.failed += len(outcome.failures)
        ended = {result.unit for result in outcome.results if result.complete}
        report.unfinished_units.extend(unit.id for unit in units if unit.id not in ended)
        return not report.complete

    def _write_manifest(self, scan_start: datetime, moment: datetime, merged: UnitResult) -> None:
        assert self.paths is not None
        manifest = BaseManifest(
            table=self.layout.table,
            moment=moment,
            cutoff=None,  # every journal object is weighed against the reads
            # A change whose latest moment is after S was made after S - PRECISION_BOUND:
            # no change a reader weighs is older than this, so none is refused as too old.
            late_horizon=scan_start - PRECISION_BOUND,
            reflects_before=scan_start,
            previous=None,
            key_hash=self.layout.key_hash,
            partition_digits=PARTITION_COUNTS[self.options.partitions],
            item_count=merged.count("items"),
            files=manifest_files(merged.outputs),
        )
        if not put_manifest(self.reader(), self.paths, manifest, self.retry_policy):
            self.report.existed = True
        self.report.written = manifest.item_count

    # --- the units -------------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        if unit.stage == SEGMENT_STAGE:
            return self._scan_segment(unit, context)
        return self._write_partition(unit, context)

    def _scan_segment(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """One scan segment's reads, in the scratch folder by partition; its place saved
        after each write of them, so a resumed unit goes on from there."""
        assert self.job_run is not None and unit.segment is not None
        assert self.attempt_start is not None
        place_key = f"{self.job_run.scratch_prefix}{unit.id}.json"
        place = (
            read_document(self.s3(), self.bucket, place_key) if self.job_run.resumed else None
        ) or {}
        result = UnitResult(unit.id, dict(place.get("counts") or {}))
        files: list[dict[str, Any]] = list(place.get("files") or [])
        flushes = int(place.get("flushes") or 0)
        last_answer = place.get("last_answer")
        # No read of this attempt happened before the attempt began.
        read_floor = self.attempt_start
        if last_answer is not None:
            read_floor = max(read_floor, parse_time(last_answer).replace(microsecond=0))
        pages = scan_pages(
            self.scan, self.layout.table, unit.segment, int(unit.total_segments or 1),
            self.retry_policy, limit=self.options.page_size,
            start_key=place.get("last_evaluated_key"), cancel=context.cancel,
        )  # fmt: skip
        buffer: dict[str, list[bytes]] = {}
        held = 0
        start_key = place.get("last_evaluated_key")
        done = bool(place.get("done"))
        try:
            for page in [] if done else pages:
                items = page.get("Items", [])
                context.cancel.check()
                context.limiter.acquire(len(items))
                answered = answer_time(page)
                if answered is None:
                    raise BaseError("a Scan answer carries no Date header: its reads are undated")
                for item in items:
                    name = object_name(extract_key(item, self.key_names), self.layout.key_hash)
                    part = partition_of(name, PARTITION_COUNTS[self.options.partitions])
                    buffer.setdefault(part, []).append(_scanned_line(item, read_floor))
                held += len(items)
                result.add("scanned", len(items))
                context.progress.advance(len(items))
                read_floor = answered.astimezone(UTC).replace(microsecond=0)
                last_answer = format_change_time(answered.astimezone(UTC))
                start_key = page.get("LastEvaluatedKey")
                done = start_key is None
                if held >= self.flush_items or done:
                    files += self._flush(unit, flushes, buffer)
                    flushes, buffer, held = flushes + 1, {}, 0
                    self._save_place(place_key, unit, start_key, done, result, files, flushes,
                                     last_answer)  # fmt: skip
        except Cancelled:
            result.complete = False  # its place is saved: --resume goes on from there
            return result
        result.outputs = [*files, {"segment": unit.segment, "last_answer": last_answer}]
        return result

    def _flush(
        self, unit: WorkUnit, number: int, buffer: dict[str, list[bytes]]
    ) -> list[dict[str, Any]]:
        """Write a segment's buffered reads, one file per partition (names fixed by the
        segment and the flush's number: a redone flush replaces its own files)."""
        assert self.job_run is not None
        written = []
        for part in sorted(buffer):
            key = (
                f"{self.job_run.scratch_prefix}scanned/{unit.id}/{number:05d}/"
                f"{partition_label(part)}.jsonl.gz"
            )
            put_bytes(self.reader(), key, gzip_lines(buffer[part]), GZIP_TYPE, self.retry_policy)
            written.append({"scanned": key, "partition": part, "items": len(buffer[part])})
        return written

    def _save_place(
        self, key: str, unit: WorkUnit, start_key: Any, done: bool, result: UnitResult,
        files: list[dict[str, Any]], flushes: int, last_answer: str | None,
    ) -> None:  # fmt: skip
        self.ledger_writer().put_document(
            key,
            {
                "format": PLACE_FORMAT,
                "unit": unit.id,
                "last_evaluated_key": start_key,
                "done": done,
                "counts": result.counts,
                "files": files,
                "flushes": flushes,
                "last_answer": last_answer,
            },
        )

    def _write_partition(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """A partition's reads as the base's data and index files."""
        assert self.paths is not None
        partition = unit.partition or ""
        objects = self.reader()
        states: dict[str, ItemState] = {}
        for entry in self.scanned:
            if entry["partition"] != partition:
                continue
            lines = read_lines(objects, entry["scanned"])
            where = f"s3://{self.bucket}/{entry['scanned']}"
            if len(lines) != int(entry["items"]):
                raise BaseError(f"{where} holds {len(lines)} reads, not {entry['items']}")
            for number, line in enumerate(lines, 1):
                item, read_at = _read_line(line, f"{where} line {number}")
                keys = extract_key(item, self.key_names)
                name = object_name(keys, self.layout.key_hash)
                state = ItemState.snapshot(keys, item, read_at)
                known = states.get(name)
                if known is None or (known.change_time or read_at) <= read_at:
                    states[name] = state  # read twice: the later read
            context.cancel.check()
        files, present = write_partition(objects, self.paths, partition, states, self.retry_policy)
        result = UnitResult(unit.id)
        result.outputs.extend(files)
        result.add("items", present)
        return result


def _scanned_line(item: Item, read_at: datetime) -> bytes:
    """A read in the scratch folder: the item and the moment it is dated by."""
    document = {"at": format_change_time(read_at), "Item": item}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _read_line(line: bytes, where: str) -> tuple[Item, datetime]:
    try:
        document = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        item = validate_item(document["Item"], f"{where}.Item")
        return item, parse_time(str(document["at"]))
    except (ValueError, KeyError, TypeError, InvalidDynamoJSON) as error:
        raise BaseError(f"{where}: not a backfill read ({error})") from None
