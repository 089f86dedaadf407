"""``dynamo-backups backfill``: copy existing rows into the backup."""

from __future__ import annotations

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.bucket import require_versioning
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli.common import (
    EXIT_USAGE,
    EngineChoice,
    Invocation,
    SegmentPlan,
    concurrency_option,
    engine_options,
    fail,
    key_hash_option,
    partitions_option,
    pass_invocation,
    reports_errors,
    segment_options,
)
from dynamo_backups.cli.inputs import (
    BUCKET,
    EXPORT_SOURCE,
    PREFIX,
    TABLE,
    check_distinct,
    describe_existing_table,
    how_to_enable_stream,
    stream_problem,
)
from dynamo_backups.cli.layout_option import layout_option
from dynamo_backups.cli.lines import say
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.backfill import BackfillOptions, BackfillReport
from dynamo_backups.jobs.export_source import ExportError, open_export
from dynamo_backups.jobs.layouts import backfill_job


def tables_with_prefix(dynamodb: object, prefix: str) -> list[str]:
    names: list[str] = []
    for page in dynamodb.get_paginator("list_tables").paginate():  # type: ignore[attr-defined]
        names.extend(name for name in page.get("TableNames", []) if name.startswith(prefix))
    return names


@click.command()
@click.argument("tables", nargs=-1, type=TABLE)
@click.option("--table-prefix", help="Back up every table whose name starts with this.")
@click.option("--bucket", required=True, type=BUCKET, help="The versioned backup bucket.")
@click.option(
    "--prefix",
    default="",
    type=PREFIX,
    help="Folder for the backups, e.g. Prod "
    "(default: none: the bucket's top level, also written --prefix '').",
)
@segment_options
@click.option(
    "--max-items-per-second",
    type=click.FloatRange(min=1),
    help="Cap the items read per second: one budget for the whole job, shared by all workers.",
)
@click.option(
    "--from-export",
    type=EXPORT_SOURCE,
    help="Copy from a DynamoDB export instead of scanning (uses no read capacity): 'new' asks "
    "DynamoDB for one (needs point-in-time recovery), or give an existing export's folder.",
)
@engine_options
@partitions_option(16)
@concurrency_option(
    64,
    "S3 writes in flight per worker process, shared by the scan segments it runs at once "
    "(each keeps one at least; fewer than --segments runs that many segments at once).",
)
@key_hash_option
@layout_option
@pass_invocation
@reports_errors
def backfill(
    invocation: Invocation,
    tables: tuple[str, ...],
    table_prefix: str | None,
    bucket: str,
    prefix: str,
    segments: SegmentPlan,
    max_items_per_second: float | None,
    from_export: str | None,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
    concurrency: int,
    key_hash: str,
    folder_layout: str | None,
) -> None:
    """Copy every existing row of TABLE(s) into the backup.

    Rows that existed before the stream was on have no history in the bucket; a backfill
    gives the stream's changes a base. It is safe while the stream handler runs: it never
    replaces a state the stream wrote, and never brings back an item the stream deleted.
    It also saves each table's description (keys, indexes, billing, TTL, ...) beside the
    backup, for restores. Into a journal-layout folder it writes a base of the table
    (PREFIX/TABLE/bases/<moment>/: ImportTable-ready data, index, manifest) from the scan;
    changes the stream makes during the scan win over the rows read (its trigger must be
    writing before the backfill starts).

    \b
    Examples:
      dynamo-backups backfill Users --bucket my-backups --prefix Prod
      dynamo-backups backfill --table-prefix Prod --bucket my-backups --prefix Prod
      dynamo-backups backfill Users --bucket b --segment 0 --total-segments 4   # host 1 of 4
      dynamo-backups backfill Users --bucket b --from-export new --engine processes
      dynamo-backups backfill Users --bucket b --segments 64 --engine spark --resume
    """
    check_distinct(tables, "TABLES")
    aws = invocation.aws
    dynamodb = aws.client("dynamodb")
    names = list(tables)
    if table_prefix:
        names += [name for name in tables_with_prefix(dynamodb, table_prefix) if name not in names]
        if not names:
            fail(f"--table-prefix: no table's name starts with {table_prefix!r}", EXIT_USAGE)
    if not names:
        fail("name the tables to back up, or give --table-prefix", EXIT_USAGE)
    if from_export and segments.only is not None:
        fail("--from-export reads an export's files, not scan segments: drop --segment", 2)
    if from_export and from_export != "new" and len(names) > 1:
        fail("--from-export with an export's folder copies one table: name one", EXIT_USAGE)
    missing = sorted(set(names) - set(tables_with_prefix(dynamodb, "")))
    if missing:
        fail(f"no table {', '.join(missing)} (check the name and --region)", EXIT_USAGE)
    if from_export and from_export != "new":
        try:  # an export that is not there is bad input, said before anything is written
            open_export(aws.client("s3"), from_export)
        except ExportError as error:
            fail(f"--from-export: {error}", EXIT_USAGE)
    s3 = aws.client("s3", pool=concurrency, retries=1)
    require_versioning(s3, bucket)
    for table in names:
        _warn_without_stream(aws, table, bucket, prefix, bool(from_export))
    writer = BackupWriter(s3, bucket, objects=aws.objects(s3, bucket))
    scan = aws.dynamodb_api(dynamodb)
    options = BackfillOptions(
        total_segments=segments.total,
        segment=segments.only,
        max_items_per_second=max_items_per_second,
        resume=resume,
        concurrency=concurrency,
        from_export=from_export,
        partitions=partitions,
        folder_layout=folder_layout,
    )
    reports = []
    try:
        for table in names:
            layout = TableLayout.of(prefix, table, key_hash)
            with Progress(
                f"backfill {table}", unit="items", enabled=not invocation.quiet
            ) as progress:
                job = backfill_job(
                    dynamodb,
                    lambda request: scan.call("Scan", request),
                    writer,
                    layout,
                    options,
                    progress,
                    aws=aws,
                )
                reports.append(job.run(engine.make(job.default_workers())))
    finally:
        engine.close()
    _finish(invocation, reports)


