"""Restore a backup (latest, or as of a moment) into a DynamoDB table.

The driver (this module) checks the source, creates the table as described, and splits the
work into units, one per partition of the backup folder (``restore_unit`` does each); the
units run on any engine and are recorded in the job's ledger, so ``--resume`` goes on where
an interrupted restore stopped. Anything that cannot be written is reported by key, never
dropped in silence; TTL is switched on only once every item is in.

The last phase (``--delete-absent``'s deletes, the TTL switch) depends on what every unit did,
also the units an earlier attempt of a resumed run finished: each unit leaves what that phase
needs in the run's scratch folder, and whether the run created the table is noted there
before it is created, so a resumed run ends the table exactly as one uninterrupted run would.
A resumed run reads what its first attempt read (a latest restore: the backup as S3 held it
when the run began), in the table it wrote into, with the same ``--keys`` contents and folder
adoption, or it is refused; one attempt of a run is live at a time (``RunLease``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.errors import NOT_FOUND_CODES, ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.bucket import versioning_status
from dynamo_backups.backup.description import (
    DescriptionError,
    description_from_key_schema,
    key_schema_of,
    key_types_of,
)
from dynamo_backups.backup.folder import BackupFolder, open_folder_path
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.s3_clock import wait_past
from dynamo_backups.core.cancel import Interrupted
from dynamo_backups.core.ddbjson import dumps_item, loads_item
from dynamo_backups.core.keys import canonical_key, key_attribute_names, parse_key
from dynamo_backups.core.layout import TableLayout, VersionMetadata
from dynamo_backups.core.parallel import ThreadEngine, batched
from dynamo_backups.core.pitr import DEFAULT_CLOCK_SKEW
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
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
from dynamo_backups.jobs.restore_pin import PinWait, Prefetch
from dynamo_backups.jobs.restore_unit import BATCH_SIZE, DRY_RUN_SAMPLE, RestoreUnit
from dynamo_backups.jobs.tables import (
    check_same_key,
    ensure_table,
    has_items,
    switch_on_ttl,
    table_exists,
)
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage

logger = logging.getLogger("dynamo_backups.jobs.restore")

SAMPLE_SIZE = 20
UNWRITTEN_OUTPUTS = {"unwritten_keys", "unwritten_key_lines"}  # in S3 scratch, or inline

# The budget of every write and read the restore retries (BatchWriteItem groups, scratch
# objects) when no ``retry_policy`` is given; a module value so that a test can shorten it.
RETRY_POLICY = RetryPolicy(max_attempts=15, base_delay=0.05, max_delay=20)


class RestoreError(RuntimeError):
    """The restore cannot start or cannot go on; the message says why and what to do."""


class TargetHasItems(RestoreError):
    """The target table already has items and the restore was not told --into-existing."""


@dataclass(frozen=True)
class RestoreOptions:
    at: datetime | None = None
    keys_file: str | None = None  # restore only these items: one key per line, JSON
    dry_run: bool = False
    into_existing: bool = False
    skip_invalid: bool = False
    max_items_per_second: float | None = None
    read_concurrency: int = 32
    write_concurrency: int = 8
    key_schema: str | None = None  # "pk:S,sk:N" when no description was saved
    skew: timedelta = DEFAULT_CLOCK_SKEW
    billing_mode: str = "PAY_PER_REQUEST"  # of a table the restore creates
    ttl: bool = True  # switch TTL on (as the source had it) once the items are written
    delete_absent: bool = False  # into an existing table: delete what the backup lacked
    unwritten_keys_file: str | None = None  # where keys that could not be written go
    resume: bool = False  # go on with the unfinished run of the same restore
    partitions: int = 16  # units the backup folder is split into


@dataclass
class RestoreReport:
    source: str
    table: str
    at: str | None = None
    dry_run: bool = False
    created_table: bool = False
    objects: int = 0
    written: int = 0
    absent: int = 0
    invalid: int = 0
    invalid_objects: list[str] = field(default_factory=list)
    unwritten: int = 0
    unwritten_keys: list[str] = field(default_factory=list)
    unwritten_keys_file: str | None = None
    deleted_absent: int = 0
    would_delete: int = 0  # a dry run of --delete-absent: what it would have deleted
    not_deleted: list[str] = field(default_factory=list)
    ttl_attribute: str | None = None
    warnings: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    versions_read: int = 0
    errors: list[str] = field(default_factory=list)  # what stopped a unit
    unfinished_units: list[str] = field(default_factory=list)
    unit_seconds: float = 0.0
    seconds: float = 0.0
    # --at found no item of the folder then (before its first backup): nothing known of the
    # table at that moment, so --delete-absent deleted nothing.
    nothing_at_moment: bool = False
    # --at found no item of the folder then, whatever the layout (not in the summary: the
    # command refuses such a moment with exit 2, see cli/restore).
    held_nothing: bool = False

    @property
    def complete(self) -> bool:
        return (
            self.unwritten == 0
            and self.invalid == 0
            and not self.not_deleted
            and not self.errors
            and not self.unfinished_units
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "held_nothing"}


class Restore(BucketClients):
    """One restore: ``Restore(...).run(engine)``. The clients given are used in this
    process; workers elsewhere make their own from ``aws``."""

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
        self.bucket = bucket
        self.backup_bucket = bucket
        self.read_concurrency = options.read_concurrency
        self.folder_path = folder
        self._folder: BackupFolder | None = None
        self.table = table
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RETRY_POLICY
        self.report = RestoreReport(
            f"s3://{bucket}/{TableLayout.from_folder(folder).items_prefix}",
            table,
            dry_run=options.dry_run,
        )
        if options.at is not None:
            self.report.at = options.at.isoformat()
        self.key_names: list[str] = []
        self.job_run: JobRun | None = None
        self._lock = threading.Lock()
        self._absent: AbsentItems | None = None
        self._dry_counts = False  # a dry run of --delete-absent counts (on threads)
        self._absent_keys: list[str] = []  # of a run without a ledger, with --keys
        self._outputs: list[dict[str, Any]] = []  # every unit's, the earlier attempts' too
        # A latest restore reads the backup as S3 held it when the run's first attempt began,
        # in every attempt (``_pin_moment``).
        self.received_before: datetime | None = None
        # Versions read during the pin's wait, for this process's units (``restore_pin``).
        self.prefetched: PrefetchedReads | None = None
        self.attempt = uuid.uuid4().hex[:12]  # names this attempt's scratch chunks

    def __getstate__(self) -> dict[str, Any]:
        # What a worker needs: settings, the folder as opened, the key names; not the
        # driver's collections for the last phase (a worker's units leave theirs in S3).
        state = {
            **self.__dict__,
            "progress": NoProgress(),
            "_absent": None,
            "_absent_keys": [],
            "_outputs": [],
            "prefetched": None,
        }
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- clients, here or in a worker ----------------------------------------------------------

    def dynamodb(self) -> Any:
        return self.clients.get("dynamodb", lambda aws: aws.client("dynamodb"))

    def batch_write(self, request: dict[str, Any]) -> dict[str, Any]:
        def make(aws: AwsContext) -> Callable[[dict[str, Any]], dict[str, Any]]:
            pool = self.options.write_concurrency
            api = aws.dynamodb_api(aws.client("dynamodb", pool=pool, retries=1))
            return lambda batch: api.call("BatchWriteItem", batch)

        return self.clients.get("batch_write", make)(request)

    # --- preparation ---------------------------------------------------------------------------

    @property
    def folder(self) -> BackupFolder:
        """The backup folder, opened (layout.json, table.json) on first use."""
        if self._folder is None:
            self._folder = open_folder_path(self.s3(), self.bucket, self.folder_path)
        return self._folder

    @property
    def layout(self) -> TableLayout:
        return self.folder.layout

    def description(self) -> dict[str, Any]:
        """The saved table description, one from --key-schema, or one from the manifest."""
        if self.options.key_schema:
            return description_from_key_schema(self.options.key_schema)
        if self.folder.description is not None:
            return self.folder.description
        manifest = self.folder.manifest or {}
        if manifest.get("key_schema") and manifest.get("key_types"):
            text = ",".join(
                f"{element['AttributeName']}:{manifest['key_types'][element['AttributeName']]}"
                for element in manifest["key_schema"]
            )
            return description_from_key_schema(text)
        raise DescriptionError(
            f"no table description at s3://{self.bucket}/{self.layout.table_description_key} "
            "(a backfill saves one): give the key schema, e.g. --key-schema pk:S,sk:N"
        )

    def check_source(self) -> None:
        versioning_status(self.s3(), self.bucket)  # a clear error for a missing bucket
        page = call_with_retries(
            lambda: self.reader().list_versions_page(self.layout.items_prefix),
            READ_POLICY,
            f"list s3://{self.bucket}/{self.layout.items_prefix}",
        )
        if not page.entries:
            raise RestoreError(
                f"no backup at s3://{self.bucket}/{self.layout.items_prefix}: check the bucket "
                "and the prefix (the table's folder, e.g. Prod/Users)"
            )

    def _prepare_target(self, description: dict[str, Any], resumed: bool) -> None:
        if self.options.dry_run:
            return
        dynamodb = self.dynamodb()
        created_earlier = resumed and self._created_by_this_run()
        written_into = self._recorded_identity() if resumed else None
        exists = table_exists(self.dynamodb(), self.table)
        if written_into is not None and not exists:
            raise self._other_table(f"table {self.table} is gone")
        if not created_earlier and not exists:
            self._note_table_creation()  # before: an attempt may stop while it is created
        created = ensure_table(
            dynamodb, description, self.table, billing_mode=self.options.billing_mode
        )
        self.report.created_table = created or created_earlier
        if not created:
            check_same_key(dynamodb, self.table, description)
        # Before the run records the table it writes into: a resumed run skips the check only
        # if an earlier attempt got past it (its table holds what the run wrote), never one
        # this check refused (a second "--resume" would write over the table's items).
        if not (self.report.created_table or self.options.into_existing or written_into):
            refuse_items_in(dynamodb, self.table)
        self._check_identity(written_into)

    def _count_absent(self) -> None:
        """A dry run of --delete-absent: how many items it would delete, none deleted."""
        if not self._notes_absent() or not table_exists(self.dynamodb(), self.table):
            return  # another engine, or no table: a dry run made none, nothing to delete
        if self._absent is not None and not self._knows_nothing_then():
            self.report.would_delete += self._absent.count_the_rest()
        if self.options.keys_file is not None:
            self.report.would_delete += sum(1 for _ in self._listed_absent_keys())

    def _creation_key(self) -> str:
        assert self.job_run is not None
        return f"{self.job_run.scratch_prefix}target.json"

    def _note_table_creation(self) -> None:
        """Record that this run creates the table: a resumed run then treats it as its own
        (TTL switched on at the end, as for a table the run created)."""
        assert self.job_run is not None
        if self.job_run.recorded:
            self.ledger_writer().put_document(self._creation_key(), {"creates_table": self.table})

    # The table a run writes into: a resumed run goes on only in the very table its earlier
    # attempts wrote (their recorded units' items are in it, nowhere else). A table deleted
    # (and created again) since, by anyone, lost them: the resume is refused.

    def _identity_key(self) -> str:
        assert self.job_run is not None
        return f"{self.job_run.scratch_prefix}table-identity.json"

    def _recorded_identity(self) -> dict[str, Any] | None:
        assert self.job_run is not None
        if not self.job_run.recorded:
            return None
        return read_document(self.s3(), self.bucket, self._identity_key())

    def _table_identity(self) -> dict[str, Any]:
        described = call_with_retries(
            lambda: self.dynamodb().describe_table(TableName=self.table)["Table"],
            READ_POLICY,
            f"describe table {self.table}",
        )
        created = described.get("CreationDateTime")
        return {
            "table": self.table,
            "table_id": described.get("TableId"),
            "created": created.isoformat() if isinstance(created, datetime) else str(created),
        }

    def _check_identity(self, written_into: dict[str, Any] | None) -> None:
        """Record the table this run writes into (first attempt), or check it is the same."""
        assert self.job_run is not None
        if not self.job_run.recorded:
            return
        identity = self._table_identity()
        if written_into is None:
            self.ledger_writer().put_document(self._identity_key(), identity)
        elif written_into != identity:
            raise self._other_table(
                f"table {self.table} is not the one the run wrote into (created "
                f"{written_into.get('created')}, now {identity.get('created')})"
            )

    def _other_table(self, what: str) -> RestoreError:
        return RestoreError(
            f"{what}: the items the unfinished run's earlier attempts restored are not in "
            "it, and a resume would skip them; run without --resume to start over"
        )

    def _pin_moment(self) -> tuple[str, datetime] | None:
        """For a restore with a ledger (latest or ``--at``): the moment every attempt of the
        run reads the backup as S3 held it, so that a resumed run's units and those an earlier
        attempt finished read one backup (two moments would delete, with --delete-absent, what
        either held). An ``--at`` restore needs it too: a change dated before its moment can
        reach the backup late (a stream lagging, a replay); an attempt after it would restore
        it, one before it not. ``--at`` itself is one of the run's parameters: a resume with
        another moment is refused by the ledger.

        The moment is S3's: when S3 stored the run's ``moment.json``, written once as the run
        began; every attempt reads the versions S3 received before it (to the next whole
        second: S3's times are to the second). S3's own clock, not this host's, and not the
        changes' times (to the minute on DynamoDB Local, and a change time cannot tell a
        change made before the run began from one made the same second after): whatever the
        backup held when the run began is read, whatever reached it later is not.

        Gives ``moment.json``'s key and the cutoff; the attempt then waits until S3's clock is
        past the cutoff (``_wait_past_cutoff``, in the background while the table is
        prepared: ``restore_pin``) before any unit lists anything."""
        run = self.job_run
        if run is None or not run.recorded:
            return None
        key = f"{run.scratch_prefix}moment.json"
        if not run.resumed:
            self.ledger_writer().put_document(key, {"run_id": run.run_id})
        try:
            head = call_with_retries(
                lambda: self.s3().head_object(Bucket=self.bucket, Key=key),
                READ_POLICY,
                f"head s3://{self.bucket}/{key}",
            )
        except ClientError as error:
            if error_code(error) not in {"404", "NoSuchKey", "NotFound"}:
                raise
            raise RestoreError(
                f"the unfinished run {run.run_id} has no s3://{self.bucket}/{key} (started by "
                "an older version, or the run's folder was cleaned up): its moment is unknown; "
                "run without --resume to start over"
            ) from None
        cutoff: datetime = head["LastModified"].replace(microsecond=0) + timedelta(seconds=1)
        return key, cutoff

    def _wait_past_cutoff(self, key: str, cutoff: datetime, sleep: Callable[[float], None]) -> None:
        """S3 dates versions to the second: one received in moment.json's second after it is
        dated before the cutoff too. Once S3's clock is past the cutoff, every version dated
        before it has been received, and this attempt reads all of them, as later ones do. A
        resumed attempt checks too (one HEAD): its first may have been killed during the
        wait."""
        wait_past(self.s3(), self.bucket, key, cutoff, sleep)

    def _created_by_this_run(self) -> bool:
        noted = read_document(self.s3(), self.bucket, self._creation_key())
        return noted is not None and noted.get("creates_table") == self.table

    # --- the run -------------------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> RestoreReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(4)
        self.check_source()
        description = self.description()
        self.key_names = key_attribute_names(key_schema_of(description))
        if self.options.keys_file is not None and engine.name != "threads":
            raise RestoreError("--keys runs in this process: use --engine threads")
        ledger = JobLedger(self.ledger_writer(), self.layout, f"restore-into-{self.table}")
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
        lease = None
        if self.job_run.recorded:
            lease = RunLease(self.ledger_writer(), self.job_run)
            lease.acquire()  # one live attempt of a run at a time
        settled = True
        try:
            return self._run_attempt(engine, ledger, description, started)
        except TargetHasItems as refused:  # before anything is written
            ledger.refuse(self.job_run, str(refused))
            raise
        except Interrupted as stop:
            settled = stop.settled
            raise
        finally:
            if lease is not None and settled:
                lease.release()
            elif lease is not None:  # units may still write: a resume must wait for the lapse
                lease.abandon()

    def _run_attempt(
        self, engine: Engine, ledger: JobLedger, description: dict[str, Any], started: float
    ) -> RestoreReport:
        assert self.job_run is not None
        units = (
            [WorkUnit("keys", "all")]
            if self.options.keys_file
            else partition_units(self.options.partitions)
        )
        pin = self._pin_moment()  # a refusal of the resume comes before the table is made
        waiting = prefetch = None
        if pin is not None:
            key, cutoff = pin
            waiting = PinWait(lambda sleep: self._wait_past_cutoff(key, cutoff, sleep))
            prefetch = self._prefetch(engine, ledger, units, cutoff)
        try:
            if waiting is not None and pin is not None:
                # Before the table is made: a wait that fails (S3 refusing its HEADs) leaves
                # no empty table that a run started again would fill as someone else's
                # (without its TTL setting). And before any unit lists: S3's clock is then
                # past the cutoff. The first units' reads go on meanwhile, and while the
                # table is prepared.
                waiting.join()
                self.received_before = pin[1]
            self._prepare_target(description, self.job_run.resumed)
            if self._notes_absent() and not self.options.keys_file:
                self._absent = self._absent_items()  # with --keys, only the keys' own deletes
        finally:
            if waiting is not None:
                waiting.cancel()
            if prefetch is not None:
                self.prefetched = prefetch.stop()
        try:
            outcome = run_stage(
                self,
                ledger,
                self.job_run,
                units,
                engine,
                self.options.max_items_per_second,
                self.progress,
            )
        finally:
            self._note_prefetched()
        self._merge(outcome)
        if self.report.complete:
            self._finish_target(description)
        self.report.held_nothing = self._knows_nothing_then()
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(self.job_run, self.report.complete, {"written": self.report.written})
        return self.report

    def _prefetch(
        self, engine: Engine, ledger: JobLedger, units: list[WorkUnit], cutoff: datetime
    ) -> Prefetch | None:
        """Read, during the pin's wait, what the first units to run (as many as run at once)
        most likely read; for units in this process only, listed (not ``--keys``) under one
        name each (not an adopted folder's aliases). A resumed run skips the units its ledger
        records: not those."""
        if engine.name != "threads" or self.options.keys_file or self.folder.aliases:
            return None
        assert self.job_run is not None
        done = ledger.finished_units(self.job_run) if self.job_run.resumed else {}
        to_run = [unit for unit in units if unit.id not in done]
        partitions = [unit.partition or "" for unit in to_run[: max(1, engine.slots)]]
        return Prefetch(lambda partition: self._items(partition, cutoff), partitions)

    def _note_prefetched(self) -> None:
        """Log what the pin's wait read ahead and how much of it the units took; drop it."""
        reads, self.prefetched = self.prefetched, None
        if reads is not None:
            logger.debug(
                "read during the pin's wait: %d versions, %d taken by the units",
                reads.stored,
                reads.taken,
            )
            reads.clear()

    def _items(self, partition: str, cutoff: datetime) -> BackupItems:
        """The backup as a unit of ``partition`` reads it (``RestoreUnit``), for reading ahead."""
        return BackupItems(
            self.reader(),
            self.bucket,
            self.layout,
            None,
            self.options.at,
            concurrency=self.options.read_concurrency,
            skew=self.options.skew,
            partition=partition,
            received_before=cutoff,
        )

    def _parameters(self) -> dict[str, Any]:
        options = self.options
        parameters: dict[str, Any] = {
            "source": self.report.source,
            "at": options.at.isoformat() if options.at else None,
            "keys_file": options.keys_file,
            "key_schema": options.key_schema,
            "skip_invalid": options.skip_invalid,
            "partitions": options.partitions,
        }
        if options.keys_file is not None:
            # What the file held, not its path: a file corrected between attempts is another
            # restore (the recorded unit read the old keys).
            parameters["keys_sha256"] = file_sha256(options.keys_file)
        if self.folder.adopted:
            # An adopted folder reads an item's names as one item; a run that read them apart
            # (before ``adopt``) cannot be mixed with one that reads them together.
            parameters["adopted"] = True
        if options.delete_absent:
            # Its units hand on what they kept: a run without it (or of an older version)
            # recorded nothing of the kind, and resuming it with it would delete live items.
            parameters["delete_absent"] = True
        return parameters

    def _deletes_absent(self) -> bool:
        return self.options.delete_absent and not self.options.dry_run

    def _notes_absent(self) -> bool:
        """Whether units note what --delete-absent needs (a dry run too, on --engine threads:
        it counts)."""
        return self.options.delete_absent and (not self.options.dry_run or self._dry_counts)

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        return RestoreUnit(self, unit, context).run()

    def keys_for(self, unit: WorkUnit) -> Iterable[dict[str, Any]] | None:
        if unit.stage != "keys" or self.options.keys_file is None:
            return None
        return read_keys_file(self.options.keys_file, key_types_of(self.description()))

    def kept_names(self, unit: WorkUnit) -> LineSink | None:
        """Where a unit of --delete-absent over the whole folder puts the object names of
        the items it restored (the last phase keeps them)."""
        if not self._notes_absent() or self.options.keys_file is not None:
            return None
        return self._sink(KEPT_NAMES, unit, self._absent.keep if self._absent else None)

    def absent_keys(self, unit: WorkUnit) -> LineSink | None:
        """Where a unit of --keys --delete-absent puts the listed keys the backup lacked at
        the moment (the last phase deletes them)."""
        if not self._notes_absent() or self.options.keys_file is None:
            return None
        return self._sink(ABSENT_KEYS, unit, self._note_absent_key)

    def _sink(
        self, kind: str, unit: WorkUnit, in_process: Callable[[str], None] | None
    ) -> LineSink:
        """The run's scratch folder, which outlives the attempt; without a ledger (a role
        that may only read the bucket), this process's collection."""
        assert self.job_run is not None
        if self.job_run.recorded:
            # Named per attempt: two attempts of one unit (a resume while a killed run's
            # worker goes on) never overwrite each other's chunks; the record names its own.
            folder = f"{self.job_run.scratch_prefix}{kind.replace('_', '-')}/{unit.id}/"
            prefix = f"{folder}{self.attempt}-{uuid.uuid4().hex[:8]}-"
            return ScratchLines(kind, self._put_scratch, prefix)
        if in_process is None:
            raise RestoreError("--delete-absent without a ledger runs on --engine threads only")
        return InProcessLines(in_process)

    def _note_absent_key(self, text: str) -> None:
        with self._lock:
            self._absent_keys.append(text)

    def save_unwritten(self, unit: WorkUnit, keys: list[str]) -> dict[str, Any]:
        """Keep a unit's unwritten keys in the run's scratch folder (or, for a run without a
        ledger, in the unit's result itself); where they are, as a unit output."""
        assert self.job_run is not None
        if not self.job_run.recorded:
            return {"unwritten_key_lines": keys}
        key = f"{self.job_run.scratch_prefix}unwritten/{unit.id}.jsonl"
        self._put_scratch(key, "".join(text + "\n" for text in keys).encode("utf-8"))
        return {"unwritten_keys": key}

    def _put_scratch(self, key: str, body: bytes) -> None:
        call_with_retries(
            lambda: self.s3().put_object(Bucket=self.bucket, Key=key, Body=body),
            self.retry_policy,
            f"put s3://{self.bucket}/{key}",
        )

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

    # --- the end -------------------------------------------------------------------------------

    def _merge(self, outcome: StageOutcome) -> None:
        merged = merge_results(outcome.results)
        report = self.report
        for name in ("objects", "written", "absent", "invalid", "unwritten", "versions_read"):
            setattr(report, name, merged.count(name))
        report.invalid_objects = merged.samples.get("invalid_objects", [])
        report.unwritten_keys = merged.samples.get("unwritten_keys", [])
        samples = merged.samples.get("sample", [])[:DRY_RUN_SAMPLE]
        report.sample = [json.loads(text) for text in samples]
        report.errors = merged.samples.get("fatal", []) + [
            f"{unit}: {reason}" for unit, reason in outcome.failures
        ]
        report.unfinished_units = sorted({*merged.unfinished} | {u for u, _ in outcome.failures})
        report.unit_seconds = round(merged.unit_seconds, 3)
        self._outputs = merged.outputs
        unwritten = [out for out in merged.outputs if UNWRITTEN_OUTPUTS & out.keys()]
        if unwritten:
            self._collect_unwritten(unwritten)

    def _collect_unwritten(self, outputs: list[dict[str, Any]]) -> None:
        """Every key not written, in full, in a local file ``--keys`` takes."""
        self.report.unwritten_keys_file = write_unwritten_keys(
            self.options, self.table, outputs, self.s3(), self.bucket
        )

    def _absent_items(self) -> AbsentItems:
        call = self.clients.get("call", lambda aws: aws.dynamodb_api(aws.client("dynamodb")).call)
        if call is None:
            raise RestoreError("--delete-absent needs a DynamoDB client to scan the table")
        return AbsentItems(
            call,
            self.batch_write,
            self.table,
            self.key_names,
            self.layout.key_hash,
            self.retry_policy,
        )

    def _knows_nothing_then(self) -> bool:
        """A restore --at of the whole folder that found no item then: the moment is before
        the backup's first change (or one when every item was deleted, which the backup
        cannot tell apart without reading every version: refused alike, nothing deleted)."""
        report = self.report
        return (
            self.options.at is not None
            and not self.options.keys_file
            and report.objects > 0
            and report.written == 0
            and report.invalid == 0
        )

    def _finish_target(self, description: dict[str, Any]) -> None:
        """After the items: delete what was absent (when asked), then switch TTL on."""
        if self.options.dry_run:
            self._count_absent()
            return
        if self._knows_nothing_then():
            # Before the backup's first change it knows nothing of the table: "absent then"
            # would be every item, and --delete-absent would empty the table (--at 0).
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
            outcome = write_all(
                self.batch_write,
                self.table,
                [{"DeleteRequest": {"Key": key}} for key in keys],
                self.retry_policy,
            )
            self.report.deleted_absent += outcome.written
            self.report.not_deleted.extend(
                f"{dumps_item(r['DeleteRequest']['Key']).decode()}: {outcome.reason}"
                for r in outcome.not_written
            )
        if self.options.ttl and (self.report.created_table or self.options.into_existing):
            attribute = switch_on_ttl(self.dynamodb(), description, self.table)
            if attribute:
                self.report.ttl_attribute = attribute
                self.report.warnings.append(
                    f"TTL is on again ({attribute}): DynamoDB will delete restored items whose "
                    f"{attribute} is already in the past, within days (restore with --no-ttl "
                    "to keep them)"
                )

    def _listed_absent_keys(self) -> Iterator[dict[str, Any]]:
        """The listed keys the backup lacked, from this process or every unit's record."""
        try:  # read in full first: a unit's lines are checked once all are read
            recorded = list(scratch_lines(ABSENT_KEYS, self._outputs, self._get_scratch))
        except ScratchMismatch as error:
            raise RestoreError(str(error)) from None
        for text in chain(list(self._absent_keys), recorded):
            yield loads_item(text, "a listed key")


def write_unwritten_keys(
    options: RestoreOptions, table: str, outputs: list[dict[str, Any]], s3: Any, bucket: str
) -> str:
    """Append every key the units could not write (their outputs: lines carried in the
    result, or a scratch object each) to the local file ``--keys`` takes; its path."""
    path = options.unwritten_keys_file or f"{table}.unwritten-keys.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        for output in outputs:
            if "unwritten_key_lines" in output:
                handle.writelines(line + "\n" for line in output["unwritten_key_lines"])
                continue
            key = output["unwritten_keys"]
            body = call_with_retries(
                lambda k=key: s3.get_object(Bucket=bucket, Key=k)["Body"].read(),
                READ_POLICY,
                f"get s3://{bucket}/{key}",
            )
            handle.write(body.decode("utf-8"))
    return path


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's contents (a ``--keys`` file's, in the run's parameters)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise RestoreError(f"cannot read {path}: {error.strerror or error}") from None


def read_keys_file(path: str, key_types: dict[str, str]) -> Iterable[dict[str, Any]]:
    """Keys, one JSON object per line (plain or DynamoDB JSON), for ``--keys``; a key given
    twice is restored once."""
    seen: set[bytes] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    key = parse_key(line, key_types)
                except ValueError as error:
                    raise RestoreError(f"{path} line {number}: {error}") from None
                if canonical_key(key) not in seen:
                    seen.add(canonical_key(key))
                    yield key


def earliest_change_found(s3: Any, folder: Any) -> tuple[datetime, bool] | None:
    """The earliest change among the folder's first page of versions (all of it when it
    fits one page; ``True`` when sampled): its oldest item version's recorded change time,
    else S3's LastModified. A moment from it on holds that item."""
    bucket, prefix = folder.bucket, folder.layout.items_prefix
    page = call_with_retries(
        lambda: s3.list_object_versions(Bucket=bucket, Prefix=prefix, MaxKeys=1000),  # type: ignore[attr-defined]
        READ_POLICY,
        f"list s3://{bucket}/{prefix}",
    )
    versions = [v for v in page.get("Versions", []) if v.get("Size", 0) > 0]
    if not versions:
        return None
    oldest = min(versions, key=lambda version: version["LastModified"])
    head = call_with_retries(
        lambda: s3.head_object(Bucket=bucket, Key=oldest["Key"], VersionId=oldest["VersionId"]),  # type: ignore[attr-defined]
        READ_POLICY,
        f"read s3://{bucket}/{oldest['Key']}",
    )
    metadata = VersionMetadata.from_s3(head.get("Metadata") or {})
    moment = metadata.change_time if metadata else oldest["LastModified"]
    return moment, bool(page.get("IsTruncated"))


def refuse_items_in(dynamodb: Any, table: str) -> None:
    """A restore into a table that already has items (without --into-existing) is refused."""
    if has_items(dynamodb, table):
        raise TargetHasItems(
            f"table {table} already has items: restore into a new table, or pass "
            "--into-existing to write into this one"
        )
