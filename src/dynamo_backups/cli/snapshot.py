"""``dynamo-backups snapshot``: the backup as a DynamoDB-style export, for ImportTable."""

from __future__ import annotations

from datetime import datetime

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.folder import open_folder_path
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.cli.common import TIME, Invocation, fail, pass_invocation, reports_errors
from dynamo_backups.cli.progress import Progress
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotError, SnapshotReport


def take_snapshot(
    aws: AwsContext,
    bucket: str,
    folder: str,
    destination: str,
    at: datetime | None,
    file_megabytes: int,
    skip_invalid: bool,
    show_progress: bool,
) -> SnapshotReport:
    s3 = aws.client("s3", pool=32)
    opened = open_folder_path(s3, bucket, folder)
    layout, key_names = opened.layout, opened.key_names
    with Progress(f"snapshot {layout.table}", unit="objects", enabled=show_progress) as progress:
        items = BackupItems(
            aws.objects(s3, bucket), bucket, layout, key_names, at, progress=progress
        )
        try:
            return Snapshot(
                items, s3, destination, file_megabytes * 1024 * 1024, skip_invalid
            ).run()
        except SnapshotError as error:
            fail(str(error))


@click.command()
@click.argument("source_bucket")
@click.argument("source_prefix")
@click.option(
    "--to",
    "destination",
    required=True,
    metavar="s3://BUCKET/KEY",
    help="Where to write the export.",
)
@click.option("--at", type=TIME, help="The table as it was at this moment (default: latest).")
@click.option(
    "--file-size",
    "file_megabytes",
    type=click.IntRange(1, 100_000),
    default=256,
    show_default=True,
    help="Uncompressed megabytes per data file.",
)
@click.option("--skip-invalid", is_flag=True, help="Go on past objects that are not valid items.")
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
) -> None:
    """Write the backup in SOURCE_BUCKET/SOURCE_PREFIX as a DynamoDB S3 export.

    The output is what DynamoDB's own export writes: gzipped lines of {"Item": {...}} in
    DynamoDB JSON under KEY/data/, with manifest-summary.json and manifest-files.json beside
    them, so that DynamoDB's ImportTable (S3 key prefix KEY/data/) loads it into a new table.

    \b
    Example:
      dynamo-backups snapshot my-backups Prod/Users --to s3://exports/users-2026-11-27
    """
    report = take_snapshot(
        invocation.aws,
        source_bucket,
        source_prefix,
        destination,
        at,
        file_megabytes,
        skip_invalid,
        not invocation.quiet,
    )
    text = (
        f"{report.source} -> {report.destination}: {report.items:,} items in "
        f"{len(report.files)} files ({report.seconds:,.1f} s); import with S3 key prefix "
        f"{report.destination}data/"
    )
    if report.invalid:
        text += "\n" + "\n".join(f"  invalid: {reason}" for reason in report.invalid_objects)
    invocation.emit(report.to_dict(), text)
    if report.invalid:
        fail(f"{report.invalid} objects were not valid items")
