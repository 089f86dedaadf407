"""``dynamo-backups restore`` and the checklist's ``restore-backup`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.errors import ClientError, describe_error
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.description import (
    DescriptionError,
    describe_table,
    is_another_table,
    region_of,
    save_description,
)
from dynamo_backups.backup.folder import BackupFolder, open_backup_path
from dynamo_backups.backup.manifest import key_types_from_description as key_types_of_schema
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    TIME,
    EngineChoice,
    Invocation,
    configure_logging,
    engine_given,
    engine_options,
    fail,
    partitions_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import (
    BUCKET,
    KEY_SCHEMA,
    KEYS_FILE,
    OUTPUT_FILE,
    REGION,
    S3_ADDRESS,
    TABLE,
    TABLE_FOLDER,
    check,
    not_applicable,
    nothing_at_moment,
)
from dynamo_backups.cli.lines import say
from dynamo_backups.cli.pending_check import (
    allow_incomplete_backfill_option,
    require_checked_backfill,
)
from dynamo_backups.cli.progress import Progress
from dynamo_backups.cli.snapshot import take_snapshot
from dynamo_backups.core.journal import JournalError
from dynamo_backups.core.wording import counted
from dynamo_backups.jobs.layouts import ITEM_LAYOUT, Layout, layout_for
from dynamo_backups.jobs.restore import (
    SAMPLE_SIZE,
    Restore,
    RestoreError,
    RestoreOptions,
    RestoreReport,
    TargetHasItems,
    read_keys_file,
)

DEFAULT_WORKERS = 4  # units at once on the threads engine, unless --workers says


def run_restore(
    aws: AwsContext,
    bucket: str,
    folder: str,
    table: str,
    options: RestoreOptions,
    show_progress: bool,
    engine: EngineChoice | None = None,
    layout: Layout = ITEM_LAYOUT,
) -> RestoreReport:
    """Restore with the job of the folder's ``layout`` (``jobs.layouts``)."""
    engine = engine or EngineChoice()
    # Every unit running at once in this process keeps its reads and writes in flight on
    # these clients: a pool smaller than all of them would open and drop a connection a call.
    units = (engine.workers or DEFAULT_WORKERS) if engine.name == "threads" else 1
    s3 = aws.client("s3", pool=options.read_concurrency * units)
    dynamodb = aws.client("dynamodb", pool=options.write_concurrency * units)
    api = aws.dynamodb_api(dynamodb)
    label = f"restore {table}" + (" (dry run)" if options.dry_run else "")
    with Progress(label, unit="items", enabled=show_progress) as progress:
        job = layout.restore(
            s3,
            aws.objects(s3, bucket),
            dynamodb,
            lambda request: api.call("BatchWriteItem", request),
            bucket,
            folder,
            table,
            options,
            progress,
            call=api.call,
            aws=aws,
        )
        try:
            return job.run(engine.make(DEFAULT_WORKERS))
        except TargetHasItems as error:  # bad input, as the same refusal before the job
            fail(str(error), EXIT_USAGE)
        except (RestoreError, DescriptionError, JournalError) as error:
            fail(str(error))
        finally:
            engine.close()


