"""Restore a journal folder (latest, or as of a moment) into a new table (docs/journal.md,
"Reading").

The newest complete base at or before the moment (none: the journal from its beginning), and
the journal after it, as two stages of work units recorded in the job's ledger: ``route``
(``journal_units.route``: the records the restore takes, by partition) and ``partition`` (the
base's partition, its index only when a late change must be weighed against it, and the
routed records folded at the moment; written with BatchWriteItem). Every attempt of a run
reads the journal as S3 held it when the run began (the run's ``moment.json``), and the same
base. ``--keys`` narrows both stages to the keys' items (and the partition stage to the
partitions holding them); ``--delete-absent``'s last phase reads the names every partition unit
kept from the run's scratch folder (``restore_absent``), whichever attempt ran the unit;
``--native-import`` runs the partition stage against a table ImportTable made from the base
(``imported_base``), writing only what the journal changed. Options the journal reader does
not implement are refused (``unsupported``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.errors import NOT_FOUND_CODES, ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.description import (
    description_from_key_schema,
    key_schema_of,
    key_types_of,
)
from dynamo_backups.backup.folder import BackupFolder, open_folder_path
from dynamo_backups.backup.journal_store import (
    GZIP_TYPE,
    JSON_TYPE,
    earliest_reflecting_base,
    first_piece,
    first_piece_hour,
    put_bytes,
    put_if_absent,
    read_json,
    read_manifest,
    readable_base,
)
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL, layout_of
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.core.base import BaseManifest, parse_base_id
from dynamo_backups.core.ddbjson import Item, dumps_item, loads_item
from dynamo_backups.core.journal import ItemState, fold, format_change_time
from dynamo_backups.core.keys import extract_key, key_attribute_names, object_name
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
from dynamo_backups.jobs.journal_prefetch import BaseStatesAhead
from dynamo_backups.jobs.journal_units import (
    ROUTE_STAGE,
    JournalView,
    base_states,
    partition_digits,
    present_sorted,
    retention_clock,
    route,
    route_outputs,
    routed_input,
    run_moment,
)
from dynamo_backups.jobs.restore import (
    UNWRITTEN_OUTPUTS,
    RestoreError,
    RestoreOptions,
    RestoreReport,
    TargetHasItems,
    file_sha256,
    read_keys_file,
    refuse_items_in,
    write_unwritten_keys,
)
from dynamo_backups.jobs.restore_absent import (
    ABSENT_KEYS,
    KEPT_NAMES,
    AbsentItems,
    InProcessLines,
    LineSink,
    ScratchLines,
    ScratchMismatch,
    dry_run_counts,
    scratch_lines,
)
from dynamo_backups.jobs.restore_pin import PinWait
from dynamo_backups.jobs.restore_unit import BATCH_SIZE, DRY_RUN_SAMPLE
from dynamo_backups.jobs.tables import (
    check_same_key,
    ensure_table,
    switch_on_ttl,
    table_exists,
)
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage


class UnsupportedOnJournal(LayoutError):
    """An option the journal layout's restore does not implement (exit 2)."""


class BeforeJournalBegins(LayoutError):
    """A moment before the first base of a journal that began mid-way (exit 2): the journal
    alone holds only part of the table then."""


# RestoreOptions fields the journal reader does not implement, and how they are named: a
# journal has no "object that is not a valid item" to skip (a damaged piece stops the job).
_NOT_YET = {"skip_invalid": "--skip-invalid"}


