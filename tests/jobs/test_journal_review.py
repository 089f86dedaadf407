"""A hostile review of the journal layout: reproductions of ways it loses or misdates data,
against DynamoDB Local and SeaweedFS (the changes written by the Lambda handler, bases made
by the real jobs). Each test failed on the code as reviewed (first committed as a strict
xfail saying what was lost and where) and is the regression test of its fix."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.dynamodb import BotocoreDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder_path
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.base import BasePaths
from dynamo_backups.core.journal import (
    encode_piece,
    format_change_time,
    piece_name,
    record_of_stream,
)
from dynamo_backups.core.layout import TableLayout, parse_time
from dynamo_backups.core.retention import RetentionPolicy
from dynamo_backups.jobs.backfill import BackfillOptions
from dynamo_backups.jobs.compact import RETENTION_NAME, CompactError, Compaction, CompactOptions
from dynamo_backups.jobs.convert import Conversion, ConvertOptions
from dynamo_backups.jobs.journal_backfill import JournalBackfill
from dynamo_backups.jobs.journal_history import journal_item_history
from tests.helpers import create_table, lambda_records
from tests.jobs.test_convert import Triggers, restore_cli
from tests.jobs.test_journal_backfill import backfill_job
from tests.jobs.test_journal_compact_restore import (
    History,
    base_manifest,
    compact,
    deliver,
    restore,
    restored_state,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest, run_handler

pytestmark = pytest.mark.servers


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def item(key: str, value: int) -> dict[str, Any]:
    return {"pk": {"S": key}, "v": {"N": f"{value}.50"}, "b": {"B": bytes([value % 256])}}


def snapshot_items(s3: Any, bucket: str, destination: str) -> dict[str, dict[str, Any]]:
    """A snapshot's items, read from the files its manifest-files.json names."""
    key = destination.removeprefix(f"s3://{bucket}/")
    body = s3.get_object(Bucket=bucket, Key=f"{key}/manifest-files.json")["Body"].read()
    items: dict[str, dict[str, Any]] = {}
    for line in body.decode().splitlines():
        entry = json.loads(line)
        data = s3.get_object(Bucket=bucket, Key=entry["dataFileS3Key"])["Body"].read()
        for text in gzip.decompress(data).decode().splitlines():
            found = json.loads(text)["Item"]
            items[found["pk"]["S"]] = found
    return items


def snapshot_items_written(s3: Any, bucket: str, destination: str) -> int:
    key = destination.removeprefix(f"s3://{bucket}/")
    return len(s3.list_objects_v2(Bucket=bucket, Prefix=f"{key}/").get("Contents", []))


def backfill(dynamodb: Any, s3: Any, bucket: str, prefix: str, table: str) -> datetime:
    """A backfill base of the table (its moment)."""
    job = backfill_job(
        dynamodb, s3, bucket, prefix, table, total_segments=2, page_size=50, resume=False
    )
    report = job.run()
    assert report.complete, report
    return parse_time(report.moment or "")


# --- snapshot --at before the first base of a journal begun mid-way -----------------------


