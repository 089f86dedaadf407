"""Verify: compare a live table with the latest state of its backup, and optionally repair.

Memory stays bounded whatever the table's size: the scan is spilled to 256 files by the first
two hex digits of each item's object name, and each of those is then compared with the one
slice of the bucket listing that holds the same names. A difference is read again from both
sides before it is reported, so a change in flight while verifying is not counted.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.reading import iter_current_objects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, canonical_item, dumps_item, loads_item
from dynamo_backups.core.differences import Differences, difference
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    WRITER_REPAIR,
    TableLayout,
    VersionMetadata,
)
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.jobs.scan_segments import run_segments, scan_pages


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


class Verify:
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
    ) -> None:
        self.call = dynamodb_call  # (operation, wire-form request) -> wire-form answer
        self.key_names = key_attribute_names(key_schema)
        self.writer = writer
        self.reader = reader
        self.layout = layout
        self.segments = segments
        self.repair = repair
        self.concurrency = concurrency
        self.progress = progress or NoProgress()
        self.policy = RetryPolicy(max_attempts=10, base_delay=0.1)
        self.report = VerifyReport(layout.table, f"s3://{writer.bucket}/{layout.items_prefix}")

    def run(self) -> VerifyReport:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="dynamo-backups-verify-") as folder:
            spill = _Spill(Path(folder))
            run_segments(range(self.segments), lambda segment: self._scan_segment(segment, spill))
            spill.close()
            with ThreadPoolExecutor(self.concurrency) as pool:
                for future in [
                    pool.submit(self._compare_partition, spill, p) for p in spill.names()
                ]:
                    future.result()
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    # --- phase 1: the table, spilled by object name ------------------------------------------

    def _scan_segment(self, segment: int, spill: _Spill) -> None:
        scan = partial(self.call, "Scan")
        for page in scan_pages(scan, self.layout.table, segment, self.segments, self.policy):
            for item in page.get("Items", []):
                key = extract_key(item, self.key_names)
                name = self.layout.item_object_key(key).rsplit("/", 1)[1]
                spill.add(
                    name,
                    item_digest(item),
                    hashlib.md5(dumps_item(item), usedforsecurity=False).hexdigest(),
                    dumps_item(key).decode(),
                )
            self.report.add("items_in_table", len(page.get("Items", [])))
            self.progress.advance(len(page.get("Items", [])))

    # --- phase 2: each slice of names against the same slice of the bucket -------------------

    def _compare_partition(self, spill: _Spill, partition: str) -> None:
        table_side = spill.load(partition)
        prefix = self.layout.items_prefix + partition
        for listed in iter_current_objects(self.reader, prefix):
            if listed.get("Size") == 0:
                continue  # a tombstone left current: deleted in the backup
            name = listed["Key"].rsplit("/", 1)[1]
            self.report.add("objects_in_backup")
            entry = table_side.pop(name, None)
            if entry is None:
                self._recheck_extra(listed["Key"])
                continue
            digest, body_md5, key_text = entry
            if listed.get("ETag", "").strip('"') == body_md5:
                continue
            body = self._read(listed["Key"])
            if body is None or _digest_of(body) != digest:
                self._recheck(json.loads(key_text), "different")
        for _, _, key_text in table_side.values():
            self._recheck(json.loads(key_text), "missing")

    def _read(self, object_key: str) -> bytes | None:
        try:
            body, _ = call_with_retries(
                lambda: self.reader.read_object(object_key), self.policy, f"get {object_key}"
            )
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return body or None

    def _recheck(self, key: dict[str, Any], kind: str) -> None:
        """Read both sides again; count (and repair) only what still differs."""
        live, read_at = self._get_item(key)
        object_key = self.layout.item_object_key(key)
        current = self.writer.current_etag(object_key) if self.repair else None
        body = self._read(object_key)
        same = live is not None and body is not None and _digest_of(body) == item_digest(live)
        kind = difference(live is not None, body is not None, same)
        if kind is None:
            return
        self.report.record(kind, dumps_item(key).decode())
        if self.repair:
            self._repair(object_key, live, read_at, current)

    def _recheck_extra(self, object_key: str) -> None:
        body = self._read(object_key)
        if body is None:
            return
        try:
            key = extract_key(loads_item(body, object_key), self.key_names)
        except InvalidDynamoJSON as error:
            self.report.record("different", f"{object_key}: {error}")
            return
        self._recheck(key, "extra")

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
        current: str | None,
    ) -> None:
        """Write the table's state into the backup, dated by DynamoDB's clock, only over the
        object as it was before the table was read again: anything newer wins."""
        event = EVENT_SNAPSHOT if live is not None else EVENT_REMOVE
        metadata = VersionMetadata(WRITER_REPAIR, event, read_at, None, self.layout.key_hash)
        if live is not None:
            done = self.writer.put_item_if_current(object_key, dumps_item(live), metadata, current)
        else:
            done = self.writer.remove_item_if_current(object_key, metadata, current)
        self.report.add("repaired" if done else "repair_failed")


def _digest_of(body: bytes) -> str | None:
    try:
        return item_digest(loads_item(body, "backup object"))
    except InvalidDynamoJSON:
        return None


class _Spill:
    """The scan's (name, digest, body md5, key) lines in 256 files by the name's first two
    hex digits; one slice fits in memory at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, name: str, digest: str, body_md5: str, key_text: str) -> None:
        partition = name[:2]
        line = f"{name}\t{digest}\t{body_md5}\t{key_text}\n"
        with self._lock:
            handle = self._files.get(partition)
            if handle is None:
                handle = self._files[partition] = (self.folder / partition).open(
                    "a", encoding="utf-8"
                )
            handle.write(line)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()

    @staticmethod
    def names() -> list[str]:
        return [f"{value:02x}" for value in range(256)]

    def load(self, partition: str) -> dict[str, tuple[str, str, str]]:
        path = self.folder / partition
        if not path.exists():
            return {}
        entries = {}
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                name, digest, body_md5, key_text = line.rstrip("\n").split("\t", 3)
                entries[name] = (digest, body_md5, key_text)
        return entries
