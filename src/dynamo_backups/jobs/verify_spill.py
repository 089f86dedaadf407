"""Where verify's scan leaves each item's fingerprint (name, digest, body md5, key) for the
compare units, grouped by the first hex digits of the item's object name: one file per scan
unit and group, so each compare unit reads only its own group.

``LocalSpill`` keeps them in a folder of this host (the threads and processes engines);
``S3Spill`` in the run's scratch folder of the bucket, in chunks (Spark executors share no
disk). Both hold memory to a bounded number of lines.

Each scan unit's record also states how many chunks it wrote: before comparing, a resumed run
checks they are all still there (a lifecycle rule may have expired them) and does the scan of
any unit whose chunks are gone again.

An S3 spill outlives the run's attempt, so a resumed run compares against the chunks of scan
units an earlier attempt finished. Each attempt of a scan unit names its chunks with a token
of its own, which the unit's record carries; the compare units read only the recorded
attempts' chunks, never what an attempt killed half-way left (an older state of the table,
which could hide a difference).
"""

from __future__ import annotations

import gzip
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.reading import READ_POLICY, iter_current_objects

GROUP_WIDTH_LIMIT = 2  # at most 256 groups: 256 open files per scan unit
CHUNK_LINES = 5_000  # lines an S3 group holds in memory before it is written out


def group_of(name: str, width: int) -> str:
    return name[: min(width, GROUP_WIDTH_LIMIT)]


class SpillWriter(Protocol):
    def add(self, name: str, line: str) -> None: ...

    def close(self) -> None: ...

    @property
    def attempt(self) -> str | None: ...  # names this attempt's chunks (S3), recorded

    @property
    def chunks(self) -> int: ...  # chunks written (S3), recorded: a resume checks they exist


class Spill(Protocol):
    width: int

    def writer(self, unit_id: str) -> SpillWriter: ...

    def use(self, attempts: dict[str, str]) -> None: ...  # unit id -> the attempt recorded

    def lines(self, partition: str) -> Iterator[str]: ...


class LocalSpill:
    def __init__(self, folder: str, width: int) -> None:
        self.folder = folder
        self.width = width

    def writer(self, unit_id: str) -> SpillWriter:
        return _LocalWriter(Path(self.folder) / unit_id, self.width)

    def use(self, attempts: dict[str, str]) -> None:
        """Nothing to choose: a local spill holds this attempt's scan only."""

    def lines(self, partition: str) -> Iterator[str]:
        group = group_of(partition, self.width)
        for unit_folder in sorted(Path(self.folder).iterdir()):
            path = unit_folder / (group or "all")
            if path.exists():
                with path.open(encoding="utf-8") as handle:
                    yield from (line for line in handle if line.startswith(partition))


class _LocalWriter:
    def __init__(self, folder: Path, width: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.width = width
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def attempt(self) -> str | None:
        return None

    @property
    def chunks(self) -> int:
        return 0

    def add(self, name: str, line: str) -> None:
        group = group_of(name, self.width) or "all"
        with self._lock:
            handle = self._files.get(group)
            if handle is None:
                handle = self._files[group] = (self.folder / group).open("w", encoding="utf-8")
            handle.write(line)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


class S3Spill:
    def __init__(self, clients: ClientSource, bucket: str, prefix: str, width: int) -> None:
        self.clients = clients  # makes the client where the unit runs
        self.bucket = bucket
        self.prefix = prefix
        self.width = width
        self.attempts: dict[str, str] | None = None  # set by the driver before the compare

    def use(self, attempts: dict[str, str]) -> None:
        self.attempts = dict(attempts)

    def s3(self) -> Any:
        return self.clients.get("spill-s3", lambda aws: aws.client("s3", pool=16))

    def writer(self, unit_id: str) -> SpillWriter:
        return _S3Writer(self, unit_id)

    def lines(self, partition: str) -> Iterator[str]:
        group = group_of(partition, self.width) or "all"
        s3 = self.s3()
        listing = iter_current_objects(BotocoreObjects(s3, self.bucket), f"{self.prefix}{group}/")
        for listed in listing:
            if not self._recorded(listed["Key"]):
                continue  # left by an attempt that did not finish

            def read(key: str = listed["Key"]) -> bytes:
                return s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

            text = gzip.decompress(call_with_retries(read, READ_POLICY, f"get {listed['Key']}"))
            yield from (
                line + "\n"
                for line in text.decode("utf-8").splitlines()
                if line.startswith(partition)
            )

    def lost_units(self, recorded: dict[str, tuple[str, int | None]]) -> set[str]:
        """Of the scan units recorded (unit id -> its attempt and the chunks it wrote), those
        whose chunks are not all there any more (a lifecycle rule on the job's folder, a
        clean-up): their scan must be done again, or the compare would read less of the
        table than there is and miss its differences. A record without a count (an older
        version's) counts as lost."""
        found: dict[str, int] = {}
        for listed in iter_current_objects(BotocoreObjects(self.s3(), self.bucket), self.prefix):
            unit_id, _, rest = listed["Key"].rsplit("/", 1)[1].partition(".")
            attempt = recorded.get(unit_id, ("", None))[0]
            if attempt and rest.startswith(attempt + "-"):
                found[unit_id] = found.get(unit_id, 0) + 1
        return {
            unit_id
            for unit_id, (_, chunks) in recorded.items()
            if chunks is None or found.get(unit_id, 0) < chunks
        }

    def _recorded(self, key: str) -> bool:
        if self.attempts is None:
            raise RuntimeError("the scan units' attempts are not known yet")
        unit_id, _, rest = key.rsplit("/", 1)[1].partition(".")
        return unit_id in self.attempts and rest.startswith(self.attempts[unit_id] + "-")


class _S3Writer:
    def __init__(self, spill: S3Spill, unit_id: str) -> None:
        self.spill = spill
        self.unit_id = unit_id
        self.attempt = uuid.uuid4().hex[:12]
        self._groups: dict[str, list[str]] = {}
        self._chunks: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, line: str) -> None:
        group = group_of(name, self.spill.width) or "all"
        with self._lock:
            lines = self._groups.setdefault(group, [])
            lines.append(line)
            if len(lines) >= CHUNK_LINES:
                self._write(group, self._groups.pop(group))

    def close(self) -> None:
        with self._lock:
            for group, lines in self._groups.items():
                self._write(group, lines)
            self._groups.clear()

    @property
    def chunks(self) -> int:
        return sum(self._chunks.values())

    def _write(self, group: str, lines: list[str]) -> None:
        number = self._chunks.get(group, 0)
        self._chunks[group] = number + 1
        key = f"{self.spill.prefix}{group}/{self.unit_id}.{self.attempt}-{number:06d}.tsv.gz"
        body = gzip.compress("".join(lines).encode("utf-8"))
        s3 = self.spill.s3()
        call_with_retries(
            lambda: s3.put_object(Bucket=self.spill.bucket, Key=key, Body=body),
            READ_POLICY,
            f"put s3://{self.spill.bucket}/{key}",
        )