def test_a_snapshot_before_the_backfill_base_of_a_journal_begun_mid_way_is_refused(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """Fixed: snapshot --at such a moment exported only the items the journal changed (1 of
    21, exit 0); restore refused it, snapshot had no such check."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    for index in range(20):  # rows older than the journal: only the backfill finds them
        dynamodb.put_item(TableName=table, Item=item(f"old{index:02d}", index))
    skip = len(lambda_records(dynamodb, streams, table))
    dynamodb.put_item(TableName=table, Item=item("new", 1))  # the journal begins here
    assert run_handler(lambda_records(dynamodb, streams, table)[skip:]) == {"batchItemFailures": []}
    time.sleep(1.1)
    moment = backfill(dynamodb, s3, bucket, journal_env, table)
    at = moment - timedelta(seconds=1)  # after the journal's first change, before the base
    # restore refuses that moment (exit 2, nothing written) ...
    refused = invoke("restore", bucket, folder, f"r-{os.urandom(3).hex()}",
                     "--at", at.isoformat())  # fmt: skip
    assert refused.exit_code == 2, refused.output
    # ... and so must snapshot, rather than export 1 item of 21.
    destination = f"s3://{bucket}/exports/{os.urandom(4).hex()}"
    result = invoke("snapshot", bucket, folder, "--to", destination, "--at", at.isoformat())
    if result.exit_code == 0:
        exported = snapshot_items(s3, bucket, destination)
        assert len(exported) == 21, f"snapshot --at {at} exported {sorted(exported)}"
    assert result.exit_code == 2, result.output
    assert "begins mid-way" in result.output and "Traceback" not in result.output
    assert snapshot_items_written(s3, bucket, destination) == 0
    # At the base's moment the snapshot is the whole table.
    result = invoke("snapshot", bucket, folder, "--to", destination + "-m",
                    "--at", moment.isoformat())  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(snapshot_items(s3, bucket, destination + "-m")) == 21


# --- history: two backfill bases -----------------------------------------------------------


def test_history_shows_the_reads_of_two_backfill_bases(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """Fixed: a read's identity in history was ('', -1, '') in every base, so a second
    backfill's read was taken for the first's and history showed the old image as newest."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    dynamodb.put_item(TableName=table, Item=item("a", 1))
    first = backfill(dynamodb, s3, bucket, journal_env, table)
    time.sleep(1.5)
    # Changed while the journal was not written (an outage past the stream's 24 hours, or
    # the journal expired): a second backfill is what brings the folder back to the table.
    dynamodb.put_item(TableName=table, Item=item("a", 2))
    second = backfill(dynamodb, s3, bucket, journal_env, table)
    assert second > first
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target)["a"]["v"] == {"N": "2.5"}  # the base is right
    opened = open_folder_path(s3, bucket, folder)
    _, entries = journal_item_history(s3, BotocoreObjects(s3, bucket), opened, {"pk": {"S": "a"}})
    images = [entry.item["v"]["N"] if entry.item else None for entry in entries]
    assert images == ["2.5", "1.5"], images  # newest first: both reads


# --- two copies of one change that differ, one in a base and one late ----------------------


def test_a_late_copy_differing_from_the_one_a_base_holds_is_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """Fixed: a late copy of a change that differed from the copy a base folded in was placed
    against the base's index, whose order is equal, and the base's copy won in silence; it is
    compared with the base's image now, and two that differ are the journal's conflict."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change([("put", "a", 1), ("put", "b", 2)])
    deliver(records)
    compact(s3, bucket, folder, history.time(1) + timedelta(seconds=30), partitions=16)
    # A copy of the first change, delivered after the base, that is not the same change.
    forged = replace(record_of_stream(records[0], 0), image={"pk": {"S": "a"}, "v": {"N": "9"}})
    time.sleep(1.1)
    s3.put_object(Bucket=bucket, Key=f"{folder}/journal/{piece_name([forged])}",
                  Body=encode_piece([forged]))  # fmt: skip
    # Before the base, the journal's two copies meet: the restore fails, as documented.
    before = invoke("restore", bucket, folder, f"r-{os.urandom(3).hex()}",
                    "--at", history.time(0).isoformat())  # fmt: skip
    assert before.exit_code == 1 and "two different copies" in before.output, before.output
    # From the base on, the same journal must fail the same way, not pick the base's copy.
    latest = invoke("restore", bucket, folder, f"r-{os.urandom(3).hex()}")
    assert latest.exit_code == 1 and "two different copies" in latest.output, latest.output


# --- a compaction while a backfill writes its base ------------------------------------------


class HeldBackfill(JournalBackfill):
    """A backfill whose partition stage waits for ``release``: the time a large table's base
    files take to write, made long enough for a compaction to run meanwhile."""

    release = threading.Event()

    def _write_partition(self, unit: Any, context: Any) -> Any:
        assert self.release.wait(120)
        return super()._write_partition(unit, context)


def test_a_compaction_during_a_backfill_does_not_hide_the_backfill_base(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """Fixed: a compaction that ran while a backfill wrote its base folded the journal alone at a
    later moment, and restore latest took that base (the items the journal changed). Once a
    base with reflects_before exists, a base of the journal alone is never used."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    for index in range(20):  # rows older than the journal: only the backfill finds them
        dynamodb.put_item(TableName=table, Item=item(f"old{index:02d}", index))
    skip = len(lambda_records(dynamodb, streams, table))
    dynamodb.put_item(TableName=table, Item=item("new", 1))  # the journal begins here
    assert run_handler(lambda_records(dynamodb, streams, table)[skip:]) == {"batchItemFailures": []}
    api = BotocoreDynamoDB(dynamodb)
    job = HeldBackfill(
        dynamodb,
        lambda request: api.call("Scan", request),
        BackupWriter(s3, bucket),
        TableLayout.of(journal_env, table),
        BackfillOptions(total_segments=2, page_size=50, resume=False),
    )
    HeldBackfill.release.clear()
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(job.run()), daemon=True)
    thread.start()
    claims = f"{folder}/bases/"
    for _ in range(600):  # the scan is done once the base's folder is claimed
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=claims).get("Contents", [])
        if any(entry["Key"].endswith("/cutoff.json") for entry in listed):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the backfill never claimed its base")
    time.sleep(2.0)  # S3's clock past the backfill's moment
    try:
        compaction = compact(s3, bucket, folder, None, partitions=16)  # the scheduled one
    finally:
        HeldBackfill.release.set()
        thread.join(120)
    assert reports and reports[0].complete, reports
    assert parse_time(compaction.report.moment or "") > parse_time(reports[0].moment or "")
    table_now = restored_state(dynamodb, table)
    assert len(table_now) == 21
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert len(restored_state(dynamodb, target)) == 21, sorted(restored_state(dynamodb, target))


