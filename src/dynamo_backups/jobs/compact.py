"""``compact``: fold a journal folder into a base, the state of every item as of a moment
(docs/journal.md, "Bases" and "Compaction").

The driver pins the moment M (``--at``, else S3's clock when the run began, recorded in the
run's scratch folder so that a resumed run folds the same moment), writes the base's
``cutoff.json`` (``If-None-Match``: its ``LastModified`` is the cutoff C, and a second run of
the same moment reuses it, with the same previous base and partitions), and waits until S3's
clock is past C by the writers' write time limit, so that every journal object dated before
C is listed. Then two stages of work units on the engine, each recorded in the job's ledger
(``--resume`` skips the recorded ones): ``route`` (``journal_units.route``: the records of
the journal objects received before C that the base takes) and ``partition`` (the previous
base's partition with its index, plus its routed records, folded at M; written as
ImportTable-ready data files and an index file, with names fixed by the partition, so a unit
done again replaces its own files). The manifest is written last (``If-None-Match``): a base
without one is not a base. Nothing is deleted: the journal expires by the lifecycle rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.checkpoints import LEASE_SECONDS, write_time_limit
from dynamo_backups.backup.folder import BackupFolder, open_backup_path
from dynamo_backups.backup.journal_store import (
    JSON_TYPE,
    RETENTION_NAME,  # noqa: F401 (where deploy and the tests find it)
    base_created,
    base_ids,
    first_piece_hour,
    first_reflecting_base,
    put_if_absent,
    read_json,
    read_manifest,
    read_retention,
)
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL, layout_of
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.s3_clock import s3_clock, wait_past
from dynamo_backups.core.base import (
    BaseManifest,
    BasePaths,
    parse_base_id,
    partition_label,
    prune_removals,
    watermarks,
)
from dynamo_backups.core.journal import fold, format_change_time
from dynamo_backups.core.layout import LayoutError, TableLayout, parse_time
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.retention import (
    CLASSES,
    RetentionPolicy,
    RetentionPolicyError,
    base_expiry_reason,
    journal_gap_reason,
    retention_class,
    retention_tags,
)
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.jobs.base_files import manifest_files, put_manifest, write_partition
from dynamo_backups.jobs.journal_units import (
    ROUTE_STAGE,
    JournalView,
    base_states,
    partition_digits,
    route,
    route_outputs,
    routed_input,
)
from dynamo_backups.jobs.units import BucketClients, Engine, run_stage

CUTOFF_FORMAT = "dynamo-backups-base-cutoff"
# Removals a base's index keeps, back from its moment: a late change older than this cannot
# be placed (SQS keeps a failed batch up to 14 days for ``replay``; a day more).
LATE_HORIZON = timedelta(days=15)
# How long a writer's put attempt may be in flight: every journal writer's clients (the
# handler's ``lambda_context``, the stream command's ``_lease_bounded``) time out within the
# write time limit (connect + read, ``checkpoints.write_timeouts``), and S3 dates each attempt
# (a retry too) when it begins: past the cutoff by this, every object dated before it has
# been received (docs/journal.md, "Compaction").
SETTLE_SECONDS = write_time_limit(LEASE_SECONDS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CompactError(RuntimeError):
    """The compaction cannot start or cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class CompactOptions:
    at: datetime | None = None  # the base's moment (floored to the second); None: now
    partitions: int = 16
    resume: bool = False
    read_concurrency: int = 16
    settle_seconds: float = SETTLE_SECONDS
    late_horizon: timedelta = LATE_HORIZON


