"""Restore a backup (latest, or as of a moment) into a DynamoDB table.

Items are written with BatchWriteItem in groups of 25, in parallel; unprocessed items and
throttling are retried with exponential backoff and jitter until written. Anything that
cannot be written is reported by key, never dropped in silence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.bucket import versioning_status
from dynamo_backups.backup.description import (
    DescriptionError,
    description_from_key_schema,
    key_schema_of,
    key_types_of,
)
from dynamo_backups.backup.folder import BackupFolder, open_folder_path
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.keys import canonical_key, extract_key, key_attribute_names, parse_key
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.pitr import DEFAULT_CLOCK_SKEW
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.ratelimit import RateLimiter
from dynamo_backups.jobs.restore_absent import AbsentItems
from dynamo_backups.jobs.tables import check_same_key, ensure_table, switch_on_ttl

logger = logging.getLogger("dynamo_backups.jobs.restore")

BATCH_SIZE = 25
SAMPLE_SIZE = 20


class RestoreError(RuntimeError):
    """The restore cannot start or cannot go on; the message says why and what to do."""


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
    not_deleted: list[str] = field(default_factory=list)
    ttl_attribute: str | None = None
    warnings: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    versions_read: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.unwritten == 0 and self.invalid == 0 and not self.not_deleted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Restore:
    """One restore run: ``Restore(...).run()``."""

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
    ) -> None:
        self.s3 = s3
        self.reader = reader
        self.dynamodb = dynamodb
        self.batch_write = batch_write  # one BatchWriteItem call in wire form
        self.call = call  # any DynamoDB call in wire form (Scan, for --delete-absent)
        self.bucket = bucket
        self.folder_path = folder
        self._folder: BackupFolder | None = None
        self.table = table
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=15, base_delay=0.05, max_delay=20
        )
        self.limiter = RateLimiter(options.max_items_per_second)
        self.report = RestoreReport(
            f"s3://{bucket}/{TableLayout.from_folder(folder).items_prefix}",
            table,
            dry_run=options.dry_run,
        )
        if options.at is not None:
            self.report.at = options.at.isoformat()
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._absent: AbsentItems | None = None
        self._deletes: list[dict[str, Any]] = []

    # --- preparation ---------------------------------------------------------------------------

    @property
    def folder(self) -> BackupFolder:
        """The backup folder, opened (layout.json, table.json) on first use."""
        if self._folder is None:
            self._folder = open_folder_path(self.s3, self.bucket, self.folder_path)
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
        versioning_status(self.s3, self.bucket)  # a clear error for a missing bucket
        page = call_with_retries(
            lambda: self.reader.list_versions_page(self.layout.items_prefix),
            READ_POLICY,
            f"list s3://{self.bucket}/{self.layout.items_prefix}",
        )
        if not page.entries:
            raise RestoreError(
                f"no backup at s3://{self.bucket}/{self.layout.items_prefix}: check the bucket "
                "and the prefix (the table's folder, e.g. Prod/Users)"
            )

    def _prepare_target(self, description: dict[str, Any]) -> None:
        if self.options.dry_run:
            return
        self.report.created_table = ensure_table(
            self.dynamodb, description, self.table, billing_mode=self.options.billing_mode
        )
        if not self.report.created_table:
            check_same_key(self.dynamodb, self.table, description)
        if self.report.created_table or self.options.into_existing:
            return
        scan = call_with_retries(
            lambda: self.dynamodb.scan(TableName=self.table, Limit=1, Select="COUNT"),
            READ_POLICY,
            f"look into table {self.table}",
        )
        if scan.get("Count") or scan.get("LastEvaluatedKey"):
            raise RestoreError(
                f"table {self.table} already has items: restore into a new table, or pass "
                "--into-existing to write into this one"
            )

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> RestoreReport:
        started = time.monotonic()
        self.check_source()
        description = self.description()
        key_names = key_attribute_names(key_schema_of(description))
        self._prepare_target(description)
        keys = None
        if self.options.keys_file:
            keys = read_keys_file(self.options.keys_file, key_types_of(description))
        elif self.options.delete_absent and not self.options.dry_run:
            self._absent = self._absent_items(key_names)
        items = BackupItems(
            self.reader,
            self.bucket,
            self.layout,
            key_names,
            self.options.at,
            keys,
            self.options.read_concurrency,
            self.options.skew,
        )

        self._key_names = key_names
        slots = threading.BoundedSemaphore(self.options.write_concurrency + 2)
        with ThreadPoolExecutor(
            self.options.write_concurrency, thread_name_prefix="restore-write"
        ) as writes:

            def consume(selected: Selected) -> None:
                batch = self._accept(selected)
                if batch:
                    slots.acquire()
                    writes.submit(self._guarded_write, batch).add_done_callback(
                        lambda _: slots.release()
                    )

            items.for_each(consume, self._stop)
            leftover = self._take_pending(force=True)
            if leftover:
                writes.submit(self._guarded_write, leftover)
        self._finish_target(description)
        stats = items.stats
        self.report.objects, self.report.absent = stats.objects, stats.absent
        self.report.versions_read = stats.versions_read
        self.report.seconds = round(time.monotonic() - started, 3)
        if self._fatal:
            raise RestoreError(self._fatal)
        return self.report

    def _accept(self, selected: Selected) -> list[dict[str, Any]] | None:
        """Take one selected object; a full batch when one is ready to write."""
        if selected.invalid is not None:
            with self._lock:
                self.report.invalid += 1
                if len(self.report.invalid_objects) < SAMPLE_SIZE:
                    self.report.invalid_objects.append(selected.invalid)
            if not self.options.skip_invalid:
                self._fatal = (
                    f"{selected.invalid}; pass --skip-invalid to restore the rest and "
                    "report such objects"
                )
                self._stop.set()
            return None
        if selected.item is None:
            if self.options.delete_absent and selected.key is not None:
                with self._lock:
                    self._deletes.append(selected.key)  # listed, absent at that moment
            return None
        if self._absent is not None:
            self._absent.keep(selected.item)
        if self.options.dry_run:
            with self._lock:
                self.report.written += 1
                if len(self.report.sample) < 5:
                    self.report.sample.append(selected.item)
            self.progress.advance()
            return None
        with self._lock:
            self._pending.append(selected.item)
        return self._take_pending()

    def _absent_items(self, key_names: list[str]) -> AbsentItems:
        if self.call is None:
            raise RestoreError("--delete-absent needs a DynamoDB client to scan the table")
        return AbsentItems(
            self.call,
            self.batch_write,
            self.table,
            key_names,
            self.layout.key_hash,
            self.retry_policy,
        )

    def _finish_target(self, description: dict[str, Any]) -> None:
        """After the items: delete what was absent (when asked), then switch TTL on."""
        if self._fatal or self.options.dry_run:
            return
        if self._absent is not None and not self.report.unwritten:
            absent = self._absent.delete_the_rest()
            self.report.deleted_absent += absent.deleted
            self.report.not_deleted.extend(absent.not_deleted)
        for keys in batched(self._deletes, BATCH_SIZE):
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
            attribute = switch_on_ttl(self.dynamodb, description, self.table)
            if attribute:
                self.report.ttl_attribute = attribute
                self.report.warnings.append(
                    f"TTL is on again ({attribute}): DynamoDB will delete restored items whose "
                    f"{attribute} is already in the past, within days (restore with --no-ttl "
                    "to keep them)"
                )

    def _take_pending(self, force: bool = False) -> list[dict[str, Any]] | None:
        with self._lock:
            if len(self._pending) >= BATCH_SIZE or (force and self._pending):
                batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
                return batch
        return None

    def _guarded_write(self, items: list[dict[str, Any]]) -> None:
        try:
            self._write_batch(items)
        except Exception as error:  # a bug must not turn into silently missing items
            self._unwritten([{"PutRequest": {"Item": item}} for item in items], repr(error))
            self._fatal = f"writing into {self.table} failed: {error!r}"
            self._stop.set()

    def _write_batch(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem until every item is in; what outlasts the budget is reported."""
        self.limiter.acquire(len(items))
        outcome = write_all(
            self.batch_write,
            self.table,
            [{"PutRequest": {"Item": item}} for item in items],
            self.retry_policy,
            on_written=self._written,
        )
        if outcome.not_written:
            self._unwritten(outcome.not_written, outcome.reason or "not written")

    def _save_unwritten(self, keys: list[dict[str, Any]]) -> None:
        """Every key not written, in full, in a file ``--keys`` takes (called under the lock)."""
        path = self.options.unwritten_keys_file or f"{self.table}.unwritten-keys.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            handle.writelines(dumps_item(key).decode() + "\n" for key in keys)
        self.report.unwritten_keys_file = path

    def _written(self, count: int) -> None:
        with self._lock:
            self.report.written += count
        self.progress.advance(count)

    def _unwritten(self, requests: list[dict[str, Any]], reason: str) -> None:
        keys = [extract_key(request["PutRequest"]["Item"], self._key_names) for request in requests]
        with self._lock:
            self.report.unwritten += len(requests)
            for key in keys:
                if len(self.report.unwritten_keys) >= SAMPLE_SIZE:
                    break
                self.report.unwritten_keys.append(f"{dumps_item(key).decode()}: {reason}")
            self._save_unwritten(keys)
        logger.error("%s: %d items could not be written: %s", self.table, len(requests), reason)


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
