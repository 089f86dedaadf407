"""Compaction and restore of a journal folder (docs/journal.md, "Bases", "Reading",
"Compaction") against DynamoDB Local and SeaweedFS: changes written by the Lambda handler in
the journal layout (batches out of order, redelivered with other boundaries, a batch retried
whole, a batch delivered after the base was made), compacted, changed more, compacted again,
and restored latest and ``--at`` (before a base, at it, inside a batch, after it) into new
tables, each compared with the table's state at that moment as the test tracks it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups.aws import curl_posts
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.journal_store import read_lines
from dynamo_backups.cli import main
from dynamo_backups.core.base import BaseManifest, BasePaths, LateChangeError, decode_base_line
from dynamo_backups.core.journal import encode_piece, piece_name, record_of_stream
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.compact import LATE_HORIZON, Compaction, CompactOptions
from dynamo_backups.jobs.journal_restore import JournalRestore
from dynamo_backups.jobs.restore import RestoreOptions
from tests import servers
from tests.helpers import create_table, kill_when, lambda_records, scan_all
from tests.pipeline.test_journal_writes import journal_manifest, run_handler
from tests.servers import make_client

pytestmark = pytest.mark.servers

MINUTE = 60


def start_time() -> datetime:
    """The first change's time: whole minutes, three hours back, ten minutes before an hour
    ends, so that the changes cross an hour folder."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=3) + timedelta(minutes=50)


