"""Backfill's pending removal check, as writers record it and readers see it.

A backfill can put an item back on top of the stream's deletion of it (S3 lets a put-if-absent
through over a delete marker); its removal check, after the copy, deletes such items again.
Until that check has run, the folder may hold as current items that the table deleted. So a
backfill writes a marker document in the folder's own ``.dynamo-backups`` area *before* its
first item write, and marks it done only once the check has run in full: a backfill that is
running, was stopped by a second Ctrl-C, or was killed outright (no chance to clean up) leaves
it pending, in S3, where a reader on any machine sees it.

    <prefix>/.dynamo-backups/<table>/backfill/removals-check.json                 job "backfill"
    <prefix>/.dynamo-backups/<table>/backfill/removals-check-<job>.json           a --segment job

One marker per backfill job: hosts backfilling a table's segments in parallel each finish on
their own, and one host's finished check says nothing of another's writes. The marker lives
outside the items folder, so no lister of items ever sees it. Its S3 ``LastModified`` (S3's
clock, which dates versions as DynamoDB's does) is when the pending backfill began; a run that
finds its job's marker still pending carries that moment over (``pending_since``), so the
marker always dates the earliest write not yet checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, TableLayout, format_time, parse_time
from dynamo_backups.core.pitr import CLOCK_ALLOWANCE

WHOLE_TABLE_JOB = "backfill"
MARKER_STEM = "removals-check"


def removals_check_folder(layout: TableLayout) -> str:
    return layout.meta_prefix + "backfill/"


def removals_check_key(layout: TableLayout, job: str = WHOLE_TABLE_JOB) -> str:
    """The marker of ``job`` (``backfill``, or ``backfill-segment-0-of-4``)."""
    name = MARKER_STEM if job == WHOLE_TABLE_JOB else f"{MARKER_STEM}-{job}"
    return f"{removals_check_folder(layout)}{name}.json"


@dataclass(frozen=True)
class PendingRemovalCheck:
    """A backfill job whose removal check has not run since it began writing."""

    key: str
    since: datetime  # the marker's LastModified: when the backfill began, by S3's clock
    document: Mapping[str, Any]

    @property
    def job(self) -> str:
        return str(self.document.get("job") or WHOLE_TABLE_JOB)

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.document.get("parameters") or {}


def read_marker(s3: Any, bucket: str, key: str) -> PendingRemovalCheck | None:
    """The marker at ``key`` when it is pending, dated by its earliest pending moment."""

    def read() -> tuple[bytes, datetime] | None:
        try:
            answer = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return answer["Body"].read(), answer["LastModified"]

    found = call_with_retries(read, READ_POLICY, f"read s3://{bucket}/{key}")
    if found is None:
        return None
    document = json.loads(found[0])
    if not document.get("pending"):
        return None
    since = found[1]
    if document.get("pending_since"):  # carried over from an earlier run's marker
        since = min(since, parse_time(str(document["pending_since"])))
    return PendingRemovalCheck(key, since, document)


def mark_check_pending(
    writer: BackupWriter,
    layout: TableLayout,
    job: str,
    parameters: Mapping[str, Any],
    now: datetime,
) -> PendingRemovalCheck | None:
    """Record ``job``'s removal check as pending, before its first item write. Returns the
    marker an earlier run of the job left pending (a crash, a second Ctrl-C), if any: its
    moment is carried over, as its writes are still unchecked."""
    key = removals_check_key(layout, job)
    earlier = read_marker(writer.s3, writer.bucket, key)
    document: dict[str, Any] = {
        "pending": True,
        "since": format_time(now),  # this host's clock: for people; readers use S3's
        "job": job,
        "parameters": dict(parameters),
    }
    if earlier is not None:
        document["pending_since"] = format_time(earlier.since)
    writer.put_document(key, document)
    return earlier


def mark_check_done(writer: BackupWriter, layout: TableLayout, job: str, now: datetime) -> None:
    """Record that ``job``'s removal check ran in full over the folder (retried as every
    document write is)."""
    document = {"pending": False, "checked_at": format_time(now), "job": job}
    writer.put_document(removals_check_key(layout, job), document)


class IncompleteBackfillError(LayoutError):
    """A backfill's removal check is pending over the moment a reader asked for."""

    def __init__(self, message: str, pending: list[PendingRemovalCheck]) -> None:
        super().__init__(message)
        self.pending = pending


def pending_removal_checks(s3: Any, bucket: str, layout: TableLayout) -> list[PendingRemovalCheck]:
    """Every backfill job of the folder whose removal check is pending, oldest first."""
    folder = removals_check_folder(layout)
    found: list[PendingRemovalCheck] = []
    token: str | None = None
    while True:
        arguments = {"Bucket": bucket, "Prefix": folder + MARKER_STEM}
        if token:
            arguments["ContinuationToken"] = token
        page = call_with_retries(
            lambda arguments=arguments: s3.list_objects_v2(**arguments),
            READ_POLICY,
            f"list s3://{bucket}/{folder}",
        )
        for listed in page.get("Contents", []):
            if listed["Key"].endswith(".json"):
                marker = read_marker(s3, bucket, listed["Key"])
                found += [marker] if marker is not None else []
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return sorted(found, key=lambda check: check.since)


def affecting(checks: list[PendingRemovalCheck], at: datetime | None) -> list[PendingRemovalCheck]:
    """The pending checks that can change what a read as of ``at`` (None: latest) finds: a
    backfill's versions are dated by its reads, never before it began, so a moment before
    its marker (less the servers' clock allowance) cannot see them."""
    if at is None:
        return checks
    return [check for check in checks if at >= check.since - CLOCK_ALLOWANCE]


def describe_pending(where: str, checks: list[PendingRemovalCheck], resumes: list[str]) -> str:
    """Why reading the folder now may bring back deleted rows, and how to complete the check."""
    began = format_time(checks[0].since)
    jobs = ", ".join(check.job for check in checks)
    how = " and ".join(f"`{command}`" for command in resumes)
    return (
        f"{where}: a backfill ({jobs}) began writing at {began} and has not checked its "
        "writes against deletions (it is still running, or it was stopped or killed), so the "
        "folder may hold as current rows the table deleted; let it finish, or complete the "
        f"check with {how}"
    )
