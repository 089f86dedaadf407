"""Backfill's pending removal check, as writers record it and readers see it.

A backfill can put an item back on top of the stream's deletion of it (S3 lets a put-if-absent
through over a delete marker); its removal check, after the copy, deletes such items again.
Until that check has run, the folder may hold as current items that the table deleted. So each
backfill *run* writes a marker document in the folder's own ``.dynamo-backups`` area *before*
its first item write, and marks it done only once a check has run in full over its writes: a
run that is running, was stopped by a second Ctrl-C, or was killed outright (no chance to clean
up) leaves it pending, in S3, where a reader on any machine sees it.

    <prefix>/.dynamo-backups/<table>/backfill/removals-check/<job>/<run id>.json

One marker per run (``<job>``: ``backfill``, ``backfill-from-export``,
``backfill-segment-<i>-of-<n>``), so that no run's finished check clears another's: two runs
of one job may write at once (a second command, another host). A run marks done its own marker,
and a resumed run (same run id) the one it resumes. Another run's marker is marked done only
when this run's check provably covers its writes: the check lists the whole folder, so it
covers every write made before it began, and the other run has provably stopped writing when
its run lease (``backup.run_lease``) was released or had lapsed unrenewed by S3's clock; so
before its check begins, a run reads each other pending marker, *then* that run's lease, and
once its check has run in full it marks done those whose lease had ended, each conditionally
(``If-Match`` the marker's ETag as read): a run resumed meanwhile takes its lease and then
writes its marker again (a new ETag) before it writes anything, so its marker stays pending.
(An attempt frozen longer than its lease, e.g. a suspended VM, and then woken is taken as
ended, as ``--resume`` takes it.)

The marker lives outside the items folder, so no lister of items ever sees it. Its S3
``LastModified`` (S3's clock, which dates versions as DynamoDB's does) is when the run began
writing; a resumed run that finds its own marker pending carries that moment over
(``pending_since``). Markers of the earlier per-job format (``removals-check.json``,
``removals-check-<job>.json``) are still read, and marked done by a completed check of their
job, as that format did.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dynamo_backups.aws.errors import (
    CONDITIONAL_CONFLICT_CODES,
    PRECONDITION_CODES,
    ClientError,
    error_code,
    is_conditional_conflict,
    is_transient,
)
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.run_lease import lease_ended
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, TableLayout, format_time, parse_time
from dynamo_backups.core.pitr import CLOCK_ALLOWANCE

logger = logging.getLogger("dynamo_backups.backup.removal_check")

WHOLE_TABLE_JOB = "backfill"
_SEGMENT_JOB = "backfill-segment-"
_SEGMENT_NAME = re.compile(r"backfill-segment-(\d+)-of-(\d+)")
# A done marker's fields: whether its run copied every row of its job, and the one moment
# its copies are dated by (an export's).
COPIED_WHOLE = "copied_whole"
# A done marker's LastModified is whole seconds (rounded down): every read of its run (dated by
# DynamoDB's clock, to the second, rounded down, and made before the marker was written) is
# dated before its second ends. (DynamoDB's and S3's clocks are one: Amazon Time Sync.)
DONE_MARKER_SECOND = timedelta(seconds=1)
WHOLE_FROM = "whole_from"
MARKER_STEM = "removals-check"
# The marker's condition did not hold: it was written since it was read. (A 409 is no verdict.)
_REFUSED_CODES = PRECONDITION_CODES - CONDITIONAL_CONFLICT_CODES


def removals_check_folder(layout: TableLayout) -> str:
    return layout.meta_prefix + "backfill/"


def removals_check_key(layout: TableLayout, job: str, run_id: str) -> str:
    """The marker of run ``run_id`` of ``job`` (``backfill``, ``backfill-segment-0-of-4``)."""
    return f"{removals_check_folder(layout)}{MARKER_STEM}/{job}/{run_id}.json"


def legacy_removals_check_key(layout: TableLayout, job: str) -> str:
    """The marker of ``job`` in the earlier per-job format."""
    name = MARKER_STEM if job == WHOLE_TABLE_JOB else f"{MARKER_STEM}-{job}"
    return f"{removals_check_folder(layout)}{name}.json"


@dataclass(frozen=True)
class PendingRemovalCheck:
    """A backfill run whose removal check has not run since it began writing."""

    key: str
    since: datetime  # the marker's LastModified: when the run began writing, by S3's clock
    document: Mapping[str, Any]
    etag: str = ""

    @property
    def job(self) -> str:
        return str(self.document.get("job") or WHOLE_TABLE_JOB)

    @property
    def run_id(self) -> str | None:
        return self.document.get("run_id")  # None: a marker of the per-job format

    @property
    def lease(self) -> str | None:
        """The key of the run's lease (``backup.run_lease``)."""
        return self.document.get("lease")

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.document.get("parameters") or {}


