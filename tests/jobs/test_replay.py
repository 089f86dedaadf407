"""replay of the ranges a failure destination reported, against DynamoDB Local and SeaweedFS:
exactly those ranges in stream order, ranges the stream no longer holds reported, queue
messages settled only once written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.jobs.replay import parse_report
from tests.deployment import ACCOUNT, clients
from tests.helpers import bodies, create_table, history, lambda_records, object_key


def report_for(
    records: list[dict[str, Any]],
    shard: str = "shardId-00000001573689847184-864758bb",
    condition: str = "RetryAttemptsExhausted",
) -> str:
    """A report of these records as Lambda sends it to an SQS failure destination."""
    first, last = records[0], records[-1]
    return json.dumps(
        {
            "requestContext": {
                "requestId": "316aa6d0-8154-4d3c-9af7-85d5f4a6bc81",
                "functionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dynamo-backups-T",
                "condition": condition,
                "approximateInvokeCount": 11,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0",
            "timestamp": "2026-12-01T00:13:49.717Z",
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": "2026-12-01T00:13:19Z",
                "approximateArrivalOfLastRecord": "2026-12-01T00:13:20Z",
                "batchSize": len(records),
                "streamArn": first["eventSourceARN"],
            },
        }
    )


def test_a_report_is_read_as_lambda_sends_it_directly_or_through_sns() -> None:
    records = [
        {
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:1:table/Users/stream/2026-12-01T00:00",
            "dynamodb": {"SequenceNumber": "100"},
        },
        {"eventSourceARN": "x", "dynamodb": {"SequenceNumber": "250"}},
    ]
    direct = parse_report(report_for(records))
    through_sns = parse_report(json.dumps({"Type": "Notification", "Message": report_for(records)}))
    assert direct == through_sns
    assert (direct.table, direct.first_sequence, direct.last_sequence) == ("Users", "100", "250")
    assert "from 2026-12-01T00:13:19Z to 2026-12-01T00:13:20Z" in direct.span


@pytest.mark.servers
def test_replay_writes_exactly_the_reported_ranges_in_the_streams_order(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    table = create_table(dynamodb)
    keys = [{"pk": {"S": name}} for name in ("a", "b", "c")]
    for version in range(3):
        for key in keys:
            dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
    dynamodb.delete_item(TableName=table, Key=keys[2])
    records = lambda_records(dynamodb, streams, table)
    # The trigger wrote everything but records 3..6 (given up on) and went on after them.
    given_up = records[3:7]
    kept = records[:3] + records[7:]
    handled = handler.build_backup_applier(
        handler.BackupConfig(bucket, prefix), handler.lambda_context()
    ).apply(kept)
    assert handled.failures == []
    arn = given_up[0]["eventSourceARN"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for(given_up, shard["ShardId"]) + "\n")

    result = CliRunner().invoke(
        main,
        ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix],
    )
    assert result.exit_code == 0, result.output
    assert "replayed 4 records" in result.output

    for key in keys:
        entries = bodies(history(s3, bucket, object_key(prefix, table, key)))
        live = dynamodb.get_item(TableName=table, Key=key).get("Item")
        # The stream's last state is current again, above the replayed (older) versions.
        assert entries[0] == ("DM" if live is None else live)

    def versions(key: dict[str, Any]) -> list[Any]:
        entries = bodies(history(s3, bucket, object_key(prefix, table, key)))
        return [entry["v"]["N"] if isinstance(entry, dict) else entry for entry in entries]

    # a had nothing newer: its replayed changes simply follow. b and c had newer states (the
    # trigger went on): each is written again on top of the replayed, older, changes.
    assert versions(keys[0]) == ["2", "1", "0"]
    assert versions(keys[1]) == ["2", "1", "2", "0"]
    assert versions(keys[2]) == ["DM", None, "1", "DM", None, "2", "0"]


@pytest.mark.servers
def test_replay_reports_a_range_the_stream_no_longer_holds(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, aws_env: Any, tmp_path: Path
) -> None:
    table = create_table(dynamodb)
    # the folder deploy sets up (replay refuses a folder without a backup: a wrong prefix)
    ensure_manifest(BackupWriter(s3, bucket), TableLayout.of(prefix, table))
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)
    gone = [dict(records[0], eventSourceARN=records[0]["eventSourceARN"] + "0")]  # no such stream
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for(gone) + "\n")
    result = CliRunner().invoke(
        main,
        ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix],
    )
    assert result.exit_code == 1
    assert "GONE: table" in result.output
    assert f"run: dynamo-backups verify {table} --bucket {bucket} --prefix {prefix} --repair" in (
        result.output
    )


@pytest.mark.servers
def test_replay_settles_queue_messages_only_once_their_range_is_written(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    moto: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto)
    table = create_table(dynamodb)
    ensure_manifest(BackupWriter(s3, bucket), TableLayout.of(prefix, table))  # as deploy does
    for name in ("a", "b"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}})
    records = lambda_records(dynamodb, streams, table)
    (shard,) = streams.describe_stream(StreamArn=records[0]["eventSourceARN"])["StreamDescription"][
        "Shards"
    ]
    sqs = clients(moto).sqs
    url = sqs.create_queue(QueueName=TableResources.of(table).failure_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=report_for(records, shard["ShardId"]))
    gone = [dict(records[0], eventSourceARN=records[0]["eventSourceARN"] + "0")]
    sqs.send_message(QueueUrl=url, MessageBody=report_for(gone, shard["ShardId"]))

    result = CliRunner().invoke(
        main, ["replay", table, "--bucket", bucket, "--prefix", prefix, "--output", "json"]
    )
    assert result.exit_code == 1
    reports = json.loads(result.stdout)["reports"]
    assert sorted((report["written"], report["gone"]) for report in reports) == [
        (False, True),
        (True, False),
    ]
    assert bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "b"}}))) == [
        {"pk": {"S": "b"}}
    ]
    # The written range's message is gone; the other waits for its repair.
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    (message,) = left["Messages"]
    assert parse_report(message["Body"]).stream_arn.endswith("0")
