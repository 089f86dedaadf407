"""``dynamo-backups compact``: fold a journal folder into a base (docs/journal.md)."""

from __future__ import annotations

from datetime import datetime

import click

from dynamo_backups.cli.common import (
    EXIT_FAILED,
    TIME,
    EngineChoice,
    Invocation,
    engine_options,
    fail,
    partitions_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import BUCKET, TABLE_FOLDER
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.journal import JournalError
from dynamo_backups.jobs.compact import CompactError, Compaction, CompactOptions, CompactReport


@click.command()
@click.argument("bucket", type=BUCKET)
@click.argument("folder", type=TABLE_FOLDER)
@click.option(
    "--at",
    type=TIME,
    help="The base's moment (to the second; default: now, by S3's clock). Changes made up to "
    "it are folded in; those that reach the journal later are added by readers.",
)
@click.option(
    "--read-concurrency",
    type=click.IntRange(1, 512),
    default=16,
    show_default=True,
    help="Parallel object reads per unit.",
)
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def compact(
    invocation: Invocation,
    bucket: str,
    folder: str,
    at: datetime | None,
    read_concurrency: int,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
) -> None:
    """Fold the journal folder BUCKET/FOLDER into a base as of a moment.

    FOLDER is the table's folder (Prod/Users), written with --layout journal. The base
    (FOLDER/bases/<moment>/) holds the state of every item at the moment: data/ is
    ImportTable's DynamoDB JSON (gzip), index/ the change that decided each item, and
    manifest.json, written last, makes it a base. Restores then read the newest base and
    the journal after it. The command first marks the cutoff and waits 20 s for writes in
    flight; it deletes nothing (journal objects expire by the bucket's lifecycle rules).

    \b
    Examples:
      dynamo-backups compact my-backups Prod/Users
      dynamo-backups compact my-backups Prod/Users --at 2026-11-27T00:00:00Z --partitions 256
    """
    aws = invocation.aws
    s3 = aws.client("s3", pool=read_concurrency)
    options = CompactOptions(
        at=at, partitions=partitions, resume=resume, read_concurrency=read_concurrency
    )
    with Progress("compact", unit="items", enabled=not invocation.quiet) as progress:
        job = Compaction(s3, aws.objects(s3, bucket), bucket, folder, options, progress, aws=aws)
        try:
            report = job.run(engine.make(4))
        except (CompactError, JournalError) as error:
            fail(str(error))
        finally:
            engine.close()
    invocation.emit(report.to_dict(), summary_text(report))
    if not report.complete:
        fail("the compaction is incomplete (see above): run it again with --resume", EXIT_FAILED)


def summary_text(report: CompactReport) -> str:
    if report.existed and not report.files:
        return f"{report.base}: a complete base of {report.moment} is there already"
    lines = [
        f"{report.source} -> {report.base} (as of {report.moment}; cutoff {report.cutoff}; "
        f"from {report.previous or 'the journal alone'})",
        f"{report.items:,} items in {report.files:,} files, {report.removals_kept:,} removals "
        f"kept in the index; {report.records_folded:,} records folded from "
        f"{report.pieces_read:,} journal objects in {report.seconds:,.1f} s",
    ]
    lines.extend(f"error: {error}" for error in report.errors)
    if report.unfinished_units:
        lines.append(f"{len(report.unfinished_units)} units unfinished: run again with --resume")
    return "\n".join(lines)
