"""Apply a batch of stream records to the backup bucket.

Changes to one item are written one after another, in stream order, each a new version;
different items are written in parallel on a bounded pool. When a write fails for good, no
later change of the batch is started, and the result names the earliest record not applied,
so that a retry from there loses nothing and reorders nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from dynamo_backups.aws.errors import describe_error
from dynamo_backups.aws.retry import RetriesExhausted, deadline_clock
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import WRITER_STREAM, LayoutError, TableLayout, VersionMetadata
from dynamo_backups.core.parallel import WorkerPool
from dynamo_backups.core.stream_records import (
    BatchResult,
    Change,
    RecordFailure,
    chains_by_key,
    parse_batch,
)

DEFAULT_CONCURRENCY = 32


class _Progress:
    """Shared state of one batch: the earliest record that must not be applied, and results."""

    def __init__(self, result: BatchResult, stop_at: int) -> None:
        self.lock = threading.Lock()
        self.result = result
        self.stop_at = stop_at

    def may_apply(self, change: Change) -> bool:
        with self.lock:
            return change.index < self.stop_at

    def applied(self, change: Change) -> None:
        with self.lock:
            self.result.applied[change.event_name] += 1
            self.result.tables.add(change.table)

    def failed(self, change: Change, reason: str, retryable: bool) -> None:
        with self.lock:
            self.stop_at = min(self.stop_at, change.index)
            self.result.failures.append(
                RecordFailure(change.index, change.sequence_number, reason, retryable)
            )


class BackupApplier:
    """Writes stream changes into ``<prefix>/<table>/<name>`` objects of one bucket."""

    def __init__(
        self,
        writer: BackupWriter,
        prefix: str = "",
        key_hash: str = DEFAULT_KEY_HASH,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = deadline_clock,
    ) -> None:
        self.writer = writer
        self.prefix = prefix
        self.key_hash = key_hash
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self._layouts: dict[str, TableLayout] = {}
        self._workers = WorkerPool(self.concurrency, "backup-writer")

    def layout(self, table: str) -> TableLayout:
        if table not in self._layouts:
            self._layouts[table] = TableLayout.of(self.prefix, table, self.key_hash)
        return self._layouts[table]

    def apply(self, records: Sequence[Any], deadline: float | None = None) -> BatchResult:
        """Apply Lambda-shaped stream records; ``deadline`` is a ``clock()`` value after which
        no new write starts (what is left is reported as failed, to be retried)."""
        parsed = parse_batch(records)
        result = BatchResult(record_count=len(records))
        result.note_changes(parsed.changes)
        stop_at = len(records)
        if parsed.invalid is not None:
            stop_at = parsed.invalid.index
            result.failures.append(RecordFailure.invalid(parsed.invalid))
        progress = _Progress(result, stop_at)
        keyed = self._object_keys(parsed.changes, progress)
        chains = chains_by_key(keyed, lambda pair: pair[1])
        runs = [
            lambda chain=chain: self._apply_chain(chain, progress, deadline) for chain in chains
        ]
        self._workers.run_all(runs)
        return result

    def _object_keys(self, changes: list[Change], progress: _Progress) -> list[tuple[Change, str]]:
        keyed = []
        for change in changes:
            try:
                keyed.append((change, self.layout(change.table).item_object_key(change.keys)))
            except (LayoutError, ValueError) as error:
                progress.failed(
                    change,
                    f"cannot name the object for table {change.table}: {error}",
                    retryable=False,
                )
                break
        return keyed

    def _apply_chain(
        self, chain: list[tuple[Change, str]], progress: _Progress, deadline: float | None
    ) -> None:
        for change, object_key in chain:
            if not progress.may_apply(change):
                return
            if deadline is not None and self.clock() >= deadline:
                progress.failed(
                    change,
                    "stopped at the write deadline (the invocation's end or the lease's)",
                    retryable=True,
                )
                return
            try:
                self._write(change, object_key, deadline)
            except RetriesExhausted as error:
                progress.failed(change, str(error), retryable=True)
                return
            except Exception as error:
                progress.failed(change, f"{object_key}: {describe_error(error)}", retryable=False)
                return
            progress.applied(change)

    def _write(self, change: Change, object_key: str, deadline: float | None) -> None:
        metadata = VersionMetadata(
            writer=WRITER_STREAM,
            event_name=change.event_name,
            change_time=change.change_time,
            sequence_number=change.sequence_number,
            key_hash=self.key_hash,
            precision=change.time_precision,
        )
        if change.is_removal:
            self.writer.remove_item(object_key, metadata, deadline)
        else:
            assert change.new_image is not None
            self.writer.put_item(object_key, dumps_item(change.new_image), metadata, deadline)

    def close(self) -> None:
        self._workers.close()