def read_marker(s3: Any, bucket: str, key: str) -> PendingRemovalCheck | None:
    """The marker at ``key`` when it is pending, dated by its earliest pending moment."""
    found = _read_marker(s3, bucket, key)
    return found if isinstance(found, PendingRemovalCheck) else None


@dataclass(frozen=True)
class CompletedBackfill:
    """A backfill run whose removal check ran in full: every read of it was made before
    ``checked`` (the done marker's LastModified, by S3's clock, or the one moment its copies
    are dated by: an export's). ``copied_whole``: whether the run copied every row of its
    job (None: its marker does not say: written by an older version, or marked done by
    another run's check)."""

    key: str
    job: str
    checked: datetime
    copied_whole: bool | None = None


def _read_marker(s3: Any, bucket: str, key: str) -> PendingRemovalCheck | CompletedBackfill | None:
    """The marker at ``key``: pending, done, or None (not there)."""

    def read() -> tuple[bytes, datetime, str] | None:
        try:
            answer = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return answer["Body"].read(), answer["LastModified"], str(answer.get("ETag", ""))

    found = call_with_retries(read, READ_POLICY, f"read s3://{bucket}/{key}")
    if found is None:
        return None
    document = json.loads(found[0])
    if not document.get("pending"):
        checked = found[1]
        if document.get(WHOLE_FROM):
            checked = min(checked, parse_time(str(document[WHOLE_FROM])))
        copied = document.get(COPIED_WHOLE)
        return CompletedBackfill(
            key, _job_named(key, document), checked, copied if isinstance(copied, bool) else None
        )
    since = found[1]
    if document.get("pending_since"):  # carried over from an earlier attempt of the run
        since = min(since, parse_time(str(document["pending_since"])))
    return PendingRemovalCheck(key, since, document, found[2])


def _job_named(key: str, document: Mapping[str, Any]) -> str:
    """A done marker's job: its document's, or (per-job format) its file name's."""
    if document.get("job"):
        return str(document["job"])
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    return name.removeprefix(f"{MARKER_STEM}-") if name != MARKER_STEM else WHOLE_TABLE_JOB


@dataclass(frozen=True)
class RunMarker:
    """This run's marker as it wrote it: done only over this very version (``etag``)."""

    key: str
    etag: str
    job: str
    earlier: PendingRemovalCheck | None  # an earlier attempt's pending marker of this run


def mark_check_pending(
    writer: BackupWriter,
    layout: TableLayout,
    job: str,
    run_id: str,
    lease: str,
    parameters: Mapping[str, Any],
    now: datetime,
) -> RunMarker:
    """Record run ``run_id``'s removal check as pending, before its first item write (and
    after it took its lease ``lease``). Written again by every attempt of the run, so that
    its ETag changes: a check of another run that read it before cannot mark it done. An
    earlier attempt's pending moment is carried over, as its writes are still unchecked."""
    key = removals_check_key(layout, job, run_id)
    earlier = read_marker(writer.s3, writer.bucket, key)
    document: dict[str, Any] = {
        "pending": True,
        "since": format_time(now),  # this host's clock: for people; readers use S3's
        "job": job,
        "run_id": run_id,
        "lease": lease,
        "parameters": dict(parameters),
    }
    if earlier is not None:
        document["pending_since"] = format_time(earlier.since)
    etag = _put_marker(writer, key, document, {})
    assert etag is not None  # an unconditional write is never refused
    return RunMarker(key, etag, job, earlier)


