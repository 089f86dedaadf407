"""``dynamo-backups adopt``: take over a folder written by the checklist's original Lambda."""

from __future__ import annotations

from typing import Any

import click

from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.description import DescriptionError, description_from_key_schema
from dynamo_backups.backup.folder import BackupFolder, open_backup_path
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.cli.common import (
    EXIT_USAGE,
    EngineChoice,
    Invocation,
    engine_options,
    fail,
    partitions_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import BUCKET, KEY_SCHEMA, TABLE_FOLDER
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.wording import counted
from dynamo_backups.jobs.adopt import Adopt, AdoptError, AdoptOptions, AdoptReport


@click.command()
@click.argument("source_bucket", type=BUCKET)
@click.argument("source_prefix", type=TABLE_FOLDER)
@click.option(
    "--key-schema",
    type=KEY_SCHEMA,
    help="The table's key, when the folder has no saved description and the table of its "
    "name cannot be described (hash key first).",
)
@click.option(
    "--rewrite",
    is_flag=True,
    help="Also copy each item's history from the replicator's names into its own name, "
    "oldest first, keeping the original dates; deletes nothing.",
)
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def adopt(
    invocation: Invocation,
    source_bucket: str,
    source_prefix: str,
    key_schema: str | None,
    rewrite: bool,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
) -> None:
    """Adopt the backup folder SOURCE_BUCKET/SOURCE_PREFIX written by other tools.

    The checklist's original Lambda (mapbox/dynamodb-replicator) names objects
    md5(JSON.stringify(Keys)): key attributes in the stream record's order, non-ASCII as
    raw UTF-8. Reads every object's newest item, reports which naming each follows (ours,
    the replicator's, both alike, unknown), and records in layout.json which objects hold an
    item under another name. From then on restore, history, verify and snapshot read an
    item's versions under all its names as one history, ordered by change time
    (LastModified for the replicator's versions). No object is rewritten or deleted unless
    --rewrite, which copies history and still deletes nothing.

    Run it after the original trigger is removed: objects it writes later are not in the
    index (readers then stop at them, naming this command).

    \b
    Examples:
      dynamo-backups adopt my-backups Prod/Users
      dynamo-backups adopt my-backups Prod/Orders --key-schema customer:S,order:N
      dynamo-backups adopt my-backups Prod/Users --rewrite
    """
    aws = invocation.aws
    s3 = aws.client("s3", pool=32)
    # A folder the original Lambda wrote has objects only: that is a backup too.
    folder = open_backup_path(s3, source_bucket, source_prefix)
    schema, key_types = _key_schema(invocation, folder, key_schema)
    options = AdoptOptions(rewrite=rewrite, partitions=partitions, resume=resume)
    label = f"adopt {folder.layout.table}"
    with Progress(label, unit="objects", enabled=not invocation.quiet) as progress:
        objects = aws.objects(s3, source_bucket)
        job = Adopt(s3, objects, folder, schema, options, progress, aws=aws, key_types=key_types)
        try:
            report = job.run(engine.make(4))
        except AdoptError as error:
            fail(str(error))
        finally:
            engine.close()
    invocation.emit(report.to_dict(), _text(report, rewrite))
    if not report.complete:
        fail("the adoption is incomplete (see above): run it again with --resume")


def _key_schema(
    invocation: Invocation, folder: BackupFolder, given: str | None
) -> tuple[list[dict[str, str]], dict[str, str] | None]:
    """The table's KeySchema and key types: given, saved with the folder, or described."""
    if given and folder.key_schema:
        recorded = [element["AttributeName"] for element in folder.key_schema]
        named = [part.split(":")[0].strip() for part in given.split(",") if part.strip()]
        if named != recorded:
            fail(
                f"--key-schema {given} does not apply: {folder.where} records its key "
                f"({', '.join(recorded)}); leave it out",
                EXIT_USAGE,
            )
    if given:
        try:
            table = description_from_key_schema(given)["table"]
        except DescriptionError as error:
            fail(str(error), 2)
        return table["KeySchema"], key_types_from_description(table)
    if folder.key_schema:
        return folder.key_schema, folder.key_types
    dynamodb = invocation.aws.client("dynamodb")
    table = folder.layout.table
    try:
        answer: dict[str, Any] = call_with_retries(
            lambda: dynamodb.describe_table(TableName=table),
            READ_POLICY,
            f"describe table {table}",
        )
    except dynamodb.exceptions.ResourceNotFoundException:
        fail(
            f"{folder.where} has no saved description and there is no table {table} to "
            "describe: give its key, e.g. --key-schema pk:S,sk:N",
            2,
        )
    return answer["Table"]["KeySchema"], key_types_from_description(answer["Table"])


def _text(report: AdoptReport, rewrite: bool) -> str:
    lines = [
        f"{report.source}: {counted(report.objects, 'object')} ({report.seconds:,.1f} s)",
        f"  named as this tool names them: {report.ours:,}",
        f"  named as the replicator names them: {report.replicator:,}",
        f"  named alike by both (ASCII, one key attribute): {report.both:,}",
        f"  unknown: {report.unknown:,}",
        f"  deletes only: {report.deletes_only:,} ({report.deletes_matched:,} matched to an item)",
        f"recorded: {report.aliases:,} names read as part of {report.items_with_aliases:,} "
        "items' histories",
    ]
    for kind, samples in sorted(report.samples.items()):
        lines.extend(f"  {kind}: {sample}" for sample in samples)
    if rewrite:
        lines.append(
            f"rewritten: {report.rewritten_items:,} items, {report.versions_copied:,} versions "
            "copied into their own names (the originals are kept)"
        )
    lines.extend(f"error: {error}" for error in report.errors)
    return "\n".join(lines)