@click.command()
@click.argument("source_bucket", type=BUCKET)
@click.argument("source_prefix", type=TABLE_FOLDER)
@click.argument("table", type=TABLE)
@click.option(
    "--at",
    type=TIME,
    help="Restore the table as it was at this moment (ISO-8601 with a zone, e.g. "
    "2026-11-27T12:00:00Z, epoch seconds or epoch milliseconds; not in the future).",
)
@click.option(
    "--keys",
    "keys_file",
    type=KEYS_FILE,
    help="Restore only these items: a file with one key per line, as JSON (at least one).",
)
@click.option("--dry-run", is_flag=True, help="Count and show a sample; write nothing.")
@click.option("--into-existing", is_flag=True, help="Allow writing into a table that has items.")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Go on past objects that are not valid items, and list them at the end.",
)
@click.option(
    "--key-schema",
    type=KEY_SCHEMA,
    help="The key when the backup recorded none (no saved description or layout.json): "
    "pk:S or pk:S,sk:N.",
)
@click.option(
    "--max-items-per-second",
    type=click.FloatRange(min=1),
    help="Cap the items written per second: one budget for the whole job, shared by all workers.",
)
@click.option(
    "--native-import",
    is_flag=True,
    help="Restore with DynamoDB's ImportTable (for very large tables): a snapshot "
    "of the backup, then one import that creates TABLE.",
)
@click.option(
    "--staging",
    type=S3_ADDRESS,
    help="With --native-import: where its snapshot is written (default: under the backup's "
    "own .dynamo-backups folder).",
)
@click.option(
    "--billing-mode",
    type=click.Choice(["PAY_PER_REQUEST", "PROVISIONED"], case_sensitive=False),
    default="PAY_PER_REQUEST",
    show_default=True,
    help="Of a table the restore creates (PROVISIONED: the source's saved capacity, which "
    "may throttle the restore).",
)
@click.option(
    "--no-ttl",
    is_flag=True,
    help="Leave TTL off. By default it is switched on, as the source had it, once the items "
    "are written: DynamoDB then deletes items already past their expiry.",
)
@click.option(
    "--delete-absent",
    is_flag=True,
    help="With --into-existing: also delete the table's items the backup did not hold at "
    "that moment, so the table ends exactly as it was.",
)
@click.option(
    "--unwritten-keys",
    "unwritten_keys_file",
    type=OUTPUT_FILE,
    help="Where the keys of items that could not be written go, in full, one per line "
    "(default: TABLE.unwritten-keys.jsonl; --keys takes that file).",
)
@click.option(
    "--read-concurrency",
    type=click.IntRange(1, 512),
    default=32,
    show_default=True,
    help="Parallel object reads per unit.",
)
@click.option(
    "--write-concurrency",
    type=click.IntRange(1, 128),
    default=8,
    show_default=True,
    help="Parallel BatchWriteItem calls per unit.",
)
@allow_incomplete_backfill_option
@engine_options
@partitions_option(16)
@pass_invocation
@reports_errors
def restore(
    invocation: Invocation,
    source_bucket: str,
    source_prefix: str,
    table: str,
    at: datetime | None,
    keys_file: str | None,
    dry_run: bool,
    into_existing: bool,
    skip_invalid: bool,
    key_schema: str | None,
    max_items_per_second: float | None,
    native_import: bool,
    staging: str | None,
    billing_mode: str,
    no_ttl: bool,
    delete_absent: bool,
    unwritten_keys_file: object | None,
    read_concurrency: int,
    write_concurrency: int,
    allow_incomplete_backfill: bool,
    engine: EngineChoice,
    resume: bool,
    partitions: int,
) -> None:
    """Restore the backup in SOURCE_BUCKET/SOURCE_PREFIX into TABLE.

    SOURCE_PREFIX is the table's folder in the bucket (Prod/Users). TABLE is created from
    the saved description (keys, indexes, encryption; on-demand unless --billing-mode) when
    it does not exist, and TTL is switched on once the items are in; an existing table must
    have the backup's key, and one that already has items is refused unless --into-existing.
    With --at, every item comes back as it was at that moment, by the change times the
    backup recorded: items created later are absent, items deleted earlier are absent, later
    updates are undone. Keys that could not be written are saved in full to a file --keys
    takes.

    \b
    Examples:
      dynamo-backups restore my-backups Prod/Users Users-restored
      dynamo-backups restore my-backups Prod/Users Users-0900 --at 2026-11-27T09:00:00Z
      dynamo-backups restore my-backups Prod/Users Users --keys keys.jsonl --into-existing
      dynamo-backups restore my-backups Prod/Users Users --into-existing --at 2026-11-27T09:00Z \\
          --delete-absent
      dynamo-backups restore my-backups Prod/Users Users-big --native-import
      dynamo-backups restore my-backups Prod/Users Users-big --partitions 4096 --engine spark
    """
    if staging and not native_import:
        not_applicable(click.get_current_context(), "staging", "it is --native-import's")
    s3 = invocation.aws.client("s3")
    folder = open_backup_path(s3, source_bucket, source_prefix)  # "no backup at ...", first
    # Deleting what the backup lacks takes it for the whole table: not part of it.
    require_checked_backfill(s3, folder, at, allow_incomplete_backfill, whole=delete_absent)
    _check_key_schema(folder, key_schema)
    layout = layout_for(folder)  # the folder's layout.json: items or journal
    layout.check_restore_options(
        folder.where,
        RestoreOptions(
            keys_file=keys_file,
            into_existing=into_existing,
            delete_absent=delete_absent,
            skip_invalid=skip_invalid,
        ),
        native_import,
    )
    if keys_file:
        _check_keys(keys_file, key_schema, folder)
    if native_import:
        if keys_file or dry_run or into_existing:
            fail(
                "--native-import creates a new table from the whole backup: it does not take "
                "--keys, --dry-run or --into-existing",
                2,
            )
        native = layout.native_import
        if native is None:
            _restore_natively(
                invocation, source_bucket, source_prefix, table, at, key_schema, staging,
                skip_invalid,
            )  # fmt: skip
            return
        options = RestoreOptions(
            at=at, key_schema=key_schema, ttl=not no_ttl, read_concurrency=read_concurrency,
            write_concurrency=write_concurrency, partitions=partitions,
            max_items_per_second=max_items_per_second,
            unwritten_keys_file=str(unwritten_keys_file) if unwritten_keys_file else None,
        )  # fmt: skip
        _restore_layout_natively(
            invocation, native, source_bucket, source_prefix, table, options, engine
        )
        return
    if delete_absent and not into_existing:
        fail("--delete-absent deletes from an existing table: give --into-existing too", 2)
    exists = _check_target(
        invocation.aws, folder, table, key_schema, into_existing or resume or dry_run
    )
    if exists and not resume:
        not_applicable(click.get_current_context(), "billing_mode", f"table {table} exists already")
    if (keys_file or delete_absent) and engine.name != "threads" and not engine_given():
        # DYNAMO_BACKUPS_ENGINE chose it, not this command: these run in this process.
        engine = EngineChoice("threads", engine.workers)
    options = RestoreOptions(
        billing_mode=billing_mode,
        ttl=not no_ttl,
        delete_absent=delete_absent,
        unwritten_keys_file=str(unwritten_keys_file) if unwritten_keys_file else None,
        at=at,
        keys_file=keys_file,
        dry_run=dry_run,
        into_existing=into_existing,
        skip_invalid=skip_invalid,
        key_schema=key_schema,
        max_items_per_second=max_items_per_second,
        read_concurrency=read_concurrency,
        write_concurrency=write_concurrency,
        resume=resume,
        partitions=partitions,
    )
    report = run_restore(
        invocation.aws,
        source_bucket,
        source_prefix,
        table,
        options,
        show_progress=not invocation.quiet,
        engine=engine,
        layout=layout,
    )
    nothing_then = report.held_nothing
    stream = None if dry_run or nothing_then else _stream_setting(invocation, folder, table)
    continued = _continue_folder(invocation, folder, table, report, options)
    summary = report.to_dict() | ({"stream": stream} if stream else {})
    summary |= {"folder_continued": continued} if continued else {}
    text = summary_text(report) + (f"\nstream: {stream['note']}" if stream else "")
    text += f"\nfolder: {continued}" if continued else ""
    invocation.emit(summary, text)
    if not report.complete:
        fail("the restore is incomplete (see above)", EXIT_FAILED)
    if nothing_then:
        _refuse_moment_without_items(invocation, folder, table, report, resume)


