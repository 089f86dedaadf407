"""``dynamo-backups history``: every version of one item."""

from __future__ import annotations

import click

from dynamo_backups.backup.folder import open_backup
from dynamo_backups.cli.common import Invocation, fail, pass_invocation, reports_errors
from dynamo_backups.cli.inputs import BUCKET, PREFIX, TABLE
from dynamo_backups.core.ddbjson import dumps_plain, item_to_plain
from dynamo_backups.core.journal import JournalError
from dynamo_backups.core.keys import parse_key
from dynamo_backups.core.layout import format_time
from dynamo_backups.core.wording import counted
from dynamo_backups.jobs.history import HistoryEntry
from dynamo_backups.jobs.layouts import layout_for


@click.command()
@click.argument("table", type=TABLE)
@click.argument("key")
@click.option("--bucket", required=True, type=BUCKET, help="The backup bucket.")
@click.option(
    "--prefix",
    default="",
    type=PREFIX,
    help="The backups' folder, e.g. Prod "
    "(default: none: the bucket's top level, also written --prefix '').",
)
@pass_invocation
@reports_errors
def history(invocation: Invocation, table: str, key: str, bucket: str, prefix: str) -> None:
    """Show every backed-up version of one item of TABLE, newest change first.

    KEY is the item's key in plain JSON ({"id": "abc"}; the key's types come from the saved
    table description) or in DynamoDB JSON ({"id": {"S": "abc"}}). Each version shows when
    the change happened, what it was (insert, modify, delete, backfill, repair) and the item.
    Versions are in the order of the changes (change time, then the stream's sequence
    number), the order restore --at follows, not the order S3 received them: a copy a retry
    or a replay wrote again is marked as a duplicate, one that arrived after a later change
    as received late. A journal folder shows each change once (a redelivered batch's
    copies dropped), from every journal object and each base's record of the item.

    \b
    Example:
      dynamo-backups history Users '{"id": "abc"}' --bucket my-backups --prefix Prod
    """
    aws = invocation.aws
    s3 = aws.client("s3")
    folder = open_backup(s3, bucket, prefix, table)  # "no backup at ..." for a wrong folder
    typed_key = parse_key(key, folder.key_types)
    read_history = layout_for(folder).history  # the folder's layout's (jobs/layouts)
    try:
        object_key, entries = read_history(s3, aws.objects(s3, bucket), folder, typed_key)
    except JournalError as error:  # a journal object or base that cannot be read as one
        fail(str(error))
    if not entries:
        fail(f"no backup of item {key} of {table} at s3://{bucket}/{object_key}")
    lines = [f"s3://{bucket}/{object_key}  ({counted(len(entries), 'version')}, newest first)"]
    for entry in entries:
        if entry.event == "delete-marker":
            lines.append(f"{'':24}  delete marker (received {format_time(entry.received)})")
            lines.extend(_copy_notes(entry, entries))
            if entry.object_key:
                lines.append(f"    under the replicator's name s3://{bucket}/{entry.object_key}")
            continue
        when = format_time(entry.change_time) if entry.change_time else "?"
        origin = ", ".join(
            part
            for part in (
                entry.writer,
                f"sequence {entry.sequence_number}" if entry.sequence_number else None,
            )
            if part
        )
        lines.append(
            f"{when:24}  {entry.event:<8}  ({origin})" if origin else f"{when:24}  {entry.event}"
        )
        if entry.item is not None:
            rendered = dumps_plain(item_to_plain(entry.item))
            lines.extend("    " + line for line in rendered.splitlines())
        if entry.problem:
            lines.append(f"    invalid: {entry.problem}")
        lines.extend(_copy_notes(entry, entries))
        if entry.object_key:
            lines.append(f"    under the replicator's name s3://{bucket}/{entry.object_key}")
    invocation.emit(
        {
            "object": f"s3://{bucket}/{object_key}",
            "key": typed_key,
            "history": [entry.to_dict() for entry in entries],
        },
        "\n".join(lines),
    )


def _copy_notes(entry: HistoryEntry, entries: list[HistoryEntry]) -> list[str]:
    """Why a version is not a change of its own: a repeated copy, or one that came late."""
    notes = []
    if entry.duplicate_of:
        original = next((one for one in entries if one.version_id == entry.duplicate_of), None)
        when = f", received {format_time(original.received)}" if original else ""
        notes.append(f"    duplicate of version {entry.duplicate_of}{when}")
    if entry.late:
        notes.append(
            f"    received late ({format_time(entry.received)}), after a later change: "
            "a superseded copy, never the state after that change"
        )
    return notes
