"""``convert``: an item-layout folder's state at a moment, written as a base of a journal folder
under another prefix (docs/journal.md, "Converting an item-layout folder").

The item folder is only read. The base of moment M (``--at``, else S3's clock when the run's
first attempt began) holds, per partition, each item as the item layout's own point-in-time
selection has it at M (``BackupItems`` with its deciding change: ``core/pitr.decide_at``), and
its index the deciding changes (removals too, back to the late horizon). Its ``cutoff`` is none
and ``reflects_before`` the journal folder's first hour (M when it has no journal yet, or when
the journal begins after M): so a reader weighs every journal change made up to M against the
index (the journal trigger deployed beside the item one wrote them too: the later of the two
copies of a change in the stream's order wins, and they are the same state) and applies those
made after M. Unlike a backfill's reads, the item folder may lack a change (a batch both
triggers gave up on, replayed after the conversion): a late change older than the journal is
placed against the index too (``reflects_reads`` false), so the late horizon is a minute before
``reflects_before`` or 15 days before M (compaction's), whichever is earlier.

As every base: the folder is claimed first (``cutoff.json`` naming the run, ``If-None-Match``),
one unit per partition recorded in the job's ledger (``--resume``), the manifest last. Only then
``layout.json`` (``journal``, with the item folder's key schema) and ``table.json`` are written
into a folder that had none: a killed conversion never leaves a folder claiming to be a journal
backup. Refused before anything is written (exit 2): a source that is not an item folder, a
target that holds an item backup, is in another layout, names objects with another hash, or lies
inside the source (or the source inside it).

``--history`` (``convert_history``) also copies the item folder's versions up to M into the
journal as ``converted`` pieces, less the stream changes the journal holds (a ``route`` stage
first reads the journal's stream pieces up to M); the base says so (``converted_history``),
and its readers skip those pieces: it is their fold. Restores before M then read the journal
from its beginning.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.folder import BackupFolder, open_backup_path, open_folder_path
from dynamo_backups.backup.journal_store import (
    JOURNAL_SINCE,
    JSON_TYPE,
    base_ids,
    first_stream_piece,
    put_if_absent,
    read_json,
    read_manifest,
)
from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL, layout_of
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.backup.reading import (
    READ_POLICY,
    iter_key_histories,
    iter_versions,
    object_versions,
)
from dynamo_backups.backup.removal_check import Coverage, record_coverage
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.s3_clock import s3_clock, wait_past
from dynamo_backups.core.base import (
    BaseError,
    BaseManifest,
    BasePaths,
    parse_base_id,
    prune_removals,
)
from dynamo_backups.core.cancel import Interrupted
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, Item, loads_item
from dynamo_backups.core.journal import ChangeOrder, ItemState, format_change_time
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import (
    EVENT_INSERT,
    EVENT_MODIFY,
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    LayoutError,
    TableLayout,
    parse_time,
)
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.pitr import Decision
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    PARTITION_COUNTS,
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.jobs.base_files import manifest_files, put_manifest, write_partition
from dynamo_backups.jobs.compact import CUTOFF_FORMAT, LATE_HORIZON, SETTLE_SECONDS
from dynamo_backups.jobs.convert_history import (
    StreamChanges,
    converted_pieces,
    partition_changes,
    write_pieces,
)
from dynamo_backups.jobs.journal_units import (
    PRECISION_BOUND,
    ROUTE_STAGE,
    route,
    route_outputs,
    routed_input,
)
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage

CONVERT_JOB = "convert"
# The index events a deciding version keeps as they are; any other (another tool's version,
# a table read) is a SNAPSHOT: a state, not a stream change.
_KEPT_EVENTS = (EVENT_INSERT, EVENT_MODIFY, EVENT_SNAPSHOT)


class ConvertRefused(LayoutError):
    """A source or target ``convert`` does not take: refused before anything is written."""


class ConvertError(RuntimeError):
    """The conversion cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class ConvertOptions:
    at: datetime | None = None  # the base's moment (floored to the second); None: now
    partitions: int = 16
    resume: bool = False
    read_concurrency: int = 16
    # How long the item layout's writers may take to put a change (the base is read once S3's
    # clock is past M by this, so that every change made by M is there to be read).
    settle_seconds: float = SETTLE_SECONDS
    # Copy the item folder's versions up to the moment into the journal (``converted``
    # pieces), so that the journal folder reads as the item folder before the base too.
    history: bool = False
    # What the item folder's backfill markers say of its copy of the table, noted in the
    # journal folder (``record_coverage``) so that its readers warn as the item folder's do.
    coverage: Coverage | None = None