def _continue_folder(
    invocation: Invocation,
    folder: BackupFolder,
    table: str,
    report: RestoreReport,
    options: RestoreOptions,
) -> str | None:
    """A table made by this restore under the folder's own table name, at the folder's latest
    state (not --at, not --keys), holds exactly what the folder does: the folder's description
    now names it (``check_same_table``), so that its backup goes on into the same folder, one
    history, rather than being refused as another table. What was said, or None."""
    if not report.complete or not report.created_table or options.dry_run:
        return None
    if options.at is not None or options.keys_file is not None or table != folder.layout.table:
        return None
    aws = invocation.aws
    try:
        description = describe_table(aws.client("dynamodb"), table)
    except ClientError as error:
        return f"not recorded as {table}'s ({describe_error(error)})"
    saved = (folder.description or {}).get("table") or {}  # as the folder was opened
    if not is_another_table(saved, description["table"]):
        return None  # the folder already names this table (or cannot tell)
    if region_of(saved) not in (None, region_of(description["table"])):
        return None  # a copy in another region: the folder's table may well be alive
    try:
        save_description(BackupWriter(aws.client("s3"), folder.bucket), folder.layout, description)
    except ClientError as error:  # a role that may only read the bucket
        return (
            f"{folder.where} could not be recorded as the new {table}'s "
            f"({describe_error(error)}): its backup will be refused there until it is"
        )
    return f"{folder.where} now backs up the new {table} (restored from it, latest)"


