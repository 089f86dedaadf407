"""replay of the ranges a failure destination reported, against DynamoDB Local and SeaweedFS:
exactly those ranges in stream order, ranges the stream no longer holds reported, queue
messages settled only once written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
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
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.deployment import ACCOUNT, clients
from tests.faultproxy import FORWARD, Answer, BeforeForwarding, FaultProxy, Request, put_of
from tests.helpers import (
    bodies,
    create_table,
    expected_name,
    history,
    lambda_records,
    object_key,
    restore_job,
    scan_all,
)
from tests.servers import Server


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
    assert "GONE: report 1 of reports.jsonl: table" in result.output
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


@pytest.mark.servers
@pytest.mark.parametrize(
    ("moment", "newest"),
    [
        ("as replay writes the last replayed change", "4"),
        ("as replay puts the newer state back", "4"),
        # The item goes back to the replayed image: the same body, so the same ETag, as the
        # version replay's conditional write saw.
        ("as replay puts the newer state back", "2"),
    ],
)
def test_a_change_the_trigger_writes_while_replay_runs_stays_on_top(
    moment: str,
    newest: str,
    dynamodb_local: Server,
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    for version in (1, 2, 3):
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
    r1, r2, r3 = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)  # straight to S3, no proxy
    assert trigger.apply([r3]).failures == []  # it gave up on r1..r2 and went on
    (shard,) = streams.describe_stream(StreamArn=r1["eventSourceARN"])["StreamDescription"][
        "Shards"
    ]
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([r1, r2], shard["ShardId"]) + "\n")

    # While replay runs, the item changes (a fourth change) and the trigger writes it.
    def trigger_writes_v4() -> None:
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": newest}})
        r4 = lambda_records(dynamodb, streams, table)[-1]
        assert trigger.apply([r4]).failures == []

    during = r2 if moment.endswith("last replayed change") else r3
    sequence = during["dynamodb"]["SequenceNumber"]
    hook = BeforeForwarding(
        put_of(expected_name(key), "x-amz-meta-sequence-number", sequence), trigger_writes_v4
    )
    with FaultProxy(seaweedfs.endpoint, hook) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = CliRunner().invoke(
            main,
            ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix],
        )
    assert hook.fired.is_set()
    assert result.exit_code == 0, result.output

    v4 = {**key, "v": {"N": newest}}
    entries = history(s3, bucket, object_key(prefix, table, key))
    assert bodies(entries)[0] == v4
    assert int(entries[0]["metadata"]["sequence-number"]) > int(r3["dynamodb"]["SequenceNumber"])
    if newest == "2":  # the condition alone cannot tell the two apart
        etags = {entry["metadata"]["sequence-number"]: entry["ETag"] for entry in entries}
        assert etags[r2["dynamodb"]["SequenceNumber"]] == entries[0]["ETag"]
    later = datetime.now(UTC) + timedelta(hours=1)
    for at in (None, later, later + timedelta(days=1)):
        target = unique_table_name("replayed")
        job = restore_job(
            dynamodb_local.endpoint,
            s3,
            bucket,
            f"{prefix}/{table}",
            target,
            at=at,
            key_schema="pk:S",
        )
        assert job.run().complete
        assert list(scan_all(dynamodb, target).values()) == [v4], f"at {at}"


@pytest.mark.servers
def test_one_bad_report_is_reported_and_the_others_are_replayed(
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    keys = [{"pk": {"S": name}} for name in ("denied", "fine", "other")]
    other = {**keys[2], "v": {"N": "2"}}
    dynamodb.put_item(TableName=table, Item={**keys[2], "v": {"N": "1"}})
    for key in keys[:2]:
        dynamodb.put_item(TableName=table, Item=key)
    dynamodb.put_item(TableName=table, Item=other)
    other_first, denied, fine, other_second = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([other_second]).failures == []  # it went on after the range
    (shard,) = streams.describe_stream(StreamArn=fine["eventSourceARN"])["StreamDescription"][
        "Shards"
    ]
    garbled = json.loads(report_for([fine], shard["ShardId"]))
    garbled["DDBStreamBatchInfo"]["startSequenceNumber"] = "soon"
    # A file holding reports that are not reports is bad input: refused before any write.
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(
        "\n".join([json.dumps(garbled), "{not json", report_for([fine], shard["ShardId"])])
    )
    refused_file = CliRunner().invoke(
        main, ["replay", table, "--file", str(malformed), "--bucket", bucket, "--prefix", prefix]
    )
    assert refused_file.exit_code == 2, refused_file.output
    assert "startSequenceNumber 'soon' is not a sequence number" in refused_file.output
    assert history(s3, bucket, object_key(prefix, table, keys[1])) == []
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        "\n".join(
            [
                # one of its objects cannot be read or written
                report_for([other_first, denied], shard["ShardId"]),
                report_for([fine], shard["ShardId"]),
            ]
        )
        + "\n"
    )
    # The bucket refuses every request about one object (a policy denying it, say).
    refused = expected_name(keys[0])

    def deny(request: Request) -> str | Answer:
        if refused not in request.path:
            return FORWARD
        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        return Answer(403, {"Content-Type": "application/xml"}, body)

    with FaultProxy(seaweedfs.endpoint, deny) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = CliRunner().invoke(
            main,
            ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix],
        )

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    # The good report after the bad ones was replayed all the same.
    assert "replayed 1 records" in result.output, result.output
    assert bodies(history(s3, bucket, object_key(prefix, table, keys[1]))) == [keys[1]]
    lines = result.output.splitlines()
    (first,) = [line for line in lines if line.startswith("FAILED: report 1 of reports.jsonl")]
    assert refused in first and "AccessDenied" in first
    assert "1 of 2 reports were not replayed" in result.output
    # The failed report's change written before the failure did not stay above a newer one.
    assert bodies(history(s3, bucket, object_key(prefix, table, keys[2])))[0] == other
