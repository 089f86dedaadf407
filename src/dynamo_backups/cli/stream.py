"""``dynamo-backups stream``: the backup handler as a long-running consumer on any host."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from dynamo_backups.aws.errors import BotoCoreError, ClientError, describe_error
from dynamo_backups.backup.bucket import require_versioning
from dynamo_backups.backup.checkpoints import (
    LEASE_SECONDS,
    CheckpointError,
    CheckpointIdentity,
    CheckpointStore,
    FileCheckpointStore,
    S3CheckpointStore,
    write_timeouts,
)
from dynamo_backups.backup.description import (
    check_same_table,
    describe_table,
    save_description,
)
from dynamo_backups.backup.layouts import layout_of
from dynamo_backups.backup.manifest import ensure_manifest, key_types_from_description
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli.common import (
    EXIT_FAILED,
    Invocation,
    concurrency_option,
    fail,
    key_hash_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import (
    BUCKET,
    CONSUMER_NAME,
    PREFIX,
    REGION,
    TABLE,
    InputError,
    check_distinct,
    check_replica,
    describe_existing_table,
    how_to_enable_stream,
    not_applicable,
    stream_problem,
)
from dynamo_backups.cli.interrupt import note_interrupt
from dynamo_backups.cli.layout_option import layout_option
from dynamo_backups.cli.lines import raw_say
from dynamo_backups.core.draining import DrainRule
from dynamo_backups.core.layout import TableLayout, normalize_prefix
from dynamo_backups.core.stream_records import combine
from dynamo_backups.installer.status import triggers_writing_to
from dynamo_backups.jobs.layouts import layout_named
from dynamo_backups.pipeline.backup_applier import DEFAULT_CONCURRENCY
from dynamo_backups.pipeline.consumer import ConsumerReport, StreamConsumer
from dynamo_backups.pipeline.replica_applier import ReplicaApplier
from dynamo_backups.pipeline.stream_source import StreamError, stream_of_table

logger = logging.getLogger("dynamo_backups.stream")


@click.command()
@click.argument("tables", nargs=-1, required=True, type=TABLE)
@click.option("--bucket", type=BUCKET, help="The versioned backup bucket.")
@click.option(
    "--prefix",
    default="",
    type=PREFIX,
    help="Folder for the backups, e.g. Prod "
    "(default: none: the bucket's top level, also written --prefix '').",
)
@click.option(
    "--replica-table",
    type=TABLE,
    help="Also (or only, without --bucket) keep this table in step (it must exist, with the "
    "same key).",
)
@click.option(
    "--replica-region", type=REGION, help="The replica table's region (default: the source's)."
)
@click.option("--once", is_flag=True, help="Drain what the stream holds now, then exit.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Records per handler batch (Lambda's default trigger uses 100).",
)
@concurrency_option(DEFAULT_CONCURRENCY, "Parallel S3 writes per batch.")
@key_hash_option
@layout_option
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep checkpoints in this local folder (default without --bucket: "
    "~/.local/state/dynamo-backups).",
)
@click.option(
    "--consumer-name",
    type=CONSUMER_NAME,
    help="Names this consumer's checkpoint, so several can read "
    "one stream (default: stream-backup, stream-replica-R).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds to wait when the stream has nothing new.",
)
@click.option(
    "--drain-empty-pages",
    type=click.IntRange(1, 100_000),
    default=DrainRule.empty_pages,
    show_default=True,
    help="With --once: an open shard is drained after this many empty pages in a row ...",
)
@click.option(
    "--drain-seconds",
    type=click.FloatRange(0, 3600),
    default=DrainRule.seconds,
    show_default=True,
    help="... spanning at least this many seconds (DynamoDB Streams can answer empty pages "
    "before later records).",
)
@click.option(
    "--allow-second-writer",
    is_flag=True,
    help="Run even though a Lambda trigger already backs the table up into the same folder "
    "(two writers interleave an item's versions; point-in-time restores then follow the "
    "stream's sequence numbers where they can).",
)
@pass_invocation
@reports_errors
def stream(
    invocation: Invocation,
    tables: tuple[str, ...],
    bucket: str | None,
    prefix: str,
    replica_table: str | None,
    replica_region: str | None,
    once: bool,
    batch_size: int,
    concurrency: int,
    key_hash: str,
    folder_layout: str | None,
    checkpoint_dir: Path | None,
    consumer_name: str | None,
    poll_interval: float,
    drain_empty_pages: int,
    drain_seconds: float,
    allow_second_writer: bool,
) -> None:
    """Back up TABLE(s) by reading their streams, as the Lambda function would; or keep a
    replica table in step (--replica-table), or both.

    Reads every shard of each table's stream (parents before children), from TRIM_HORIZON
    the first time and from the saved checkpoint after that, and applies each batch with the
    Lambda handlers' code. The checkpoint moves only after a batch is applied, so stopping
    (Ctrl-C) or crashing loses nothing.

    With --once, a closed shard is done when the stream says it has no more records; an open
    shard (one still receiving changes) when a run of --drain-empty-pages empty pages spanning
    --drain-seconds has passed. The report says how each shard ended.

    One consumer per checkpoint: while another holds the lease of a checkpoint in the bucket,
    stream waits as its standby and takes over when the lease lapses; with --once it waits
    only for a lease nobody renews, and exits 1 when the holder is seen running. A consumer
    that crashed on this host is taken over at once.

    \b
    Examples:
      dynamo-backups stream Users Orders --bucket my-backups --prefix Prod --once
      dynamo-backups stream Users --replica-table Users-replica --replica-region eu-west-1
    """
    if not bucket and not replica_table:
        fail("give --bucket (back up), --replica-table (replicate), or both", 2)
    check_distinct(tables, "TABLES")
    if checkpoint_dir is not None:
        _require_checkpoint_dir(checkpoint_dir)
    if not replica_table:
        for option in ("replica_region",):
            not_applicable(click.get_current_context(), option, "it is for --replica-table")
    if replica_table and len(tables) != 1:
        fail("--replica-table keeps one table in step: name exactly one TABLE", 2)
    if not bucket:
        for option in ("prefix", "key_hash", "concurrency", "allow_second_writer", "folder_layout"):
            not_applicable(click.get_current_context(), option, "it is for backups (--bucket)")
    aws = invocation.aws
    _require_streams(aws, tables, bucket, prefix)
    if replica_table:
        check_replica(aws, tables[0], replica_table, replica_region)
    dynamodb = aws.client("dynamodb")
    streams = aws.client("dynamodbstreams")
    writer = None
    if bucket:
        # A leased checkpoint's holder caps how long a write may be in flight (see
        # checkpoints.write_time_limit): its write clients time out within that. So does
        # every journal writer (a local checkpoint's too): compaction's settle time assumes it.
        writes = _lease_bounded(aws)
        s3 = writes.client("s3", pool=concurrency, retries=1)
        require_versioning(s3, bucket)
        writer = BackupWriter(s3, bucket, objects=writes.objects(s3, bucket))
    name = consumer_name or "-".join(
        part
        for part in (
            "stream",
            "backup" if bucket else "",
            f"replica-{replica_table}" if replica_table else "",
        )
        if part
    )
    stop = threading.Event()
    consumers = []
    for table in tables:
        stream_arn, description = stream_of_table(dynamodb, table)
        identity = CheckpointIdentity(
            source=description["TableArn"],
            consumer=name,
            bucket=bucket,
            prefix=normalize_prefix(prefix),
            replica=f"{replica_region or ''}/{replica_table}" if replica_table else None,
        )
        appliers: list[Any] = []
        store: CheckpointStore | None = None
        if writer is not None:
            layout = TableLayout.of(prefix, table, key_hash)
            _refuse_second_writer(
                aws, table, stream_arn, bucket or "", layout.prefix, allow_second_writer
            )
            manifest = _open_folder(writer, layout, description, folder_layout, dynamodb)
            applier = layout_named(layout_of(manifest)).applier(  # its layout.json's
                writer, layout.prefix, key_hash, concurrency
            )
            appliers.append(applier.apply)
            store = S3CheckpointStore(
                writer,
                identity.object_key(layout),
                identity,
                legacy_key=layout.checkpoint_key(name),
            )
        if replica_table:
            replica_client = aws.client("dynamodb", pool=8, retries=1, region=replica_region)
            api = aws.dynamodb_api(replica_client)
            replica = ReplicaApplier(
                lambda request, api=api: api.call("BatchWriteItem", request), replica_table
            )
            appliers.append(replica.apply)
        if checkpoint_dir or store is None:
            folder = checkpoint_dir or default_checkpoint_dir()
            store = FileCheckpointStore(folder / identity.file_name(), identity)
        processor = appliers[0] if len(appliers) == 1 else _both(appliers)
        consumers.append(
            StreamConsumer(
                dynamodb,
                streams,
                table,
                processor,
                store,
                batch_size=batch_size,
                poll_interval=poll_interval,
                stop=stop,
                drain=DrainRule(drain_empty_pages, drain_seconds),
            )
        )
    reports, errors = _run_all(consumers, once, stop)
    _finish(invocation, reports, errors, "replicated" if not bucket else "backed up")


def _require_streams(aws: Any, tables: tuple[str, ...], bucket: str | None, prefix: str) -> None:
    """Each table must exist and have a stream with new images: the user's to fix (exit 2),
    said before anything is read or written."""
    for table in tables:
        problem = stream_problem(describe_existing_table(aws, table))
        if problem:
            raise InputError(
                f"table {table} {problem}: {how_to_enable_stream(table, bucket, prefix)}",
                param_hint="TABLES",
            )


def _open_folder(
    writer: BackupWriter,
    layout: TableLayout,
    table: dict[str, Any],
    folder_layout: str | None,
    dynamodb: Any,
) -> dict[str, Any]:
    """The folder's manifest (made if the folder is new), once the folder is known to back up
    this very table (not one deleted since under its name); a folder without the table's
    description is given it, so that its other writers can tell the table too."""
    if check_same_table(writer.s3, writer.bucket, layout, table) is None:
        try:
            save_description(writer, layout, describe_table(dynamodb, layout.table))
        except ClientError as error:  # a role without DescribeTimeToLive: only a way to tell
            logger.warning("%s: its description was not saved: %s", layout.table, error)
    return ensure_manifest(
        writer, layout, table["KeySchema"], key_types_from_description(table), folder_layout
    )


def _refuse_second_writer(
    aws: Any, table: str, stream_arn: str, bucket: str, prefix: str, allowed: bool
) -> None:
    """One writer per item: refuse to back up a table its Lambda trigger already backs up
    into the same folder, unless told to."""
    try:
        writers = triggers_writing_to(aws.client("lambda", retries=2), stream_arn, bucket, prefix)
    except (ClientError, BotoCoreError) as error:
        logger.warning(
            "%s: could not check for a Lambda trigger backing it up already (%s)",
            table,
            describe_error(error),
        )
        return
    if writers and not allowed:
        fail(
            f"table {table} is already backed up into s3://{bucket}/{prefix} by the Lambda "
            f"function {', '.join(writers)} (its stream trigger): a second writer would "
            "interleave versions of the same items; stop that trigger, use another bucket or "
            "prefix, or pass --allow-second-writer"
        )
    if writers:
        logger.warning("%s: a second writer beside %s, as asked", table, ", ".join(writers))


def _require_checkpoint_dir(folder: Path) -> None:
    """--checkpoint-dir is created when missing; one that cannot be is said before any read."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot create folder {folder} ({error.strerror}): give a folder you can write",
            param_hint="--checkpoint-dir",
        ) from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write in folder {folder}", param_hint="--checkpoint-dir")


