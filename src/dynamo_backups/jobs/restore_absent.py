"""``restore --into-existing --delete-absent``: after writing the backup's items, delete the
table's items the backup did not hold at that moment, so the table ends exactly as it was.

Memory stays bounded: the names of the items the restore wrote, and the table's own keys
(scanned in parallel segments), are spilled to 256 files by the first two hex digits of their
object names, and compared one slice at a time.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from dynamo_backups.aws.batch_write import BATCH_LIMIT, BatchWrite, write_all
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.parallel import batched
from dynamo_backups.jobs.scan_segments import run_segments, scan_pages

Call = Callable[[str, dict[str, Any]], dict[str, Any]]  # (operation, wire request) -> answer
PARTITIONS = [f"{value:02x}" for value in range(256)]


class NameSpill:
    """Lines spilled to 256 files by the first two characters of their first field."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, name: str, rest: str = "") -> None:
        with self._lock:
            handle = self._files.get(name[:2])
            if handle is None:
                path = self.folder / name[:2]
                handle = self._files[name[:2]] = path.open("a", encoding="utf-8")
            handle.write(f"{name}\t{rest}\n")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def entries(self, partition: str) -> Iterator[tuple[str, str]]:
        path = self.folder / partition
        if not path.exists():
            return
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                name, _, rest = line.rstrip("\n").partition("\t")
                yield name, rest


@dataclass
class AbsentReport:
    scanned: int = 0
    deleted: int = 0
    not_deleted: list[str] = field(default_factory=list)  # keys, with the reason


class AbsentItems:
    """Collects the names the restore wrote; then deletes the table's other items."""

    def __init__(
        self,
        call: Call,
        batch_write: BatchWrite,
        table: str,
        key_names: list[str],
        key_hash: str,
        policy: RetryPolicy,
        segments: int = 4,
    ) -> None:
        self.call = call
        self.batch_write = batch_write
        self.table = table
        self.key_names = key_names
        self.key_hash = key_hash
        self.policy = policy
        self.segments = segments
        self._folder = tempfile.TemporaryDirectory(prefix="dynamo-backups-absent-")
        self.present = NameSpill(Path(self._folder.name) / "present")
        self.present.folder.mkdir()
        self.report = AbsentReport()
        self.cancel = CancelToken()  # set by Ctrl-C: the table's scan stops
        self._lock = threading.Lock()

    def keep(self, item: dict[str, Any]) -> None:
        """An item the restore wrote: it was present at the moment."""
        self.present.add(object_name(extract_key(item, self.key_names), self.key_hash))

    def delete_the_rest(self) -> AbsentReport:
        self.present.close()
        table_side = NameSpill(Path(self._folder.name) / "table")
        table_side.folder.mkdir()
        cancel = self.cancel
        run_segments(range(self.segments), lambda s: self._scan_segment(s, table_side), cancel)
        table_side.close()
        for partition in PARTITIONS:
            present = {name for name, _ in self.present.entries(partition)}
            doomed = [
                json.loads(key_text)
                for name, key_text in table_side.entries(partition)
                if name not in present
            ]
            for keys in batched(doomed, BATCH_LIMIT):
                self._delete(keys)
        self._folder.cleanup()
        return self.report

    def _scan_segment(self, segment: int, spill: NameSpill) -> None:
        keys_only = {
            "ProjectionExpression": ", ".join(f"#k{n}" for n in range(len(self.key_names))),
            "ExpressionAttributeNames": {f"#k{n}": name for n, name in enumerate(self.key_names)},
        }
        scan = partial(self.call, "Scan")
        for page in scan_pages(
            scan,
            self.table,
            segment,
            self.segments,
            self.policy,
            extra=keys_only,
            cancel=self.cancel,
        ):
            for item in page.get("Items", []):
                key = extract_key(item, self.key_names)
                spill.add(object_name(key, self.key_hash), json.dumps(key, sort_keys=True))
            with self._lock:
                self.report.scanned += len(page.get("Items", []))

    def _delete(self, keys: list[dict[str, Any]]) -> None:
        outcome = write_all(
            self.batch_write,
            self.table,
            [{"DeleteRequest": {"Key": key}} for key in keys],
            self.policy,
        )
        self.report.deleted += outcome.written
        for request in outcome.not_written:
            key = json.dumps(request["DeleteRequest"]["Key"], sort_keys=True)
            self.report.not_deleted.append(f"{key}: {outcome.reason}")
