"""Replay's settle step and backfill's removal check at AWS's precision: stream change times
to the second (DynamoDB Local rounds them to the minute, which hides these cases), backfill
versions dated by the Scan answer's Date. Against DynamoDB Local and SeaweedFS; the records
the trigger applies carry an ApproximateCreationDateTime to the second, as AWS sends it."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.layout import EVENT_SNAPSHOT, WRITER_BACKFILL, TableLayout, VersionMetadata
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.jobs.backfill_removals import restore_removals_under_backfill
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.deployment import clients
from tests.faultproxy import FORWARD, INTERNAL_ERROR, FaultProxy, Request
from tests.helpers import (
    bodies,
    create_table,
    history,
    lambda_records,
    object_key,
    restore_job,
    scan_all,
)
from tests.jobs.test_replay import report_for
from tests.servers import Server

pytestmark = pytest.mark.servers


def _to_the_second(record: dict[str, Any]) -> tuple[dict[str, Any], datetime]:
    """The record as AWS would date it: now, rounded down to the second (kept off the whole
    minute, so that the precision shows), never before the stream's own minute."""
    seconds = int(time.time())
    if seconds % 60 == 0:
        seconds += 1
    dated = copy.deepcopy(record)
    dated["dynamodb"]["ApproximateCreationDateTime"] = seconds
    return dated, datetime.fromtimestamp(seconds, UTC)


def _backfilled(s3: Any, bucket: str, name: str, item: dict[str, Any], read_at: datetime) -> None:
    metadata = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, read_at)
    assert BackupWriter(s3, bucket).put_item_if_absent(name, dumps_item(item), metadata)


def _shard(streams: Any, record: dict[str, Any]) -> str:
    description = streams.describe_stream(StreamArn=record["eventSourceARN"])
    return str(description["StreamDescription"]["Shards"][0]["ShardId"])


def _replay(table: str, bucket: str, prefix: str, reports: Path) -> Any:
    return CliRunner().invoke(
        main, ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix]
    )


def _latest(dynamodb_local: Server, dynamodb: Any, s3: Any, bucket: str, folder: str) -> Any:
    target = unique_table_name("latest")
    job = restore_job(dynamodb_local.endpoint, s3, bucket, folder, target, key_schema="pk:S")
    assert job.run().complete
    return list(scan_all(dynamodb, target).values())


