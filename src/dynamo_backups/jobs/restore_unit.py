"""One unit of a restore: the items of one partition of the backup folder (or the items
asked for by key), as of the moment, written with BatchWriteItem in groups of 25 on a pool
of writers. Unprocessed items and throttling are retried with backoff and jitter until
written; what outlasts the budget is listed by key in the run's scratch folder, so the
command can hand every such key back, whichever host ran the unit. For ``--delete-absent``
the unit also hands on what the last phase needs (the names of the items it kept, or the
listed keys the backup lacked), recorded with the unit (``restore_absent``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.core.cancel import Cancelled
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.jobs.restore_absent import LineSink

logger = logging.getLogger("dynamo_backups.jobs.restore")

BATCH_SIZE = 25
DRY_RUN_SAMPLE = 5


class UnitOptions(Protocol):
    """The restore's options a unit reads (``jobs.restore.RestoreOptions`` has them)."""

    at: datetime | None
    read_concurrency: int
    write_concurrency: int
    skew: timedelta
    skip_invalid: bool
    dry_run: bool


class RestoreJob(Protocol):
    """What a unit takes from the restore it belongs to (``jobs.restore.Restore`` is one):
    named here, so that the unit does not import its job."""

    options: UnitOptions
    bucket: str
    table: str
    key_names: list[str]
    received_before: datetime | None
    prefetched: PrefetchedReads | None  # versions read during the pin's wait
    retry_policy: RetryPolicy

    @property
    def folder(self) -> BackupFolder: ...

    @property
    def layout(self) -> TableLayout: ...

    def reader(self) -> Any: ...

    def batch_write(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def keys_for(self, unit: WorkUnit) -> Iterable[dict[str, Any]] | None: ...

    def kept_names(self, unit: WorkUnit) -> LineSink | None: ...

    def absent_keys(self, unit: WorkUnit) -> LineSink | None: ...

    def save_unwritten(self, unit: WorkUnit, keys: list[str]) -> dict[str, Any]: ...


class RestoreUnit:
    """Restores one unit; ``run()`` gives its result."""

    def __init__(self, restore: RestoreJob, unit: WorkUnit, context: UnitContext) -> None:
        self.restore = restore
        self.options = restore.options
        self.unit = unit
        self.context = context
        self.result = UnitResult(unit.id)
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._unwritten: list[str] = []  # keys, one JSON text each
        # For --delete-absent: the names of the items kept, or the listed keys absent.
        self._kept = restore.kept_names(unit)
        self._absent_keys = restore.absent_keys(unit)
        self._interrupted = False

    def run(self) -> UnitResult:
        restore = self.restore
        items = BackupItems(
            restore.reader(),
            restore.bucket,
            restore.layout,
            restore.key_names,
            self.options.at,
            restore.keys_for(self.unit),
            self.options.read_concurrency,
            self.options.skew,
            partition=self.unit.partition or "",
            aliases=restore.folder.aliases,
            adopted=restore.folder.adopted,
            received_before=restore.received_before,
            prefetched=restore.prefetched,
        )
        slots = threading.BoundedSemaphore(self.options.write_concurrency + 2)
        with ThreadPoolExecutor(
            self.options.write_concurrency, thread_name_prefix="restore-write"
        ) as writes:

            def consume(selected: Selected) -> None:
                if self.context.cancel.cancelled:
                    self._interrupted = True  # the unit stops; --resume restores it again
                    self._stop.set()
                    return
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
        stats = items.stats
        self.result.add("objects", stats.objects)
        self.result.add("absent", stats.absent)
        self.result.add("versions_read", stats.versions_read + stats.versions_headed)
        self._settle()
        return self.result

    # --- reading -------------------------------------------------------------------------------

    def _accept(self, selected: Selected) -> list[dict[str, Any]] | None:
        """Take one selected object; a full batch when one is ready to write."""
        if selected.invalid is not None:
            with self._lock:
                self.result.add("invalid")
                self.result.sample("invalid_objects", selected.invalid)
            if not self.options.skip_invalid:
                self._fatal = (
                    f"{selected.invalid}; pass --skip-invalid to restore the rest and "
                    "report such objects"
                )
                self._stop.set()
            return None
        if selected.item is None:
            if self._absent_keys is not None and selected.key is not None:
                self._absent_keys.add(dumps_item(selected.key).decode())  # listed, absent then
            return None
        if self._kept is not None:
            key = extract_key(selected.item, self.restore.key_names)
            self._kept.add(object_name(key, self.restore.layout.key_hash))
        if self.options.dry_run:
            with self._lock:
                self.result.add("written")
                self.result.sample("sample", json.dumps(selected.item), DRY_RUN_SAMPLE)
            self.context.progress.advance()
            return None
        with self._lock:
            self._pending.append(selected.item)
        return self._take_pending()

    def _take_pending(self, force: bool = False) -> list[dict[str, Any]] | None:
        with self._lock:
            if len(self._pending) >= BATCH_SIZE or (force and self._pending):
                batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
                return batch
        return None

    # --- writing -------------------------------------------------------------------------------

    def _guarded_write(self, items: list[dict[str, Any]]) -> None:
        try:
            self._write_batch(items)
        except Cancelled:  # Ctrl-C during a wait: not a failed write; the unit is redone
            self._interrupted = True
            self._stop.set()
        except Exception as error:  # a bug must not turn into silently missing items
            self._not_written([{"PutRequest": {"Item": item}} for item in items], repr(error))
            self._fatal = f"writing into {self.restore.table} failed: {error!r}"
            self._stop.set()

    def _write_batch(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem until every item is in; what outlasts the budget is reported."""
        self.context.limiter.acquire(len(items))
        outcome = write_all(
            self.restore.batch_write,
            self.restore.table,
            [{"PutRequest": {"Item": item}} for item in items],
            self.restore.retry_policy,
            sleep=self.context.cancel.sleep,  # Ctrl-C ends a backoff at once
            on_written=self._written,
        )
        if outcome.not_written:
            self._not_written(outcome.not_written, outcome.reason or "not written")

    def _written(self, count: int) -> None:
        with self._lock:
            self.result.add("written", count)
        self.context.progress.advance(count)

    def _not_written(self, requests: list[dict[str, Any]], reason: str) -> None:
        names = self.restore.key_names
        keys = [extract_key(request["PutRequest"]["Item"], names) for request in requests]
        with self._lock:
            self.result.add("unwritten", len(requests))
            for key in keys:
                text = dumps_item(key).decode()
                self.result.sample("unwritten_keys", f"{text}: {reason}")
                self._unwritten.append(text)
        logger.error(
            "%s: %d items could not be written: %s", self.restore.table, len(requests), reason
        )

    def _settle(self) -> None:
        """Hand back every key not written (in the run's scratch folder), and any fatal; a
        unit that completed hands on what the last phase needs (before it is recorded)."""
        if self._unwritten:
            self.result.outputs.append(self.restore.save_unwritten(self.unit, self._unwritten))
        if self._fatal:
            self.result.sample("fatal", self._fatal)
        self.result.complete = not (self._fatal or self._unwritten or self._interrupted)
        if self.result.complete:
            for sink in (self._kept, self._absent_keys):
                output = sink.close() if sink is not None else None
                if output is not None:
                    self.result.outputs.append(output)
