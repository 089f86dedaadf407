"""``dynamo-backups snapshot``: the backup as a DynamoDB-style export, for ImportTable."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.bucket import NoSuchBucketError, versioning_status
from dynamo_backups.backup.folder import open_backup_path
from dynamo_backups.cli.common import (
    EXIT_USAGE,
    TIME,
    EngineChoice,
    Invocation,
    engine_options,
    fail,
    partitions_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import BUCKET, S3_ADDRESS, TABLE_FOLDER, nothing_at_moment
from dynamo_backups.cli.pending_check import (
    allow_incomplete_backfill_option,
    require_checked_backfill,
)
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.journal import JournalError
from dynamo_backups.core.layout import META_FOLDER
from dynamo_backups.core.wording import counted
from dynamo_backups.jobs.layouts import layout_for
from dynamo_backups.jobs.snapshot import SnapshotError, SnapshotOptions, SnapshotReport


def _require_bucket(s3: Any, destination: str) -> None:
    """The bucket of --to (or --staging) must exist: said before any work (exit 2)."""
    bucket = destination[len("s3://") :].split("/", 1)[0]
    try:
        versioning_status(s3, bucket)
    except NoSuchBucketError:
        fail(f"{destination}: there is no bucket {bucket}", EXIT_USAGE)


def _require_empty(s3: Any, destination: str) -> None:
    """KEY/data/ must hold nothing (ImportTable would load it all): said before any write."""
    bucket, _, key = destination[len("s3://") :].partition("/")
    data = f"{key.strip('/')}/data/" if key.strip("/") else "data/"
    if s3.list_objects_v2(Bucket=bucket, Prefix=data, MaxKeys=1).get("KeyCount"):
        fail(
            f"--to {destination}: s3://{bucket}/{data} already holds files, and ImportTable "
            "would load them all: snapshot to an empty place (or --resume the snapshot that "
            "wrote them)",
            EXIT_USAGE,
        )


def take_snapshot(
    aws: AwsContext,
    bucket: str,
    folder: str,
    destination: str,
    options: SnapshotOptions,
    show_progress: bool,
    engine: EngineChoice | None = None,
    allow_incomplete_backfill: bool = False,
) -> SnapshotReport:
    s3 = aws.client("s3", pool=options.read_concurrency)
    opened = open_backup_path(s3, bucket, folder)  # "no backup at ..." before any write
    layout = layout_for(opened)  # the folder's layout.json: items or journal
    layout.check_snapshot_options(opened.where, options)  # what it does not take: exit 2
    # An export stands for the whole table (a backfill --from-export of it says so): not one
    # of part of it.
    require_checked_backfill(s3, opened, options.at, allow_incomplete_backfill, whole=True)
    _require_bucket(s3, destination)
    if destination.startswith(f"s3://{bucket}/"):
        inside = destination[len(f"s3://{bucket}/") :] + "/"
        if inside.startswith(opened.layout.items_prefix):
            fail(
                f"--to {destination} is inside the backup's own folder "
                f"s3://{bucket}/{opened.layout.items_prefix}: give a folder outside it",
                EXIT_USAGE,
            )
        backups = opened.layout.prefix.strip("/") + "/"
        own = f"{backups}{META_FOLDER}/"  # restore --native-import stages its snapshot there
        if backups != "/" and inside.startswith(backups) and not inside.startswith(own):
            # Its files would sit among the table folders, where they look like a table's.
            fail(
                f"--to {destination} is inside the backups' prefix s3://{bucket}/{backups}, "
                "where every folder is a table's: give a folder outside it",
                EXIT_USAGE,
            )
    if not options.resume:
        _require_empty(s3, destination)
    engine = engine or EngineChoice()
    label = f"snapshot {opened.layout.table}"
    with Progress(label, unit="objects", enabled=show_progress) as progress:
        job = layout.snapshot(
            s3, aws.objects(s3, bucket), opened, destination, options, progress, aws=aws
        )
        try:
            return job.run(engine.make(4))
        except (SnapshotError, JournalError) as error:
            fail(str(error))
        finally:
            engine.close()


@click.command()
@click.argument("source_bucket", type=BUCKET)
@click.argument("source_prefix", type=TABLE_FOLDER)
@click.option(
    "--to",
    "destination",
    required=True,
    type=S3_ADDRESS,
    help="Where to write the export: s3://BUCKET/KEY (outside the backup's folder).",
)
@click.option(
    "--at",
    type=TIME,
    help="The table as it was at this moment (default: latest): ISO 8601 with a zone, epoch "
    "seconds or milliseconds; not in the future.",
)
@click.option(
    "--file-size",
    "file_megabytes",
    type=click.IntRange(1, 100_000),
    default=256,
    show_default=True,
    help="Uncompressed megabytes per data file.",
)
@click.option("--skip-invalid", is_flag=True, help="Go on past objects that are not valid items.")
@allow_incomplete_backfill_option
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def snapshot(
    invocation: Invocation,
    source_bucket: str,
    source_prefix: str,
    destination: str,
    at: datetime | None,
    file_megabytes: int,
    skip_invalid: bool,
    allow_incomplete_backfill: bool,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
) -> None:
    """Write the backup in SOURCE_BUCKET/SOURCE_PREFIX as a DynamoDB S3 export.

    The output is what DynamoDB's own export writes: gzipped lines of {"Item": {...}} in
    DynamoDB JSON under KEY/data/, with manifest-summary.json and manifest-files.json beside
    them, so that DynamoDB's ImportTable (S3 key prefix KEY/data/) loads it into a new table.
    Each partition of the folder writes its own files, in parallel; files are sized so that
    one ImportTable takes them all (at most 50,000 files of at most 4,000,000 items).

    \b
    Examples:
      dynamo-backups snapshot my-backups Prod/Users --to s3://exports/users-2026-11-27
      dynamo-backups snapshot my-backups Prod/Users --to s3://exports/u --partitions 4096 \\
          --engine spark
    """
    options = SnapshotOptions(
        at=at,
        file_bytes=file_megabytes * 1024 * 1024,
        skip_invalid=skip_invalid,
        partitions=partitions,
        resume=resume,
    )
    report = take_snapshot(
        invocation.aws,
        source_bucket,
        source_prefix,
        destination,
        options,
        not invocation.quiet,
        engine,
        allow_incomplete_backfill,
    )
    text = (
        f"{report.source} -> {report.destination}: {report.items:,} items in "
        f"{len(report.files)} files ({report.seconds:,.1f} s); import with S3 key prefix "
        f"{report.destination}data/"
    )
    if report.invalid:
        text += "\n" + "\n".join(f"  invalid: {reason}" for reason in report.invalid_objects)
    text += "".join(f"\nerror: {error}" for error in report.errors)
    if report.unfinished_units:
        text += (
            f"\n{len(report.unfinished_units)} units unfinished, no manifest written: "
            "run again with --resume"
        )
    invocation.emit(report.to_dict(), text)
    if at is not None and report.absent and not report.items and not report.invalid:
        folder = open_backup_path(invocation.aws.client("s3"), source_bucket, source_prefix)
        fail(
            nothing_at_moment(
                invocation.aws.client("s3"),
                folder,
                report.at,
                layout_for(folder).earliest_change,
            )
            + f"; the snapshot at {report.destination} holds no item",
            EXIT_USAGE,
        )
    if report.invalid:
        fail(f"{counted(report.invalid, 'object')} not valid items")
    if not report.complete:
        fail("the snapshot is incomplete (see above)")