@dataclass
class ConvertReport:
    source: str
    target: str
    base: str | None = None
    moment: str | None = None
    reflects_before: str | None = None
    journal_start: str | None = None  # the hour of the journal's first piece, if any
    existed: bool = False  # the base's manifest was there already (a resumed run)
    layout_written: bool = False  # this run wrote the journal folder's layout.json
    items: int = 0
    removals_kept: int = 0
    files: int = 0
    objects: int = 0  # item objects read
    versions_read: int = 0
    history: bool = False
    converted_records: int = 0  # item versions copied into converted pieces
    converted_pieces: int = 0  # pieces this run wrote (a resumed run's: its own)
    in_journal: int = 0  # item versions the journal held already (not copied)
    # Removals of objects none of whose versions holds the item (created before the item
    # backup began): no key to name them by, and nothing for them to remove in the journal.
    keyless_removals: int = 0
    # Removals newer than the base's late horizon with no key: not in its index (a few named).
    unindexed_removals: int = 0
    unindexed_samples: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unfinished_units: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors and not self.unfinished_units

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Plan:
    """What every unit of a run works from (picklable: it travels to workers)."""

    source: TableLayout
    target: TableLayout
    key_names: tuple[str, ...]
    moment: datetime
    late_horizon: datetime
    partition_digits: int
    aliases: Any
    adopted: bool
    history: bool = False


