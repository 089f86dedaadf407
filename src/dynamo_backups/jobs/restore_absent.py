"""``restore --into-existing --delete-absent``: after writing the backup's items, delete the
table's items the backup did not hold at that moment, so the table ends exactly as it was.

Each unit hands the names of the items it kept (or, with ``--keys``, the listed keys the
backup lacked) to the last phase through the run's scratch folder in S3 (``ScratchLines``):
wherever the unit ran, and whichever attempt of the run ran it, so a resumed run deletes
exactly what one uninterrupted run deletes. Memory stays bounded: a unit holds one chunk of
names at a time, and the driver spills the names kept and the table's own keys (scanned in
parallel segments) to 256 files by the first two hex digits of their object names, and
compares them one slice at a time.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from dynamo_backups.aws.batch_write import BATCH_LIMIT, BatchWrite, write_all
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.parallel import batched
from dynamo_backups.jobs.scan_segments import run_segments, scan_pages

Call = Callable[[str, dict[str, Any]], dict[str, Any]]  # (operation, wire request) -> answer
PARTITIONS = [f"{value:02x}" for value in range(256)]
CHUNK_LINES = 200_000  # lines a unit holds before writing a chunk (about 8 MB of names)
READ_AHEAD = 8  # chunks the driver fetches at once

# What a unit hands to the last phase: the names of the items it kept, and the listed keys
# the backup lacked (``--keys``). Unit outputs: {KIND: {"prefix", "chunks", "lines"}}.
KEPT_NAMES = "kept_names"
ABSENT_KEYS = "absent_keys"


class LineSink(Protocol):
    def add(self, line: str) -> None: ...

    def close(self) -> dict[str, Any] | None: ...


class InProcessLines:
    """Lines handed straight to the driver's collection: for a run without a ledger, whose
    units all run in the driver's process (the threads engine)."""

    def __init__(self, take: Callable[[str], None]) -> None:
        self.take = take

    def add(self, line: str) -> None:
        self.take(line)

    def close(self) -> dict[str, Any] | None:
        return None


class ScratchLines:
    """Lines a unit leaves in the run's scratch folder, as gzipped chunks
    ``<prefix><n>.txt.gz``; ``close()`` gives the unit output that lists them. A unit done
    again rewrites its chunks from 0, and readers read only the chunks its record lists, so
    what an interrupted attempt left is never read."""

    def __init__(self, kind: str, put: Callable[[str, bytes], None], prefix: str) -> None:
        self.kind = kind
        self.put = put  # (object key, body): retried by the caller's policy
        self.prefix = prefix
        self.chunks = 0
        self.lines = 0
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            self.lines += 1
            if len(self._pending) < CHUNK_LINES:
                return
            full, self._pending = self._pending, []
            number = self.chunks
            self.chunks += 1
        self._write(number, full)

    def close(self) -> dict[str, Any]:
        with self._lock:
            if self._pending:
                self._write(self.chunks, self._pending)
                self.chunks += 1
                self._pending = []
            return {self.kind: {"prefix": self.prefix, "chunks": self.chunks, "lines": self.lines}}

    def _write(self, number: int, lines: list[str]) -> None:
        body = gzip.compress("".join(line + "\n" for line in lines).encode("utf-8"), mtime=0)
        self.put(chunk_key(self.prefix, number), body)


def chunk_key(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}.txt.gz"


class ScratchMismatch(RuntimeError):
    """A unit's chunks do not hold the lines its record states: another attempt's, or
    damaged; the message names them."""


def scratch_lines(
    kind: str, outputs: Iterable[dict[str, Any]], get: Callable[[str], bytes]
) -> Iterator[str]:
    """Every line of ``kind`` the units' outputs list, chunk by chunk (a few fetched at once).
    Each output's chunks must hold the lines its record states, or nothing is yielded past
    them: a last phase that deletes what is not named must read every name."""
    listed = [output[kind] for output in outputs if kind in output]
    keys = [
        (index, chunk_key(entry["prefix"], number))
        for index, entry in enumerate(listed)
        for number in range(int(entry["chunks"]))
    ]
    counted = [0] * len(listed)
    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="scratch-read") as pool:
        for start in range(0, len(keys), READ_AHEAD):
            group = keys[start : start + READ_AHEAD]
            bodies = list(pool.map(get, [key for _, key in group]))
            for (index, _), body in zip(group, bodies, strict=True):
                lines = gzip.decompress(body).decode("utf-8").splitlines()
                counted[index] += len(lines)
                yield from lines
    for entry, count in zip(listed, counted, strict=True):
        if count != int(entry["lines"]):
            raise ScratchMismatch(
                f"the chunks {entry['prefix']}* hold {count} lines where the unit recorded "
                f"{entry['lines']}: run without --resume to start over"
            )


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
    """Collects the names of the items the restore kept; then deletes the table's others."""

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

    def keep(self, name: str) -> None:
        """The object name of an item the restore wrote: it was present at the moment."""
        self.present.add(name)

    def delete_the_rest(self) -> AbsentReport:
        for keys in self._the_rest():
            self.cancel.check()
            self._delete(keys)
        self._folder.cleanup()
        return self.report

    def count_the_rest(self) -> int:
        """How many items ``delete_the_rest`` would delete (a dry run): none is deleted."""
        counted = sum(len(keys) for keys in self._the_rest())
        self._folder.cleanup()
        return counted

    def _the_rest(self) -> Iterator[list[dict[str, Any]]]:
        """The keys of the table's items the restore did not keep, in batches: the table's
        keys scanned, set against the kept names partition by partition."""
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
            yield from batched(doomed, BATCH_LIMIT)

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
            sleep=self.cancel.sleep,  # Ctrl-C ends a throttled delete's backoff at once
        )
        self.report.deleted += outcome.written
        for request in outcome.not_written:
            key = json.dumps(request["DeleteRequest"]["Key"], sort_keys=True)
            self.report.not_deleted.append(f"{key}: {outcome.reason}")


def dry_run_counts(dry_run: bool, delete_absent: bool, engine: str, warnings: list[str]) -> bool:
    """Whether a dry run of --delete-absent counts what it would delete: on --engine threads
    only, as elsewhere the units' kept names stay in their processes (a real run hands them
    through the job's folder, which a dry run does not write); said in ``warnings`` when not."""
    counts = engine == "threads"
    if dry_run and delete_absent and not counts:
        warnings.append(
            f"a dry run on --engine {engine} does not count what --delete-absent would delete: "
            "run it with --engine threads for that count"
        )
    return counts
