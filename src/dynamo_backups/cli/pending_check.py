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
    CompletedBackfill,
    IncompleteBackfillError,
    PendingRemovalCheck,
    affecting,
    describe_pending,
    removal_check_markers,
    whole_since,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import format_time
from dynamo_backups.core.pitr import CLOCK_ALLOWANCE

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
) -> None:
    """Refuse (exit 2) to read ``folder`` as of ``at`` (None: latest) while a backfill's
    removal check that could change what it finds is pending; with ``allow``, warn. A moment
    before the first complete backfill ended is warned of; with ``whole`` (a reader whose
    result claims the whole table, as a conversion's base does) refused unless ``allow``."""
    pending, completed = removal_check_markers(s3, folder.bucket, folder.layout)
    pending = affecting(pending, at)
    if at is not None:
        before_backfill_ended(folder, at, whole_since(completed), whole and not allow)
    if not pending:
        return
    resumes = [resume_command(folder, check) for check in pending]
    message = describe_pending(folder.where, pending, resumes)
    if not allow:
        raise IncompleteBackfillError(
            f"{message}; --allow-incomplete-backfill reads it as it is", pending
        )
    click.echo(f"warning: {message}; read as it is (--allow-incomplete-backfill)", err=True)


def before_backfill_ended(
    folder: BackupFolder, at: datetime, backfill: CompletedBackfill | None, refuse: bool
) -> None:
    """A read as of a moment before the folder's first complete backfill ended may lack rows
    the table held then: those the backfill read after the moment (and no change since) have
    no version before it. A folder whose stream began with the table lacks none, which the
    backup cannot tell: a warning, or with ``refuse`` an error (exit 2)."""
    if backfill is None or at >= backfill.checked + CLOCK_ALLOWANCE:
        return
    message = (
        f"{folder.where}: {format_time(at)} is before the first complete backfill "
        f"({backfill.job}) ended ({format_time(backfill.checked)}): rows it copied after that "
        "moment are missing from this read, unless the stream recorded them earlier"
    )
    if refuse:
        raise IncompleteBackfillError(
            f"{message}; choose a later moment, or --allow-incomplete-backfill reads it as it "
            "is (when the stream was on since the table was created)",
            [],
        )
    click.echo(f"warning: {message}", err=True)


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
