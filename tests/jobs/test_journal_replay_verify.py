"""replay, verify and verify --repair on a journal folder (docs/journal.md, "Implemented:
replay and verify"), against DynamoDB Local and SeaweedFS: a range the trigger gave up on,
replayed into the journal (never as item objects), seen by restore and compaction, replayed
again without doubling and without burying a newer change; and verify's answers, options and
exit codes on both layouts."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_backup
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.core.journal import encode_piece, piece_name, record_of_stream
from dynamo_backups.core.layout import parse_time
from dynamo_backups.jobs.layouts import layout_named
from tests import servers
from tests.faultproxy import FORWARD, Answer, FaultProxy, Request
from tests.helpers import create_table, lambda_records
from tests.jobs.test_journal_compact_restore import (
    History,
    base_items,
    compact,
    restore,
    restored_state,
    start_time,
)
from tests.jobs.test_replay import report_for
from tests.pipeline.test_journal_writes import item_objects, journal_manifest, run_handler
from tests.servers import make_client

pytestmark = pytest.mark.servers


def deliver(records: list[dict[str, Any]]) -> None:
    assert run_handler(copy.deepcopy(records)) == {"batchItemFailures": []}


def folder_keys(s3: Any, bucket: str, prefix: str, table: str) -> list[str]:
    """Every object (every version and delete marker) under the table's folder."""
    keys: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=f"{prefix}/{table}/"
    ):
        keys += [entry["Key"] for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    return keys


def by_pk(items: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = items.values() if isinstance(items, dict) else items
    return {item["pk"]["S"]: item for item in values}


def table_items(dynamodb: Any, table: str) -> dict[str, Any]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return by_pk(items)


# --- replay --------------------------------------------------------------------------------


def test_a_replayed_range_becomes_journal_pieces_that_restore_and_compaction_read(
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    prefix = journal_env
    table = create_table(dynamodb)
    folder = f"{prefix}/{table}"
    journal_manifest(s3, bucket, prefix, table, "journal")
    for pk, value in [("a", 1), ("b", 1), ("c", 1)]:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "v": {"N": str(value)}})
    # Given up on: a's second state (a newer one follows), c removed, d inserted.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "c"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "d"}, "v": {"N": "1.50"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "3"}})
    records = lambda_records(dynamodb, streams, table)
    given_up, went_on = records[3:6], records[:3] + records[6:]
    deliver(went_on)
    compact(s3, bucket, folder, None, partitions=16)  # a base made before the replay
    arn = records[0]["eventSourceARN"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for(given_up, shard["ShardId"]) + "\n")
    replay = ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix]

    result = CliRunner().invoke(main, replay)

    assert result.exit_code == 0, result.output
    assert "replayed 3 records" in result.output
    written = folder_keys(s3, bucket, prefix, table)
    # Nothing in the item layout: every object is the journal's or a base's.
    assert item_objects(s3, bucket, prefix, table) == []
    assert all(key.startswith((f"{folder}/journal/", f"{folder}/bases/")) for key in written)
    # The replayed changes are late for the base: restore places them against its index.
    live = table_items(dynamodb, table)
    assert set(live) == {"a", "b", "d"} and live["a"]["v"]["N"] == "3"
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == live  # a's newer state kept, c removed, d there

    # Replayed again: the same pieces (If-None-Match, checked), nothing doubled or buried.
    again = CliRunner().invoke(main, replay)
    assert again.exit_code == 0, again.output
    assert sorted(folder_keys(s3, bucket, prefix, table)) == sorted(written)
    job = compact(s3, bucket, folder, None, partitions=16)  # the next base folds them in
    moment = parse_time(job.report.moment or "")
    assert by_pk(base_items(s3, bucket, folder, moment)) == live


# --- verify and verify --repair, on both layouts ---------------------------------------------

LAYOUTS = ["items", "journal", "journal-after-a-base"]