def _warn_without_stream(
    aws: AwsContext, table: str, bucket: str, prefix: str, from_export: bool
) -> None:
    """A backfill copies the rows as they are now (or as an export shows them): without a
    stream (and its reader) the changes made since are never backed up. Said once, before
    the work."""
    problem = stream_problem(describe_existing_table(aws, table))
    if problem:
        copies = "the rows as the export shows them" if from_export else "its rows as they are now"
        say(
            f"warning: table {table} {problem}: this backfill copies {copies}, and changes "
            "made since are not backed up until its stream is on and read: "
            f"{how_to_enable_stream(table, bucket, prefix)}"
        )


def _finish(invocation: Invocation, reports: list[BackfillReport]) -> None:
    lines = []
    for report in reports:
        lines.append(
            f"{report.table}: {report.scanned:,} rows read, {report.written:,} written, "
            f"{report.already_backed_up:,} already in the backup, "
            f"{report.removals_restored:,} deletions kept, {report.failed:,} failed "
            f"({report.seconds:,.1f} s)"
        )
        lines.extend(report.details())
        if report.not_whole is not None:
            lines.append(f"  warning: {report.not_whole}")
        lines.extend(f"  failed: {failure}" for failure in report.failures)
        if report.unfinished_units:
            lines.append(
                f"  unfinished units: {', '.join(report.unfinished_units[:10])}"
                + (" ..." if len(report.unfinished_units) > 10 else "")
                + ": run again with --resume"
            )
    invocation.emit({"tables": [report.to_dict() for report in reports]}, "\n".join(lines))
    if any(not report.complete for report in reports):
        fail("the backfill is incomplete (see above)")