@dataclass
class CompactReport:
    source: str
    base: str | None = None  # the base's folder
    moment: str | None = None
    cutoff: str | None = None
    previous: str | None = None
    retention: str | None = None  # the class the base's objects are tagged with
    existed: bool = False  # a complete base of that moment was there already
    items: int = 0
    removals_kept: int = 0
    files: int = 0
    pieces_read: int = 0
    records_read: int = 0
    records_folded: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished_units: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors and not self.unfinished_units

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Compaction(BucketClients):
    """One compaction: ``Compaction(...).run(engine)``."""

    def __init__(
        self,
        s3: Any,
        reader: Any,
        bucket: str,
        folder: str,
        options: CompactOptions,
        progress: ProgressSink | None = None,
        aws: AwsContext | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clients = ClientSource(aws, s3=s3, reader=reader)
        self.bucket = self.backup_bucket = bucket
        self.read_concurrency = options.read_concurrency
        self.folder_path = folder
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=15, base_delay=0.05)
        self.sleep = sleep
        self.view: JournalView | None = None
        self.paths: BasePaths | None = None
        self.routed: list[dict[str, Any]] = []
        self.job_run: JobRun | None = None
        self.tags: dict[str, str] = {}  # the base's retention tag, on every put of the base
        self.table_layout: TableLayout | None = None
        self.report = CompactReport(source=f"s3://{bucket}/{folder.strip('/')}/")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress(), "sleep": time.sleep}

    # --- the driver -----------------------------------------------------------------------

    def open(self) -> BackupFolder:
        """The journal folder (NoBackupError for a bucket or folder without a backup)."""
        folder = open_backup_path(self.s3(), self.bucket, self.folder_path)
        layout = layout_of(folder.manifest)
        if layout != LAYOUT_JOURNAL:
            raise LayoutError(
                f"{folder.where} is in the {layout} layout: compact folds a journal folder "
                "(one written with --layout journal)"
            )
        if not folder.key_names:
            raise LayoutError(f"{folder.where} records no key schema (layout.json, table.json)")
        return folder

    def run(self, engine: Engine | None = None) -> CompactReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(4)
        folder = self.open()
        self.table_layout = folder.layout
        ledger = JobLedger(self.ledger_writer(), folder.layout, "compact")
        parameters = {
            "at": self.options.at.isoformat() if self.options.at else None,
            "partitions": self.options.partitions,
        }
        self.job_run = ledger.begin(parameters, self.options.resume)
        lease = RunLease(self.ledger_writer(), self.job_run)
        lease.acquire()  # one live attempt of a run at a time
        try:
            self._run_attempt(engine, ledger, folder)
        finally:
            lease.release()
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(self.job_run, self.report.complete, {"base": self.report.base})
        return self.report

    def _run_attempt(self, engine: Engine, ledger: JobLedger, folder: BackupFolder) -> None:
        assert self.job_run is not None
        table_folder = folder.layout.items_prefix
        moment = self._moment()
        self.paths = BasePaths(table_folder, moment)
        self.report.moment = format_change_time(moment)
        self.report.base = f"s3://{self.bucket}/{self.paths.prefix}"
        if read_manifest(self.reader(), table_folder, moment) is not None:
            self.report.existed = True
            return
        previous, cutoff = self._cutoff(table_folder, moment)
        self.report.previous = previous.id if previous is not None else None
        self.report.cutoff = format_change_time(cutoff)
        wait_past(
            self.s3(),
            self.bucket,
            self.paths.cutoff_key,
            cutoff + timedelta(seconds=self.options.settle_seconds),
            self.sleep,
        )
        self.view = JournalView(
            self.bucket,
            table_folder,
            folder.layout.key_hash,
            tuple(folder.key_names or ()),
            previous,
            moment,
            cutoff,
            partition_digits(self.options.partitions),
        )
        journal_start = first_piece_hour(self.reader(), table_folder)
        units = self.view.route_units(self.reader(), journal_start)
        routes = run_stage(self, ledger, self.job_run, units, engine, None, self.progress)
        if self._note(routes.results, routes.failures):
            return
        self.routed = route_outputs(routes.results)
        parts = run_stage(
            self, ledger, self.job_run, partition_units(self.options.partitions), engine, None,
            self.progress,
        )  # fmt: skip
        if self._note(parts.results, parts.failures):
            return
        self._write_manifest(folder, previous, cutoff, parts.results)

    def _note(self, results: list[UnitResult], failures: list[tuple[str, str]]) -> bool:
        """Add a stage's counts to the report; True when the stage did not complete."""
        merged = merge_results(results)
        report = self.report
        report.pieces_read += merged.count("pieces_read")
        report.records_read += merged.count("records_read")
        report.records_folded += merged.count("records_folded")
        report.errors.extend(f"{unit}: {reason}" for unit, reason in failures)
        report.unfinished_units.extend(sorted({*merged.unfinished} | {u for u, _ in failures}))
        return not report.complete

    def _moment(self) -> datetime:
        """The base's moment: ``--at`` (to the second), else S3's clock when the run's first
        attempt began (the run's ``moment.json``), the same in every attempt."""
        if self.options.at is not None:
            return self.options.at.astimezone(UTC).replace(microsecond=0)
        assert self.job_run is not None
        key = f"{self.job_run.scratch_prefix}moment.json"
        if not self.job_run.resumed:
            put_if_absent(self.reader(), key, b"{}", JSON_TYPE, self.retry_policy)
        received, _ = s3_clock(self.s3(), self.bucket, key)
        if received is None:
            raise CompactError(
                f"the unfinished run {self.job_run.run_id} has no s3://{self.bucket}/{key}: its "
                "moment is unknown; run without --resume to start over"
            )
        return received.astimezone(UTC).replace(microsecond=0)

    def _cutoff(self, table_folder: str, moment: datetime) -> tuple[BaseManifest | None, datetime]:
        """Write the base's cutoff marker (or find the one a run of the same moment wrote):
        the previous base, the partitions and the retention class it names are this run's,
        whoever wrote it."""
        assert self.paths is not None
        objects = self.reader()
        policy, now = self._retention_policy()
        previous = self._choose_previous(table_folder, moment, policy, now)
        document = {
            "format": CUTOFF_FORMAT,
            "moment": format_change_time(moment),
            "previous": previous.id if previous is not None else None,
            "partition_digits": partition_digits(self.options.partitions),
            "retention": self._retention_class(table_folder, moment, policy),
        }
        key = self.paths.cutoff_key
        found = read_json(objects, key)
        if found is None:
            self.tags = retention_tags(document["retention"])
            body = json.dumps(document, indent=2, sort_keys=True).encode()
            if not put_if_absent(objects, key, body, JSON_TYPE, self.retry_policy, self.tags):
                found = read_json(objects, key) or {}
        if found is not None:
            for job in ("backfill", "convert"):  # a base made from other sources
                if found.get(job):
                    raise CompactError(
                        f"s3://{self.bucket}/{key}: {job} run {found[job]} writes the base of "
                        "this moment: compact at another moment (--at)"
                    )
            if found.get("partition_digits") != document["partition_digits"]:
                raise CompactError(
                    f"s3://{self.bucket}/{key}: a compaction of this moment began with "
                    f"{16 ** int(found.get('partition_digits') or 0)} partitions: run it with "
                    "that --partitions (its files are named by partition)"
                )
            if found.get("previous") != document["previous"]:
                previous = self._recorded_previous(table_folder, found.get("previous"))
                self._check_previous(previous, policy, now)
            # The class its first attempt tagged cutoff.json with: every object of a base
            # carries one class, so that the rules expire it whole.
            recorded = found.get("retention")
            self.tags = retention_tags(recorded if recorded in CLASSES else document["retention"])
        self.report.retention = self.tags[next(iter(self.tags))]
        received, _ = s3_clock(self.s3(), self.bucket, key)
        if received is None:
            raise CompactError(f"s3://{self.bucket}/{key} is gone (a lifecycle rule?)")
        return previous, received

    def _retention_policy(self) -> tuple[RetentionPolicy | None, datetime]:
        """The folder's retention policy (``retention.json``, written by deploy; None: no
        rules of ours expire anything) and S3's clock now."""
        assert self.table_layout is not None
        _, now = s3_clock(self.s3(), self.bucket, self.table_layout.manifest_key)
        try:
            return read_retention(self.reader(), self.table_layout.meta_prefix), now
        except RetentionPolicyError as error:
            raise CompactError(str(error)) from None

    def _choose_previous(
        self,
        table_folder: str,
        moment: datetime,
        policy: RetentionPolicy | None,
        now: datetime,
    ) -> BaseManifest | None:
        """The newest complete base before ``moment`` the rules cannot have begun to expire
        (a base near its expiry may have lost data files while its manifest, written last,
        is still there): passed over for an older one, a week's base if need be. The
        journal after the one chosen must be whole too; otherwise the compaction refuses
        rather than fold a journal with holes (``core/retention``)."""
        ids = base_ids(self.s3(), self.bucket, table_folder)
        midway = first_reflecting_base(self.s3(), self.reader(), table_folder, _EPOCH)
        for name in sorted((b for b in ids if parse_base_id(b) < moment), reverse=True):
            manifest = read_manifest(self.reader(), table_folder, parse_base_id(name))
            if manifest is None:
                continue  # not complete
            if midway is not None and manifest.reflects_before is None:
                continue  # the journal alone, begun mid-way: part of the table (usable_base)
            if policy is not None and base_expiry_reason(
                name, manifest.retention, base_created(manifest), now, policy
            ):
                continue
            self._check_previous(manifest, policy, now)
            return manifest
        if midway is not None:
            raise CompactError(
                f"s3://{self.bucket}/{table_folder}: its journal begins mid-way (base "
                f"{midway.id} holds the rows older than the journal) and no base before "
                f"{format_change_time(moment)} descends from such a base: a base folded from "
                "the journal alone would hold part of the table. Compact at a later moment "
                "(--at), or write a base from the table (backfill)"
            )
        if policy is not None:
            assert self.table_layout is not None
            started, _ = s3_clock(self.s3(), self.bucket, self.table_layout.manifest_key)
            gap = journal_gap_reason(started or now, now, policy, "the journal (no base yet)")
            if gap is not None:
                raise CompactError(
                    f"{gap}. A base folded from what is left would miss them: write a base "
                    "from the table instead (backfill)"
                )
        return None

    def _check_previous(
        self, previous: BaseManifest | None, policy: RetentionPolicy | None, now: datetime
    ) -> None:
        if previous is None or policy is None:
            return
        reason = base_expiry_reason(
            previous.id, previous.retention, base_created(previous), now, policy
        ) or journal_gap_reason(previous.moment, now, policy, f"base {previous.id}")
        if reason is not None:
            raise CompactError(
                f"{reason}. A base folded from it could miss changes: compact from a newer "
                "base (run without --resume), or write a base from the table (backfill)"
            )

    def _retention_class(
        self, table_folder: str, moment: datetime, policy: RetentionPolicy | None
    ) -> str:
        """The base's class, from its moment and the complete bases before it in its month
        and ISO week (read oldest first: the first complete one settles it)."""
        week, month = moment.isocalendar()[:2], (moment.year, moment.month)
        earlier: list[datetime] = []
        for scope in ("month", "week"):
            for name in base_ids(self.s3(), self.bucket, table_folder):
                other = parse_base_id(name)
                same = (
                    (other.year, other.month) == month
                    if scope == "month"
                    else other.isocalendar()[:2] == week
                )
                if other >= moment or not same:
                    continue
                if read_manifest(self.reader(), table_folder, other) is not None:
                    earlier.append(other)
                    break
        monthly = policy is None or policy.monthly_days is not None
        return retention_class(moment, earlier, monthly)

    def _recorded_previous(self, table_folder: str, name: Any) -> BaseManifest | None:
        if name is None:
            return None
        previous = read_manifest(self.reader(), table_folder, parse_base_id(str(name)))
        if previous is None:
            raise CompactError(
                f"the compaction of {self.report.moment} began from base {name}, which is "
                "gone or incomplete now"
            )
        return previous

    def _write_manifest(
        self,
        folder: BackupFolder,
        previous: BaseManifest | None,
        cutoff: datetime,
        results: list[UnitResult],
    ) -> None:
        assert self.view is not None and self.paths is not None
        merged = merge_results(results)
        files = manifest_files(merged.outputs)
        streams: dict[str, dict[str, str]] = dict(previous.streams) if previous else {}
        for output in merged.outputs:
            for stream, mark in (output.get("streams") or {}).items():
                streams[stream] = _later_mark(streams.get(stream), mark)
        manifest = BaseManifest(
            table=folder.layout.table,
            moment=self.view.at,
            cutoff=cutoff,
            late_horizon=self._horizon(),
            reflects_before=previous.reflects_before if previous else None,
            reflects_reads=previous.reflects_reads if previous else True,
            previous=previous.id if previous else None,
            key_hash=folder.layout.key_hash,
            partition_digits=self.view.partition_digits,
            item_count=merged.count("items"),
            files=files,
            streams=dict(sorted(streams.items())),
            retention=self.report.retention,
        )
        if not put_manifest(self.reader(), self.paths, manifest, self.retry_policy, self.tags):
            self.report.existed = True
        self.report.items = manifest.item_count
        self.report.removals_kept = merged.count("removals_kept")
        self.report.files = len(files)

    def _horizon(self) -> datetime:
        """The new base's late horizon: its index keeps the removals made since. Never
        before the previous base's, whose index holds no older removals to keep."""
        assert self.view is not None
        horizon = self.view.at - self.options.late_horizon
        if self.view.base is not None:
            horizon = max(horizon, self.view.base.late_horizon)
        return horizon

    # --- the units ------------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.view is not None and self.job_run is not None
        if unit.stage == ROUTE_STAGE:
            return route(
                self.view,
                self.reader(),
                unit,
                self.job_run.scratch_prefix,
                self.retry_policy,
                context.cancel,
                self.read_concurrency,
            )
        return self._fold_partition(unit, context)

    def _fold_partition(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """The partition's state at the base's moment, written as the base's files."""
        assert self.view is not None and self.paths is not None
        view, objects = self.view, self.reader()
        partition = unit.partition or ""
        result = UnitResult(unit.id)
        states = base_states(objects, view, partition, True, self.read_concurrency)
        routed = routed_input(objects, partition, self.routed, self.read_concurrency)
        context.cancel.check()
        folded = fold(states, routed.records, view.at, view.base_moment, view.key_hash)
        kept = prune_removals(folded, self._horizon())
        files, present = write_partition(
            objects, self.paths, partition, kept, self.retry_policy, self.tags
        )
        result.outputs.extend(files)
        label = partition_label(partition)
        result.outputs.append({"partition": label, "streams": watermarks(routed.records)})
        result.add("items", present)
        result.add("removals_kept", len(kept) - present)
        result.add("records_folded", len(routed.records))
        context.progress.advance(present)
        return result


def _later_mark(mine: dict[str, str] | None, theirs: dict[str, str]) -> dict[str, str]:
    if mine is None:
        return dict(theirs)
    sequence = max(int(mine["last_sequence"]), int(theirs["last_sequence"]))
    moment = max(parse_time(mine["last_change_time"]), parse_time(theirs["last_change_time"]))
    return {"last_sequence": str(sequence), "last_change_time": format_change_time(moment)}