def test_replays_copy_of_a_later_backfill_read_over_its_removal_survives_the_removal_check(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    """The trigger gave up on [INSERT, REMOVE]; the item was inserted again (v3), a backfill
    read it 3 s later and its put landed first, then the trigger wrote the re-insert. Replay
    writes the range (its REMOVE's delete marker on top) and settles: the backfill read is
    the newest change, so its state goes back on top, directly on the replayed removal. The
    removal check must not take it for a backfill that passed over a deletion."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    v3 = {**key, "v": {"N": "3"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item=v3)
    insert, remove, reinsert = lambda_records(dynamodb, streams, table)
    reinsert, reinserted_at = _to_the_second(reinsert)
    name = object_key(prefix, table, key)
    _backfilled(s3, bucket, name, v3, reinserted_at + timedelta(seconds=3))
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([reinsert]).failures == []
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([insert, remove], _shard(streams, insert)) + "\n")

    result = _replay(table, bucket, prefix, reports)
    assert result.exit_code == 0, result.output
    entries = history(s3, bucket, name)
    assert bodies(entries)[:2] == [v3, "DM"], bodies(entries)
    assert entries[0]["metadata"].get("copy-of"), entries[0]["metadata"]

    restored = restore_removals_under_backfill(
        BackupWriter(s3, bucket), TableLayout.of(prefix, table)
    )

    assert restored == 0, bodies(history(s3, bucket, name))
    assert bodies(history(s3, bucket, name))[0] == v3
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v3]


@pytest.mark.parametrize("read_after_seconds", [0, 1, 5])
def test_a_backfill_version_on_a_removal_followed_by_a_later_stream_change_is_kept(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    read_after_seconds: int,
) -> None:
    """The re-insert v3 was written first; then an older [INSERT, REMOVE] (a replay before its
    settle step, a second writer) leaves a delete marker on top, and a backfill that read v3
    passes over it. The removal under the backfill version is not the item's last change
    (the re-insert's sequence number is higher): the check must leave the item, whether the
    read is dated within the stream's precision of the re-insert or clearly after it."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    v3 = {**key, "v": {"N": "3"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item=v3)
    insert, remove, reinsert = lambda_records(dynamodb, streams, table)
    reinsert, reinserted_at = _to_the_second(reinsert)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([reinsert]).failures == []
    assert trigger.apply([insert, remove]).failures == []  # older, written above it
    name = object_key(prefix, table, key)
    _backfilled(s3, bucket, name, v3, reinserted_at + timedelta(seconds=read_after_seconds))

    restored = restore_removals_under_backfill(
        BackupWriter(s3, bucket), TableLayout.of(prefix, table)
    )

    assert restored == 0, bodies(history(s3, bucket, name))
    assert bodies(history(s3, bucket, name))[0] == v3
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v3]


def test_replay_keeps_a_stream_change_dated_within_a_second_before_the_backfills_read(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    """A Scan read v1 and the item changed to v2 before the Scan's answer left: the backfill
    version is dated by the answer's Date, a second later than the change's rounded-down
    time. The trigger gave up on the INSERT and wrote the change (on top of the backfill's
    put). Replay of the INSERT settles: v2 is the newest change (the read is not later by
    more than the stream's precision), and the latest restore agrees."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    v1, v2 = {**key, "v": {"N": "1"}}, {**key, "v": {"N": "2"}}
    dynamodb.put_item(TableName=table, Item=v1)
    dynamodb.put_item(TableName=table, Item=v2)
    insert, change = lambda_records(dynamodb, streams, table)
    change, changed_at = _to_the_second(change)
    name = object_key(prefix, table, key)
    _backfilled(s3, bucket, name, v1, changed_at + timedelta(seconds=1))
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([change]).failures == []
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([insert], _shard(streams, insert)) + "\n")

    result = _replay(table, bucket, prefix, reports)

    assert result.exit_code == 0, result.output
    assert bodies(history(s3, bucket, name))[0] == v2, bodies(history(s3, bucket, name))
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v2]


def test_replay_from_the_queue_outlasts_sqs_failures_beyond_botocores_budget(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    moto: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every SQS call replay makes (finding the queue, receiving, deleting a settled message,
    making a kept one visible) is first answered 500 six times in a row, more than botocore's
    own five attempts: the tool's retries carry each through, and the report is settled."""
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)
    ensure_manifest(BackupWriter(s3, bucket), TableLayout.of(prefix, table))  # as deploy does
    sqs = clients(moto).sqs
    url = sqs.create_queue(QueueName=TableResources.of(table).failure_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=report_for(records, _shard(streams, records[0])))
    failed: dict[str, int] = {}

    def six_failures_per_action(request: Request) -> str:
        action = request.headers.get("x-amz-target", "")
        failed[action] = failed.get(action, 0) + 1
        return INTERNAL_ERROR if failed[action] <= 6 else FORWARD

    with FaultProxy(moto, six_failures_per_action) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
        result = CliRunner().invoke(main, ["replay", table, "--bucket", bucket, "--prefix", prefix])

    assert result.exit_code == 0, result.output
    assert "replayed 1 records" in result.output
    assert {"AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessage"} <= set(failed), failed
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert left.get("Messages", []) == []


def test_a_replay_killed_before_its_settle_step_is_settled_by_running_it_again(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    """A replay that wrote its range (v1, v2 above the trigger's newer v3) and was killed
    before settling leaves its report queued (it is settled only after the whole range);
    replaying that report again writes the range again and settles: v3 back on top."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    for version in (1, 2, 3):
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
    r1, r2, r3 = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([r3]).failures == []
    killed_replay = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert killed_replay.apply([r1, r2]).failures == []  # its writes, and no settle step
    name = object_key(prefix, table, key)
    v2, v3 = {**key, "v": {"N": "2"}}, {**key, "v": {"N": "3"}}
    assert bodies(history(s3, bucket, name))[0] == v2
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([r1, r2], _shard(streams, r1)) + "\n")

    result = _replay(table, bucket, prefix, reports)

    assert result.exit_code == 0, result.output
    assert bodies(history(s3, bucket, name))[0] == v3
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v3]