class Backed:
    """A table backed up by the Lambda handler in one layout, with the same changes whatever
    the layout; ``undelivered`` are the table's stream records the trigger has not written."""

    def __init__(self, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> None:
        self.dynamodb, self.streams, self.s3, self.bucket, self.prefix = (
            dynamodb,
            streams,
            s3,
            bucket,
            prefix,
        )
        self.table = create_table(dynamodb)
        self.delivered = 0
        self.folder_layout = "items"

    @property
    def folder(self) -> str:
        return f"{self.prefix}/{self.table}"

    def put(self, pk: str, value: str) -> None:
        item = {"pk": {"S": pk}, "v": {"N": value}, "b": {"B": pk.encode()}}
        self.dynamodb.put_item(TableName=self.table, Item=item)

    def delete(self, pk: str) -> None:
        self.dynamodb.delete_item(TableName=self.table, Key={"pk": {"S": pk}})

    def deliver(self) -> None:
        """The trigger writes every change made so far."""
        records = lambda_records(self.dynamodb, self.streams, self.table)
        if records[self.delivered :]:
            deliver(records[self.delivered :])
        self.delivered = len(records)

    def cli(self, *arguments: str) -> Any:
        return CliRunner().invoke(
            main,
            ["verify", self.table, "--bucket", self.bucket, "--prefix", self.prefix, *arguments],
        )

    def restored(self, dynamodb_local: Any) -> dict[str, Any]:
        target = f"restored-{self.table}"
        result = CliRunner().invoke(main, ["restore", self.bucket, self.folder, target])
        assert result.exit_code == 0, result.output
        return table_items(self.dynamodb, target)


@pytest.fixture(params=LAYOUTS)
def backed(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    seaweedfs: Any,
    aws_env: Any,
) -> Backed:
    """Five items backed up (one changed, one removed on the way) in the layout asked for;
    a journal folder with a base has two of the changes after it."""
    layout = "items" if request.param == "items" else "journal"
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", layout)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    backed = Backed(dynamodb, streams, s3, bucket, prefix)
    backed.folder_layout = layout
    journal_manifest(s3, bucket, prefix, backed.table, layout)
    for pk in "abcde":
        backed.put(pk, "1")
    backed.put("a", "2.50")
    backed.delete("e")
    backed.deliver()
    if request.param == "journal-after-a-base":
        compact(s3, bucket, backed.folder, None, partitions=16)
        backed.put("b", "3")
        backed.put("f", "1")
        backed.deliver()
    return backed


def counts(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("missing from"))


def test_verify_of_a_backup_that_holds_the_table_finds_nothing(backed: Backed) -> None:
    result = backed.cli()
    assert result.exit_code == 0, result.output
    assert counts(result.output) == (
        "missing from the backup: 0; in the backup but not the table: 0; different: 0"
    )
    live = table_items(backed.dynamodb, backed.table)
    assert f"{len(live)} items in the table, {len(live)} in the backup" in result.output
    # The units in other processes (the job and its view pickled), a ledger kept: the same.
    processes = backed.cli("--engine", "processes", "--workers", "2", "--partitions", "256")
    assert processes.exit_code == 0, processes.output
    assert counts(processes.output) == counts(result.output)


def test_verify_finds_missing_extra_and_different_items_and_repair_makes_them_right(
    backed: Backed, dynamodb_local: Any
) -> None:
    # Changes the trigger never writes (given up on, the stream trimmed): only a repair can.
    backed.put("new", "7")  # missing from the backup
    backed.put("a", "9")  # different
    backed.delete("c")  # in the backup but not the table

    found = backed.cli("--partitions", "16")
    assert found.exit_code == 1, found.output
    assert counts(found.output) == (
        "missing from the backup: 1; in the backup but not the table: 1; different: 1"
    )
    assert '{"pk":{"S":"new"}}' in found.output and '{"pk":{"S":"c"}}' in found.output
    assert "3 differences between" in found.output

    repaired = backed.cli("--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired: 3; not repaired: 0" in repaired.output
    if backed.folder_layout == "journal":
        # Table reads of their own pseudo-stream, never an item object.
        keys = folder_keys(backed.s3, backed.bucket, backed.prefix, backed.table)
        assert item_objects(backed.s3, backed.bucket, backed.prefix, backed.table) == []
        assert [key for key in keys if "-repair-0-0-" in key]

    again = backed.cli()
    assert again.exit_code == 0, again.output
    assert counts(again.output).endswith("0; different: 0")
    live = table_items(backed.dynamodb, backed.table)
    assert backed.restored(dynamodb_local) == live
    if backed.folder_layout == "journal":  # a base folded from the repairs holds them too
        job = compact(backed.s3, backed.bucket, backed.folder, None, partitions=16)
        moment = parse_time(job.report.moment or "")
        in_base = by_pk(base_items(backed.s3, backed.bucket, backed.folder, moment))
        assert in_base == {pk: to_wire(item) for pk, item in live.items()}

    # A change made after the repair's read is never buried by it.
    backed.put("new", "8")
    backed.deliver()  # the trigger catches up, the changes before the repair included
    assert backed.cli().exit_code == 0
    live = table_items(backed.dynamodb, backed.table)
    assert live["new"]["v"]["N"] == "8"
    target = f"after-{backed.table}"
    result = CliRunner().invoke(main, ["restore", backed.bucket, backed.folder, target])
    assert result.exit_code == 0, result.output
    assert table_items(backed.dynamodb, target) == live


def test_a_change_the_trigger_writes_while_verify_runs_is_not_a_difference(
    backed: Backed, dynamodb_local: Any
) -> None:
    """The table changes before the scan; the trigger writes the change only once verify is
    rechecking it (after the run's moment, in the journal's batching window): read again
    from both sides, it is not counted."""
    backed.put("a", "5")
    folder = open_backup(backed.s3, backed.bucket, backed.prefix, backed.table)
    job_class = layout_named(backed.folder_layout).verify

    class TriggerCatchesUp(job_class):  # type: ignore[misc, valid-type]
        def _get_item(self, key: dict[str, Any]) -> Any:
            backed.deliver()  # before the table is read again: the journal has it then
            return super()._get_item(key)

    dynamodb = make_client("dynamodb", dynamodb_local.endpoint)
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    job = TriggerCatchesUp(
        api.call,
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        BackupWriter(backed.s3, backed.bucket),
        BotocoreObjects(backed.s3, backed.bucket),
        folder.layout,
        segments=2,
        partitions=16,
    )
    report = job.run()
    assert backed.delivered == len(lambda_records(backed.dynamodb, backed.streams, backed.table))
    assert (report.missing, report.extra, report.different) == (0, 0, 0), report
    assert not report.unfinished_units and not report.errors


def test_a_repair_that_cannot_be_written_is_reported_and_done_by_resume(
    backed: Backed, dynamodb_local: Any, seaweedfs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 refuses the repairs' writes (the ledger's go through): the run names what did not
    finish, exit 1, nothing counted as repaired; --resume writes them, then verify is clean."""
    backed.put("new", "7")
    backed.delete("b")
    folder_path = f"/{backed.bucket}/{backed.folder}/"

    def deny_backup_writes(request: Request) -> str | Answer:
        if request.method == "PUT" and request.path.startswith(folder_path):
            body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return Answer(403, {"Content-Type": "application/xml"}, body)
        return FORWARD

    with FaultProxy(seaweedfs.endpoint, deny_backup_writes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        failed = backed.cli("--repair")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    assert failed.exit_code == 1, failed.output
    assert "Traceback" not in failed.output
    assert "repaired: 0;" in failed.output
    assert "units of the verify did not finish" in failed.output

    resumed = backed.cli("--repair", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "repaired: 2; not repaired: 0" in resumed.output
    clean = backed.cli()
    assert clean.exit_code == 0, clean.output
    assert backed.restored(dynamodb_local) == table_items(backed.dynamodb, backed.table)


def test_verify_of_a_journal_that_contradicts_itself_fails_never_a_silent_answer(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str, aws_env: Any
) -> None:
    """A late change older than the base's horizon, then two different copies of one
    change: each is an error line and exit 1, never a verify that passes."""
    prefix = journal_env
    table = create_table(dynamodb)
    folder = f"{prefix}/{table}"
    journal_manifest(s3, bucket, prefix, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    records = history.change([("put", "a", 1), ("put", "b", 2), ("put", "a", 3)])
    deliver(records[1:])
    moment = history.time(2) + timedelta(seconds=30)
    compact(s3, bucket, folder, moment, late_horizon=timedelta(seconds=60))
    deliver(records[:1])  # received after the base: late, and older than its horizon
    verify = ["verify", table, "--bucket", bucket, "--prefix", prefix]

    late = CliRunner().invoke(main, verify)
    assert late.exit_code == 1, late.output
    assert "error:" in late.output and "late horizon" in late.output
    assert "Traceback" not in late.output

    table2 = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table2, "journal")
    history2 = History(dynamodb, streams, table2, start_time())
    records2 = history2.change([("put", "a", 1), ("put", "b", 2)])
    deliver(records2)
    forged = replace(record_of_stream(records2[0], 0), image={"pk": {"S": "a"}, "v": {"N": "9"}})
    key = f"{prefix}/{table2}/journal/{piece_name([forged])}"
    s3.put_object(Bucket=bucket, Key=key, Body=encode_piece([forged]))

    conflict = CliRunner().invoke(main, ["verify", table2, "--bucket", bucket, "--prefix", prefix])
    assert conflict.exit_code == 1, conflict.output
    assert "two different copies" in conflict.output and "did not finish" in conflict.output