def ended_runs_pending(
    writer: BackupWriter, layout: TableLayout, marker: RunMarker
) -> list[PendingRemovalCheck]:
    """Before this run's check begins: the other runs' pending markers whose writes the check
    will cover, because their run had provably stopped writing before it (its lease released,
    or lapsed by S3's clock). Each marker is read before its run's lease, so that an attempt
    resumed after the lease was read writes its marker again after the read (its ETag
    changes, and ``mark_check_done`` leaves it). Markers of the per-job format: those of this
    run's job."""
    covered: list[PendingRemovalCheck] = []
    for check in pending_removal_checks(writer.s3, writer.bucket, layout):
        if check.key == marker.key:
            continue
        if check.run_id is None:
            if check.job == marker.job:
                covered.append(check)
        elif check.lease and lease_ended(writer.s3, writer.bucket, check.lease):
            covered.append(check)
    return covered


def mark_check_done(
    writer: BackupWriter,
    marker: RunMarker,
    covered: list[PendingRemovalCheck],
    now: datetime,
    copied_whole: bool = False,
    whole_from: datetime | None = None,
) -> None:
    """Record that this run's removal check ran in full: its own marker, and the markers of
    ended runs its check covered (``ended_runs_pending``), each only if unchanged since.
    ``copied_whole``: the run copied every row of its job (a failed, stopped or partial run
    did not); ``whole_from``: the moment its copies are dated by, when that is one moment
    (an export's); otherwise the done marker's LastModified, after every read."""
    document: dict[str, Any] = {
        "pending": False,
        "checked_at": format_time(now),
        "job": marker.job,
        COPIED_WHOLE: copied_whole,
    }
    if whole_from is not None:
        document[WHOLE_FROM] = format_time(whole_from)
    if _put_marker(writer, marker.key, document, {"IfMatch": marker.etag}) is None:
        logger.warning(
            "%s: written by another attempt of this run since it began: left as it is",
            marker.key,
        )
    for check in covered:
        done = {
            "pending": False,
            "checked_at": format_time(now),
            "job": check.job,
            "run_id": check.run_id,
            "checked_by": marker.key,
        }
        if _put_marker(writer, check.key, done, {"IfMatch": check.etag}) is None:
            logger.info("%s: its run was resumed meanwhile: left pending", check.key)
        else:
            logger.info("%s: its writes are covered by this run's check", check.key)


@dataclass(frozen=True)
class Coverage:
    """What a folder's backfill markers say of its copy of the table: the first backfill
    that copied it whole (``whole_since``), and the runs (jobs) that show it was not copied
    whole (stopped, partial or running ones), weighed only while none did."""

    whole: CompletedBackfill | None
    partial: tuple[str, ...] = ()

    def whole_at(self, moment: datetime | None) -> bool | None:
        """Whether the folder holds every row the table held at ``moment`` (None: latest);
        None when its markers do not say (it has none: a stream begun with the table)."""
        if self.whole is not None:
            return moment is None or moment >= self.whole.checked + DONE_MARKER_SECOND
        return False if self.partial else None


def record_coverage(
    writer: BackupWriter, layout: TableLayout, run_id: str, source: Coverage, moment: datetime
) -> None:
    """In a folder converted from another (``convert``, at ``moment``): a done marker that
    makes this folder's readers weigh it as the source's: whole from the source's first whole
    backfill when the conversion's moment is after it; otherwise (a conversion told to go
    ahead) never whole, since no later backfill copies into it the rows its base lacks.
    Nothing when the source's markers say nothing."""
    whole = source.whole_at(moment)
    if whole is None:
        return
    document: dict[str, Any] = {"pending": False, COPIED_WHOLE: whole}
    if whole and source.whole is not None:
        document["job"] = f"converted ({source.whole.job} of the item folder)"
        document[WHOLE_FROM] = format_time(source.whole.checked)
    else:
        document["job"] = (
            "converted (part of the table: the item folder's backfill had not copied it whole)"
        )
    _put_marker(writer, removals_check_key(layout, "converted", run_id), document, {})


