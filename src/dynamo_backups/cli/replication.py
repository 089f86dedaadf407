"""diff-tables, diff-record and replicate-record: is a replica in step, and bring it there."""

from __future__ import annotations

from typing import Any

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.cli.common import (
    EXIT_USAGE,
    Invocation,
    SegmentPlan,
    fail,
    pass_invocation,
    reports_errors,
    segment_options,
)
from dynamo_backups.cli.inputs import REGION_TABLE, describe_existing_table
from dynamo_backups.cli.progress import Progress
from dynamo_backups.core.ddbjson import canonical_item, dumps_plain, item_to_plain
from dynamo_backups.core.keys import key_attribute_names, parse_key
from dynamo_backups.jobs.table_diff import TableDiff, TableRef, sync_item


def _table_description(aws: AwsContext, table: TableRef) -> dict[str, Any]:
    return describe_existing_table(aws, table.name, table.region)  # missing: exit 2


def _pair(aws: AwsContext, primary: str, replica: str, pool: int = 16) -> tuple[Any, ...]:
    """Both tables, their wire-form callers, and the key schema they share."""
    refs = TableRef.parse(primary), TableRef.parse(replica)
    regions = [ref.region or aws.region_name for ref in refs]
    if refs[0] == refs[1] or (refs[0].name == refs[1].name and regions[0] == regions[1]):
        fail(f"{refs[0]} is both the primary and the replica: name two tables", EXIT_USAGE)
    descriptions = [_table_description(aws, ref) for ref in refs]
    if descriptions[0]["KeySchema"] != descriptions[1]["KeySchema"]:
        fail(
            f"{refs[0]} and {refs[1]} have different keys: {descriptions[0]['KeySchema']} vs "
            f"{descriptions[1]['KeySchema']}",
            EXIT_USAGE,
        )
    calls = [
        aws.dynamodb_api(aws.client("dynamodb", pool=pool, region=ref.region)).call for ref in refs
    ]
    return refs[0], refs[1], calls[0], calls[1], descriptions[0]


@click.command("diff-tables")
@click.argument("primary", type=REGION_TABLE)
@click.argument("replica", type=REGION_TABLE)
@click.option("--repair", is_flag=True, help="Make the replica match the primary.")
@click.option(
    "--backfill",
    is_flag=True,
    help="Only copy the primary's items into the replica (to seed a new replica); no comparison.",
)
@segment_options
@pass_invocation
@reports_errors
def diff_tables(
    invocation: Invocation,
    primary: str,
    replica: str,
    repair: bool,
    backfill: bool,
    segments: SegmentPlan,
) -> None:
    """Compare PRIMARY with REPLICA: items missing from the replica, extra in it, or
    different. Tables are TABLE or REGION/TABLE.

    Exits 1 when they differ (after --repair: when anything was left unrepaired).

    \b
    Examples:
      dynamo-backups diff-tables Users eu-west-1/Users
      dynamo-backups diff-tables Users eu-west-1/Users --repair
      dynamo-backups diff-tables Users eu-west-1/Users-new --backfill
    """
    if repair and backfill:
        fail(
            "--repair and --backfill are separate runs: seed with --backfill, then compare",
            EXIT_USAGE,
        )
    primary_ref, replica_ref, primary_call, replica_call, description = _pair(
        invocation.aws, primary, replica
    )
    with Progress(
        f"{'backfill' if backfill else 'diff'} {primary_ref} -> {replica_ref}",
        unit="items",
        enabled=not invocation.quiet,
    ) as progress:
        report = TableDiff(
            primary_ref,
            replica_ref,
            primary_call,
            replica_call,
            key_attribute_names(description["KeySchema"]),
            segments.total,
            segments.only,
            repair,
            backfill,
            progress,
        ).run()
    if backfill:
        text = (
            f"copied {report.copied:,} items from {primary_ref} to {replica_ref}; "
            f"{report.already_there:,} were there already (the replica's state kept) "
            f"({report.seconds:,.1f} s)"
        )
    else:
        lines = [
            f"{primary_ref}: {report.scanned_primary:,} items; {replica_ref}: "
            f"{report.scanned_replica:,} items ({report.seconds:,.1f} s)",
            f"missing from the replica: {report.missing:,}; extra in the replica: "
            f"{report.extra:,}; different: {report.different:,}",
        ]
        lines.extend(report.sample_lines())
        if repair:
            lines.append(
                f"repaired: {report.repaired:,}; not repaired (the replica changed meanwhile, "
                f"or the item is too large to compare): {report.repair_failed:,}"
            )
            lines.extend(f"  {note}" for note in report.notes)
        text = "\n".join(lines)
    invocation.emit(report.to_dict(), text)
    if report.differences - (report.repaired if repair else 0) > 0:
        fail(
            f"{report.differences - report.repaired if repair else report.differences:,} "
            f"differences between {primary_ref} and {replica_ref}"
        )


def _record_pair(invocation: Invocation, primary: str, replica: str, key: str) -> tuple[Any, ...]:
    primary_ref, replica_ref, primary_call, replica_call, description = _pair(
        invocation.aws, primary, replica, pool=2
    )
    typed = parse_key(key, key_types_from_description(description))
    items = [
        call("GetItem", {"TableName": ref.name, "Key": typed, "ConsistentRead": True}).get("Item")
        for call, ref in ((primary_call, primary_ref), (replica_call, replica_ref))
    ]
    return primary_ref, replica_ref, replica_call, typed, items[0], items[1]


def _show(item: dict[str, Any] | None) -> str:
    return "(no such item)" if item is None else dumps_plain(item_to_plain(item))


@click.command("diff-record")
@click.argument("primary", type=REGION_TABLE)
@click.argument("replica", type=REGION_TABLE)
@click.argument("key")
@pass_invocation
@reports_errors
def diff_record(invocation: Invocation, primary: str, replica: str, key: str) -> None:
    """Compare one item of PRIMARY and REPLICA (consistent reads); exit 1 when they differ.

    KEY is the item's key in plain JSON ({"id": "abc"}) or DynamoDB JSON.

    \b
    Example:
      dynamo-backups diff-record Users eu-west-1/Users '{"id": "abc"}'
    """
    primary_ref, replica_ref, _, typed, first, second = _record_pair(
        invocation, primary, replica, key
    )
    same = (first is None and second is None) or (
        first is not None and second is not None and canonical_item(first) == canonical_item(second)
    )
    verdict = "the same" if same else "different"
    invocation.emit(
        {"key": typed, "primary": first, "replica": second, "same": same},
        f"{primary_ref}:\n{_show(first)}\n{replica_ref}:\n{_show(second)}\n{verdict}",
    )
    if not same:
        fail(f"the item differs between {primary_ref} and {replica_ref}")


@click.command("replicate-record")
@click.argument("primary", type=REGION_TABLE)
@click.argument("replica", type=REGION_TABLE)
@click.argument("key")
@pass_invocation
@reports_errors
def replicate_record(invocation: Invocation, primary: str, replica: str, key: str) -> None:
    """Copy one item from PRIMARY to REPLICA (or delete it there if PRIMARY has none).

    \b
    Example:
      dynamo-backups replicate-record Users eu-west-1/Users '{"id": "abc"}'
    """
    _, replica_ref, replica_call, typed, first, _ = _record_pair(invocation, primary, replica, key)
    sync_item(replica_call, replica_ref.name, typed, first, RetryPolicy())
    done = "deleted" if first is None else "written"
    invocation.emit(
        {"key": typed, "action": done, "item": first},
        f"{done} {key} in {replica_ref}" + (f":\n{_show(first)}" if first else ""),
    )
