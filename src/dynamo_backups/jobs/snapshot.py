"""Snapshot: the backup's latest (or as-of) state as a DynamoDB-style S3 export, which
DynamoDB's native ImportTable loads into a new table.

    s3://BUCKET/KEY/manifest-summary.json
    s3://BUCKET/KEY/manifest-files.json
    s3://BUCKET/KEY/data/<id>.json.gz        gzipped lines of {"Item": {...}} (DynamoDB JSON)

Data files are streamed to S3 with multipart uploads and closed at a bounded size, so memory
stays flat whatever the table's size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.core.layout import format_time

PART_BYTES = 8 * 1024 * 1024  # S3 parts must be at least 5 MiB, the last excepted
DEFAULT_FILE_BYTES = 256 * 1024 * 1024  # uncompressed bytes per data file


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
    seconds: float = 0.0

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


class Snapshot:
    def __init__(
        self,
        items: BackupItems,
        s3: Any,
        destination: str,
        file_bytes: int = DEFAULT_FILE_BYTES,
        skip_invalid: bool = False,
    ) -> None:
        self.items = items
        self.s3 = s3
        self.bucket, self.prefix = parse_s3_url(destination)
        self.file_bytes = file_bytes
        self.skip_invalid = skip_invalid
        self.report = SnapshotReport(
            f"s3://{items.bucket}/{items.layout.items_prefix}",
            f"s3://{self.bucket}/{self.prefix}/",
            items.at.isoformat() if items.at else None,
        )
        self._lock = threading.Lock()
        self._current: _GzipUpload | None = None
        self._stop = threading.Event()

    @property
    def data_prefix(self) -> str:
        return f"{self.prefix}/data/" if self.prefix else "data/"

    def run(self) -> SnapshotReport:
        started = time.monotonic()
        started_at = datetime.now(UTC)
        try:
            self.items.for_each(self._consume, self._stop)
        except BaseException:
            if self._current is not None:
                self._current.abort()
            raise
        with self._lock:
            if self._current is not None:
                self._close_current()
        self._write_manifests(started_at)
        self.report.absent = self.items.stats.absent
        self.report.seconds = round(time.monotonic() - started, 3)
        if self.report.invalid and not self.skip_invalid:
            raise SnapshotError(
                f"{self.report.invalid_objects[0]}; pass --skip-invalid to "
                "snapshot the rest and report such objects"
            )
        return self.report

    def _consume(self, selected: Selected) -> None:
        if selected.invalid is not None:
            with self._lock:
                self.report.invalid += 1
                if len(self.report.invalid_objects) < 20:
                    self.report.invalid_objects.append(selected.invalid)
            if not self.skip_invalid:
                self._stop.set()
            return
        if selected.item is None:
            return
        line = (
            json.dumps({"Item": selected.item}, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8"
            )
            + b"\n"
        )
        with self._lock:
            if self._current is None:
                self._current = _GzipUpload(
                    self.s3, self.bucket, f"{self.data_prefix}{uuid.uuid4().hex}.json.gz"
                )
            self._current.write(line)
            self.report.items += 1
            if self._current.file.raw_bytes >= self.file_bytes:
                self._close_current()

    def _close_current(self) -> None:
        assert self._current is not None
        data_file = self._current.close()
        self.report.files.append(data_file.__dict__)
        self._current = None

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
        self.s3.put_object(
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
            "startTime": format_time(started_at),
            "endTime": format_time(datetime.now(UTC)),
            "s3Bucket": self.bucket,
            "s3Prefix": self.prefix,
            "manifestFilesS3Key": base + "manifest-files.json",
            "outputFormat": "DYNAMODB_JSON",
            "itemCount": self.report.items,
            "producer": "dynamo-backups",
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=base + "manifest-summary.json",
            Body=json.dumps(summary, indent=2).encode("utf-8"),
            ContentType="application/json",
        )