def unsupported(options: RestoreOptions, native_import: bool = False) -> list[str]:
    """The options given that a journal folder's restore refuses."""
    return [flag for name, flag in _NOT_YET.items() if getattr(options, name)]


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
        self.keys: list[Item] | None = None  # --keys, as read by the driver
        # --native-import: the base ImportTable made the table from; the partition units
        # then write only what differs from it at the moment.
        self.imported_base: str | None = None
        self.attempt = uuid.uuid4().hex[:12]  # names this attempt's scratch chunks
        self._key_hash = ""  # the folder's, once opened
        self._lock = threading.Lock()
        self._absent: AbsentItems | None = None
        self._dry_counts = False  # a dry run of --delete-absent counts (on threads)
        self._absent_keys: list[str] = []  # of a run without a ledger, with --keys
        self._outputs: list[dict[str, Any]] = []  # the partition units', earlier attempts' too
        self._base_ahead: BaseStatesAhead[dict[str, ItemState]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A worker needs the settings and the view, not the driver's last-phase collections.
        state = {
            **self.__dict__,
            "progress": NoProgress(),
            "_absent": None,
            "_absent_keys": [],
            "_outputs": [],
            "_base_ahead": None,
        }
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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
        self.check_restorable(folder)
        if self.options.keys_file is not None:
            if engine.name != "threads":
                raise RestoreError("--keys runs in this process: use --engine threads")
            self.keys = list(read_keys_file(self.options.keys_file, key_types_of(description)))
        ledger = JobLedger(self.ledger_writer(), folder.layout, f"restore-into-{self.table}")
        if self.options.dry_run:
            self.job_run = ledger.dry_run()
        else:
            self.job_run = ledger.begin(self._parameters(), self.options.resume, required=False)
        self._dry_counts = dry_run_counts(
            self.options.dry_run, self.options.delete_absent, engine.name, self.report.warnings
        )
        if self._deletes_absent() and not self.job_run.recorded and engine.name != "threads":
            raise RestoreError(
                "--delete-absent on another engine hands the names of the items restored "
                f"through the job's folder in s3://{self.bucket}, which may not be written "
                "here: use --engine threads"
            )
        lease = RunLease(self.ledger_writer(), self.job_run) if self.job_run.recorded else None
        if lease is not None:
            lease.acquire()
        try:
            self._run_attempt(engine, ledger, folder, description)
        except TargetHasItems as refused:  # before anything is written
            ledger.refuse(self.job_run, str(refused))
            raise
        finally:
            if lease is not None:
                lease.release()
        self.report.held_nothing = self._knows_nothing_then()
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(self.job_run, self.report.complete, {"written": self.report.written})
        return self.report

    def _parameters(self) -> dict[str, Any]:
        """What a resumed run must share with its first attempt (the ledger refuses others)."""
        options = self.options
        parameters: dict[str, Any] = {
            "source": self.report.source,
            "at": options.at.isoformat() if options.at else None,
            "key_schema": options.key_schema,
            "partitions": options.partitions,
            "layout": LAYOUT_JOURNAL,
        }
        if options.keys_file is not None:
            parameters["keys_sha256"] = file_sha256(options.keys_file)  # what it held
        if options.delete_absent:
            # Its units hand on the names they kept: a run without it recorded none, and
            # resuming it with it would delete the items its finished units wrote.
            parameters["delete_absent"] = True
        if self.imported_base is not None:
            parameters["imported_base"] = self.imported_base
        return parameters

    def _deletes_absent(self) -> bool:
        return self.options.delete_absent and not self.options.dry_run

    def _notes_absent(self) -> bool:
        """Whether units note what --delete-absent needs (a dry run too, on --engine threads:
        it counts)."""
        return self.options.delete_absent and (not self.options.dry_run or self._dry_counts)

    def _wanted_names(self, view_digits: int) -> tuple[frozenset[str] | None, list[WorkUnit]]:
        """The object names ``--keys`` asks for (None: every item) and the partition units
        the run needs: only the partitions holding a listed key."""
        if self.keys is None:
            return None, partition_units(self.options.partitions)
        names = frozenset(object_name(key, self._key_hash) for key in self.keys)
        parts = sorted({name[:view_digits] for name in names})
        return names, [WorkUnit("partition", part or "all", partition=part) for part in parts]

    def check_restorable(self, folder: BackupFolder) -> None:
        """Refuse, before anything is written, a moment the folder cannot give in full: one
        whose base or journal the retention rules may have expired (``readable_base``), or
        one no base at or before reflects a table older than the journal, when a later base
        shows the journal began mid-way (a backfill's or a conversion's base covers the rows
        before it): the journal alone would give part of the table. A latest restore is
        after every base."""
        table_folder = folder.layout.items_prefix
        clock = retention_clock(self.s3(), self.reader(), folder.layout)
        at = self.options.at
        base = readable_base(
            self.s3(), self.reader(), table_folder, at or clock.now, clock, folder.where
        )
        if at is None or (base is not None and base.reflects_before is not None):
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
        received_before, waiting = self._pin()
        ahead: BaseStatesAhead[dict[str, ItemState]] | None = None
        try:
            try:
                partition_stage = self._choose_base(folder, received_before)
                ahead = self._read_base_ahead(engine, ledger, partition_stage)
                if waiting is not None:
                    # Before the journal is listed (S3 then holds every piece dated before the
                    # cutoff) and before the table is made (a failed wait leaves no table).
                    waiting.join()
            finally:
                if waiting is not None:
                    waiting.cancel()
            self._base_ahead = ahead
            self._run_stages(engine, ledger, folder, description, partition_stage)
        finally:
            self._base_ahead = None
            if ahead is not None:
                ahead.stop()

    def _choose_base(self, folder: BackupFolder, received_before: datetime) -> list[WorkUnit]:
        """The moment, its base and the view of the folder the units read; the partition
        units the run needs. Lists no journal piece: this runs during the pin's wait."""
        at = self.options.at if self.options.at is not None else received_before
        table_folder = folder.layout.items_prefix
        base = self._base(folder, at)
        self.report.at = self.report.at or at.isoformat()
        self._key_hash = folder.layout.key_hash
        # --keys reads a base's partitions that hold the keys, at the base's own partitioning.
        digits = partition_digits(self.options.partitions)
        if self.keys is not None and base is not None:
            digits = base.partition_digits
        names, partition_stage = self._wanted_names(digits)
        self.view = JournalView(
            self.bucket,
            table_folder,
            folder.layout.key_hash,
            tuple(self.key_names),
            base,
            at,
            received_before,
            digits,
            names,
        )
        return partition_stage

    def _read_base_ahead(
        self, engine: Engine, ledger: JobLedger, partition_stage: list[WorkUnit]
    ) -> BaseStatesAhead[dict[str, ItemState]] | None:
        """The base's states of the partitions the units write, read on a thread in the units'
        order (``journal_prefetch``), as many ahead as units run at once: the first during
        the pin's wait. For units in this process, of a whole-table restore from a base (not
        --keys, not --native-import)."""
        view = self.view
        if engine.name != "threads" or view is None or view.base is None:
            return None
        if self.keys is not None or self.imported_base is not None:
            return None
        assert self.job_run is not None
        done = ledger.finished_units(self.job_run) if self.job_run.resumed else {}
        objects = self.reader()
        # One file at a time on the reading thread itself: a pool's workers would be joined
        # when the process exits, holding up a Ctrl-C or a failed run until their reads end.
        return BaseStatesAhead(
            lambda partition: base_states(objects, view, partition, False, concurrency=1),
            [unit.partition or "" for unit in partition_stage if unit.id not in done],
            depth=engine.slots,
        )

    def _run_stages(
        self,
        engine: Engine,
        ledger: JobLedger,
        folder: BackupFolder,
        description: dict[str, Any],
        partition_stage: list[WorkUnit],
    ) -> None:
        assert self.job_run is not None and self.view is not None
        journal_start = first_piece_hour(self.reader(), folder.layout.items_prefix)
        if self.view.base is None and journal_start is None:
            raise RestoreError(f"no journal and no base in {folder.where}: nothing to restore")
        units = self.view.route_units(self.reader(), journal_start)  # refusals first
        self._prepare_target(description)
        if self._notes_absent() and self.keys is None:
            self._absent = self._absent_items(folder)  # with --keys, only the keys' deletes
        routes = run_stage(self, ledger, self.job_run, units, engine, None, self.progress)
        self._merge(routes)
        if not self.report.complete:
            return
        self.routed = route_outputs(routes.results)
        parts = run_stage(
            self, ledger, self.job_run, partition_stage, engine,
            self.options.max_items_per_second, self.progress,
        )  # fmt: skip
        self._merge(parts)
        self._outputs = merge_results(parts.results).outputs
        unwritten = [out for out in self._outputs if UNWRITTEN_OUTPUTS & out.keys()]
        if unwritten:
            self.report.unwritten_keys_file = write_unwritten_keys(
                self.options, self.table, unwritten, self.s3(), self.bucket
            )
        if self.report.complete and not self.options.dry_run:
            self._finish_target(description)
        elif self.report.complete and self.options.delete_absent:
            self._count_absent()

    def _count_absent(self) -> None:
        """A dry run of --delete-absent: how many items it would delete, none deleted."""
        if not self._notes_absent() or self._knows_nothing_then():
            return  # another engine, or nothing known then
        if not table_exists(self.dynamodb(), self.table):
            return  # a dry run made no table: nothing to delete
        if self._absent is not None:
            self.report.would_delete += self._absent.count_the_rest()
        self.report.would_delete += len(self._listed_absent_keys())

    def _pin(self) -> tuple[datetime, PinWait | None]:
        """The moment the run began by S3's clock (its ``moment.json``, written once): every
        attempt reads the journal objects S3 received before it, and a latest restore the
        state at it; and the wait until S3's clock is past it, under way on a thread. A dry
        run (which writes nothing) takes S3's clock now."""
        assert self.job_run is not None
        pinned, wait = run_moment(
            self.s3(), self.reader(), self.bucket, self.job_run, self.retry_policy, RestoreError
        )
        return pinned, PinWait(wait) if wait is not None else None

    def _base(self, folder: BackupFolder, at: datetime) -> Any:
        """The base at or before ``at`` the retention rules keep (``readable_base``; with
        --native-import: the one imported), the same one in every attempt of a run."""
        assert self.job_run is not None
        objects = self.reader()
        table_folder = folder.layout.items_prefix
        if self.imported_base is not None:
            return self._imported(table_folder, self.imported_base)
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
        clock = retention_clock(self.s3(), objects, folder.layout)
        base = readable_base(self.s3(), objects, table_folder, at, clock, folder.where)
        if self.job_run.recorded:
            body = json.dumps({"base": base.id if base else None}).encode()
            put_if_absent(objects, key, body, JSON_TYPE, self.retry_policy)
        return base

    def _imported(self, table_folder: str, base_id: str) -> BaseManifest:
        base = read_manifest(self.reader(), table_folder, parse_base_id(base_id))
        if base is None:
            raise RestoreError(f"base {base_id}, which the table was imported from, is gone")
        return base

    def _prepare_target(self, description: dict[str, Any]) -> None:
        """Create the table (a resumed run's table is its own: created by its first attempt;
        the run notes that it creates it before it does, so that a resume knows)."""
        if self.options.dry_run:
            return
        assert self.job_run is not None
        note = f"{self.job_run.scratch_prefix}target.json"
        if self.job_run.recorded and not table_exists(self.dynamodb(), self.table):
            body = json.dumps({"creates_table": self.table}).encode()
            put_if_absent(self.reader(), note, body, JSON_TYPE, self.retry_policy)
        created = ensure_table(
            self.dynamodb(), description, self.table, billing_mode=self.options.billing_mode
        )
        if not created:
            check_same_key(self.dynamodb(), self.table, description)
        self.report.created_table = created or (
            self.job_run.resumed
            and (read_json(self.reader(), note) or {}).get("creates_table") == self.table
        )
        # Before the run records the table it writes into: a resumed run skips the check only
        # if an earlier attempt got past it, never one this check refused.
        written_before = self.job_run.resumed and self._identity_recorded()
        if not (self.report.created_table or self.options.into_existing or written_before):
            refuse_items_in(self.dynamodb(), self.table)
        self._check_identity()

    def _identity_key(self) -> str:
        assert self.job_run is not None
        return f"{self.job_run.scratch_prefix}table-identity.json"

    def _identity_recorded(self) -> bool:
        """Whether an earlier attempt recorded the table it writes into (got past its checks)."""
        assert self.job_run is not None
        return self.job_run.recorded and read_json(self.reader(), self._identity_key()) is not None

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
        key = self._identity_key()
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
        """After the items: delete what was absent (when asked), then switch TTL on."""
        if self._knows_nothing_then():
            # No item at the moment: "absent then" would be every item of the table, and
            # --delete-absent would empty it (a moment before the journal's first change).
            self.report.nothing_at_moment = self._deletes_absent()
            return
        if self._absent is not None:
            try:
                for name in scratch_lines(KEPT_NAMES, self._outputs, self._get_scratch):
                    self._absent.keep(name)  # every unit's, whichever attempt ran it
            except ScratchMismatch as error:
                raise RestoreError(str(error)) from None
            absent = self._absent.delete_the_rest()
            self.report.deleted_absent += absent.deleted
            self.report.not_deleted.extend(absent.not_deleted)
        for keys in batched(self._listed_absent_keys(), BATCH_SIZE):
            self._delete_keys(keys)
        if self.options.ttl and (self.report.created_table or self.options.into_existing):
            attribute = switch_on_ttl(self.dynamodb(), description, self.table)
            if attribute:
                self.report.ttl_attribute = attribute
                self.report.warnings.append(
                    f"TTL is on again ({attribute}): DynamoDB will delete restored items whose "
                    f"{attribute} is already in the past, within days (restore with --no-ttl "
                    "to keep them)"
                )

    def _knows_nothing_then(self) -> bool:
        """A restore --at of the whole folder that found no item then (before the journal's
        first change, or every item deleted: refused alike, as on an item folder)."""
        return (
            self.options.at is not None
            and self.keys is None
            and self.imported_base is None
            and self.report.written == 0
        )

    def _delete_keys(self, keys: list[Item]) -> None:
        outcome = write_all(
            self.batch_write,
            self.table,
            [{"DeleteRequest": {"Key": key}} for key in keys],
            self.retry_policy,
        )
        self.report.deleted_absent += outcome.written
        self.report.not_deleted.extend(
            f"{dumps_item(request['DeleteRequest']['Key']).decode()}: {outcome.reason}"
            for request in outcome.not_written
        )

    def _listed_absent_keys(self) -> list[Item]:
        """The listed keys the backup lacked, from this process or every unit's record."""
        try:  # read in full first: a unit's lines are checked once all are read
            recorded = list(scratch_lines(ABSENT_KEYS, self._outputs, self._get_scratch))
        except ScratchMismatch as error:
            raise RestoreError(str(error)) from None
        return [loads_item(text, "a listed key") for text in [*self._absent_keys, *recorded]]

    def _absent_items(self, folder: BackupFolder) -> AbsentItems:
        call = self.clients.get("call", lambda aws: aws.dynamodb_api(aws.client("dynamodb")).call)
        if call is None:
            raise RestoreError("--delete-absent needs a DynamoDB client to scan the table")
        return AbsentItems(
            call,
            self.batch_write,
            self.table,
            self.key_names,
            folder.layout.key_hash,
            self.retry_policy,
        )

    # --- what the units hand to the last phase ---------------------------------------------

    def _sink(self, kind: str, unit: WorkUnit) -> LineSink | None:
        """Where a unit puts what the last phase of --delete-absent reads: the run's scratch
        folder, which outlives the attempt; without a ledger, this process's collection."""
        assert self.job_run is not None
        if not self._notes_absent() or (kind == KEPT_NAMES) != (self.keys is None):
            return None
        if self.job_run.recorded:
            # Named per attempt: two attempts of one unit never overwrite each other's chunks.
            folder = f"{self.job_run.scratch_prefix}{kind.replace('_', '-')}/{unit.id}/"
            prefix = f"{folder}{self.attempt}-{uuid.uuid4().hex[:8]}-"
            return ScratchLines(kind, self._put_scratch, prefix)
        if kind == KEPT_NAMES:
            if self._absent is None:
                raise RestoreError("--delete-absent without a ledger runs on --engine threads")
            return InProcessLines(self._absent.keep)
        return InProcessLines(self._note_absent_key)

    def _note_absent_key(self, text: str) -> None:
        with self._lock:
            self._absent_keys.append(text)

    def _put_scratch(self, key: str, body: bytes) -> None:
        put_bytes(self.reader(), key, body, GZIP_TYPE, self.retry_policy)

    def _get_scratch(self, key: str) -> bytes:
        def read() -> bytes:
            return self.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]

        try:
            return call_with_retries(read, READ_POLICY, f"get s3://{self.bucket}/{key}")
        except ClientError as error:
            if error_code(error) not in NOT_FOUND_CODES:
                raise
            raise RestoreError(
                f"s3://{self.bucket}/{key}, which a finished unit of this run left for its last "
                "phase, is gone (a lifecycle rule on the job folder?): nothing was deleted; "
                "run without --resume to start over"
            ) from None

    def _save_unwritten(self, unit: WorkUnit, keys: list[str]) -> dict[str, Any]:
        """A unit's unwritten keys in full, in the run's scratch folder (or its result)."""
        assert self.job_run is not None
        if not self.job_run.recorded:
            return {"unwritten_key_lines": keys}
        key = f"{self.job_run.scratch_prefix}unwritten/{unit.id}.jsonl"
        body = "".join(text + "\n" for text in keys).encode("utf-8")
        put_bytes(self.reader(), key, body, "application/x-ndjson", self.retry_policy)
        return {"unwritten_keys": key}

    def _merge(self, outcome: StageOutcome) -> None:
        merged = merge_results(outcome.results)
        report = self.report
        report.objects += merged.count("pieces_read")
        report.versions_read += merged.count("records_read")
        report.written += merged.count("written")
        report.deleted_absent += merged.count("deleted")
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
        """The partition's items at the moment, written into the table (with
        ``imported_base``: only those the journal changed since the imported base)."""
        assert self.view is not None
        view, objects = self.view, self.reader()
        partition = unit.partition or ""
        result = UnitResult(unit.id)
        routed = routed_input(objects, partition, self.routed, self.read_concurrency)
        if self.imported_base is not None and not routed.records:
            return result  # nothing changed since the imported base: the table holds it
        # The index only where a late change must be weighed against the base's state.
        states = self._base_states(partition, bool(routed.placed), context)
        imported = (
            {name: state.image for name, state in states.items() if state.image}
            if self.imported_base is not None
            else {}
        )
        folded = fold(states, routed.records, view.at, view.base_moment, view.key_hash)
        present = present_sorted(folded)
        listed_absent = self._listed_absent(partition, {name for name, _ in present})
        absent = len(folded) - len(present) if self.keys is None else len(listed_absent)
        result.add("absent", absent)
        sinks = {kind: self._sink(kind, unit) for kind in (KEPT_NAMES, ABSENT_KEYS)}
        if self.options.dry_run:
            result.add("written", len(present))
            context.progress.advance(len(present))
            for _, item in present[:DRY_RUN_SAMPLE]:
                result.sample("sample", dumps_item(item).decode(), DRY_RUN_SAMPLE)
            self._note_kept(present, listed_absent, sinks, result)  # what it would delete
            return result
        unwritten: list[str] = []
        puts = [
            {"PutRequest": {"Item": item}}
            for name, item in present
            if self.imported_base is None or imported.get(name) != item
        ]
        self._write(puts, result, context, unwritten)
        if self.imported_base is not None:  # what the base held and the moment does not
            gone = sorted(set(imported) - {name for name, _ in present})
            keys = [extract_key(imported[name], self.key_names) for name in gone]
            self._write([{"DeleteRequest": {"Key": key}} for key in keys], result, context,
                        unwritten)  # fmt: skip
        if unwritten:
            result.outputs.append(self._save_unwritten(unit, unwritten))
            result.complete = False
            return result
        self._note_kept(present, listed_absent, sinks, result)
        return result

    def _note_kept(
        self,
        present: list[tuple[str, Item]],
        listed_absent: list[Item],
        sinks: dict[str, LineSink | None],
        result: UnitResult,
    ) -> None:
        """What the last phase of --delete-absent reads: the names kept, the listed keys
        absent (each sink None when the run does not delete absent items)."""
        kept, absent_keys = sinks[KEPT_NAMES], sinks[ABSENT_KEYS]
        for name, _ in present:
            if kept is not None:
                kept.add(name)
        for key in listed_absent:
            if absent_keys is not None:
                absent_keys.add(dumps_item(key).decode())
        for sink in (kept, absent_keys):
            output = sink.close() if sink is not None else None
            if output is not None:
                result.outputs.append(output)

    def _base_states(
        self, partition: str, with_index: bool, context: UnitContext
    ) -> dict[str, ItemState]:
        """The base's states of the partition (``base_states``): those read ahead
        (``journal_prefetch``) where they were and need no index, else read now."""
        assert self.view is not None
        ahead = self._base_ahead
        if ahead is not None:
            states = ahead.take(partition, context.cancel.check)
            if states is not None and not with_index:
                return states
        return base_states(self.reader(), self.view, partition, with_index, self.read_concurrency)

    def _listed_absent(self, partition: str, present: set[str]) -> list[Item]:
        """The listed keys (--keys) of this partition the backup did not hold at the moment."""
        if self.keys is None:
            return []
        names = ((key, object_name(key, self._key_hash)) for key in self.keys)
        return [key for key, name in names if name.startswith(partition) and name not in present]

    def _write(
        self,
        requests: list[dict[str, Any]],
        result: UnitResult,
        context: UnitContext,
        unwritten: list[str],
    ) -> None:
        """Puts (counted as written) or deletes (as deleted), BatchWriteItem until done,
        ``--write-concurrency`` calls in flight (every key is in one request only, so their
        order does not matter); the keys that outlast the retry budget go to ``unwritten``
        in full. A Ctrl-C stops the batches not begun and is raised once the rest end."""
        batches = list(batched(requests, BATCH_SIZE))
        if not batches:
            return
        lock = threading.Lock()
        workers = min(self.options.write_concurrency, len(batches))
        first_error: BaseException | None = None
        with ThreadPoolExecutor(workers, thread_name_prefix="journal-write") as pool:
            futures = [
                pool.submit(self._write_batch, batch, result, context, unwritten, lock)
                for batch in batches
            ]
            for future in futures:
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None and first_error is None:
                    first_error = error  # Cancelled (Ctrl-C) or a bug: the unit is redone
                    for other in futures:
                        other.cancel()
        if first_error is not None:
            raise first_error

    def _write_batch(
        self,
        batch: list[dict[str, Any]],
        result: UnitResult,
        context: UnitContext,
        unwritten: list[str],
        lock: threading.Lock,
    ) -> None:
        context.cancel.check()
        context.limiter.acquire(len(batch))
        deletes = "DeleteRequest" in batch[0]
        outcome = write_all(
            self.batch_write,
            self.table,
            batch,
            self.retry_policy,
            sleep=context.cancel.sleep,  # Ctrl-C ends a backoff at once
            on_written=None if deletes else context.progress.advance,
        )
        keys = [
            dumps_item(
                request["DeleteRequest"]["Key"]
                if deletes
                else extract_key(request["PutRequest"]["Item"], self.key_names)
            ).decode()
            for request in outcome.not_written
        ]
        with lock:
            result.add("deleted" if deletes else "written", outcome.written)
            for text in keys:
                result.add("unwritten")
                result.sample("unwritten_keys", f"{text}: {outcome.reason}")
                unwritten.append(text)


def _instant(value: Any) -> str:
    """A DescribeTable time as text the same in every process (whatever its time zone)."""
    return str(value.timestamp()) if isinstance(value, datetime) else str(value)


def not_yet_message(where: str, refused: list[str]) -> str:
    return (
        f"{where} is a journal folder, whose restore does not take {', '.join(refused)}: a "
        "journal holds no object that is not a valid item (a damaged piece stops the "
        "restore); restore it without them"
    )


def earliest_journal_change(s3: Any, folder: BackupFolder) -> tuple[datetime, bool] | None:
    """The journal's earliest change: its first piece's first change time (piece names sort
    by hour, then first time), never sampled. None for an empty journal."""
    objects = BotocoreObjects(s3, folder.bucket)
    first = first_piece(objects, folder.layout.items_prefix)
    return (first.first_time, False) if first is not None else None