def _refuse_moment_without_items(
    invocation: Invocation, folder: BackupFolder, table: str, report: RestoreReport, resume: bool
) -> NoReturn:
    """--at before the folder's first backup (--at 0): exit 2 naming the earliest change
    found, nothing left behind (a table this run created for it, still empty, is deleted
    again; --delete-absent deleted nothing)."""
    earliest = layout_for(folder).earliest_change
    message = nothing_at_moment(invocation.aws.client("s3"), folder, report.at, earliest)
    if report.created_table and not resume and not report.dry_run:
        removed = _remove_if_empty(invocation.aws, table)
        message += f"; table {table}, created for it, " + (
            "was deleted again" if removed else "is left (it is not empty)"
        )
    if report.nothing_at_moment:
        message += "; --delete-absent deleted nothing"
    fail(message, EXIT_USAGE)


def _remove_if_empty(aws: AwsContext, table: str) -> bool:
    """Delete ``table`` (made by this restore) if it holds no item."""
    dynamodb = aws.client("dynamodb")
    scan = call_with_retries(
        lambda: dynamodb.scan(TableName=table, Limit=1, Select="COUNT"),
        READ_POLICY,
        f"look into table {table}",
    )
    if scan.get("Count") or scan.get("LastEvaluatedKey"):
        return False
    call_with_retries(
        lambda: dynamodb.delete_table(TableName=table), READ_POLICY, f"delete table {table}"
    )
    return True


def _check_key_schema(folder: BackupFolder, key_schema: str | None) -> None:
    """--key-schema only where the backup records no key; without it where it does not."""
    recorded = folder.description is not None or bool(
        (folder.manifest or {}).get("key_schema") and (folder.manifest or {}).get("key_types")
    )
    key = ",".join(
        f"{name}:{(folder.key_types or {}).get(name, '?')}" for name in folder.key_names or []
    )
    if key_schema and recorded and _same_key(key_schema) != _same_key(key):
        fail(
            f"--key-schema {key_schema} does not apply: {folder.where} records its key "
            f"({key}); leave --key-schema out",
            EXIT_USAGE,
        )
    if not key_schema and not recorded:
        fail(
            f"{folder.where} has no saved table description (a backfill saves one): give its "
            "key, e.g. --key-schema pk:S,sk:N",
            EXIT_USAGE,
        )


