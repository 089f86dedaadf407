"""Backfill: copy every existing row of a table into its backup, so the stream's changes have
a base. Safe while the stream handler is live:

- an item is written only if its object has no current version (``If-None-Match: *``), so a
  state the stream already wrote is never replaced by an older scanned image;
- S3 lets that write through when the current version is a delete marker. A pass over the
  version listing after the scan finds every backfill version that landed on top of a removal
  and writes the removal again on top of it, conditionally on the backfill version still being
  current (so a newer stream write always wins). A deleted item never comes back: the pass is
  recorded as pending before the first write and cleared only once it has run, it runs even
  when a segment fails or the run is interrupted (Ctrl-C), and a run that finds an earlier
  run's pass still pending (a crash) runs it.
- Versions are dated by DynamoDB's clock (the Scan answer's ``Date``), not the host's, so a
  host whose clock is off cannot misdate them for point-in-time restores.

Scans are parallel (segments), consistent, rate-limited on request, and checkpointed per
segment after every page, so ``--resume`` continues where an interrupted run stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.errors import describe_error
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.description import describe_table, key_types_of, save_description
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.reading import iter_key_histories, iter_versions, read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    WRITER_BACKFILL,
    TableLayout,
    VersionMetadata,
    format_time,
)
from dynamo_backups.core.pitr import ObjectVersion, newest_first
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.ratelimit import RateLimiter
from dynamo_backups.jobs.scan_segments import run_segments, scan_pages

logger = logging.getLogger("dynamo_backups.jobs.backfill")

SAMPLE_SIZE = 20
CHECKPOINT_FORMAT = "dynamo-backups-backfill-segment"


@dataclass(frozen=True)
class BackfillOptions:
    total_segments: int = 8
    segment: int | None = None  # only this one of total_segments (spread over hosts)
    max_items_per_second: float | None = None
    resume: bool = False
    concurrency: int = 32
    page_size: int | None = 1000  # items per Scan page: bounds memory (DynamoDB caps pages at 1 MB)


@dataclass
class BackfillReport:
    table: str
    scanned: int = 0
    written: int = 0
    already_backed_up: int = 0
    removals_restored: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    segments_done: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def removals_check_key(layout: TableLayout) -> str:
    return layout.meta_prefix + "backfill/removals-check.json"


def segment_checkpoint_key(layout: TableLayout, segment: int, total: int) -> str:
    return layout.meta_prefix + f"backfill/segment-{segment}-of-{total}.json"


class Backfill:
    """Backfills one table into ``layout``'s folder."""

    def __init__(
        self,
        dynamodb: Any,
        scan: Callable[[dict[str, Any]], dict[str, Any]],
        writer: BackupWriter,
        layout: TableLayout,
        options: BackfillOptions,
        progress: ProgressSink | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.clock = clock  # only where DynamoDB's own clock is not at hand
        self.dynamodb = dynamodb
        self.scan = scan  # one Scan call in wire form (aws.dynamodb.RawDynamoDB or an equivalent)
        self.writer = writer
        self.layout = layout
        self.options = options
        self.progress = progress or NoProgress()
        self.retry_policy = retry_policy or RetryPolicy(
            max_attempts=10, base_delay=0.1, max_delay=10
        )
        self.limiter = RateLimiter(options.max_items_per_second)
        self.report = BackfillReport(layout.table)
        self._lock = threading.Lock()
        self._key_names: list[str] = []

    def run(self) -> BackfillReport:
        started = time.monotonic()
        description = describe_table(self.dynamodb, self.layout.table)
        save_description(self.writer, self.layout, description)
        ensure_manifest(
            self.writer, self.layout, description["table"]["KeySchema"], key_types_of(description)
        )
        self._key_names = key_attribute_names(description["table"]["KeySchema"])
        self.progress.set_total(description["table"].get("ItemCount") or None)
        self._note_pending_check()
        try:
            self._run_segments()
        finally:
            # Whatever was written must be checked against deletions, however the run ends.
            self.report.removals_restored = restore_removals_under_backfill(
                self.writer, self.layout
            )
            self.writer.put_document(
                removals_check_key(self.layout),
                {"pending": False, "checked_at": format_time(self.clock())},
            )
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _note_pending_check(self) -> None:
        key = removals_check_key(self.layout)
        earlier = read_document(self.writer.s3, self.writer.bucket, key)
        if earlier and earlier.get("pending"):
            logger.warning(
                "%s: an earlier backfill (%s) stopped before checking its writes against "
                "deletions; this run checks them",
                self.layout.table,
                earlier.get("since"),
            )
        self.writer.put_document(key, {"pending": True, "since": format_time(self.clock())})

    def _run_segments(self) -> None:
        with ThreadPoolExecutor(
            self.options.concurrency, thread_name_prefix="backfill-put"
        ) as pool:
            run_segments(self._segments(), lambda segment: self._run_segment(segment, pool))

    def _segments(self) -> list[int]:
        total = self.options.total_segments
        if self.options.segment is not None:
            return [self.options.segment]
        return list(range(total))

    # --- one segment ---------------------------------------------------------------------------

    def _run_segment(self, segment: int, pool: ThreadPoolExecutor) -> None:
        total = self.options.total_segments
        checkpoint_key = segment_checkpoint_key(self.layout, segment, total)
        state = self._starting_state(checkpoint_key, segment)
        if state.get("done"):
            logger.info(
                "%s: segment %d of %d was finished by an earlier run",
                self.layout.table,
                segment,
                total,
            )
            self._segment_done(segment)
            return
        pages = scan_pages(
            self.scan,
            self.layout.table,
            segment,
            total,
            self.retry_policy,
            limit=self.options.page_size,
            start_key=state.get("last_evaluated_key"),
        )
        for page in pages:
            read_at = answer_time(page) or self.clock()
            items = page.get("Items", [])
            self.limiter.acquire(len(items))
            if not self._write_page(items, read_at, pool):
                logger.error(
                    "%s: segment %d stopped at a failed page; --resume retries it",
                    self.layout.table,
                    segment,
                )
                return
            start_key = page.get("LastEvaluatedKey")
            state = {
                "format": CHECKPOINT_FORMAT,
                "segment": segment,
                "total_segments": total,
                "last_evaluated_key": start_key,
                "done": start_key is None,
                "items": state.get("items", 0) + len(items),
            }
            self.writer.put_document(checkpoint_key, state)
        self._segment_done(segment)

    def _starting_state(self, checkpoint_key: str, segment: int) -> dict[str, Any]:
        if not self.options.resume:
            return {}
        existing = read_document(self.writer.s3, self.writer.bucket, checkpoint_key)
        if existing:
            logger.info(
                "%s: resuming segment %d after %s items",
                self.layout.table,
                segment,
                f"{existing.get('items', 0):,}",
            )
        return existing or {}

    def _segment_done(self, segment: int) -> None:
        with self._lock:
            self.report.segments_done.append(segment)

    def _write_page(
        self, items: list[dict[str, Any]], read_at: datetime, pool: ThreadPoolExecutor
    ) -> bool:
        metadata = VersionMetadata(
            WRITER_BACKFILL, EVENT_SNAPSHOT, read_at, None, self.layout.key_hash
        )
        outcomes = list(pool.map(lambda item: self._write_item(item, metadata), items))
        with self._lock:
            self.report.scanned += len(items)
            self.report.written += outcomes.count("written")
            self.report.already_backed_up += outcomes.count("exists")
        self.progress.advance(len(items))
        return "failed" not in outcomes

    def _write_item(self, item: dict[str, Any], metadata: VersionMetadata) -> str:
        key = extract_key(item, self._key_names)
        object_key = self.layout.item_object_key(key)
        try:
            version = self.writer.put_item_if_absent(object_key, dumps_item(item), metadata)
        except Exception as error:
            reason = f"{dumps_item(key).decode()}: {describe_error(error)}"
            with self._lock:
                self.report.failed += 1
                if len(self.report.failures) < SAMPLE_SIZE:
                    self.report.failures.append(reason)
            return "failed"
        return "exists" if version is None else "written"


def restore_removals_under_backfill(writer: BackupWriter, layout: TableLayout) -> int:
    """Find backfill versions that are current on top of a removal (a delete marker or a
    tombstone) and write the removal again on top of each, if that version is still current.
    Returns how many removals were restored."""
    restored = 0
    for entries in _removal_suspects(writer, layout):
        current = entries[0]
        metadata = writer.version_metadata(current.key, current.version_id)
        if metadata is None or metadata.writer != WRITER_BACKFILL:
            continue
        removal = _removal_below(writer, entries[1:], layout.key_hash)
        if writer.remove_item_if_current(current.key, removal, current.etag):
            restored += 1
            logger.warning(
                "%s: the backfill wrote %s after the stream had deleted it; "
                "the deletion is restored",
                layout.table,
                current.key,
            )
    return restored


def _removal_suspects(writer: BackupWriter, layout: TableLayout) -> Iterator[list[ObjectVersion]]:
    for entries in iter_key_histories(iter_versions(writer.objects, layout.items_prefix)):
        ordered = newest_first(entries)
        if (
            len(ordered) >= 2
            and not ordered[0].is_delete_marker
            and not ordered[0].is_tombstone
            and (ordered[1].is_delete_marker or ordered[1].is_tombstone)
        ):
            yield ordered


def _removal_below(
    writer: BackupWriter, below: list[ObjectVersion], key_hash: str
) -> VersionMetadata:
    """The metadata of the removal recorded under a backfill version."""
    for entry in below[:2]:
        if entry.is_tombstone:
            found = writer.version_metadata(entry.key, entry.version_id)
            if found is not None:
                return VersionMetadata(
                    WRITER_BACKFILL,
                    EVENT_REMOVE,
                    found.change_time,
                    found.sequence_number,
                    key_hash,
                )
        elif not entry.is_delete_marker:
            break
    marker = below[0]
    return VersionMetadata(WRITER_BACKFILL, EVENT_REMOVE, marker.last_modified, None, key_hash)
