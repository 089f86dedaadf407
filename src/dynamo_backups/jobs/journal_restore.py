"""Restore a journal folder (latest, or as of a moment) into a new table (docs/journal.md,
"Reading").

The newest complete base at or before the moment (none: the journal from its beginning), and
the journal after it, as two stages of work units recorded in the job's ledger: ``route``
(``journal_units.route``: the records the restore takes, by partition) and ``partition`` (the
base's partition, its index only when a late change must be weighed against it, and the
routed records folded at the moment; written with BatchWriteItem). Every attempt of a run
reads the journal as S3 held it when the run began (the run's ``moment.json``), and the same
base. Options the journal reader does not implement yet are refused (``unsupported``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.description import description_from_key_schema, key_schema_of
from dynamo_backups.backup.folder import BackupFolder, open_folder_path
from dynamo_backups.backup.journal_store import (
    JSON_TYPE,
    earliest_reflecting_base,
    first_piece_hour,
    newest_base,
    put_if_absent,
    read_json,
    read_manifest,
)
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL, layout_of
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.core.base import parse_base_id
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.journal import fold, format_change_time
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import LayoutError, TableLayout
from dynamo_backups.core.parallel import ThreadEngine, batched
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.jobs.journal_units import (
    ROUTE_STAGE,
    JournalView,
    base_states,
    partition_digits,
    present_sorted,
    route,
    route_outputs,
    routed_input,
    s3_clock,
    wait_past,
)
from dynamo_backups.jobs.restore import RestoreError, RestoreOptions, RestoreReport
from dynamo_backups.jobs.restore_unit import BATCH_SIZE, DRY_RUN_SAMPLE
from dynamo_backups.jobs.tables import ensure_table, switch_on_ttl
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage


class UnsupportedOnJournal(LayoutError):
    """An option the journal layout's restore does not implement yet (exit 2)."""


class BeforeJournalBegins(LayoutError):
    """A moment before the first base of a journal that began mid-way (exit 2): the journal
    alone holds only part of the table then."""


# RestoreOptions fields the journal reader does not implement yet, and how they are named.
_NOT_YET = {
    "keys_file": "--keys",
    "into_existing": "--into-existing",
    "delete_absent": "--delete-absent",
    "skip_invalid": "--skip-invalid",
}


def unsupported(options: RestoreOptions, native_import: bool = False) -> list[str]:
    """The options given that a journal folder's restore refuses (not implemented yet)."""
    given = [flag for name, flag in _NOT_YET.items() if getattr(options, name)]
    return given + (["--native-import"] if native_import else [])