def _check_target(
    aws: AwsContext,
    folder: BackupFolder,
    table: str,
    key_schema: str | None,
    items_allowed: bool,
) -> bool:
    """An existing target must have the backup's key, and no items unless --into-existing
    (or --resume, --dry-run): refused here, exit 2, before anything is written. Whether it
    exists."""
    from dynamo_backups.backup.description import description_from_key_schema
    from dynamo_backups.jobs.tables import check_same_key

    dynamodb = aws.client("dynamodb")
    try:
        call_with_retries(
            lambda: dynamodb.describe_table(TableName=table), READ_POLICY, f"describe {table}"
        )
    except dynamodb.exceptions.ResourceNotFoundException:
        return False  # the restore creates it
    if key_schema:
        description = description_from_key_schema(key_schema)
    elif folder.description is not None:
        description = folder.description
    else:
        key = ",".join(
            f"{name}:{(folder.key_types or {})[name]}" for name in folder.key_names or []
        )
        description = description_from_key_schema(key)
    try:
        check_same_key(dynamodb, table, description)
    except DescriptionError as error:
        fail(str(error), EXIT_USAGE)
    if items_allowed:
        return True
    scan = call_with_retries(
        lambda: dynamodb.scan(TableName=table, Limit=1, Select="COUNT"),
        READ_POLICY,
        f"look into table {table}",
    )
    if scan.get("Count") or scan.get("LastEvaluatedKey"):
        fail(
            f"table {table} already has items: restore into a new table, or pass "
            "--into-existing to write into this one",
            EXIT_USAGE,
        )
    return True


