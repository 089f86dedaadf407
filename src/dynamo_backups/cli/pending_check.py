"""Readers (restore, snapshot, verify) refuse a folder whose backfill has not checked its writes
against deletions: until it has, rows the table deleted may be current objects there, and a
read would bring them back without a word. ``--allow-incomplete-backfill`` reads it anyway,
with a warning (a table gone for good cannot be backfilled again to complete the check)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import click

from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.removal_check import (
    Coverage,
    IncompleteBackfillError,
    PendingRemovalCheck,
    affecting,
    describe_pending,
    partial_backfills,
    removal_check_markers,
    whole_since,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import format_time

F = TypeVar("F", bound=Callable[..., Any])


def allow_incomplete_backfill_option(command: F) -> F:
    return click.option(
        "--allow-incomplete-backfill",
        is_flag=True,
        help="Read the backup even while a backfill's check of its writes against deletions "
        "is pending (it is running, or was stopped or killed): rows the table deleted may "
        "come back. Without it such a read is refused (exit 2), as is a conversion at a "
        "moment before the first complete backfill ended.",
    )(command)


def require_checked_backfill(
    s3: Any, folder: BackupFolder, at: datetime | None, allow: bool, whole: bool = False
) -> Coverage:
    """Refuse (exit 2) to read ``folder`` as of ``at`` (None: latest) while a backfill's
    removal check that could change what it finds is pending; with ``allow``, warn. A read
    the folder's backfills show to hold part of the table (before the first backfill that
    copied it whole ended, or with none such but a stopped, partial or running one) is
    warned of; with ``whole`` (a reader that takes the backup for the whole table: a
    conversion's base, an export, a restore that deletes what it lacks) refused unless
    ``allow``. What the markers say, for such a reader to record."""
    unchecked, completed = removal_check_markers(s3, folder.bucket, folder.layout)
    pending = affecting(unchecked, at)
    if pending:
        resumes = [resume_command(folder, check) for check in pending]
        message = describe_pending(folder.where, pending, resumes)
        if not allow:
            raise IncompleteBackfillError(
                f"{message}; --allow-incomplete-backfill reads it as it is", pending
            )
        click.echo(f"warning: {message}; read as it is (--allow-incomplete-backfill)", err=True)
    # Without a backfill that copied the whole table, any run (stopped, partial, or one still
    # running, whenever it began) shows that rows may be missing.
    runs = [done.job for done in partial_backfills(completed)] + [run.job for run in unchecked]
    coverage = Coverage(whole_since(completed), tuple(dict.fromkeys(runs)))
    partial = part_of_the_table(folder, at, coverage)
    if partial is None:
        return coverage
    if whole and not allow:
        raise IncompleteBackfillError(
            f"{partial}; choose a later moment or complete the backfill, or "
            "--allow-incomplete-backfill reads it as it is (when the stream was on since the "
            "table was created)",
            [],
        )
    click.echo(f"warning: {partial}", err=True)
    return coverage


def part_of_the_table(folder: BackupFolder, at: datetime | None, coverage: Coverage) -> str | None:
    """Why a read as of ``at`` (None: latest) may hold part of the table, or None. A row the
    table held before its stream began, and did not change since, has a version only from
    when a backfill read it: a moment before the first backfill that copied the table whole
    ended misses those it read later, and without such a backfill those no run read. A
    folder whose stream began with the table misses none, which the folder cannot show."""
    if coverage.whole_at(at) is not False:
        return None
    first = coverage.whole
    if first is not None:
        assert at is not None
        return (
            f"{folder.where}: {format_time(at)} is before the first backfill that copied the "
            f"whole table ({first.job}) ended ({format_time(first.checked)}): rows it copied "
            "after that moment are missing from this read, unless the stream recorded them "
            "earlier"
        )
    return (
        f"{folder.where}: no backfill has copied the whole table (runs of "
        f"{', '.join(coverage.partial)} stopped, failed, are running, or left segments to "
        "do): rows none of them read are missing from this read, unless the stream recorded "
        "them; let it finish, or run the backfill again (with --resume to continue a stopped "
        "run)"
    )


def resume_command(folder: BackupFolder, check: PendingRemovalCheck) -> str:
    """The backfill command line that continues the pending job, from what its marker says."""
    layout = folder.layout
    arguments = ["dynamo-backups", "backfill", layout.table, "--bucket", folder.bucket]
    if layout.prefix:
        arguments += ["--prefix", layout.prefix]
    arguments += _job_options(check.parameters)
    return shlex.join([*arguments, "--resume"])


def _job_options(parameters: Mapping[str, Any]) -> list[str]:
    options: list[str] = []
    total = parameters.get("total_segments")
    if parameters.get("segment") is not None:
        options += ["--segment", str(parameters["segment"]), "--total-segments", str(total)]
    elif parameters.get("from_export"):
        options += ["--from-export", str(parameters["from_export"])]
    elif total is not None:
        options += ["--segments", str(total)]
    key_hash = parameters.get("key_hash")
    if key_hash and key_hash != DEFAULT_KEY_HASH:
        options += ["--key-hash", str(key_hash)]
    return options
