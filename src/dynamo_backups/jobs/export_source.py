"""DynamoDB exports as a backfill's source: asking DynamoDB for one (ExportTableToPointInTime:
no read capacity used, point-in-time recovery needed), or opening one already in S3; its
data files (one work unit each), the moment it shows the table at, and its items.

An export folder (``.../AWSDynamoDB/<export id>/``) holds ``manifest-summary.json`` (with
``exportTime`` and ``manifestFilesS3Key``), ``manifest-files.json`` (one line per data file,
``dataFileS3Key``) and ``data/*.json.gz``: gzipped lines of ``{"Item": {...}}`` in DynamoDB
JSON. ``snapshot`` writes the same format, so a snapshot is a source too.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.dynamodb import answer_time
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.reading import READ_POLICY, iter_current_objects, read_document
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, validate_item
from dynamo_backups.core.layout import format_time, parse_time
from dynamo_backups.jobs.snapshot import parse_s3_url

logger = logging.getLogger("dynamo_backups.jobs.export_source")

SUMMARY = "manifest-summary.json"
EXPORT_TIMEOUT_SECONDS = 24 * 3600


class ExportError(RuntimeError):
    """The export cannot be made or read; the message says why and what to do."""


@dataclass(frozen=True)
class ExportSource:
    """One export: where its data files are and the moment it shows."""

    bucket: str
    data_keys: tuple[str, ...]
    export_time: datetime
    arn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "data_keys": list(self.data_keys),
            "export_time": format_time(self.export_time),
            "arn": self.arn,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ExportSource:
        return cls(
            document["bucket"],
            tuple(document["data_keys"]),
            parse_time(document["export_time"]),
            document.get("arn"),
        )


def missed_before_stream(export: ExportSource, table: Mapping[str, Any]) -> str | None:
    """Why a backfill from ``export`` is not a whole copy of the table (None: it is), from
    ``table`` (DescribeTable's): only a stream on now, begun at or before the export's moment
    (``LatestStreamLabel``: its creation time, UTC), holds every change made since. An
    export older than the stream lacks what was changed between the two; with the stream off
    (a stopped stream keeps its label), so do both, from when it stopped."""
    name, exported = table.get("TableName", "the table"), format_time(export.export_time)
    label = table.get("LatestStreamLabel")
    if not (table.get("StreamSpecification") or {}).get("StreamEnabled"):
        return (
            f"table {name} has no stream on: a change made since the export ({exported}) is "
            "in neither, so this backfill is not counted as a whole copy of the table "
            "(readers warn, convert refuses); turn its stream on, then backfill again"
        )
    try:
        began = datetime.fromisoformat(str(label))
    except ValueError:
        return (
            f"the start of table {name}'s stream ({label!r}) is not a time to compare with "
            f"the export's ({exported}), so this backfill is not counted as a whole copy of "
            "the table"
        )
    began = began if began.tzinfo is not None else began.replace(tzinfo=UTC)
    if export.export_time >= began:
        return None
    return (
        f"the export shows table {name} at {exported}, before its stream began "
        f"({format_time(began)}): a row changed between the two is in neither, so this "
        "backfill is not counted as a whole copy of the table (readers warn, convert "
        "refuses); backfill again by a scan, or from an export made after the stream began"
    )


def request_export(
    dynamodb: Any,
    s3: Any,
    table: str,
    bucket: str,
    prefix: str,
    wait: Callable[[float], None] = time.sleep,
) -> ExportSource:
    """Export ``table`` as it is now into ``s3://bucket/prefix/`` and wait for the end."""
    arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    backups = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    status = (backups.get("PointInTimeRecoveryDescription") or {}).get("PointInTimeRecoveryStatus")
    if status != "ENABLED":
        raise ExportError(
            f"--from-export needs point-in-time recovery on table {table} (DynamoDB exports "
            "from it): aws dynamodb update-continuous-backups --table-name "
            f"{table} --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true; "
            "or give an existing export, --from-export s3://BUCKET/PREFIX/AWSDynamoDB/ID/"
        )
    answer = dynamodb.export_table_to_point_in_time(
        TableArn=arn, S3Bucket=bucket, S3Prefix=prefix, ExportFormat="DYNAMODB_JSON"
    )
    requested_at = answer_time(answer) or datetime.now(UTC)
    description = _wait_for_export(dynamodb, answer["ExportDescription"]["ExportArn"], wait)
    export_time = description.get("ExportTime") or requested_at
    if isinstance(export_time, datetime) and export_time.tzinfo is None:
        export_time = export_time.replace(tzinfo=UTC)
    manifest = description.get("ExportManifest")
    if manifest:
        keys = _data_keys(s3, bucket, _read(s3, bucket, manifest), manifest)
    else:  # an export without manifests (moto): its one folder under the prefix
        keys = _listed_data_keys(s3, bucket, prefix)
    return ExportSource(bucket, tuple(keys), export_time, description["ExportArn"])


def open_export(s3: Any, url: str) -> ExportSource:
    """An export already in S3: ``s3://BUCKET/.../AWSDynamoDB/ID/`` or its summary file."""
    bucket, key = parse_s3_url(url)
    summary_key = key if key.endswith(SUMMARY) else f"{key}/{SUMMARY}".lstrip("/")
    summary = read_document(s3, bucket, summary_key)
    if summary is None:
        raise ExportError(
            f"no export at {url}: expected s3://{bucket}/{summary_key} (give the export's "
            "folder, the one that holds manifest-summary.json)"
        )
    moment = summary.get("exportTime") or summary.get("asOf") or summary.get("startTime")
    if not moment:
        raise ExportError(f"s3://{bucket}/{summary_key} does not say when the export was taken")
    keys = _data_keys(s3, bucket, summary, summary_key)
    return ExportSource(bucket, tuple(keys), parse_time(moment), summary.get("exportArn"))


def iter_export_items(s3: Any, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The items of one data file, read as a stream (data files can be gigabytes)."""
    body = call_with_retries(
        lambda: s3.get_object(Bucket=bucket, Key=key)["Body"],
        READ_POLICY,
        f"get s3://{bucket}/{key}",
    )
    where = f"s3://{bucket}/{key}"
    with gzip.GzipFile(fileobj=body) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield validate_item(json.loads(line)["Item"], f"{where} line {number}")
            except (ValueError, KeyError, TypeError) as error:
                raise InvalidDynamoJSON(
                    f"{where} line {number}: not an exported item ({error})"
                ) from None


def _wait_for_export(dynamodb: Any, arn: str, wait: Callable[[float], None]) -> dict[str, Any]:
    started = time.monotonic()
    logged = started
    while True:
        description = dynamodb.describe_export(ExportArn=arn)["ExportDescription"]
        status = description.get("ExportStatus")
        if status == "COMPLETED":
            return dict(description)
        if status == "FAILED":
            raise ExportError(
                f"export {arn} failed: {description.get('FailureCode')}: "
                f"{description.get('FailureMessage')}"
            )
        if time.monotonic() - started > EXPORT_TIMEOUT_SECONDS:
            raise ExportError(f"export {arn} still running after 24 hours")
        if time.monotonic() - logged > 60:
            logger.info("export %s: %s for %.0f s", arn, status, time.monotonic() - started)
            logged = time.monotonic()
        wait(5.0)


def _read(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    document = read_document(s3, bucket, key)
    if document is None:
        raise ExportError(f"s3://{bucket}/{key} is missing: the export is incomplete")
    return document


def _data_keys(s3: Any, bucket: str, summary: dict[str, Any], summary_key: str) -> list[str]:
    files_key = summary.get("manifestFilesS3Key")
    if not files_key:
        raise ExportError(f"s3://{bucket}/{summary_key} names no manifestFilesS3Key")

    def read_files_list() -> bytes:
        return s3.get_object(Bucket=bucket, Key=files_key)["Body"].read()

    body = call_with_retries(read_files_list, READ_POLICY, f"get s3://{bucket}/{files_key}")
    keys = []
    for line in body.decode("utf-8").splitlines():
        if line.strip():
            keys.append(json.loads(line)["dataFileS3Key"])
    return keys


def _listed_data_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = [
        entry["Key"]
        for entry in iter_current_objects(BotocoreObjects(s3, bucket), f"{prefix}/AWSDynamoDB/")
        if "/data/" in entry["Key"]
    ]
    folders = {key.split("/data/", 1)[0] for key in listed}
    if len(folders) > 1:
        raise ExportError(
            f"s3://{bucket}/{prefix}/ holds {len(folders)} exports and the export names no "
            "manifest: give its folder with --from-export s3://..."
        )
    return listed
