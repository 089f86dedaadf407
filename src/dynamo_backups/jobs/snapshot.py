"""Snapshot: the backup's latest (or as-of) state as a DynamoDB-style S3 export, which
DynamoDB's native ImportTable loads into a new table.

    s3://BUCKET/KEY/manifest-summary.json
    s3://BUCKET/KEY/manifest-files.json
    s3://BUCKET/KEY/data/<partition>-<n>.json.gz   gzipped lines of {"Item": {...}}

Each partition of the backup folder is a unit that writes its own data files, streamed to S3
with multipart uploads, so memory stays flat whatever the table's size and the partitions
run in parallel on any engine. Files are sized for ImportTable: at most 50,000 per import,
at most 4,000,000 items each (its own advice for items under 1 KB); a unit run again replaces
its own files (all of them, however many an interrupted attempt left), and the manifests are
written once every unit is done, from every unit's record, and dated by the run's first
attempt (when the units an earlier attempt finished read the backup), as one uninterrupted
run would date them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.core.layout import format_time, parse_time
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.jobs.units import BucketClients, Engine, StageOutcome, run_stage

logger = logging.getLogger("dynamo_backups.jobs.snapshot")

PART_BYTES = 8 * 1024 * 1024  # S3 parts must be at least 5 MiB, the last excepted
DEFAULT_FILE_BYTES = 256 * 1024 * 1024  # uncompressed bytes per data file
# ImportTable's limits (DynamoDB Developer Guide, "Import format quotas and validation" and
# "Best practices for importing from Amazon S3").
MAX_IMPORT_FILES = 50_000
MAX_ITEMS_PER_FILE = 4_000_000
# A table's size in DynamoDB understates its DynamoDB JSON by about this much.
JSON_SIZE_FACTOR = 3


class SnapshotError(RuntimeError):
    pass


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> (bucket, key prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise SnapshotError(f"{url!r} is not an s3://BUCKET/KEY address")
    return parts.netloc, parts.path.strip("/")


@dataclass
class DataFile:
    key: str
    items: int = 0
    raw_bytes: int = 0
    md5: str = ""
    etag: str = ""


@dataclass(frozen=True)
class SnapshotOptions:
    at: datetime | None = None
    file_bytes: int = DEFAULT_FILE_BYTES  # uncompressed bytes per data file, at most
    skip_invalid: bool = False
    read_concurrency: int = 32
    partitions: int = 16
    resume: bool = False


@dataclass
class SnapshotReport:
    source: str
    destination: str
    at: str | None
    items: int = 0
    absent: int = 0
    invalid: int = 0
    invalid_objects: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    file_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished_units: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors and not self.unfinished_units

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _GzipUpload:
    """One data file: gzip into a buffer, shipped as multipart upload parts."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.upload_id = s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType="application/gzip"
        )["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self.buffer = io.BytesIO()
        self.gzip = gzip.GzipFile(fileobj=self.buffer, mode="wb", mtime=0)
        self.file = DataFile(key)
        self.digest = hashlib.md5(usedforsecurity=False)

    def write(self, line: bytes) -> None:
        self.gzip.write(line)
        self.file.items += 1
        self.file.raw_bytes += len(line)
        if self.buffer.tell() >= PART_BYTES:
            self._ship()

    def full(self, file_bytes: int) -> bool:
        return self.file.raw_bytes >= file_bytes or self.file.items >= MAX_ITEMS_PER_FILE

    def _ship(self) -> None:
        data = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        if data:
            self.digest.update(data)
            answer = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=len(self.parts) + 1,
                Body=data,
            )
            self.parts.append({"PartNumber": len(self.parts) + 1, "ETag": answer["ETag"]})

    def close(self) -> DataFile:
        self.gzip.close()
        self._ship()
        answer = self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.file.md5 = self.digest.hexdigest()
        self.file.etag = answer.get("ETag", "").strip('"')
        return self.file

    def abort(self) -> None:
        self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class Snapshot(BucketClients):
    """One snapshot: ``Snapshot(...).run(engine)``. The clients given are used in this
    process; workers elsewhere make their own from ``aws``."""

    def __init__(
        self,
        s3: Any,
        reader: Any,
        folder: BackupFolder,
        destination: str,
        options: SnapshotOptions,
        progress: ProgressSink | None = None,
        aws: AwsContext | None = None,
    ) -> None:
        self.clients = ClientSource(aws, s3=s3, reader=reader)
        self.folder = folder
        self.backup_bucket = folder.bucket
        self.read_concurrency = options.read_concurrency
        self.bucket, self.prefix = parse_s3_url(destination)
        self.options = options
        self.progress = progress or NoProgress()
        self.file_bytes = options.file_bytes
        self.report = SnapshotReport(
            folder.where,
            f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/",
            options.at.isoformat() if options.at else None,
        )
        self.job_run: JobRun | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress()}

    @property
    def data_prefix(self) -> str:
        return f"{self.prefix}/data/" if self.prefix else "data/"

    # --- the run -------------------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> SnapshotReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(4)
        destination = self.report.destination
        job = "snapshot-" + hashlib.sha256(destination.encode()).hexdigest()[:12]
        ledger = JobLedger(self.ledger_writer(), self.folder.layout, job)
        self.job_run = ledger.begin(
            {
                "destination": destination,
                "at": self.report.at,
                "partitions": self.options.partitions,
            },
            self.options.resume,
            required=False,  # the backup is only read; the files go to the destination
        )
        # A resumed run holds what its first attempt's units read: it is dated by that start.
        started_at = parse_time(self.job_run.started) if self.job_run.started else None
        started_at = started_at or datetime.now(UTC)
        if not self.job_run.resumed:
            self._require_empty_destination()
        self.file_bytes = self._file_bytes()
        self.report.file_bytes = self.file_bytes
        outcome = self.run_stages(ledger, engine)
        merged = merge_results(outcome.results)
        report = self.report
        report.items, report.absent = merged.count("items"), merged.count("absent")
        report.invalid = merged.count("invalid")
        report.invalid_objects = merged.samples.get("invalid_objects", [])
        report.files = sorted(merged.outputs, key=lambda entry: entry["key"])
        report.errors = merged.samples.get("fatal", []) + [
            f"{unit}: {reason}" for unit, reason in outcome.failures
        ]
        report.unfinished_units = sorted({*merged.unfinished} | {u for u, _ in outcome.failures})
        if len(report.files) > MAX_IMPORT_FILES:
            report.errors.append(
                f"{len(report.files):,} data files: ImportTable takes {MAX_IMPORT_FILES:,} at "
                "most; snapshot again with a larger --file-size"
            )
        if report.complete:
            self._write_manifests(started_at)
        report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(self.job_run, report.complete, {"items": report.items})
        return report

    def run_stages(self, ledger: JobLedger, engine: Engine) -> StageOutcome:
        """The units that write the data files: one per partition of the folder."""
        assert self.job_run is not None
        units = partition_units(self.options.partitions)
        return run_stage(self, ledger, self.job_run, units, engine, None, self.progress)

    def _require_empty_destination(self) -> None:
        page = self.s3().list_objects_v2(Bucket=self.bucket, Prefix=self.data_prefix, MaxKeys=1)
        if page.get("KeyCount"):
            raise SnapshotError(
                f"s3://{self.bucket}/{self.data_prefix} already holds files, and ImportTable "
                "would load them all: snapshot to an empty place (or --resume the snapshot "
                "that wrote them)"
            )

    def _file_bytes(self) -> int:
        """The data file size: the one asked for, raised when the table is so large that
        the files would outnumber what one ImportTable takes."""
        table = (self.folder.description or {}).get("table") or {}
        estimate = int(table.get("TableSizeBytes") or 0) * JSON_SIZE_FACTOR
        room = MAX_IMPORT_FILES - self.options.partitions  # each unit's last file is partial
        needed = -(-estimate // room) if estimate else 0
        if needed > self.options.file_bytes:
            logger.warning(
                "%s: about %s bytes of items: data files of %s bytes, so that ImportTable "
                "takes them all",
                self.folder.layout.table,
                f"{estimate:,}",
                f"{needed:,}",
            )
        return max(self.options.file_bytes, needed)

    # --- one unit, wherever it runs -----------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        files = _PartitionFiles(
            self.s3(), self.bucket, f"{self.data_prefix}{unit.partition or 'all'}-", self.file_bytes
        )
        files.remove_earlier()
        result = UnitResult(unit.id)
        stop = threading.Event()
        items = BackupItems(
            self.reader(),
            self.folder.bucket,
            self.folder.layout,
            self.folder.key_names,
            self.options.at,
            concurrency=self.options.read_concurrency,
            progress=context.progress,
            partition=unit.partition or "",
            aliases=self.folder.aliases,
            adopted=self.folder.adopted,
        )

        def consume(selected: Selected) -> None:
            context.cancel.check()  # Ctrl-C: the unit's files are dropped, --resume redoes it
            if selected.invalid is not None:
                files.note_invalid(result, selected.invalid)
                if not self.options.skip_invalid:
                    result.sample(
                        "fatal", f"{selected.invalid}; pass --skip-invalid to snapshot the rest"
                    )
                    result.complete = False
                    stop.set()
                return
            if selected.item is not None:
                files.write(selected.item)

        try:
            items.for_each(consume, stop)
        except BaseException:
            files.abort()
            raise
        result.outputs = files.close()
        result.add("items", files.items)
        result.add("absent", items.stats.absent)
        return result

    def _write_manifests(self, started_at: datetime) -> None:
        base = f"{self.prefix}/" if self.prefix else ""
        lines = "".join(
            json.dumps(
                {
                    "itemCount": entry["items"],
                    "md5Checksum": entry["md5"],
                    "etag": entry["etag"],
                    "dataFileS3Key": entry["key"],
                }
            )
            + "\n"
            for entry in self.report.files
        )
        s3 = self.s3()
        s3.put_object(
            Bucket=self.bucket,
            Key=base + "manifest-files.json",
            Body=lines.encode("utf-8"),
            ContentType="application/json",
        )
        summary = {
            "version": "2020-06-30",
            "exportArn": None,
            "source": self.report.source,
            "asOf": self.report.at,
            "exportTime": self.report.at or format_time(started_at),
            "startTime": format_time(started_at),
            "endTime": format_time(datetime.now(UTC)),
            "s3Bucket": self.bucket,
            "s3Prefix": self.prefix,
            "manifestFilesS3Key": base + "manifest-files.json",
            "outputFormat": "DYNAMODB_JSON",
            "itemCount": self.report.items,
            "producer": "dynamo-backups",
        }
        s3.put_object(
            Bucket=self.bucket,
            Key=base + "manifest-summary.json",
            Body=json.dumps(summary, indent=2).encode("utf-8"),
            ContentType="application/json",
        )