class History:
    """A table's changes as its stream gave them, each dated a minute after the last (the
    test's clock: DynamoDB Local dates every change by its minute), and the state they make
    at any moment."""

    def __init__(self, dynamodb: Any, streams: Any, table: str, t0: datetime) -> None:
        self.dynamodb, self.streams, self.table, self.t0 = dynamodb, streams, table, t0
        self.records: list[dict[str, Any]] = []

    def change(self, operations: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
        """Apply (op, key, value) to the table; the new stream records, re-dated."""
        for op, key, value in operations:
            if op == "put":
                item = {"pk": {"S": key}, "v": {"N": f"{value}.50"}, "b": {"B": bytes([value])}}
                self.dynamodb.put_item(TableName=self.table, Item=item)
            else:
                self.dynamodb.delete_item(TableName=self.table, Key={"pk": {"S": key}})
        every = lambda_records(self.dynamodb, self.streams, self.table)
        new = every[len(self.records) :]
        assert len(new) == len(operations)  # every operation changed the table
        for index, record in enumerate(new, start=len(self.records)):
            record["dynamodb"]["ApproximateCreationDateTime"] = self.time(index).timestamp()
        self.records.extend(new)
        return new

    def time(self, index: int) -> datetime:
        return self.t0 + timedelta(seconds=MINUTE * index)

    def state_at(
        self,
        moment: datetime | None,
        leaving_out: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> dict[str, dict[str, Any]]:
        """Each item's last change made at or before ``moment`` (None: every change), the
        records ``leaving_out`` left out."""
        state: dict[str, Any] = {}
        left_out = {raw["dynamodb"]["SequenceNumber"] for raw in leaving_out}
        for index, raw in enumerate(self.records):
            if raw["dynamodb"]["SequenceNumber"] in left_out:
                continue
            if moment is None or self.time(index) <= moment:
                record = record_of_stream(raw, index)
                state[record.keys["pk"]["S"]] = record.image
        return {key: image for key, image in state.items() if image is not None}


def deliver(*batches: list[dict[str, Any]]) -> None:
    """Each batch as Lambda would invoke the handler with it, in the order given."""
    for batch in batches:
        assert run_handler(copy.deepcopy(batch)) == {"batchItemFailures": []}


def ops(*keys_values: tuple[str, str, int]) -> list[tuple[str, str, int]]:
    return list(keys_values)


def compact(s3: Any, bucket: str, folder: str, at: datetime | None, **options: Any) -> Compaction:
    """A compaction through the job (the test's writers are done before it starts: no write
    is in flight at its cutoff, so it waits a second past it rather than 20). S3 dates
    objects to the second: one received in the cutoff's second is late for the base (its
    readers place it), so the test lets that second pass first."""
    time.sleep(1.1)
    job = Compaction(
        s3,
        BotocoreObjects(s3, bucket),
        bucket,
        folder,
        CompactOptions(at=at, settle_seconds=options.pop("settle_seconds", 1.0), **options),
    )
    report = job.run()
    assert report.complete, report
    return job


def restore(
    dynamodb_local: Any, s3: Any, bucket: str, folder: str, at: datetime | None, **options: Any
) -> tuple[str, Any]:
    dynamodb = make_client("dynamodb", dynamodb_local.endpoint)
    credentials = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
    api = RawDynamoDB(dynamodb, credentials, curl_posts.curl_posts_for)  # as the CLI's
    target = f"restored-{os.urandom(4).hex()}"
    job = JournalRestore(
        s3,
        BotocoreObjects(s3, bucket),
        dynamodb,
        lambda request: api.call("BatchWriteItem", request),  # DynamoDB JSON as it is
        bucket,
        folder,
        target,
        RestoreOptions(at=at, **options),
    )
    report = job.run()
    assert report.complete, report
    return target, report


def restored_state(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {item["pk"]["S"]: item for item in scan_all(dynamodb, table).values()}


def base_manifest(s3: Any, bucket: str, folder: str, moment: datetime) -> BaseManifest:
    paths = BasePaths(TableLayout.from_folder(folder).items_prefix, moment)
    body = s3.get_object(Bucket=bucket, Key=paths.manifest_key)["Body"].read()
    return BaseManifest.from_dict(json.loads(body))


def base_items(s3: Any, bucket: str, folder: str, moment: datetime) -> list[dict[str, Any]]:
    """Every data line of a base, read as ImportTable would (every file under data/)."""
    paths = BasePaths(TableLayout.from_folder(folder).items_prefix, moment)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=paths.data_prefix).get("Contents", [])
    objects = BotocoreObjects(s3, bucket)
    return [
        decode_base_line(line, entry["Key"])
        for entry in listed
        for line in read_lines(objects, entry["Key"])
    ]


# --- the whole cycle -----------------------------------------------------------------------


def test_compact_change_more_and_restore_any_moment(
    dynamodb: Any, dynamodb_local: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    keys = "abcdefg"
    first = history.change(
        [("put", keys[i % 7], i) for i in range(12)]
        + [("delete", "b", 0), ("delete", "c", 0), ("put", "b", 14)]
        + [("put", keys[i % 5], i) for i in range(15, 22)]
        + [("delete", "a", 0), ("put", "h", 23)]
    )
    a, b, late, d, e = first[0:5], first[5:10], first[10:15], first[15:20], first[20:24]
    # Out of order, a bisected redelivery, a batch retried whole; one batch held back.
    deliver(b, a, d, a[1:3], e, b)
    moment = history.time(17) + timedelta(seconds=30)  # inside batch d
    job = compact(s3, bucket, folder, moment, partitions=16)
    base = base_manifest(s3, bucket, folder, moment)
    assert (base.moment, base.previous, base.partition_digits) == (moment, None, 1)
    assert base.cutoff == datetime.fromisoformat(job.report.cutoff)
    # What the base holds: the changes made by its moment that were received before its
    # cutoff (the held-back batch is not among them).
    in_base = history.state_at(moment, leaving_out=late)
    assert in_base != history.state_at(moment)  # the held-back batch matters
    assert {i["pk"]["S"]: i for i in base_items(s3, bucket, folder, moment)} == in_base
    assert base.item_count == len(in_base)

    deliver(late)  # after the base: late changes, weighed against the base's index
    second = history.change(
        [
            ("put", "a", 40),
            ("delete", "d", 0),
            ("put", "i", 42),
            ("put", "c", 43),
            ("delete", "h", 0),
            ("put", "e", 45),
            ("put", "j", 46),
            ("delete", "e", 0),
        ]
    )
    deliver(second[4:], second[:4], second[2:6])

    for at in (
        history.time(7) + timedelta(seconds=30),  # before the base: the journal alone
        history.time(12) + timedelta(seconds=10),  # inside the held-back batch
        moment,  # the base's moment
        history.time(26) + timedelta(seconds=30),  # after the base, inside a batch
    ):
        target, _ = restore(dynamodb_local, s3, bucket, folder, at)
        assert restored_state(dynamodb, target) == history.state_at(at), at

    target, report = restore(dynamodb_local, s3, bucket, folder, None)
    latest = restored_state(dynamodb, target)
    assert latest == history.state_at(None)
    assert latest == restored_state(dynamodb, table)  # the table itself, numbers and bytes
    assert report.written == len(latest)

    # A second base, folded from the first (the late batch with it) and the journal after.
    moment2 = history.time(28) + timedelta(seconds=30)
    compact(s3, bucket, folder, moment2, partitions=256)  # from a base of 16 partitions
    base2 = base_manifest(s3, bucket, folder, moment2)
    assert base2.previous == base.id and base2.late_horizon == moment2 - LATE_HORIZON
    assert {i["pk"]["S"]: i for i in base_items(s3, bucket, folder, moment2)} == (
        history.state_at(moment2)
    )
    for at, partitions in (
        (moment2, 1),  # one unit reading the 256 partitions' files
        (history.time(31) + timedelta(seconds=1), 16),
        (moment + timedelta(seconds=60), 256),  # 256 units reading the first base's 16
    ):
        target, _ = restore(dynamodb_local, s3, bucket, folder, at, partitions=partitions)
        assert restored_state(dynamodb, target) == history.state_at(at), at
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == restored_state(dynamodb, table)

    # Compaction deletes nothing: every journal object is there still, one version each.
    versions = s3.list_object_versions(Bucket=bucket, Prefix=f"{folder}/journal/")
    assert not versions.get("DeleteMarkers")
    assert len(versions["Versions"]) == 9  # a, b, late, d, e, a[1:3] and three of second


def test_a_journal_without_a_base_restores_latest_and_at(
    dynamodb: Any, dynamodb_local: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change(
        ops(("put", "a", 1), ("put", "b", 2), ("put", "a", 3), ("delete", "b", 0))
        + ops(("put", "c", 5), ("put", "b", 6))
    )
    deliver(records[3:], records[:4], records[1:5])
    for at in (history.time(0), history.time(2) + timedelta(seconds=59), history.time(4)):
        target, _ = restore(dynamodb_local, s3, bucket, folder, at)
        assert restored_state(dynamodb, target) == history.state_at(at), at
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == restored_state(dynamodb, table)

    # A dry run writes nothing (no table, no ledger, no scratch) and counts the same items.
    meta = TableLayout.from_folder(folder).meta_prefix
    before = s3.list_objects_v2(Bucket=bucket, Prefix=meta).get("KeyCount")
    target, report = restore(dynamodb_local, s3, bucket, folder, None, dry_run=True)
    table_now = restored_state(dynamodb, table)
    assert report.written == len(table_now)
    assert {item["pk"]["S"]: item for item in report.sample} == table_now
    assert s3.list_objects_v2(Bucket=bucket, Prefix=meta).get("KeyCount") == before
    assert target not in dynamodb.list_tables()["TableNames"]


def test_a_late_change_older_than_the_bases_horizon_fails_the_restore_not_lost(
    dynamodb: Any, dynamodb_local: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change(ops(("put", "a", 1), ("put", "b", 2), ("put", "a", 3)))
    deliver(records[1:])
    moment = history.time(2) + timedelta(seconds=30)
    # A base whose index keeps removals back 60 s only: the change at minute 0 is older.
    compact(s3, bucket, folder, moment, late_horizon=timedelta(seconds=60))
    deliver(records[:1])  # received after the base: late, and older than its horizon
    tables_before = set(dynamodb.list_tables()["TableNames"])
    with pytest.raises(LateChangeError, match="late horizon"):
        restore(dynamodb_local, s3, bucket, folder, None)
    assert not [name for name in dynamodb.list_tables()["TableNames"] if "restored-" in name
                and name not in tables_before]  # fmt: skip
    with pytest.raises(LateChangeError, match="late horizon"):  # nor a base made from it
        compact(s3, bucket, folder, None)
    # Before the base, the journal alone holds the change: restorable.
    target, _ = restore(dynamodb_local, s3, bucket, folder, history.time(1))
    assert restored_state(dynamodb, target) == history.state_at(history.time(1))


def test_two_different_copies_of_one_change_fail_the_restore_and_the_compaction(
    dynamodb: Any, dynamodb_local: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change(ops(("put", "a", 1), ("put", "b", 2)))
    deliver(records)
    # Another object holding the first change with another image (a corrupt or forged copy).
    forged = replace(record_of_stream(records[0], 0), image={"pk": {"S": "a"}, "v": {"N": "9"}})
    key = f"{folder}/journal/{piece_name([forged])}"
    s3.put_object(Bucket=bucket, Key=key, Body=encode_piece([forged]))
    dynamodb_ = make_client("dynamodb", dynamodb_local.endpoint)
    job = JournalRestore(
        s3, BotocoreObjects(s3, bucket), dynamodb_, lambda request: {}, bucket, folder,
        f"restored-{os.urandom(4).hex()}", RestoreOptions(),
    )  # fmt: skip
    report = job.run()
    assert not report.complete
    assert any("two different copies" in error for error in report.errors), report.errors
    time.sleep(1.1)
    compaction = Compaction(
        s3, BotocoreObjects(s3, bucket), bucket, folder, CompactOptions(settle_seconds=1.0)
    )
    assert not compaction.run().complete
    assert any("two different copies" in error for error in compaction.report.errors)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/bases/").get("Contents", [])
    assert not [entry for entry in listed if entry["Key"].endswith("/manifest.json")]  # no base


# --- a compaction killed and resumed -------------------------------------------------------


def cli(*arguments: str) -> list[str]:
    run = "import runpy, sys; sys.argv[0] = 'dynamo-backups'; "
    run += "runpy.run_module('dynamo_backups.console', run_name='__main__')"
    return [sys.executable, "-c", run, *arguments]


def recorded_units(s3: Any, bucket: str, folder: str, stage: str, job: str = "compact") -> int:
    layout = TableLayout.from_folder(folder)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{layout.meta_prefix}jobs/{job}/")
    return sum(1 for entry in listed.get("Contents", []) if f"/units/{stage}-" in entry["Key"])


def test_a_compaction_killed_mid_way_and_resumed_makes_the_same_base(
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change([("put", f"k{i:03d}", i % 250) for i in range(120)])
    deliver(*(records[start : start + 10] for start in range(0, 120, 10)))
    moment = history.time(90) + timedelta(seconds=30)
    command = cli("compact", bucket, folder, "--at", moment.isoformat(), "--partitions", "256",
                  "--workers", "1")  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    time.sleep(1.1)  # out of the journal's last second (see compact)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_when(process, lambda: recorded_units(s3, bucket, folder, "partition") >= 20)
    done = recorded_units(s3, bucket, folder, "partition")
    assert 20 <= done < 256
    paths = BasePaths(TableLayout.from_folder(folder).items_prefix, moment)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=paths.manifest_key)

    job = compact(s3, bucket, folder, moment, partitions=256, resume=True)
    assert job.report.unfinished_units == [] and job.report.items == 91
    base = base_manifest(s3, bucket, folder, moment)
    assert datetime.fromisoformat(job.report.cutoff) == base.cutoff
    items = base_items(s3, bucket, folder, moment)
    assert len(items) == 91  # each item once: no file of the killed run is counted twice
    assert {item["pk"]["S"]: item for item in items} == history.state_at(moment)
    assert sum(entry["items"] for entry in base.files if entry["kind"] == "data") == 91
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == restored_state(dynamodb, table)

    # The same moment again: the base is there, nothing is written.
    again = compact(s3, bucket, folder, moment, partitions=256)
    assert again.report.existed


def test_a_restore_killed_mid_way_and_resumed_restores_every_item(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change([("put", f"k{i:03d}", i % 250) for i in range(100)])
    deliver(*(records[start : start + 10] for start in range(0, 100, 10)))
    at = history.time(80) + timedelta(seconds=30)
    target = f"{table}-restored"
    arguments = ["restore", bucket, folder, target, "--at", at.isoformat(), "--partitions",
                 "256", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    job = f"restore-into-{target}"
    kill_when(process, lambda: recorded_units(s3, bucket, folder, "partition", job) >= 20)
    assert 20 <= recorded_units(s3, bucket, folder, "partition", job) < 256
    assert len(restored_state(dynamodb, target)) < 81  # stopped part of the way

    resumed = invoke("restore", *arguments[1:], "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert restored_state(dynamodb, target) == history.state_at(at)


# --- the command line ----------------------------------------------------------------------


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


def test_restore_refuses_what_a_journal_folder_does_not_support(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str, aws_env: Any
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    deliver(history.change(ops(("put", "a", 1))))
    result = invoke("restore", bucket, folder, f"{table}-x", "--skip-invalid")
    assert result.exit_code == 2, result.output
    assert "journal folder" in result.output and "--skip-invalid" in result.output
    # --native-import imports a base: a folder without one is refused, nothing made.
    result = invoke("restore", bucket, folder, f"{table}-y", "--native-import")
    assert result.exit_code == 2 and "no base" in result.output, result.output
    assert f"{table}-y" not in dynamodb.list_tables()["TableNames"]


def test_restore_and_compact_on_the_command_line(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str, aws_env: Any
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change(ops(("put", "a", 1), ("put", "b", 2), ("delete", "a", 0)))
    deliver(records)
    moment = history.time(1) + timedelta(seconds=1)
    time.sleep(1.1)  # out of the journal's last second (see compact)
    compacted = invoke(
        "--output", "json", "-q", "compact", bucket, folder, "--at", moment.isoformat(),
        "--engine", "processes", "--workers", "2",
    )  # fmt: skip
    assert compacted.exit_code == 0, compacted.output
    assert json.loads(compacted.output)["items"] == 2, compacted.output
    target = f"{table}-restored"
    restored = invoke("restore", bucket, folder, target, "--at", moment.isoformat())
    assert restored.exit_code == 0, restored.output
    assert restored_state(dynamodb, target) == history.state_at(moment)
    latest = invoke("restore", bucket, folder, f"{target}-latest", "--engine", "processes")
    assert latest.exit_code == 0, latest.output
    assert restored_state(dynamodb, f"{target}-latest") == restored_state(dynamodb, table)


def test_compact_refuses_an_item_folder(s3: Any, bucket: str, prefix: str, aws_env: Any) -> None:
    journal_manifest(s3, bucket, prefix, "Users", "items")
    result = invoke("compact", bucket, f"{prefix}/Users")
    assert result.exit_code == 2 and "items layout" in result.output, result.output
