"""``dynamo-backups replay``: re-apply records the Lambda trigger gave up on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dynamo_backups.aws.errors import ClientError, describe_error
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.bucket import require_versioning
from dynamo_backups.backup.folder import open_backup
from dynamo_backups.backup.layouts import layout_of
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Invocation,
    fail,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import BUCKET, KEY_HASH, PREFIX, READABLE_FILE, TABLE
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.installer.alerting import queue_url
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.jobs.layouts import Layout, layout_named
from dynamo_backups.jobs.replay import (
    GivenUp,
    Replayer,
    ReplayOutcome,
    ReportError,
    parse_report,
    reports_in_file,
)

RECEIVE_WAIT_SECONDS = 1
# Long enough to read and write one reported range before another reader could see it.
VISIBILITY_TIMEOUT_SECONDS = 300
SQS_POLICY = RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=10)
T = TypeVar("T")


@click.command()
@click.argument("table", type=TABLE)
@click.option(
    "--queue",
    help="The failure queue (URL or name; default: the one deploy made for TABLE's function).",
)
@click.option(
    "--file",
    "report_file",
    type=READABLE_FILE,
    help="Reports saved in a file instead (one JSON document per line, or a JSON list).",
)
@click.option(
    "--bucket", type=BUCKET, help="The backup bucket (default: the function's BACKUP_BUCKET)."
)
@click.option(
    "--prefix",
    type=PREFIX,
    help="The backups' folder (default: the function's BACKUP_PREFIX; "
    "--prefix '' is the "
    "bucket's top level).",
)
@click.option(
    "--key-hash",
    type=KEY_HASH,
    help="How object names are made (default: the folder's layout.json, else the function's).",
)
@pass_invocation
@reports_errors
def replay(
    invocation: Invocation,
    table: str,
    queue: str | None,
    report_file: Path | None,
    bucket: str | None,
    prefix: str | None,
    key_hash: str | None,
) -> None:
    """Re-apply the records TABLE's trigger gave up on, from the stream, in its order.

    Each report in the failure queue (or --file) names a range of stream records. Replay
    reads exactly that range again (the stream keeps records 24 hours) and writes it with
    the handler's own code; where an item holds a newer state (also one the trigger writes
    meanwhile), that state is written again on top, so the stream's order is kept. A queue
    message is deleted only after its whole range is written. A range the stream no longer
    holds is reported with its time span and the command that repairs the table (verify
    --repair); its message is kept. A report that cannot be replayed is named with the
    reason, the others are replayed all the same, and the exit code is 1.

    \b
    Examples:
      dynamo-backups replay Users
      dynamo-backups replay Users --file reports.jsonl --bucket my-backups --prefix Prod
    """
    if queue and report_file:
        fail("give --queue or --file, not both", EXIT_USAGE)
    texts = _reports_of(report_file) if report_file is not None else None
    aws = invocation.aws
    bucket, prefix, key_hash, layout = _destination(aws, table, bucket, prefix, key_hash)
    s3 = aws.client("s3", pool=32, retries=1)
    require_versioning(s3, bucket)
    writer = BackupWriter(s3, bucket, objects=aws.objects(s3, bucket))
    # Written as the folder's layout.json says: a journal folder gets journal pieces.
    replayer = Replayer(
        aws.client("dynamodbstreams"), layout.replay_writer(writer, prefix, key_hash)
    )
    if texts is not None:
        assert report_file is not None
        outcomes = [
            _replay_one(replayer, table, text, f"report {number} of {report_file.name}")
            for number, text in enumerate(texts, 1)
        ]
    else:
        outcomes = _replay_queue(aws, replayer, table, queue)
    _finish(invocation, table, bucket, prefix, outcomes)


def _reports_of(path: Path) -> list[str]:
    """The reports in --file, every one checked before anything is written: a file that is
    not reports is bad input (exit 2), not a list of skipped records."""
    try:
        with path.open(encoding="utf-8") as handle:
            texts = list(reports_in_file(handle))
    except (ValueError, UnicodeDecodeError) as error:
        fail(f"--file: {path} is not JSON reports ({error})", EXIT_USAGE)
    if not texts:
        fail(f"--file: {path} holds no report", EXIT_USAGE)
    for number, text in enumerate(texts, 1):
        try:
            parse_report(text)
        except ReportError as error:
            fail(f"--file: {path} report {number}: {error}", EXIT_USAGE)
    return texts


def _destination(
    aws: Any, table: str, bucket: str | None, prefix: str | None, key_hash: str | None
) -> tuple[str, str, str, Layout]:
    """Where the table's backup is: the options, else the deployed function's settings; the
    key hash from the option, else the folder's layout.json, else the function's; and the
    folder's layout (its layout.json's; none: the item layout)."""
    variables: dict[str, str] = {}
    if not bucket or prefix is None:
        function = TableResources.of(table).function
        try:
            config = aws.client("lambda").get_function_configuration(FunctionName=function)
        except ClientError as error:
            fail(
                f"cannot read function {function} ({describe_error(error)}): give --bucket "
                "and --prefix",
                EXIT_USAGE,
            )
        variables = (config.get("Environment") or {}).get("Variables", {})
        bucket = bucket or variables.get("BACKUP_BUCKET") or fail(f"{function} has no bucket")
        prefix = prefix if prefix is not None else variables.get("BACKUP_PREFIX", "")
    # "no backup at ..." for a wrong folder, before anything is written
    manifest = open_backup(aws.client("s3"), bucket, prefix, table).manifest or {}
    if not key_hash:
        key_hash = manifest.get("key_hash") or variables.get("BACKUP_KEY_HASH")
    return bucket, prefix, key_hash or DEFAULT_KEY_HASH, layout_named(layout_of(manifest))


Replayed = tuple[str, "ReplayOutcome | str"]  # where the report came from, and its outcome


def _replay_one(replayer: Replayer, table: str, text: str | bytes, source: str) -> Replayed:
    """One report's outcome (a text: why it was not replayed); one bad report never stops
    the others."""
    try:
        report = parse_report(text)
    except ReportError as error:
        return source, str(error)
    if report.table != table:
        return source, f"a report of table {report.table}, not {table}: left as it is"
    return source, replayer.replay(report)


def _replay_queue(aws: Any, replayer: Replayer, table: str, queue: str | None) -> list[Replayed]:
    sqs = aws.client("sqs")
    name = queue or TableResources.of(table).failure_queue
    url = name if name.startswith("https://") or name.startswith("http://") else None
    url = url or _sqs(f"find queue {name}", lambda: queue_url(sqs, name))
    if url is None:
        fail(f"no queue {name}: was the table deployed (dynamo-backups deploy)?")
    outcomes: list[Replayed] = []
    seen: set[str] = set()
    while True:
        messages = _sqs(
            f"receive from {url}",
            lambda: sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS,
            ),
        ).get("Messages", [])
        fresh = [message for message in messages if message["MessageId"] not in seen]
        for message in messages:
            if message["MessageId"] in seen:  # kept earlier in this run: leave it visible
                _make_visible(sqs, url, message)
        if not fresh:
            return outcomes
        for message in fresh:
            seen.add(message["MessageId"])
            source, outcome = _replay_one(
                replayer, table, message["Body"], f"message {message['MessageId']}"
            )
            outcomes.append((source, outcome))
            if isinstance(outcome, ReplayOutcome) and outcome.written:
                _sqs(
                    f"delete message {message['MessageId']}",
                    lambda handle=message["ReceiptHandle"]: sqs.delete_message(
                        QueueUrl=url, ReceiptHandle=handle
                    ),
                )
            else:  # kept, and visible again at once for status and the next replay
                _make_visible(sqs, url, message)


def _make_visible(sqs: Any, url: str, message: dict[str, Any]) -> None:
    _sqs(
        f"make message {message['MessageId']} visible",
        lambda: sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        ),
    )


def _sqs(what: str, call: Callable[[], T]) -> T:
    """One SQS call, retried with backoff while its failure is transient (throttling, 5xx)."""
    return call_with_retries(call, SQS_POLICY, what)


def _finish(
    invocation: Invocation,
    table: str,
    bucket: str,
    prefix: str,
    outcomes: list[Replayed],
) -> None:
    lines, summary = [], []
    repair = f"dynamo-backups verify {table} --bucket {bucket} --prefix {prefix} --repair"
    for source, outcome in outcomes:
        if isinstance(outcome, str):
            lines.append(f"SKIPPED: {source}: {outcome}")
            summary.append({"source": source, "skipped": outcome})
            continue
        report: GivenUp = outcome.report
        entry = {
            "source": source,
            "span": report.span,
            "records": outcome.records,
            "written": outcome.written,
            "newer_states_kept": outcome.newer_states_kept,
            "problem": outcome.problem,
            "gone": outcome.gone,
        }
        summary.append(entry)
        if outcome.written:
            lines.append(f"replayed {outcome.records} records: {report.span}")
        elif outcome.gone:
            lines.append(
                f"GONE: {source}: {report.span}: the stream no longer holds them "
                f"({outcome.problem}); "
                f"run: {repair}"
            )
        else:
            lines.append(f"FAILED: {source}: {report.span}: {outcome.problem}")
    if not outcomes:
        lines.append(f"no reports of records given up on for {table}")
    invocation.emit({"table": table, "reports": summary}, "\n".join(lines))
    failed = sum(1 for _, o in outcomes if isinstance(o, str) or not o.written)
    if failed:
        fail(f"{failed} of {len(outcomes)} reports were not replayed (see above)", EXIT_FAILED)