def _same_key(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_keys(path: str, key_schema: str | None, folder: BackupFolder) -> None:
    """Every key in --keys must be a key of the backup's table, before anything is written."""
    from dynamo_backups.backup.description import description_from_key_schema
    from dynamo_backups.core.keys import key_attribute_names

    schema = description_from_key_schema(key_schema)["table"] if key_schema else None
    names = key_attribute_names(schema["KeySchema"]) if schema else folder.key_names or []
    types = key_types_of_schema(schema) if schema else folder.key_types or {}
    try:
        for key in read_keys_file(path, types):
            if sorted(key) != sorted(names):
                fail(
                    f"--keys: {path}: {json.dumps(key)} is not a key of the backup's table "
                    f"(its key: {', '.join(names)})",
                    EXIT_USAGE,
                )
    except RestoreError as error:
        fail(f"--keys: {error}", EXIT_USAGE)


def _stream_setting(invocation: Invocation, folder: BackupFolder, table: str) -> dict | None:
    """The restored table's stream beside the source's: a restore does not turn one on, and
    a table without a stream is not backed up until one is."""
    source = ((folder.description or {}).get("table") or {}).get("StreamSpecification") or {}
    dynamodb = invocation.aws.client("dynamodb")
    try:
        target = (
            call_with_retries(
                lambda: dynamodb.describe_table(TableName=table)["Table"],
                READ_POLICY,
                f"describe table {table}",
            ).get("StreamSpecification")
            or {}
        )
    except dynamodb.exceptions.ResourceNotFoundException:
        return None
    had, has = bool(source.get("StreamEnabled")), bool(target.get("StreamEnabled"))
    if has:
        note = f"{table} has a stream ({target.get('StreamViewType')})"
    else:
        note = f"{table} has no stream"
    if had and not has:
        note += (
            f"; the source had one ({source.get('StreamViewType')}): turn it on and deploy "
            f"the backup for {table} if it is to be backed up"
        )
    elif had or has:
        note += f"; the source's: {source.get('StreamViewType') or 'none'}"
    return {"source": source or None, "restored": target or None, "note": note}


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's usage mistakes as every command's: one ``error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        say(f"error: {message} (see: {self.prog} --help)")
        sys.exit(EXIT_USAGE)


def restore_backup_main(argv: list[str] | None = None) -> None:
    """``restore-backup``: the checklist's interface to restore; its arguments are checked
    as restore checks them (exit 2, nothing written), and its advice names restore."""
    parser = _OneLineErrors(
        prog="restore-backup",
        description="Play back every object of a DynamoDB backup into a table (created from the "
        "saved description when missing). Same as: dynamo-backups restore.",
    )
    parser.add_argument("--region", help="AWS region of the bucket and the table")
    parser.add_argument("sourceS3Bucket")
    parser.add_argument("sourceS3Prefix", help="the table's folder in the bucket, e.g. Prod/Users")
    parser.add_argument("tablename")
    arguments = parser.parse_args(argv)
    configure_logging(0, False)
    try:
        bucket = check(BUCKET, arguments.sourceS3Bucket, "sourceS3Bucket")
        folder_path = check(TABLE_FOLDER, arguments.sourceS3Prefix, "sourceS3Prefix")
        table = check(TABLE, arguments.tablename, "tablename")
        region = None if arguments.region is None else check(REGION, arguments.region, "--region")
        aws = AwsContext(region=region)
        folder = reports_errors(open_backup_path)(aws.client("s3"), bucket, folder_path)
        reports_errors(require_checked_backfill)(aws.client("s3"), folder, None, False)
        _check_key_schema(folder, None)
        reports_errors(_check_target)(aws, folder, table, None, False)
        report = reports_errors(run_restore)(
            aws,
            bucket,
            folder_path,
            table,
            RestoreOptions(),
            show_progress=True,
            layout=reports_errors(layout_for)(folder),
        )
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except Exception as error:  # a bug: one error line, never a traceback
        say(f"error: unexpected {type(error).__name__}: {error} (please report it)")
        sys.exit(EXIT_FAILED)
    rerun = f"dynamo-backups restore {bucket} {folder_path} {table}"
    print(summary_text(report, rerun=rerun))
    if not report.complete:
        sys.exit(EXIT_FAILED)


def _restore_natively(
    invocation: Invocation,
    bucket: str,
    folder: str,
    table: str,
    at: datetime | None,
    key_schema: str | None,
    staging: str | None,
    skip_invalid: bool,
) -> None:
    from datetime import UTC

    from dynamo_backups.jobs.native_import import run_import
    from dynamo_backups.jobs.snapshot import SnapshotOptions, parse_s3_url

    aws = invocation.aws
    s3 = aws.client("s3")
    dynamodb = aws.client("dynamodb")
    job = Restore(
        s3,
        aws.objects(s3, bucket),
        dynamodb,
        lambda request: {},
        bucket,
        folder,
        table,
        RestoreOptions(key_schema=key_schema),
    )
    job.check_source()
    description = job.description()
    if table in _table_names(dynamodb):
        fail(f"table {table} exists: ImportTable creates the table, so give a new name")
    layout = job.layout
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    staging = staging or f"s3://{bucket}/{layout.meta_prefix}snapshots/{stamp}"
    snapshot = take_snapshot(
        aws,
        bucket,
        folder,
        staging,
        SnapshotOptions(at=at, skip_invalid=skip_invalid),
        not invocation.quiet,
        allow_incomplete_backfill=True,  # the restore command has checked (or been told to)
    )
    if not snapshot.complete or snapshot.invalid:
        problems = snapshot.errors or [f"{counted(snapshot.invalid, 'object')} not valid items"]
        fail(f"the snapshot for the import is incomplete: {problems[0]}")
    staging_bucket, staging_prefix = parse_s3_url(staging)
    data_prefix = f"{staging_prefix}/data/" if staging_prefix else "data/"
    result = run_import(dynamodb, description, table, staging_bucket, data_prefix)
    summary = {"snapshot": snapshot.to_dict(), "import": result.__dict__}
    text = (
        f"{snapshot.source} -> {table} with ImportTable: {result.status}, "
        f"{result.imported:,} of {snapshot.items:,} items imported, {result.errors:,} errors "
        f"({snapshot.seconds + result.seconds:,.1f} s)"
    )
    if result.failure:
        text += f"\n  {result.failure}"
    invocation.emit(summary, text)
    if result.status != "COMPLETED" or result.imported != snapshot.items or snapshot.invalid:
        fail("the native import did not bring back every item (see above)")


def _restore_layout_natively(
    invocation: Invocation,
    native: Callable[..., Any],
    bucket: str,
    folder: str,
    table: str,
    options: RestoreOptions,
    engine: EngineChoice,
) -> None:
    """A layout's own --native-import (``jobs.layouts``): ImportTable, then what the layout
    must still write; exit 1 unless every item came back."""
    with Progress(f"restore {table}", unit="items", enabled=not invocation.quiet) as progress:
        try:
            done = native(invocation.aws, bucket, folder, table, options, progress, engine.make(4))
        except (RestoreError, DescriptionError, JournalError) as error:
            fail(str(error))
        finally:
            engine.close()
    imported, journal = done.imported, done.journal
    text = (
        f"{journal.source} -> {table} with ImportTable from base {done.base}: "
        f"{imported.status}, {imported.imported:,} of {done.base_items:,} items imported, "
        f"{imported.errors:,} errors ({imported.seconds:,.1f} s)"
    )
    if imported.failure:
        text += f"\n  {imported.failure}"
    text += "\nthe journal after the base: " + summary_text(journal)
    invocation.emit(done.to_dict(), text)
    if not done.complete:
        fail("the native import did not bring back every item (see above)")


def _table_names(dynamodb: object) -> set[str]:
    names: set[str] = set()
    for page in dynamodb.get_paginator("list_tables").paginate():  # type: ignore[attr-defined]
        names.update(page.get("TableNames", []))
    return names


def summary_text(report: RestoreReport, rerun: str = "") -> str:
    """The report as lines for people; ``rerun``: the command its advice names (restore's
    own options, for restore-backup which takes none)."""
    again = f"{rerun} " if rerun else ""
    verb = "would write" if report.dry_run else "wrote"
    lines = [
        f"{report.source} -> {report.table}"
        + (f" (as of {report.at})" if report.at else " (latest)")
        + (" [new table]" if report.created_table else ""),
        f"{verb} {counted(report.written, 'item')}; {counted(report.absent, 'object')} "
        f"deleted or absent at that time; {counted(report.objects, 'object')} examined in "
        f"{report.seconds:,.1f} s",
    ]
    if report.sample:
        lines.append("sample:")
        lines.extend("  " + json.dumps(item, ensure_ascii=False)[:300] for item in report.sample)
    if report.invalid:
        lines.append(f"{counted(report.invalid, 'invalid object')}:")
        lines.extend(f"  {reason}" for reason in report.invalid_objects)
    if report.deleted_absent:
        lines.append(f"deleted {report.deleted_absent:,} items the backup did not hold then")
    if report.dry_run and report.would_delete:
        lines.append(f"would delete {report.would_delete:,} items the backup did not hold then")
    if report.not_deleted:
        lines.append(f"{len(report.not_deleted):,} absent items NOT deleted:")
        lines.extend(f"  {key}" for key in report.not_deleted[:SAMPLE_SIZE])
    lines.extend(f"warning: {warning}" for warning in report.warnings)
    lines.extend(f"error: {error}" for error in report.errors)
    if report.unfinished_units:
        lines.append(
            f"{len(report.unfinished_units):,} units unfinished "
            f"({', '.join(report.unfinished_units[:8])}"
            + (" ..." if len(report.unfinished_units) > 8 else "")
            + f"): run {again or 'again '}with --resume"
        )
    if report.unwritten:
        lines.append(f"{report.unwritten:,} items NOT written:")
        lines.extend(f"  {key}" for key in report.unwritten_keys)
        lines.append(
            f"every key not written is in {report.unwritten_keys_file}: restore them again "
            f"with {again}--keys {report.unwritten_keys_file} --into-existing"
        )
    return "\n".join(lines)
