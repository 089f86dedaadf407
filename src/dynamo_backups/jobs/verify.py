"""Verify: compare a live table with the latest state of its backup, and optionally repair.

Two stages of units: the scan units (one per parallel-scan segment) leave each item's
fingerprint in a spill grouped by the first hex digits of its object name (``verify_spill``);
then each compare unit takes one partition of names and compares it with the same slice of
the bucket listing. Memory stays bounded whatever the table's size, and both stages run on
any engine. A difference is read again from both sides before it is reported, so a change
in flight while verifying is not counted.

On ``--resume`` the compare units an earlier attempt finished are kept, and so are its scan
units where their spill outlives the attempt (in S3, Spark): they are named ``scan-s3-...``,
so a resumed run never takes a scan recorded with a local spill, which is gone, for one whose
lines it can read (it would find no table side for them and miss every missing item).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.aliases import AliasIndex, PartitionAliases
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.backup.reading import iter_current_objects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.ddbjson import (
    InvalidDynamoJSON,
    Item,
    canonical_item,
    dumps_item,
    loads_item,
)
from dynamo_backups.core.differences import KINDS, SAMPLE_SIZE, Differences, difference
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    WRITER_REPAIR,
    TableLayout,
    VersionMetadata,
)
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.pitr import CLOCK_ALLOWANCE, COARSEST_PRECISION, ObjectVersion
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
from dynamo_backups.jobs.scan_segments import scan_pages
from dynamo_backups.jobs.units import Engine, StageOutcome, run_stage
from dynamo_backups.jobs.verify_spill import LocalSpill, S3Spill, Spill

# A scan spilled on this host, and one spilled to S3 (which a resumed run may take).
logger = logging.getLogger("dynamo_backups.jobs.verify")

SCAN_STAGES = ("scan", "scan-s3")
SETTLE_READS = 5  # reads of an item waiting for DynamoDB's clock to pass its deciding change
# How far ahead of DynamoDB's clock a change's latest moment can be: the coarsest rounding of
# a stream's times (DynamoDB Local's minute) and the clocks' allowance. A version dated
# further ahead is not waited for.
MAX_CHANGE_AHEAD = COARSEST_PRECISION + CLOCK_ALLOWANCE


class DatedAhead(RuntimeError):
    """The backup's deciding change is dated further ahead than a change can be: a repair
    cannot be placed after it yet."""


def item_digest(item: dict[str, Any]) -> str:
    """Equal for equal items, whatever the order of attributes or of set members."""
    return hashlib.sha256(canonical_item(item)).hexdigest()


@dataclass
class VerifyReport(Differences):
    table: str
    source: str
    items_in_table: int = 0
    objects_in_backup: int = 0
    repair_failed: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished_units: list[str] = field(default_factory=list)
    unit_seconds: float = 0.0  # the units' own times, added (scan and compare)


class Verify:
    """``Verify(...).run(engine)``. The clients given are used in this process; workers
    elsewhere make their own from ``aws``."""

    def __init__(
        self,
        dynamodb_call: Callable[[str, dict[str, Any]], dict[str, Any]],
        key_schema: list[dict[str, str]],
        writer: BackupWriter,
        reader: Any,
        layout: TableLayout,
        segments: int = 8,
        repair: bool = False,
        concurrency: int = 16,
        progress: ProgressSink | None = None,
        aws: AwsContext | None = None,
        partitions: int = 16,
        resume: bool = False,
        aliases: AliasIndex | None = None,
    ) -> None:
        self.clients = ClientSource(aws, call=dynamodb_call, writer=writer, reader=reader)
        self.aliases = aliases  # an adopted folder: items also under the replicator's names
        self.bucket = writer.bucket
        self.key_names = key_attribute_names(key_schema)
        self.layout = layout
        self.segments = segments
        self.repair = repair
        self.concurrency = concurrency
        self.partitions = partitions
        self.resume = resume
        self.progress = progress or NoProgress()
        self.policy = RetryPolicy(max_attempts=10, base_delay=0.1)
        self.report = VerifyReport(layout.table, f"s3://{writer.bucket}/{layout.items_prefix}")
        self.spill: Spill | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress(), "report": None}

    # --- clients, here or in a worker ----------------------------------------------------------

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        def make(aws: AwsContext) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
            return aws.dynamodb_api(aws.client("dynamodb", pool=32, retries=1)).call  # type: ignore[no-any-return]

        return self.clients.get("call", make)(operation, request)

    def writer(self) -> BackupWriter:
        bucket = self.bucket
        return self.clients.get(
            "writer", lambda aws: BackupWriter(aws.client("s3", pool=32), bucket), variant=bucket
        )

    ledger_writer = writer

    def reader(self) -> Any:
        bucket = self.bucket
        return self.clients.get(
            "reader", lambda aws: aws.objects(self.writer().s3, bucket), variant=bucket
        )

    # --- the run -------------------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> VerifyReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(max(self.segments, self.concurrency))
        ledger = JobLedger(self.writer(), self.layout, "verify")
        run = ledger.begin(
            {
                "segments": self.segments,
                "partitions": self.partitions,
                "repair": self.repair,
                **self.run_parameters(),
            },
            self.resume,
            # Reading alone needs no write access, unless the spill goes through S3.
            required=self.repair or not engine.local,
        )
        self.start(run)
        width = PARTITION_COUNTS[self.partitions]
        with tempfile.TemporaryDirectory(prefix="dynamo-backups-verify-") as folder:
            if engine.local:
                self.spill = LocalSpill(folder, width)
            else:
                scratch = run.scratch_prefix + "spill/"
                self.spill = S3Spill(self.clients, self.bucket, scratch, width)
            # A local spill does not outlive this run: its scan is done again on --resume.
            scanned = run_stage(
                self,
                ledger,
                run,
                segment_units(self.segments, stage=SCAN_STAGES[not engine.local]),
                engine,
                None,
                self.progress,
                resumable=not engine.local,
            )
            if isinstance(self.spill, S3Spill) and run.resumed and not scanned.failures:
                self._scan_again_where_lost(scanned, ledger, run, engine)
            compared = StageOutcome()
            if not scanned.failures:
                self.spill.use(_spill_attempts(scanned.results))
                prepared = self.prepare_compare(ledger, run, engine)
                scanned.results.extend(prepared.results)
                scanned.failures.extend(prepared.failures)
            if not scanned.failures:
                compared = run_stage(
                    self,
                    ledger,
                    run,
                    partition_units(self.partitions, "compare"),
                    engine,
                    None,
                    self.progress,
                )
        self._merge(scanned, compared)
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(
            run, not self.report.unfinished_units, {"differences": self.report.differences}
        )
        return self.report

    # --- what a layout adds (the item layout: nothing) ------------------------------------

    def run_parameters(self) -> dict[str, Any]:
        """Parameters the run is recorded with beyond the common ones."""
        return {}

    def start(self, run: JobRun) -> None:
        """Before the scan: what every attempt of ``run`` must read alike."""

    def prepare_compare(self, ledger: JobLedger, run: JobRun, engine: Engine) -> StageOutcome:
        """Units to run between the scan and the compare (their outcome is the scan's)."""
        return StageOutcome()

    def _scan_again_where_lost(
        self, scanned: StageOutcome, ledger: JobLedger, run: JobRun, engine: Engine
    ) -> None:
        """The scan units an earlier attempt recorded whose spill is gone, done again."""
        assert isinstance(self.spill, S3Spill)
        lost = self.spill.lost_units(_spill_records(scanned.results))
        if not lost:
            return
        logger.warning(
            "verify: the spill of %d scan units of the run is gone (a lifecycle rule?): "
            "scanning them again",
            len(lost),
        )
        units = segment_units(self.segments, stage=SCAN_STAGES[True])
        again = run_stage(
            self,
            ledger,
            run,
            [unit for unit in units if unit.id in lost],
            engine,
            None,
            self.progress,
            resumable=False,
        )
        scanned.results[:] = [r for r in scanned.results if r.unit not in lost] + again.results
        scanned.failures.extend(again.failures)

    def _merge(self, scanned: StageOutcome, compared: StageOutcome) -> None:
        merged = merge_results([*scanned.results, *compared.results])
        report = self.report
        for name in ("items_in_table", "objects_in_backup", *KINDS, "repaired", "repair_failed"):
            setattr(report, name, merged.count(name))
        report.samples = {kind: merged.samples.get(kind, [])[:SAMPLE_SIZE] for kind in KINDS}
        failures = scanned.failures + compared.failures
        report.errors = [f"{unit}: {reason}" for unit, reason in failures]
        report.unfinished_units = sorted({*merged.unfinished} | {unit for unit, _ in failures})
        report.unit_seconds = round(merged.unit_seconds, 3)

    # --- one unit, wherever it runs -----------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        result = UnitResult(unit.id)
        if unit.stage in SCAN_STAGES:
            self._scan_segment(unit, result, context)
        else:
            self._compare_partition(unit.partition or "", result, context)
        return result

    # --- phase 1: the table, spilled by object name ------------------------------------------

    def _scan_segment(self, unit: WorkUnit, result: UnitResult, context: UnitContext) -> None:
        assert self.spill is not None and unit.segment is not None
        spill = self.spill.writer(unit.id)
        scan = partial(self.call, "Scan")
        pages = scan_pages(
            scan, self.layout.table, unit.segment, self.segments, self.policy, cancel=context.cancel
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    key = extract_key(item, self.key_names)
                    name = self.layout.item_object_key(key).rsplit("/", 1)[1]
                    body_md5 = hashlib.md5(dumps_item(item), usedforsecurity=False).hexdigest()
                    key_text = dumps_item(key).decode()
                    spill.add(name, f"{name}\t{item_digest(item)}\t{body_md5}\t{key_text}\n")
                result.add("items_in_table", len(page.get("Items", [])))
                context.progress.advance(len(page.get("Items", [])))
        finally:
            spill.close()
        if spill.attempt is not None:
            result.outputs.append({"spill_attempt": spill.attempt, "spill_chunks": spill.chunks})

    # --- phase 2: each slice of names against the same slice of the bucket -------------------

    def _table_side(self, partition: str) -> dict[str, tuple[str, str, str]]:
        """The scan's items of ``partition``: name -> (digest, body md5, key as JSON)."""
        assert self.spill is not None
        table_side: dict[str, tuple[str, str, str]] = {}
        for line in self.spill.lines(partition):
            name, digest, body_md5, key_text = line.rstrip("\n").split("\t", 3)
            table_side[name] = (digest, body_md5, key_text)
        return table_side

    def _compare_partition(self, partition: str, result: UnitResult, context: UnitContext) -> None:
        table_side = self._table_side(partition)
        aliases = PartitionAliases()
        if self.aliases is not None:
            aliases = self.aliases.for_partition(self.reader(), partition)
        prefix = self.layout.items_prefix + partition
        for listed in iter_current_objects(self.reader(), prefix):
            context.cancel.check()
            name = listed["Key"].rsplit("/", 1)[1]
            if listed.get("Size") == 0 or name in aliases.other_names:
                continue  # a tombstone left current (deleted), or read with its own name
            if name in aliases.by_own_name:
                continue  # compared below, with the other names' history
            result.add("objects_in_backup")
            entry = table_side.pop(name, None)
            if entry is None:
                self._recheck_extra(listed["Key"], result, context.cancel)
                continue
            digest, body_md5, key_text = entry
            if listed.get("ETag", "").strip('"') == body_md5:
                continue
            body = self._read(listed["Key"])
            if body is None or _digest_of(body) != digest:
                self._recheck(json.loads(key_text), result, context.cancel)
        for name, others in aliases.by_own_name.items():
            self._compare_merged(name, others, table_side.pop(name, None), result, context.cancel)
        for _, _, key_text in table_side.values():
            self._recheck(json.loads(key_text), result, context.cancel)

    def _compare_merged(
        self,
        name: str,
        others: list[str],
        table_entry: tuple[str, str, str] | None,
        result: UnitResult,
        cancel: CancelToken,
    ) -> None:
        """An item whose history is under several names: its merged latest state."""
        backup_item = self._backup_items().select_names([name, *others]).item
        if backup_item is None and table_entry is None:
            return
        if backup_item is not None:
            result.add("objects_in_backup")
        if (
            backup_item is not None
            and table_entry is not None
            and item_digest(backup_item) == table_entry[0]
        ):
            return
        if table_entry is not None:
            key = json.loads(table_entry[2])
        else:
            key = extract_key(backup_item or {}, self.key_names)
        self._recheck(key, result, cancel)

    def _backup_items(self) -> BackupItems:
        return BackupItems(
            self.reader(),
            self.bucket,
            self.layout,
            self.key_names,
            aliases=self.aliases,
            decisions=True,
        )

    def _backup_item(self, key: dict[str, Any]) -> Selected:
        """The backup's latest state of the item by the stream's order, as a restore reads
        it (not merely its current version: a late copy may sit on top), merged over all its
        names when adopted, with the change that decided it. Not an item (``invalid``):
        differs from anything the table holds."""
        return self._backup_items().select_key(key)

    def _read(self, object_key: str) -> bytes | None:
        try:
            body, _ = call_with_retries(
                lambda: self.reader().read_object(object_key), self.policy, f"get {object_key}"
            )
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return body or None

    def _recheck(self, key: dict[str, Any], result: UnitResult, cancel: CancelToken) -> None:
        """Read both sides again; count (and repair) only what still differs."""
        object_key = self.layout.item_object_key(key)
        # The backup's current version, looked at before the table is read: a repair is
        # written only over it, so a change the stream writes after the read always wins.
        current = self.writer().current_version(object_key) if self.repair else None
        live, _ = self._get_item(key)
        selected = self._backup_item(key)
        backup_item = selected.item if selected.invalid is None else {}
        same = (
            live is not None
            and backup_item is not None
            and item_digest(backup_item) == item_digest(live)
        )
        kind = difference(live is not None, backup_item is not None, same)
        if kind is None:
            return
        result.add(kind)
        result.sample(kind, dumps_item(key).decode())
        if self.repair:
            deciding = selected.decision
            read = self._repair_read(key, deciding.latest_time if deciding else None, cancel)
            if read is None:
                result.add("repair_failed")
                return
            live, read_at = read
            result.add(
                "repaired" if self._repair(object_key, live, read_at, current) else "repair_failed"
            )

    def _repair_read(
        self, key: Item, latest: datetime | None, cancel: CancelToken
    ) -> tuple[Item | None, datetime] | None:
        """``_read_after``, or None (with a ``warning:`` line naming the item) when the
        backup's deciding change is dated too far ahead to wait for: not repaired."""
        try:
            return self._read_after(key, latest, cancel)
        except DatedAhead as ahead:
            logger.warning("%s", ahead)
            return None

    def _read_after(
        self, key: Item, latest: datetime | None, cancel: CancelToken
    ) -> tuple[Item | None, datetime]:
        """The table's item read again for a repair, and the moment it is dated by: the
        ``Date`` of a GetItem answered just before the read (a probe of DynamoDB's clock),
        never the read's own answer, which comes after the read, nor an earlier compare's
        (the backup was read since): a change made in between, in an earlier second, would
        be placed before the repair and lose to it. That moment is at or after ``latest``,
        the latest moment the backup's deciding change can have happened (its time plus the
        stream's rounding: a second on AWS, a minute on DynamoDB Local; None: the backup has
        none): a repair dated before it would be placed before a change it may have
        followed, and a restore would take that change over the repair (while verify, which
        compares the newest version, passes). So the clock is waited out (at most a few
        seconds on AWS). ``DatedAhead`` when ``latest`` is further ahead of DynamoDB's clock
        than any change can be."""
        _, floor = self._get_item(key)
        for _ in range(SETTLE_READS):
            if latest is None or latest <= floor:
                item, _ = self._get_item(key)
                return item, floor
            ahead = latest - floor
            if ahead > MAX_CHANGE_AHEAD:
                raise DatedAhead(
                    f"{self.layout.table}: not repaired {dumps_item(key).decode()}: the backup's "
                    f"newest change of it is dated {latest.isoformat()}, {ahead} ahead of "
                    "DynamoDB's clock (a record dated by a clock that runs ahead?); run "
                    "verify --repair again after that moment"
                )
            cancel.sleep(ahead.total_seconds() + 0.1)  # up to a minute: Ctrl-C must not wait
            _, floor = self._get_item(key)
        raise RuntimeError(
            f"DynamoDB's clock did not pass {latest.isoformat()} in {SETTLE_READS} reads of "
            f"{dumps_item(key).decode()} from {self.layout.table}"
        )

    def _recheck_extra(self, object_key: str, result: UnitResult, cancel: CancelToken) -> None:
        body = self._read(object_key)
        if body is None:
            return
        try:
            key = extract_key(loads_item(body, object_key), self.key_names)
        except InvalidDynamoJSON as error:
            result.add("different")
            result.sample("different", f"{object_key}: {error}")
            return
        self._recheck(key, result, cancel)

    def _get_item(self, key: dict[str, Any]) -> tuple[dict[str, Any] | None, datetime]:
        """The item as the table holds it now, and when DynamoDB read it (its clock)."""
        answer = call_with_retries(
            lambda: self.call(
                "GetItem", {"TableName": self.layout.table, "Key": key, "ConsistentRead": True}
            ),
            self.policy,
            f"get item from {self.layout.table}",
        )
        return answer.get("Item"), answer_time(answer) or datetime.now(UTC)

    def _repair(
        self,
        object_key: str,
        live: dict[str, Any] | None,
        read_at: datetime,
        current: ObjectVersion | None,
    ) -> bool:
        """Write the table's state into the backup, dated by DynamoDB's clock, only over the
        object as it was before the table was read again: anything newer wins."""
        event = EVENT_SNAPSHOT if live is not None else EVENT_REMOVE
        metadata = VersionMetadata(WRITER_REPAIR, event, read_at, None, self.layout.key_hash)
        writer = self.writer()
        if live is not None:
            return writer.put_item_if_current(object_key, dumps_item(live), metadata, current)
        return writer.remove_item_if_current(object_key, metadata, current)


def _spill_attempts(results: list[UnitResult]) -> dict[str, str]:
    """Each scan unit's recorded attempt, whose spill the compare units read."""
    return {
        result.unit: output["spill_attempt"]
        for result in results
        for output in result.outputs
        if output.get("spill_attempt")
    }


def _spill_records(results: list[UnitResult]) -> dict[str, tuple[str, int | None]]:
    """Each scan unit's recorded attempt and the chunks it wrote (None: not recorded)."""
    return {
        result.unit: (output["spill_attempt"], output.get("spill_chunks"))
        for result in results
        for output in result.outputs
        if output.get("spill_attempt")
    }


def _digest_of(body: bytes) -> str | None:
    try:
        return item_digest(loads_item(body, "backup object"))
    except InvalidDynamoJSON:
        return None
