"""status and test-function: is what deploy installed working?"""

from __future__ import annotations

import json
from typing import Any

import click

from dynamo_backups.aws.errors import ClientError
from dynamo_backups.cli.backfill import tables_with_prefix
from dynamo_backups.cli.common import EXIT_USAGE, Invocation, fail, pass_invocation, reports_errors
from dynamo_backups.cli.inputs import TABLE
from dynamo_backups.cli.installer import clients_of, require_something_deployed
from dynamo_backups.installer.plan import (
    describe_failure,
)
from dynamo_backups.installer.smoke_test import run_function_test
from dynamo_backups.installer.status import table_status


@click.command("test-function")
@click.argument("table", type=TABLE)
@pass_invocation
@reports_errors
def test_function_command(invocation: Invocation, table: str) -> None:
    """Invoke TABLE's backup function with the console's "DynamoDB Update" sample event and
    confirm its objects appeared in the bucket (the checklist's "Test function" step).

    The sample (an insert, an update and a delete of item {"Id": 101} of table
    ExampleTableWithStream) leaves its versions under <prefix>/ExampleTableWithStream/.

    \b
    Example:
      dynamo-backups test-function Users
    """
    clients = clients_of(invocation.aws)
    try:
        result = run_function_test(clients, table)
    except ClientError as error:
        fail(describe_failure(error, f"testing the function of table {table}"))
    lines = [
        f"invoked {result.function}: status {result.status_code}",
        f"response: {json.dumps(result.response)[:2000]}",
    ]
    if result.function_error:
        lines.append(f"the function failed ({result.function_error})")
    else:
        lines.append(
            f"{result.folder}: {result.versions_found} versions and "
            f'{result.delete_markers_found} delete markers of item {{"Id": 101}}'
        )
    invocation.emit(result.__dict__ | {"passed": result.passed}, "\n".join(lines))
    if not result.passed:
        fail("the test did not pass (see above)")


@click.command()
@click.argument("tables", nargs=-1, type=TABLE)
@click.option("--table-prefix", help="Every table whose name starts with this.")
@pass_invocation
@reports_errors
def status(invocation: Invocation, tables: tuple[str, ...], table_prefix: str | None) -> None:
    """Show, per table, the stream, the trigger, the function and the backup folder.

    Exits 1 when something needs attention (no stream, no trigger, a failed function, ...).

    \b
    Example:
      dynamo-backups status Users Orders
    """
    aws = invocation.aws
    names = list(tables)
    if table_prefix:
        matching = tables_with_prefix(aws.client("dynamodb"), table_prefix)
        if not matching:
            fail(f"--table-prefix: no table's name starts with {table_prefix!r}", EXIT_USAGE)
        names += [name for name in matching if name not in names]
    if not names:
        fail("name the tables, or give --table-prefix", EXIT_USAGE)
    clients = clients_of(aws)
    for name in names:
        require_something_deployed(aws, clients, name)  # a wrong name: exit 2, not a report
    cloudwatch = aws.client("cloudwatch")
    reports = [table_status(clients, cloudwatch, name) for name in names]
    lines = []
    for report in reports:
        lines.append(f"{report.table}:")
        stream = report.stream
        if stream:
            lines.append(
                f"  stream:   {'on' if stream['enabled'] else 'off'} "
                f"{stream.get('view_type') or ''} {stream.get('arn') or ''}".rstrip()
            )
        for label, function in (
            ("function", report.function),
            ("replica", report.replica_function),
        ):
            if function:
                lines.append(
                    f"  {label + ':':<9} {function['FunctionName']} {function['Runtime']} "
                    f"{function['MemorySize']} MB {function['Timeout']} s, "
                    f"{function.get('State') or 'Active'}, updated {function['LastModified']}"
                )
        for trigger in report.triggers:
            window = trigger.get("MaximumBatchingWindowInSeconds")
            lines.append(
                f"  trigger:  {trigger['State']}, last result "
                f"{trigger.get('LastProcessingResult')}, batch {trigger['BatchSize']}"
                + (f", window {window} s" if window else "")
                + f" -> {str(trigger.get('FunctionArn', '')).rsplit(':', 1)[-1]}"
            )
        for counted, label in (("items", "items"), ("journal_objects", "journal objects")):
            if report.backup.get(counted) is not None:
                more = "+" if report.backup.get("at_least") else ""
                count = f"{report.backup[counted]:,}{more}"
                lines.append(f"  backup:   {count} {label} in {report.backup['folder']}")
        if report.compaction.get("schedule"):
            lines.append(f"  compact:  {_compaction_line(report.compaction)}")
        if report.iterator_age_ms is not None:
            lines.append(
                f"  behind:   {report.iterator_age_ms / 1000:,.1f} s (IteratorAge, max of 15 min)"
            )
        lines.extend(f"  PROBLEM:  {problem}" for problem in report.problems)
    invocation.emit({"tables": [report.to_dict() for report in reports]}, "\n".join(lines))
    if any(report.problems for report in reports):
        fail("some tables need attention (see above)")


def _compaction_line(compaction: dict[str, Any]) -> str:
    """A journal folder's schedule and newest base, on one line."""
    line = (
        f"{compaction['function']} {compaction['schedule']} {compaction.get('rule_state')}, "
        f"a base every {compaction.get('every_hours')} h; "
    )
    base = compaction.get("newest_base")
    if not base:
        return line + "no base yet"
    return (
        line + f"newest base {base['moment']} ({base['retention'] or 'untagged'}, "
        f"{base['items']:,} items)"
    )
