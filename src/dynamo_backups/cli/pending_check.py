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
    IncompleteBackfillError,
    PendingRemovalCheck,
    affecting,
    describe_pending,
    pending_removal_checks,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH

F = TypeVar("F", bound=Callable[..., Any])


def allow_incomplete_backfill_option(command: F) -> F:
    return click.option(
        "--allow-incomplete-backfill",
        is_flag=True,
        help="Read the backup even while a backfill's check of its writes against deletions "
        "is pending (it is running, or was stopped or killed): rows the table deleted may "
        "come back. Without it such a read is refused (exit 2).",
    )(command)


def require_checked_backfill(
    s3: Any, folder: BackupFolder, at: datetime | None, allow: bool
) -> None:
    """Refuse (exit 2) to read ``folder`` as of ``at`` (None: latest) while a backfill's
    removal check that could change what it finds is pending; with ``allow``, warn."""
    pending = affecting(pending_removal_checks(s3, folder.bucket, folder.layout), at)
    if not pending:
        return
    resumes = [resume_command(folder, check) for check in pending]
    message = describe_pending(folder.where, pending, resumes)
    if not allow:
        raise IncompleteBackfillError(
            f"{message}; --allow-incomplete-backfill reads it as it is", pending
        )
    click.echo(f"warning: {message}; read as it is (--allow-incomplete-backfill)", err=True)


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
