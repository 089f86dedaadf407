"""``dynamo-backups convert``: an item-layout folder's state at a moment, as a base of a journal
folder under another prefix (docs/journal.md, "Converting an item-layout folder")."""

from __future__ import annotations

from datetime import datetime

import click

from dynamo_backups.backup.folder import open_backup_path
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
from dynamo_backups.cli.pending_check import (
    allow_incomplete_backfill_option,
    require_checked_backfill,
)
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.journal import JournalError
from dynamo_backups.jobs.convert import Conversion, ConvertError, ConvertOptions, ConvertReport


@click.command()
@click.argument("bucket", type=BUCKET)
@click.argument("item_folder", type=TABLE_FOLDER)
@click.argument("journal_folder", type=TABLE_FOLDER)
@click.option(
    "--at",
    type=TIME,
    help="The base's moment (to the second; default: now, by S3's clock). Choose one after "
    "the journal trigger's first change, so that the journal holds every change after it.",
)
@click.option(
    "--history",
    is_flag=True,
    help="Copy the item folder's history too: each version up to the moment the journal does "
    "not hold already becomes a journal record (pieces tagged 'converted'), so that restore "
    "--at, history and snapshot of the journal folder give what the item folder gives before "
    "the base as well.",
)
@click.option(
    "--read-concurrency",
    type=click.IntRange(1, 512),
    default=16,
    show_default=True,
    help="Parallel object reads per unit.",
)
@allow_incomplete_backfill_option
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def convert(
    invocation: Invocation,
    bucket: str,
    item_folder: str,
    journal_folder: str,
    at: datetime | None,
    history: bool,
    read_concurrency: int,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
    allow_incomplete_backfill: bool,
) -> None:
    """Write the item-layout folder ITEM_FOLDER's state as a base of the journal folder
    JOURNAL_FOLDER.

    Both are table folders (Prod/Users) in BUCKET. The item folder is only read. The journal
    folder is another prefix: a new one, or the one a journal trigger deployed beside the item
    trigger writes; a folder holding an item backup is refused. The base
    (JOURNAL_FOLDER/bases/<moment>/) holds every item as a restore of the item folder --at the
    moment gives it; restores of the journal folder read it and the journal after it. The
    journal folder's layout.json is written last, once the base is complete: run a killed
    conversion again with --resume. With --history the item folder's versions up to the
    moment are copied into the journal too (those the journal holds already are not), so
    that the journal folder reads as the item folder at every moment; without it, moments
    before the base stay readable in the item folder only.

    \b
    Examples:
      dynamo-backups convert my-backups Prod/Users Journal/Users
      dynamo-backups convert my-backups Prod/Users Journal/Users --at 2026-11-27T12:00:00Z
      dynamo-backups convert my-backups Prod/Users Journal/Users --history
    """
    aws = invocation.aws
    s3 = aws.client("s3", pool=read_concurrency)
    folder = open_backup_path(s3, bucket, item_folder)  # "no backup at ...", first
    # The base claims the whole table as of its moment: not one a backfill had half copied.
    coverage = require_checked_backfill(s3, folder, at, allow_incomplete_backfill, whole=True)
    options = ConvertOptions(
        at=at,
        partitions=partitions,
        resume=resume,
        read_concurrency=read_concurrency,
        history=history,
        coverage=coverage,
    )
    with Progress("convert", unit="items", enabled=not invocation.quiet) as progress:
        job = Conversion(
            s3, aws.objects(s3, bucket), bucket, item_folder, journal_folder, options, progress,
            aws=aws,
        )  # fmt: skip
        try:
            report = job.run(engine.make(4))
        except (ConvertError, JournalError) as error:
            fail(str(error))
        finally:
            engine.close()
    invocation.emit(report.to_dict(), summary_text(report))
    if not report.complete:
        fail("the conversion is incomplete (see above): run it again with --resume", EXIT_FAILED)


def summary_text(report: ConvertReport) -> str:
    lines = [
        f"{report.source} -> {report.base} (as of {report.moment}; the journal weighed from "
        f"{report.reflects_before})"
    ]
    if report.existed and not report.files:
        lines.append("the base was complete already")
    else:
        lines.append(
            f"{report.items:,} items in {report.files:,} files, {report.removals_kept:,} "
            f"removals kept in the index; {report.objects:,} item objects read in "
            f"{report.seconds:,.1f} s"
        )
    if report.history:
        lines.append(
            f"history: {report.converted_records:,} item versions copied into the journal "
            f"({report.converted_pieces:,} pieces written), {report.in_journal:,} held by the "
            "journal already"
        )
        if report.keyless_removals:
            lines.append(
                f"warning: {report.keyless_removals:,} removals of items no version holds "
                "(made before the item backup held them) are not copied: nothing to name them by"
            )
    if report.unindexed_removals:
        lines.append(
            f"warning: {report.unindexed_removals:,} removals newer than the base's late "
            "horizon are of items no version holds (made before the item backup held them): "
            "not in the base's index, so a late change of such an item older than its removal "
            "would not be weighed against it; e.g. " + ", ".join(report.unindexed_samples[:3])
        )
    if report.layout_written:
        lines.append(f"{report.target} is a journal folder now (layout.json written)")
    lines.extend(f"warning: {warning}" for warning in report.warnings)
    lines.extend(f"error: {error}" for error in report.errors)
    if report.unfinished_units:
        lines.append(f"{len(report.unfinished_units)} units unfinished: run again with --resume")
    return "\n".join(lines)