def default_checkpoint_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dynamo-backups"


def _both(appliers: list[Any]) -> Any:
    """Apply each batch to every sink; a record counts as applied only where all applied it."""
    return lambda records, **options: combine([apply(records, **options) for apply in appliers])


def _run_all(
    consumers: list[StreamConsumer], once: bool, stop: threading.Event
) -> tuple[list[ConsumerReport], list[str]]:
    """One thread per table; the first Ctrl-C asks them to stop after their current batch."""
    reports: list[ConsumerReport] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(consumer: StreamConsumer) -> None:
        try:
            report = consumer.run(once)
        except Exception as error:  # a consumer that dies must fail the command, not vanish
            reason = (
                str(error)
                if isinstance(error, StreamError | CheckpointError)
                else (f"{consumer.table}: {describe_error(error)}")
            )
            with lock:
                errors.append(reason)
            stop.set()
            return
        with lock:
            reports.append(report)

    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        raw_say("stopping after the current batch (Ctrl-C again to quit at once)")
        note_interrupt()
        stop.set()
        signal.signal(signal.SIGINT, previous)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
    threads = [
        threading.Thread(target=run, args=(consumer,), name=f"stream-{consumer.table}")
        for consumer in consumers
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    return reports, errors


def _finish(
    invocation: Invocation,
    reports: list[ConsumerReport],
    errors: list[str],
    verb: str = "backed up",
) -> None:
    summary = {
        "tables": [
            {
                "table": report.table,
                "stream_arn": report.stream_arn,
                "records": report.records,
                "batches": report.batches,
                "applied": report.applied,
                "shards_finished": report.shards_finished,
                "shards": report.shard_ends,
                "gaps": report.gaps,
            }
            for report in sorted(reports, key=lambda report: report.table)
        ],
        "errors": errors,
    }
    lines = []
    for report in sorted(reports, key=lambda report: report.table):
        counts = ", ".join(f"{name} {count:,}" for name, count in sorted(report.applied.items()))
        lines.append(
            f"{report.table}: {report.records:,} records {verb}"
            + (f" ({counts})" if counts else "")
        )
        lines.extend(f"  shard {shard}: {end}" for shard, end in sorted(report.shard_ends.items()))
        lines.extend(f"  gap: {gap}" for gap in report.gaps)
    invocation.emit(summary, "\n".join(lines) if lines else "nothing consumed")
    if errors:
        fail("; ".join(errors))
    if any(report.gaps for report in reports):
        fail("some changes were missing from the stream (see the gaps above)", EXIT_FAILED)


def _lease_bounded(aws: Any, lease_seconds: float = LEASE_SECONDS) -> Any:
    """``aws`` with its timeouts capped so that an item write of a lease holder is done or
    given up within the lease's write time limit (a write landing after a takeover could
    otherwise become an item's current version over its successor's newer one)."""
    connect, read = write_timeouts(lease_seconds, aws.connect_timeout, aws.read_timeout)
    return dataclasses.replace(aws, connect_timeout=connect, read_timeout=read)