class _PartitionFiles:
    """One unit's data files: ``<prefix><n>.json.gz``, the next one opened when one is full."""

    def __init__(self, s3: Any, bucket: str, prefix: str, file_bytes: int) -> None:
        self.s3, self.bucket, self.prefix, self.file_bytes = s3, bucket, prefix, file_bytes
        self.items = 0
        self._lock = threading.Lock()
        self._current: _GzipUpload | None = None
        self._done: list[dict[str, Any]] = []

    def remove_earlier(self) -> None:
        """A unit run again replaces what an interrupted attempt left: ImportTable would load
        every file under data/. Every page of the listing: a big partition has thousands."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for entry in page.get("Contents", []):
                self.s3.delete_object(Bucket=self.bucket, Key=entry["Key"])

    def note_invalid(self, result: UnitResult, reason: str) -> None:
        with self._lock:
            result.add("invalid")
            result.sample("invalid_objects", reason)

    def write(self, item: dict[str, Any]) -> None:
        line = json.dumps({"Item": item}, separators=(",", ":"), ensure_ascii=False).encode()
        with self._lock:
            if self._current is None:
                key = f"{self.prefix}{len(self._done):05d}.json.gz"
                self._current = _GzipUpload(self.s3, self.bucket, key)
            self._current.write(line + b"\n")
            self.items += 1
            if self._current.full(self.file_bytes):
                self._done.append(self._current.close().__dict__)
                self._current = None

    def close(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._current is not None:
                self._done.append(self._current.close().__dict__)
                self._current = None
            return list(self._done)

    def abort(self) -> None:
        if self._current is not None:
            self._current.abort()