# --- the journal after a base expired by the lifecycle --------------------------------------


def write_policy(s3: Any, bucket: str, folder: str) -> RetentionPolicy:
    """deploy's policy (the defaults: the journal kept 43 days) beside layout.json."""
    policy = RetentionPolicy()
    key = f"{TableLayout.from_folder(folder).meta_prefix}{RETENTION_NAME}"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(policy.to_dict()).encode())
    return policy


def expire(s3: Any, bucket: str, prefix: str) -> None:
    """What the lifecycle rules do to the objects under ``prefix``."""
    for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=entry["Key"])


def table_names(dynamodb: Any) -> set[str]:
    return set(dynamodb.list_tables()["TableNames"])


def test_a_restore_from_a_base_whose_journal_expired_is_refused(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """Fixed: under a policy whose rules have expired the journal written after the base
    (compactions failing for longer than --keep-changes-days, or --at a monthly base's week),
    a latest restore gave the base's old images with exit 0; compact refused the same journal
    (journal_gap_reason), restore and snapshot did not check it. Now every reader chooses its
    base as compaction does (jobs/journal_units.readable_base) and refuses, exit 2, nothing
    written; the base's own moment still restores."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=50)
    history = History(dynamodb, streams, table, t0)
    first = history.change([("put", "a", 1), ("put", "b", 2)])
    deliver(first)
    moment = history.time(1) + timedelta(seconds=30)
    compact(s3, bucket, folder, moment, partitions=16)
    later = history.change([("put", "a", 3)])  # 50 days ago, after the base
    deliver(later)
    write_policy(s3, bucket, folder)
    expire(s3, bucket, f"{folder}/journal/")  # 50 days > 43
    refused = Compaction(
        s3, BotocoreObjects(s3, bucket), bucket, folder, CompactOptions(settle_seconds=1.0)
    )
    with pytest.raises(CompactError, match="may be gone"):
        refused.run()
    base = base_manifest(s3, bucket, folder, moment)
    tables = table_names(dynamodb)
    destination = f"s3://{bucket}/exports/{os.urandom(4).hex()}"
    for arguments in (
        ("restore", bucket, folder, f"r-{os.urandom(3).hex()}"),
        ("restore", bucket, folder, f"r-{os.urandom(3).hex()}",
         "--at", (moment + timedelta(minutes=5)).isoformat()),
        ("restore", bucket, folder, f"r-{os.urandom(3).hex()}", "--native-import"),
        ("snapshot", bucket, folder, "--to", destination),
        ("verify", table, "--bucket", bucket, "--prefix", journal_env),
    ):  # fmt: skip
        result = invoke(*arguments)
        if result.exit_code == 0 and arguments[0] == "restore":  # then it must be the table
            target = result.output.split(" -> ")[1].split(" ")[0]
            assert restored_state(dynamodb, target) == restored_state(dynamodb, table)
        assert result.exit_code == 2, (arguments, result.output)
        assert "Traceback" not in result.output
        for named in (f"base {base.id}", "may be gone", RETENTION_NAME, "43 days"):
            assert named in result.output, (arguments, named, result.output)
    assert table_names(dynamodb) == tables  # no table made
    assert snapshot_items_written(s3, bucket, destination) == 0
    # The base's own moment is kept (its class's days): it restores, and exports.
    target, _ = restore(dynamodb_local, s3, bucket, folder, moment)
    assert restored_state(dynamodb, target) == history.state_at(moment)
    assert history.state_at(moment) != restored_state(dynamodb, table)
    result = invoke("snapshot", bucket, folder, "--to", destination + "-m",
                    "--at", moment.isoformat())  # fmt: skip
    assert result.exit_code == 0, result.output
    assert snapshot_items(s3, bucket, destination + "-m") == history.state_at(moment)


def test_a_reader_passes_over_a_base_near_its_expiry_for_an_older_one(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """A daily base past its days has lost its data files while its manifest (written last)
    is still there: restore and snapshot take the week's base before it and the journal
    since, as compaction does, rather than read the expiring one (a partial table)."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time() - timedelta(days=3))
    deliver(history.change([("put", "a", 1), ("put", "b", 2)]))
    weekly = history.time(1) + timedelta(seconds=30)
    compact(s3, bucket, folder, weekly, partitions=16)
    deliver(history.change([("put", "c", 3), ("delete", "a", 0)]))
    daily = history.time(3) + timedelta(seconds=30)
    compact(s3, bucket, folder, daily, partitions=16)
    deliver(history.change([("put", "b", 4)]))
    write_policy(s3, bucket, folder)
    # The daily base, written 3 days ago (its cutoff): its data files expired (2 days).
    paths = BasePaths(TableLayout.from_folder(folder).items_prefix, daily)
    document = json.loads(s3.get_object(Bucket=bucket, Key=paths.manifest_key)["Body"].read())
    document.update(retention="daily", cutoff=format_change_time(daily + timedelta(seconds=5)))
    s3.put_object(Bucket=bucket, Key=paths.manifest_key, Body=json.dumps(document).encode())
    expire(s3, bucket, paths.data_prefix)
    assert base_manifest(s3, bucket, folder, weekly).retention != "daily"
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert (
        restored_state(dynamodb, target)
        == restored_state(dynamodb, table)
        == history.state_at(None)
    )
    target, _ = restore(dynamodb_local, s3, bucket, folder, daily)
    assert restored_state(dynamodb, target) == history.state_at(daily)
    destination = f"s3://{bucket}/exports/{os.urandom(4).hex()}"
    result = invoke("snapshot", bucket, folder, "--to", destination)
    assert result.exit_code == 0, result.output
    assert snapshot_items(s3, bucket, destination) == history.state_at(None)


# --- history of a converted folder -----------------------------------------------------------


def test_history_of_a_converted_folder_shows_each_change_once(
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fixed: convert's index entry names no stream or eventID, so history showed a change twice
    (the base's and the journal's copy); it is matched by sequence number and change time."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    early = history.change([("put", "a", 1)])
    triggers.items(early)
    journal_manifest(s3, bucket, journal_env, table, "journal")  # the journal trigger beside
    both = history.change([("put", "a", 2)])
    triggers.items(both)
    triggers.journal(both)
    moment = history.time(1) + timedelta(seconds=30)
    converted = invoke("convert", bucket, item_folder, journal_folder,
                       "--at", moment.isoformat(), "--partitions", "16")  # fmt: skip
    assert converted.exit_code == 0, converted.output
    opened = open_folder_path(s3, bucket, journal_folder)
    _, entries = journal_item_history(s3, BotocoreObjects(s3, bucket), opened, {"pk": {"S": "a"}})
    sequences = [int(entry.sequence_number or -1) for entry in entries]
    # The journal folder holds the change of M once (its earlier ones are the item folder's).
    expected = [int(both[0]["dynamodb"]["SequenceNumber"])]
    assert sequences == expected, [(e.event, e.sequence_number, e.version_id) for e in entries]


# --- how long a journal put may be in flight ------------------------------------------------


def test_the_handlers_journal_puts_end_within_the_compactions_settle_time() -> None:
    """Fixed: compaction waits SETTLE_SECONDS (20 s) past its cutoff so that every journal
    object S3 dates before the cutoff has arrived, but the handler's clients allowed 5 s to
    connect and 30 s to read (and the stream command with --checkpoint-dir the defaults, 10
    and 60): a put dated before the cutoff could land after the compaction listed its hour,
    and its changes at or before the base's moment were lost. S3 (not SeaweedFS) dates a put
    (each attempt) when it begins, so this is shown on the settings: every journal writer's
    put attempt ends within the settle time, whatever timeouts it was given."""
    from dynamo_backups.aws.context import AwsContext
    from dynamo_backups.cli.stream import _lease_bounded
    from dynamo_backups.handler import lambda_context
    from dynamo_backups.jobs.compact import SETTLE_SECONDS

    handler = lambda_context()
    assert handler.connect_timeout + handler.read_timeout <= SETTLE_SECONDS, (
        handler.connect_timeout,
        handler.read_timeout,
        SETTLE_SECONDS,
    )
    assert CompactOptions().settle_seconds == SETTLE_SECONDS
    given = AwsContext(connect_timeout=600.0, read_timeout=3600.0)  # DYNAMO_BACKUPS_*
    stream = _lease_bounded(given)
    assert stream.connect_timeout + stream.read_timeout <= SETTLE_SECONDS
    # Still long enough for a piece of 10,000 records on a slow link.
    assert handler.read_timeout >= 10 and stream.read_timeout >= 10


class HeldConversion(Conversion):
    """A conversion whose partition units wait for ``release`` (a large item folder)."""

    release = threading.Event()

    def run_unit(self, unit: Any, context: Any) -> Any:
        assert self.release.wait(120)
        return super().run_unit(unit, context)


def test_a_compaction_during_a_conversion_does_not_hide_the_converted_base(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fixed: the same with convert (the documented switch of a running table): the base of the
    journal alone, folded while the conversion read the item folder, is passed over."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    early = history.change([("put", f"k{i}", i) for i in range(10)])
    triggers.items(early)  # before the journal trigger: the item folder alone
    journal_manifest(s3, bucket, journal_env, table, "journal")  # deployed beside
    both = history.change([("put", "k0", 20), ("put", "n", 21)])
    triggers.items(both)
    triggers.journal(both)
    job = HeldConversion(
        s3, BotocoreObjects(s3, bucket), bucket, item_folder, journal_folder,
        ConvertOptions(settle_seconds=1.0),
    )  # fmt: skip
    HeldConversion.release.clear()
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(job.run()), daemon=True)
    thread.start()
    for _ in range(600):  # the conversion has claimed its base and reads the item folder
        if job.plan is not None:
            break
        time.sleep(0.1)
    time.sleep(2.0)
    try:
        compaction = compact(s3, bucket, journal_folder, None, partitions=16)
    finally:
        HeldConversion.release.set()
        thread.join(120)
    assert reports and reports[0].complete, reports
    assert compaction.report.previous is None  # the journal alone
    expected = history.state_at(None)
    target, _ = restore(dynamodb_local, s3, bucket, journal_folder, None)
    assert restored_state(dynamodb, target) == expected, sorted(restored_state(dynamodb, target))


# --- convert: a batch both triggers gave up on, replayed after the conversion ---------------


def test_a_batch_replayed_after_a_conversion_older_than_the_journal_is_kept(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fixed: convert's reflects_before (the journal's first hour) made readers skip a late change
    older than it as one the base held; the item folder lacked it (a batch both triggers gave
    up on, replayed after the conversion). A convert base places such a change (its index)."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    journal_manifest(s3, bucket, journal_env, table, "journal")  # both triggers from the start
    history = History(dynamodb, streams, table, start_time())  # ten minutes before an hour
    records = history.change([("put", "x", 1)] + [("put", f"k{i}", i) for i in range(1, 12)])
    failed, before, after = records[:1], records[1:10], records[10:]  # after: the next hour
    triggers.items(before, after)  # both gave the first batch up (to their failure queues)
    triggers.journal(after)  # the journal trigger's first batches were failing until then
    moment = history.time(11) + timedelta(seconds=30)
    converted = invoke("convert", bucket, item_folder, journal_folder,
                       "--at", moment.isoformat(), "--partitions", "16")  # fmt: skip
    assert converted.exit_code == 0, converted.output
    triggers.items(failed)  # replayed from the failure queues
    triggers.journal(failed)
    # The item folder has it; the journal folder must too.
    assert restore_cli(dynamodb, bucket, item_folder, None) == history.state_at(None)
    assert restore_cli(dynamodb, bucket, journal_folder, None) == history.state_at(None)