class JournalRestore(BucketClients):
    """One restore of a journal folder: ``JournalRestore(...).run(engine)`` (the same
    constructor as the item layout's ``Restore``)."""

    def __init__(
        self,
        s3: Any,
        reader: Any,
        dynamodb: Any,
        batch_write: Callable[[dict[str, Any]], dict[str, Any]],
        bucket: str,
        folder: str,
        table: str,
        options: RestoreOptions,
        progress: ProgressSink | None = None,
        retry_policy: RetryPolicy | None = None,
        call: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        aws: AwsContext | None = None,
    ) -> None:
        self.clients = ClientSource(
            aws, s3=s3, reader=reader, dynamodb=dynamodb, batch_write=batch_write, call=call
        )
        self.bucket = self.backup_bucket = bucket
        self.read_concurrency = options.read_concurrency
        self.folder_path = folder
        self.table = table
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=15, base_delay=0.05, max_delay=20
        )
        self.report = RestoreReport(
            f"s3://{bucket}/{TableLayout.from_folder(folder).items_prefix}",
            table,
            dry_run=options.dry_run,
        )
        if options.at is not None:
            self.report.at = options.at.isoformat()
        self.key_names: list[str] = []
        self.view: JournalView | None = None
        self.routed: list[dict[str, Any]] = []
        self.job_run: JobRun | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress()}

    def batch_write(self, request: dict[str, Any]) -> dict[str, Any]:
        def make(aws: AwsContext) -> Callable[[dict[str, Any]], dict[str, Any]]:
            pool = self.options.write_concurrency
            api = aws.dynamodb_api(aws.client("dynamodb", pool=pool, retries=1))
            return lambda batch: api.call("BatchWriteItem", batch)

        return self.clients.get("batch_write", make)(request)

    def dynamodb(self) -> Any:
        return self.clients.get("dynamodb", lambda aws: aws.client("dynamodb"))

    # --- the driver -----------------------------------------------------------------------

    def open(self) -> BackupFolder:
        folder = open_folder_path(self.s3(), self.bucket, self.folder_path)
        if layout_of(folder.manifest) != LAYOUT_JOURNAL:
            raise LayoutError(f"{folder.where} is not a journal folder")
        refused = unsupported(self.options)
        if refused:
            raise UnsupportedOnJournal(not_yet_message(folder.where, refused))
        return folder

    def description(self, folder: BackupFolder) -> dict[str, Any]:
        """The saved description, or one made from --key-schema or layout.json's key."""
        if self.options.key_schema:
            return description_from_key_schema(self.options.key_schema)
        if folder.description is not None:
            return folder.description
        types = folder.key_types or {}
        if folder.key_names and all(name in types for name in folder.key_names):
            text = ",".join(f"{name}:{types[name]}" for name in folder.key_names)
            return description_from_key_schema(text)
        raise RestoreError(
            f"{folder.where} records no key schema: give it, e.g. --key-schema pk:S,sk:N"
        )

    def run(self, engine: Engine | None = None) -> RestoreReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(4)
        folder = self.open()
        description = self.description(folder)
        self.key_names = key_attribute_names(key_schema_of(description))
        self._check_restorable(folder)
        ledger = JobLedger(self.ledger_writer(), folder.layout, f"restore-into-{self.table}")
        parameters = {
            "source": self.report.source,
            "at": self.options.at.isoformat() if self.options.at else None,
            "key_schema": self.options.key_schema,
            "partitions": self.options.partitions,
            "layout": LAYOUT_JOURNAL,
        }
        if self.options.dry_run:
            self.job_run = ledger.dry_run()
        else:
            self.job_run = ledger.begin(parameters, self.options.resume, required=False)
        lease = RunLease(self.ledger_writer(), self.job_run) if self.job_run.recorded else None
        if lease is not None:
            lease.acquire()
        try:
            self._run_attempt(engine, ledger, folder, description)
        finally:
            if lease is not None:
                lease.release()
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(self.job_run, self.report.complete, {"written": self.report.written})
        return self.report

    def _check_restorable(self, folder: BackupFolder) -> None:
        """Refuse, before anything is written, a moment no base at or before reflects a
        table older than the journal, when a later base shows the journal began mid-way (a
        backfill's or a conversion's base covers the rows before it): the journal alone would
        give part of the table. A latest restore is after every base."""
        at = self.options.at
        if at is None:
            return
        table_folder = folder.layout.items_prefix
        base = newest_base(self.s3(), self.reader(), table_folder, at)
        if base is not None and base.reflects_before is not None:
            return
        first = earliest_reflecting_base(self.s3(), self.reader(), table_folder, at)
        if first is None:
            return  # the journal (and any base folded from it alone) began with the table
        raise BeforeJournalBegins(
            f"{folder.where} cannot be restored --at {format_change_time(at)}: its journal "
            f"begins mid-way (base {first.id} holds the rows older than the journal), so the "
            f"earliest restorable moment is {format_change_time(first.moment)}; restore --at "
            "it or later (nothing was written)"
        )

    def _run_attempt(
        self, engine: Engine, ledger: JobLedger, folder: BackupFolder, description: dict[str, Any]
    ) -> None:
        assert self.job_run is not None
        received_before = self._pin()
        at = self.options.at if self.options.at is not None else received_before
        table_folder = folder.layout.items_prefix
        base = self._base(table_folder, at)
        journal_start = first_piece_hour(self.reader(), table_folder)
        if base is None and journal_start is None:
            raise RestoreError(f"no journal and no base in {folder.where}: nothing to restore")
        self.report.at = self.report.at or at.isoformat()
        self.view = JournalView(
            self.bucket,
            table_folder,
            folder.layout.key_hash,
            tuple(self.key_names),
            base,
            at,
            received_before,
            partition_digits(self.options.partitions),
        )
        units = self.view.route_units(self.reader(), journal_start)  # refusals first
        self._prepare_target(description)
        routes = run_stage(self, ledger, self.job_run, units, engine, None, self.progress)
        self._merge(routes)
        if not self.report.complete:
            return
        self.routed = route_outputs(routes.results)
        parts = run_stage(
            self, ledger, self.job_run, partition_units(self.options.partitions), engine,
            self.options.max_items_per_second, self.progress,
        )  # fmt: skip
        self._merge(parts)
        if self.report.complete and not self.options.dry_run:
            self._finish_target(description)

    def _pin(self) -> datetime:
        """The moment the run began by S3's clock (its ``moment.json``, written once): every
        attempt reads the journal objects S3 received before it, and a latest restore the
        state at it. A dry run (which writes nothing) takes S3's clock now."""
        assert self.job_run is not None
        if not self.job_run.recorded:
            now = s3_clock(self.s3(), self.bucket, f"{self.job_run.job_prefix}run.json")[1]
            return now.astimezone(UTC).replace(microsecond=0)
        key = f"{self.job_run.scratch_prefix}moment.json"
        if not self.job_run.resumed:
            put_if_absent(self.reader(), key, b"{}", JSON_TYPE, self.retry_policy)
        received, _ = s3_clock(self.s3(), self.bucket, key)
        if received is None:
            raise RestoreError(
                f"the unfinished run {self.job_run.run_id} has no s3://{self.bucket}/{key}: "
                "its moment is unknown; run without --resume to start over"
            )
        pinned = received.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        wait_past(self.s3(), self.bucket, key, pinned, time.sleep)
        return pinned

    def _base(self, table_folder: str, at: datetime) -> Any:
        """The newest base at or before ``at``, the same one in every attempt of a run."""
        assert self.job_run is not None
        objects = self.reader()
        key = f"{self.job_run.scratch_prefix}base.json"
        if self.job_run.resumed:
            recorded = read_json(objects, key)
            if recorded is not None:
                if recorded.get("base") is None:
                    return None
                base = read_manifest(objects, table_folder, parse_base_id(recorded["base"]))
                if base is None:
                    raise RestoreError(
                        f"base {recorded['base']}, which the run's first attempt read, is gone: "
                        "run without --resume to start over"
                    )
                return base
        base = newest_base(self.s3(), objects, table_folder, at)
        if self.job_run.recorded:
            body = json.dumps({"base": base.id if base else None}).encode()
            put_if_absent(objects, key, body, JSON_TYPE, self.retry_policy)
        return base

    def _prepare_target(self, description: dict[str, Any]) -> None:
        """Create the table (a resumed run's table is its own: created by its first attempt)."""
        if self.options.dry_run:
            return
        created = ensure_table(
            self.dynamodb(), description, self.table, billing_mode=self.options.billing_mode
        )
        assert self.job_run is not None
        note = f"{self.job_run.scratch_prefix}target.json"
        if created and self.job_run.recorded:
            body = json.dumps({"creates_table": self.table}).encode()
            put_if_absent(self.reader(), note, body, JSON_TYPE, self.retry_policy)
        self.report.created_table = created or (
            self.job_run.resumed
            and (read_json(self.reader(), note) or {}).get("creates_table") == self.table
        )
        self._check_identity()
        if not created and not self.job_run.resumed:
            scan = call_with_retries(
                lambda: self.dynamodb().scan(TableName=self.table, Limit=1, Select="COUNT"),
                READ_POLICY,
                f"look into table {self.table}",
            )
            if scan.get("Count") or scan.get("LastEvaluatedKey"):
                raise RestoreError(
                    f"table {self.table} already has items: restore a journal folder into a "
                    "new table (--into-existing is not supported on journal folders yet)"
                )

    def _check_identity(self) -> None:
        """Record the table the run writes into (its first attempt), or require the same one:
        a table deleted and made again since lost what the recorded units wrote."""
        assert self.job_run is not None
        if not self.job_run.recorded:
            return
        described = call_with_retries(
            lambda: self.dynamodb().describe_table(TableName=self.table)["Table"],
            READ_POLICY,
            f"describe table {self.table}",
        )
        identity = {
            "table": self.table,
            "table_id": described.get("TableId"),
            "created": _instant(described.get("CreationDateTime")),
        }
        key = f"{self.job_run.scratch_prefix}table-identity.json"
        body = json.dumps(identity, sort_keys=True).encode()
        if put_if_absent(self.reader(), key, body, JSON_TYPE, self.retry_policy):
            return
        if read_json(self.reader(), key) != identity:
            raise RestoreError(
                f"table {self.table} is not the one the unfinished run wrote into (deleted and "
                "made again since?): the items its earlier attempts restored are not in it; "
                "run without --resume to start over"
            )

    def _finish_target(self, description: dict[str, Any]) -> None:
        if self.options.ttl and self.report.created_table:
            attribute = switch_on_ttl(self.dynamodb(), description, self.table)
            if attribute:
                self.report.ttl_attribute = attribute
                self.report.warnings.append(
                    f"TTL is on again ({attribute}): DynamoDB will delete restored items whose "
                    f"{attribute} is already in the past, within days (restore with --no-ttl "
                    "to keep them)"
                )

    def _merge(self, outcome: StageOutcome) -> None:
        merged = merge_results(outcome.results)
        report = self.report
        report.objects += merged.count("pieces_read")
        report.versions_read += merged.count("records_read")
        report.written += merged.count("written")
        report.absent += merged.count("absent")
        report.unwritten += merged.count("unwritten")
        report.unwritten_keys.extend(merged.samples.get("unwritten_keys", []))
        samples = merged.samples.get("sample", [])[: DRY_RUN_SAMPLE - len(report.sample)]
        report.sample.extend(json.loads(text) for text in samples)
        report.errors.extend(merged.samples.get("fatal", []))
        report.errors.extend(f"{unit}: {reason}" for unit, reason in outcome.failures)
        report.unfinished_units.extend(
            sorted({*merged.unfinished} | {unit for unit, _ in outcome.failures})
        )
        report.unit_seconds += round(merged.unit_seconds, 3)

    # --- the units ------------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.view is not None and self.job_run is not None
        if unit.stage == ROUTE_STAGE:
            return route(
                self.view,
                self.reader(),
                unit,
                self.job_run.scratch_prefix if self.job_run.recorded else None,
                self.retry_policy,
                context.cancel,
                self.read_concurrency,
            )
        return self._restore_partition(unit, context)

    def _restore_partition(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """The partition's items at the moment, written into the table."""
        assert self.view is not None
        view, objects = self.view, self.reader()
        partition = unit.partition or ""
        result = UnitResult(unit.id)
        routed = routed_input(objects, partition, self.routed, self.read_concurrency)
        # The index only where a late change must be weighed against the base's state.
        states = base_states(objects, view, partition, bool(routed.placed), self.read_concurrency)
        folded = fold(states, routed.records, view.at, view.base_moment, view.key_hash)
        present = [item for _, item in present_sorted(folded)]
        result.add("absent", len(folded) - len(present))
        if self.options.dry_run:
            result.add("written", len(present))
            for item in present[:DRY_RUN_SAMPLE]:
                result.sample("sample", dumps_item(item).decode(), DRY_RUN_SAMPLE)
            return result
        for items in batched(present, BATCH_SIZE):
            context.cancel.check()
            context.limiter.acquire(len(items))
            outcome = write_all(
                self.batch_write,
                self.table,
                [{"PutRequest": {"Item": item}} for item in items],
                self.retry_policy,
                on_written=context.progress.advance,
            )
            result.add("written", outcome.written)
            if outcome.not_written:
                result.add("unwritten", len(outcome.not_written))
                result.complete = False
                for request in outcome.not_written:
                    key = extract_key(request["PutRequest"]["Item"], self.key_names)
                    result.sample("unwritten_keys", f"{dumps_item(key).decode()}: {outcome.reason}")
        return result


def _instant(value: Any) -> str:
    """A DescribeTable time as text the same in every process (whatever its time zone)."""
    return str(value.timestamp()) if isinstance(value, datetime) else str(value)


def not_yet_message(where: str, refused: list[str]) -> str:
    return (
        f"{where} is a journal folder, whose restore does not support {', '.join(refused)} "
        "yet (docs/journal.md, next steps): restore it into a new table without them"
    )