def _put_marker(
    writer: BackupWriter, key: str, document: Mapping[str, Any], condition: dict[str, str]
) -> str | None:
    """Write a marker (under ``condition``); its ETag, or None when the condition did not
    hold. A 409 conflict is sent again; a refusal is ours all the same when the marker holds
    this write's token (an earlier attempt of it that landed unanswered). The token also makes
    every write's body, hence its ETag, unique."""
    token = uuid.uuid4().hex
    body = json.dumps({**document, "token": token}, indent=2, sort_keys=True).encode("utf-8")

    def put() -> str:
        answer = writer.s3.put_object(
            Bucket=writer.bucket, Key=key, Body=body, ContentType="application/json", **condition
        )
        return str(answer["ETag"])

    try:
        return call_with_retries(
            put,
            writer.policy,
            f"put s3://{writer.bucket}/{key}",
            retryable=lambda error: is_transient(error) or is_conditional_conflict(error),
        )
    except ClientError as error:
        if error_code(error) not in _REFUSED_CODES:
            raise
    found = call_with_retries(
        lambda: writer.s3.get_object(Bucket=writer.bucket, Key=key),
        READ_POLICY,
        f"read s3://{writer.bucket}/{key}",
    )
    if json.loads(found["Body"].read()).get("token") == token:
        return str(found["ETag"])
    return None


class IncompleteBackfillError(LayoutError):
    """A backfill's removal check is pending over the moment a reader asked for."""

    def __init__(self, message: str, pending: list[PendingRemovalCheck]) -> None:
        super().__init__(message)
        self.pending = pending


def pending_removal_checks(s3: Any, bucket: str, layout: TableLayout) -> list[PendingRemovalCheck]:
    """Every backfill run of the folder whose removal check is pending, oldest first."""
    return removal_check_markers(s3, bucket, layout)[0]


def removal_check_markers(
    s3: Any, bucket: str, layout: TableLayout
) -> tuple[list[PendingRemovalCheck], list[CompletedBackfill]]:
    """Every backfill run of the folder: those whose removal check is pending (oldest
    first), and those whose check ran in full."""
    folder = removals_check_folder(layout)
    pending: list[PendingRemovalCheck] = []
    completed: list[CompletedBackfill] = []
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
                marker = _read_marker(s3, bucket, listed["Key"])
                if isinstance(marker, PendingRemovalCheck):
                    pending.append(marker)
                elif marker is not None:
                    completed.append(marker)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return sorted(pending, key=lambda check: check.since), completed


def whole_since(completed: list[CompletedBackfill]) -> CompletedBackfill | None:
    """The first backfill that copied the whole table (a scan of it all, an export, or every
    segment of one ``--total-segments``): from when it ended, every item the table held when
    it began has a version; before, an item it read later may have none. None: no backfill
    copied it all (a folder whose stream began with the table needs none)."""
    whole = [
        done for done in completed if done.copied_whole and not done.job.startswith(_SEGMENT_JOB)
    ]
    for group in _segment_groups(completed).values():
        done_segments = [done for done in group if done is not None]
        if len(done_segments) == len(group):  # the last of them ended the whole scan
            whole.append(max(done_segments, key=lambda done: done.checked))
    return min(whole, key=lambda done: done.checked, default=None)


def partial_backfills(completed: list[CompletedBackfill]) -> list[CompletedBackfill]:
    """The runs that show the table was not copied whole: one that stopped or failed, and
    the segments done of a ``--total-segments`` not all done. Readers weigh them only when
    no backfill copied the whole table (``whole_since``)."""
    partial = [done for done in completed if done.copied_whole is False]
    for group in _segment_groups(completed).values():
        done_segments = [done for done in group if done is not None]
        if len(done_segments) < len(group):
            partial += done_segments
    return partial


def _segment_groups(
    completed: list[CompletedBackfill],
) -> dict[int, list[CompletedBackfill | None]]:
    """By ``--total-segments``: each segment's first run that copied it whole, or None."""
    groups: dict[int, list[CompletedBackfill | None]] = {}
    for done in completed:
        found = _SEGMENT_NAME.fullmatch(done.job)
        if not found or not done.copied_whole:
            continue
        index, total = int(found.group(1)), int(found.group(2))
        group = groups.setdefault(total, [None] * total)
        earlier = group[index] if index < total else done
        if earlier is None or done.checked < earlier.checked:
            group[index] = done
    return groups


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
    jobs = ", ".join(dict.fromkeys(check.job for check in checks))
    how = " and ".join(f"`{command}`" for command in dict.fromkeys(resumes))
    return (
        f"{where}: a backfill ({jobs}) began writing at {began} and has not checked its "
        "writes against deletions (it is still running, or it was stopped or killed), so the "
        "folder may hold as current rows the table deleted; let it finish, or complete the "
        f"check with {how}"
    )
