"""``dynamo-backups verify``: compare a table with its backup; repair on request."""

from __future__ import annotations

from typing import Any

import click

from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.bucket import require_versioning
from dynamo_backups.backup.description import TableReplacedError, check_same_table
from dynamo_backups.backup.folder import BackupFolder, open_backup
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli.common import (
    EXIT_USAGE,
    EngineChoice,
    Invocation,
    concurrency_option,
    engine_options,
    fail,
    partitions_option,
    pass_invocation,
    reports_errors,
    segments_option,
)
from dynamo_backups.cli.inputs import BUCKET, PREFIX, TABLE
from dynamo_backups.cli.lines import say
from dynamo_backups.cli.pending_check import (
    allow_incomplete_backfill_option,
    require_checked_backfill,
)
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.journal import JournalError
from dynamo_backups.jobs.layouts import layout_for


@click.command()
@click.argument("table", type=TABLE)
@click.option("--bucket", required=True, type=BUCKET, help="The backup bucket.")
@click.option(
    "--prefix",
    default="",
    type=PREFIX,
    help="The backups' folder, e.g. Prod "
    "(default: none: the bucket's top level, also written --prefix '').",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Write the table's current state into the backup for every difference found.",
)
@allow_incomplete_backfill_option
@segments_option
@concurrency_option(
    16,
    "Units at once on --engine threads; on a journal folder, also the S3 reads at once of "
    "each unit, on every engine.",
    maximum=256,
)
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def verify(
    invocation: Invocation,
    table: str,
    bucket: str,
    prefix: str,
    repair: bool,
    allow_incomplete_backfill: bool,
    segments: int,
    concurrency: int,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
) -> None:
    """Compare TABLE with the latest state of its backup.

    Reports items missing from the backup, items in the backup that are no longer in the
    table, and items that differ, with counts and a sample of keys; exits 1 when anything
    differs (after --repair: when anything could not be repaired). Differences are read
    again from both sides before they count, so changes in flight are not reported.

    \b
    Examples:
      dynamo-backups verify Users --bucket my-backups --prefix Prod
      dynamo-backups verify Users --bucket my-backups --prefix Prod --repair
      dynamo-backups verify Users --bucket my-backups --segments 64 --partitions 256 \\
          --engine spark
    """
    aws = invocation.aws
    dynamodb = aws.client("dynamodb", pool=segments + concurrency)
    s3 = aws.client("s3", pool=concurrency * 2)
    try:
        described = call_with_retries(
            lambda: dynamodb.describe_table(TableName=table)["Table"],
            READ_POLICY,
            f"describe table {table}",
        )
    except dynamodb.exceptions.ResourceNotFoundException:
        fail(f"table {table} does not exist (check the name and --region)", EXIT_USAGE)
    key_schema = described["KeySchema"]
    folder = open_backup(s3, bucket, prefix, table)  # "no backup at ..." for a wrong folder
    _check_same_table(s3, folder, described, repair)
    require_checked_backfill(s3, folder, None, allow_incomplete_backfill)
    if repair:
        require_versioning(s3, bucket)  # repairs write versions, as backfill and stream do
    layout = folder.layout
    api = aws.dynamodb_api(dynamodb)
    writer = BackupWriter(s3, bucket)
    with Progress(f"verify {table}", unit="items", enabled=not invocation.quiet) as progress:
        job = layout_for(folder).verify(  # the folder's layout.json: items or journal
            api.call,
            key_schema,
            writer,
            aws.objects(s3, bucket),
            layout,
            segments,
            repair,
            concurrency,
            progress,
            aws=aws,
            partitions=partitions,
            resume=resume,
            aliases=folder.aliases,
        )
        try:
            report = job.run(engine.make(max(segments, concurrency)))
        except JournalError as error:  # a journal folder that cannot be read as one
            fail(str(error))
        finally:
            engine.close()
    lines = [
        f"{table} vs {report.source}: {report.items_in_table:,} items in the table, "
        f"{report.objects_in_backup:,} in the backup ({report.seconds:,.1f} s)",
        f"missing from the backup: {report.missing:,}; in the backup but not the table: "
        f"{report.extra:,}; different: {report.different:,}",
    ]
    lines.extend(report.sample_lines())
    if repair:
        lines.append(f"repaired: {report.repaired:,}; not repaired: {report.repair_failed:,}")
    lines.extend(f"error: {error}" for error in report.errors)
    invocation.emit(report.to_dict(), "\n".join(lines))
    if report.unfinished_units:
        fail(
            f"{len(report.unfinished_units)} units of the verify did not finish: run again "
            "(--resume skips the units that did)"
        )
    unresolved = report.differences - (report.repaired if repair else 0)
    if unresolved > 0:
        fail(f"{unresolved:,} differences between {table} and its backup")


def _check_same_table(
    s3: Any, folder: BackupFolder, described: dict[str, Any], repair: bool
) -> None:
    """A repair writes the table's rows into the folder: refused for a table that is not the
    folder's (deleted since and made again, or of another region: ``check_same_table``); a
    plain verify says so before its differences, which are then between two tables."""
    try:
        check_same_table(s3, folder.bucket, folder.layout, described)
    except TableReplacedError as error:
        if repair:
            raise
        say(f"warning: {error}")