class Conversion(BucketClients):
    """One conversion: ``Conversion(...).run(engine)``."""

    def __init__(
        self,
        s3: Any,
        reader: Any,
        bucket: str,
        item_folder: str,
        journal_folder: str,
        options: ConvertOptions,
        progress: ProgressSink | None = None,
        aws: AwsContext | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clients = ClientSource(aws, s3=s3, reader=reader)
        self.bucket = self.backup_bucket = bucket
        self.read_concurrency = options.read_concurrency
        self.item_folder = item_folder
        self.journal_folder = journal_folder
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=15, base_delay=0.05)
        self.sleep = sleep
        self.plan: _Plan | None = None
        self.paths: BasePaths | None = None
        self.job_run: JobRun | None = None
        self.view: StreamChanges | None = None
        self.routed: list[dict[str, Any]] = []
        self.report = ConvertReport(
            source=f"s3://{bucket}/{TableLayout.from_folder(item_folder).items_prefix}",
            target=f"s3://{bucket}/{TableLayout.from_folder(journal_folder).items_prefix}",
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress(), "sleep": time.sleep}

    # --- refusals, before anything is written ---------------------------------------------

    def open_source(self) -> BackupFolder:
        folder = open_backup_path(self.s3(), self.bucket, self.item_folder)
        layout = layout_of(folder.manifest)
        if layout != LAYOUT_ITEMS:
            raise ConvertRefused(
                f"{folder.where} is in the {layout} layout: convert reads an item-layout folder"
            )
        if not folder.key_names:
            raise ConvertRefused(
                f"{folder.where} records no key schema (layout.json, table.json): convert "
                "needs the key to name the items (run backfill or deploy once, which record it)"
            )
        if self.options.history and (folder.adopted or folder.aliases is not None):
            raise ConvertRefused(
                f"{folder.where} holds versions under another tool's names (adopt): convert "
                "--history does not copy them yet; convert without --history"
            )
        return folder

    def check_target(self, source: BackupFolder) -> tuple[TableLayout, dict[str, Any] | None]:
        """The journal folder's layout (named with the source's hash) and its ``layout.json``
        (None: a new folder); refuses anything but a new or a journal folder."""
        probe = TableLayout.from_folder(self.journal_folder)
        target = TableLayout.of(probe.prefix, probe.table, source.layout.key_hash)
        where = f"s3://{self.bucket}/{target.items_prefix}"
        one, other = source.layout.items_prefix, target.items_prefix
        if one.startswith(other) or other.startswith(one):
            raise ConvertRefused(
                f"{where} and {source.where} overlap: convert writes the journal folder under "
                "another prefix (the journal trigger's), never into the item folder"
            )
        target_folder = open_folder_path(self.s3(), self.bucket, self.journal_folder)
        manifest = target_folder.manifest
        if manifest is not None:
            layout = layout_of(manifest)
            if layout != LAYOUT_JOURNAL:
                raise ConvertRefused(
                    f"{where} holds a backup in the {layout} layout: convert writes a journal "
                    "folder; give a prefix of its own (where the journal trigger writes)"
                )
            if manifest.get("key_hash") != source.layout.key_hash:
                raise ConvertRefused(
                    f"{where} names objects with {manifest.get('key_hash')}, {source.where} "
                    f"with {source.layout.key_hash}: a base must name items as its folder does"
                )
            names = target_folder.key_names
            if names and names != source.key_names:
                raise ConvertRefused(
                    f"{where} records the key {names}, {source.where} the key "
                    f"{source.key_names}: not the same table"
                )
        elif self._holds_objects(target):
            raise ConvertRefused(
                f"{where} holds objects of its own (an item backup?) and no layout.json: "
                "convert writes a new journal folder, or one the journal trigger writes"
            )
        return target, manifest

    def _holds_objects(self, target: TableLayout) -> bool:
        """Objects directly in the folder (item objects; a journal's are in folders below)."""
        page = call_with_retries(
            lambda: self.s3().list_object_versions(
                Bucket=self.bucket, Prefix=target.items_prefix, Delimiter="/", MaxKeys=10
            ),
            READ_POLICY,
            f"list s3://{self.bucket}/{target.items_prefix}",
        )
        return bool(page.get("Versions") or page.get("DeleteMarkers"))

    # --- the driver -----------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> ConvertReport:
        started = time.monotonic()
        if self.options.partitions not in PARTITION_COUNTS:
            raise ConvertRefused(f"--partitions {self.options.partitions}")
        source = self.open_source()
        target, target_manifest = self.check_target(source)
        engine = engine or ThreadEngine(4)
        ledger = JobLedger(self.ledger_writer(), target, CONVERT_JOB)
        parameters = {
            "source": self.report.source,
            "at": self.options.at.isoformat() if self.options.at else None,
            "partitions": self.options.partitions,
        }
        if self.options.history:
            parameters["history"] = True
        self.report.history = self.options.history
        self.job_run = ledger.begin(parameters, self.options.resume)
        lease = RunLease(self.ledger_writer(), self.job_run)
        lease.acquire()  # one live attempt of a run at a time
        settled = True
        try:
            self._run_attempt(engine, ledger, source, target, target_manifest)
        except Interrupted as stop:
            settled = stop.settled
            raise
        finally:
            if settled:
                lease.release()
            else:
                lease.abandon()
            self.report.seconds = round(time.monotonic() - started, 3)
            ledger.finish(self.job_run, self.report.complete, {"base": self.report.base})
        return self.report

    def _run_attempt(
        self,
        engine: Engine,
        ledger: JobLedger,
        source: BackupFolder,
        target: TableLayout,
        target_manifest: dict[str, Any] | None,
    ) -> None:
        assert self.job_run is not None
        moment = self._moment()
        self.paths = BasePaths(target.items_prefix, moment)
        self.report.moment = format_change_time(moment)
        self.report.base = f"s3://{self.bucket}/{self.paths.prefix}"
        complete = read_manifest(self.reader(), target.items_prefix, moment)
        if complete is not None:  # this run's (resumed) or an earlier one's: nothing to write
            claim = read_json(self.reader(), self.paths.cutoff_key) or {}
            if not self._claimed_by_this_conversion(claim, source):
                # A compaction's or backfill's base of the same moment (made from the journal
                # or the table), or another item folder's conversion: not this one's.
                raise ConvertRefused(
                    f"{self.report.base} is a base another job made (not a conversion of "
                    f"s3://{self.bucket}/{source.layout.items_prefix}): convert at another "
                    "moment (--at)"
                )
            if self.options.history and not complete.converted_history:
                raise ConvertRefused(
                    f"{self.report.base} is complete and was written without --history: "
                    "convert --history at another moment (--at)"
                )
            self.report.existed = True
            self.report.reflects_before = _time_or_none(complete.reflects_before)
            self._record_layout(source, target, target_manifest)
            return
        if self.options.history:
            self._refuse_other_bases(target, moment)
        reflects_before = self._claim(target, moment, source)
        self.report.reflects_before = format_change_time(reflects_before)
        if self.options.coverage is not None:
            record_coverage(
                self.ledger_writer(), target, self.job_run.run_id, self.options.coverage, moment
            )
        self.plan = _Plan(
            source.layout,
            target,
            tuple(source.key_names or ()),
            moment,
            min(reflects_before, moment - LATE_HORIZON) - PRECISION_BOUND,
            PARTITION_COUNTS[self.options.partitions],
            source.aliases,
            source.adopted,
            self.options.history,
        )
        # Every change the item layout's writers made by M is in S3 once its clock is past M
        # by their write time limit.
        wait_past(
            self.s3(),
            self.bucket,
            self.paths.cutoff_key,
            moment + timedelta(seconds=self.options.settle_seconds),
            self.sleep,
        )
        if self.options.history:
            routes = self._route_stage(engine, ledger, target)
            if routes is not None and self._note(*routes):
                return
        parts = partition_units(self.options.partitions)
        outcome = run_stage(self, ledger, self.job_run, parts, engine, None, self.progress)
        if self._note(outcome, parts):
            return
        self._write_manifest(source, reflects_before, merge_results(outcome.results))
        self._record_layout(source, target, target_manifest)

    def _refuse_other_bases(self, target: TableLayout, moment: datetime) -> None:
        """``--history`` into a folder with a base from the table (a backfill's, another
        conversion's, or one folded from them) is refused: that base does not know the
        converted pieces, which would be late changes to it (placed, or refused as older than
        its horizon). Bases of the journal alone are no obstacle: readers pass them over
        once this conversion's base exists, and read the journal from its beginning before
        it (``journal_store.usable_base``)."""
        objects = self.reader()
        for name in base_ids(self.s3(), self.bucket, target.items_prefix):
            when = parse_base_id(name)
            if when == moment:
                continue
            manifest = read_manifest(objects, target.items_prefix, when)
            if manifest is not None and manifest.reflects_before is not None:
                raise ConvertRefused(
                    f"s3://{self.bucket}/{target.items_prefix}: base {manifest.id} holds the "
                    "table already (a backfill's or a conversion's): convert --history writes "
                    "a journal folder's first base from the table; convert into a new folder"
                )

    def _route_stage(
        self, engine: Engine, ledger: JobLedger, target: TableLayout
    ) -> tuple[StageOutcome, list[WorkUnit]] | None:
        """The journal's stream changes up to M, routed by partition (``StreamChanges``):
        the item versions the journal holds already, which are not copied. None: no journal
        at or before M."""
        assert self.plan is not None and self.job_run is not None
        objects = self.reader()
        first = first_stream_piece(objects, target.items_prefix)
        if first is None or first.first_time > self.plan.moment:
            self.routed = []
            return None
        self.view = StreamChanges(
            self.bucket,
            target.items_prefix,
            target.key_hash,
            self.plan.key_names,
            None,
            self.plan.moment,
            None,
            self.plan.partition_digits,
        )
        units = self.view.route_units(objects, first.hour)
        outcome = run_stage(self, ledger, self.job_run, units, engine, None, self.progress)
        self.routed = route_outputs(outcome.results)
        return outcome, units

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
            raise ConvertError(
                f"the unfinished run {self.job_run.run_id} has no s3://{self.bucket}/{key}: its "
                "moment is unknown; run without --resume to start over"
            )
        return received.astimezone(UTC).replace(microsecond=0)

    def _claimed_by_this_conversion(self, claim: dict[str, Any], source: BackupFolder) -> bool:
        """Whether a complete base's claim (``cutoff.json``) is this run's, or an earlier
        conversion's of the same item folder (run again: nothing to write)."""
        assert self.job_run is not None
        if not claim.get("convert"):
            return False
        return claim["convert"] == self.job_run.run_id or claim.get("source") == _source_of(
            self.bucket, source
        )

    def _claim(self, target: TableLayout, moment: datetime, source: BackupFolder) -> datetime:
        """Claim the base's folder for this run (``cutoff.json`` naming it; a compaction or
        backfill of the same moment finds it taken), or find this run's own claim; the base's
        ``reflects_before``, as the run's first attempt found the journal."""
        assert self.paths is not None and self.job_run is not None
        objects = self.reader()
        # The stream writer's first piece: a resumed --history run's converted pieces are older.
        first = first_stream_piece(objects, target.items_prefix)
        journal_start = first.hour if first is not None else None
        reflects_before = moment if journal_start is None else min(journal_start, moment)
        document = {
            "format": CUTOFF_FORMAT,
            "moment": format_change_time(moment),
            "previous": None,
            "partition_digits": PARTITION_COUNTS[self.options.partitions],
            "convert": self.job_run.run_id,
            "source": _source_of(self.bucket, source),
            "reflects_before": format_change_time(reflects_before),
        }
        if self.options.history:
            document["history"] = True
        body = json.dumps(document, indent=2, sort_keys=True).encode()
        if not put_if_absent(objects, self.paths.cutoff_key, body, JSON_TYPE, self.retry_policy):
            found = read_json(objects, self.paths.cutoff_key) or {}
            if found.get("convert") != self.job_run.run_id:
                raise ConvertError(
                    f"s3://{self.bucket}/{self.paths.prefix}: another job has claimed the base "
                    f"of {format_change_time(moment)}: convert at another moment (--at)"
                )
            if bool(found.get("history")) != self.options.history:
                raise ConvertError(
                    f"s3://{self.bucket}/{self.paths.prefix}: the run's first attempt claimed "
                    "the base " + ("with" if found.get("history") else "without") + " --history"
                )
            reflects_before = parse_time(str(found["reflects_before"]))
        if journal_start is not None:
            self.report.journal_start = format_change_time(journal_start)
        if journal_start is None or journal_start > moment:
            self.report.warnings.append(
                "the journal folder has no change at or before the base's moment: changes made "
                "after it are restorable from the journal only if the journal trigger was "
                "writing by then (deploy it beside the item trigger first; docs/journal.md)"
            )
        return reflects_before

    def _note(self, outcome: StageOutcome, units: list[WorkUnit]) -> bool:
        """Add the stage's counts to the report; True when it did not complete."""
        merged = merge_results(outcome.results)
        report = self.report
        report.objects += merged.count("objects")
        report.versions_read += merged.count("versions_read")
        report.converted_records += merged.count("converted_records")
        report.converted_pieces += merged.count("converted_pieces")
        report.in_journal += merged.count("in_journal")
        report.keyless_removals += merged.count("keyless_removals")
        report.unindexed_removals += merged.count("unindexed_removals")
        report.unindexed_samples.extend(merged.samples.get("unindexed_removals", []))
        report.errors.extend(f"{unit}: {reason}" for unit, reason in outcome.failures)
        ended = {result.unit for result in outcome.results if result.complete}
        report.unfinished_units.extend(unit.id for unit in units if unit.id not in ended)
        return not report.complete

    def _write_manifest(
        self, source: BackupFolder, reflects_before: datetime, merged: UnitResult
    ) -> None:
        assert self.plan is not None and self.paths is not None
        files = manifest_files(merged.outputs)
        manifest = BaseManifest(
            table=self.plan.target.table,
            moment=self.plan.moment,
            cutoff=None,  # every journal change up to M is weighed against the index
            late_horizon=self.plan.late_horizon,
            reflects_before=reflects_before,
            reflects_reads=False,  # the item folder may lack a change: a late one is placed
            converted_history=self.plan.history,  # it holds every converted piece's change
            previous=None,
            key_hash=self.plan.target.key_hash,
            partition_digits=self.plan.partition_digits,
            item_count=merged.count("items"),
            files=files,
        )
        if not put_manifest(self.reader(), self.paths, manifest, self.retry_policy):
            self.report.existed = True
        self.report.items = manifest.item_count
        self.report.removals_kept = merged.count("removals_kept")
        self.report.files = len(files)

    def _record_layout(
        self, source: BackupFolder, target: TableLayout, manifest: dict[str, Any] | None
    ) -> None:
        """Once the base is complete: ``layout.json`` (journal) and ``table.json`` in a folder
        that had none (a journal trigger's folder keeps its own)."""
        writer = self.ledger_writer()
        if (
            source.description is not None
            and read_json(self.reader(), target.table_description_key) is None
        ):
            writer.put_document(target.table_description_key, source.description)
        if manifest is None:
            # Written last (a killed conversion leaves no folder claiming to be a journal
            # backup), but the journal began with the run's claim: its converted pieces,
            # written before this, expire counted from their own writes, and the retention
            # refusal must count from no later (``retention_clock``).
            assert self.paths is not None
            claimed, _ = s3_clock(self.s3(), self.bucket, self.paths.cutoff_key)
            since = {JOURNAL_SINCE: format_change_time(claimed)} if claimed else None
            ensure_manifest(
                writer, target, source.key_schema, source.key_types, LAYOUT_JOURNAL, since
            )
            self.report.layout_written = True

    # --- the units ------------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """One partition: each item's state at M as the item layout selects it, written as
        the base's data and index files (and with --history its versions as converted
        pieces); or, in the route stage, an hour of the journal's stream changes."""
        assert self.plan is not None and self.paths is not None
        if unit.stage == ROUTE_STAGE:
            assert self.view is not None and self.job_run is not None
            return route(
                self.view,
                self.reader(),
                unit,
                self.job_run.scratch_prefix,
                self.retry_policy,
                context.cancel,
                self.read_concurrency,
            )
        plan, objects = self.plan, self.reader()
        partition = unit.partition or ""
        selected: list[Selected] = []
        lock = threading.Lock()

        def keep(one: Selected) -> None:
            context.cancel.check()
            with lock:
                selected.append(one)

        items = BackupItems(
            objects,
            self.bucket,
            plan.source,
            list(plan.key_names),
            at=plan.moment,
            concurrency=self.read_concurrency,
            retry_policy=self.retry_policy,
            partition=partition,
            aliases=plan.aliases,
            adopted=plan.adopted,
            decisions=True,
        )
        stats = items.for_each(keep)
        result = UnitResult(unit.id)
        states: dict[str, ItemState] = {}
        for one in selected:
            state = self._state_of(one, result)
            if state is not None:
                states[object_name(state.keys, plan.target.key_hash)] = state
        context.cancel.check()
        kept = prune_removals(states, plan.late_horizon)
        files, present = write_partition(objects, self.paths, partition, kept, self.retry_policy)
        result.outputs.extend(files)
        result.add("items", present)
        result.add("removals_kept", len(kept) - present)
        result.add("objects", stats.objects)
        result.add("versions_read", stats.versions_read + stats.versions_headed)
        if plan.history:
            self._convert_history(partition, result, context)
        context.progress.advance(present)
        return result

    def _convert_history(self, partition: str, result: UnitResult, context: UnitContext) -> None:
        """The partition's item versions up to M as converted pieces (``convert_history``),
        less the stream changes the journal holds (the route stage's records)."""
        assert self.plan is not None
        plan, objects = self.plan, self.reader()
        routed = routed_input(objects, partition, self.routed, self.read_concurrency)
        in_journal = {
            (record.name(plan.target.key_hash), record.sequence)
            for record in routed.records
            if record.sequence >= 0
        }
        histories = iter_key_histories(iter_versions(objects, plan.source.items_prefix + partition))
        got = partition_changes(
            objects,
            histories,
            list(plan.key_names),
            plan.target.key_hash,
            plan.moment,
            in_journal,
            self.retry_policy,
            context.cancel,
            self.read_concurrency,
        )
        context.cancel.check()
        pieces = converted_pieces(got.records, plan.target.key_hash)
        written = write_pieces(objects, plan.target.items_prefix, pieces, self.retry_policy)
        result.add("converted_records", len(got.records))
        result.add("converted_pieces", written)
        result.add("in_journal", got.in_journal)
        result.add("keyless_removals", got.keyless_removals)

    def _state_of(self, one: Selected, result: UnitResult) -> ItemState | None:
        """An item's base state from its selection (None: no change by M, or a removal older
        than the late horizon, which the index does not keep)."""
        assert self.plan is not None
        where = f"s3://{self.bucket}/{one.object_key}"
        if one.invalid is not None:
            raise BaseError(
                f"{one.invalid}: the partition is not converted (an item is never left out); "
                "repair the object, or run again with --resume"
            )
        decision = one.decision
        if decision is None:
            return None
        if one.item is not None:
            keys = extract_key(one.item, list(self.plan.key_names))
            return ItemState(
                keys, one.item, _order(decision), decision.change_time, _event(decision)
            )
        if decision.change_time < self.plan.late_horizon:
            return None
        keys = self._removed_keys(one.object_key, where)
        if keys is None:
            # A removal of an item no version of its object holds (older than the item backup,
            # never backfilled): its index line would need the key, which only the item's
            # versions give (the object's name is a digest of it). Left out of the index and
            # named in the report (docs/journal.md): the base holds no such item, and only a
            # late change of it older than the removal would not be weighed against it.
            result.add("unindexed_removals")
            result.sample("unindexed_removals", where)
            return None
        return ItemState(keys, None, _order(decision), decision.change_time, EVENT_REMOVE)

    def _removed_keys(self, object_key: str, where: str) -> Item | None:
        """A removed item's key (its index line needs it): from the newest version of its
        object that holds the item; None when none does."""
        assert self.plan is not None
        objects = self.reader()
        for entry in object_versions(objects, object_key):
            if entry.is_removal:
                continue
            body = _read_version(objects, object_key, entry.version_id, self.retry_policy)
            if not body:
                continue
            try:
                item = loads_item(body, where)
            except InvalidDynamoJSON:
                continue
            keys = extract_key(item, list(self.plan.key_names))
            if self.plan.source.item_object_key(keys) == object_key:
                return keys
        return None


def _source_of(bucket: str, source: BackupFolder) -> str:
    """The item folder a conversion reads, as its claim records it."""
    return f"s3://{bucket}/{source.layout.items_prefix}"


def _time_or_none(moment: datetime | None) -> str | None:
    return format_change_time(moment) if moment is not None else None


def _order(decision: Decision) -> ChangeOrder:
    """The deciding version's place in the stream's order, as a journal record of the same
    change has it (the item layout records no stream or eventID: a journal copy of the same
    change sorts after it, with the same state)."""
    return ChangeOrder(decision.latest_time, decision.sequence)


def _event(decision: Decision) -> str:
    event = decision.metadata.event_name if decision.metadata is not None else EVENT_SNAPSHOT
    return event if event in _KEPT_EVENTS else EVENT_SNAPSHOT


def _read_version(objects: Any, key: str, version_id: str, policy: RetryPolicy) -> bytes | None:
    def read() -> bytes | None:
        try:
            return objects.read_object(key, version_id)[0]  # type: ignore[no-any-return]
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "NoSuchVersion", "404"):
                return None
            raise

    return call_with_retries(read, policy, f"get s3://{objects.bucket}/{key}")  # type: ignore[no-any-return]
