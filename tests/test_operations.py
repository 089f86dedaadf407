"""Nothing skipped unnoticed: the failure destination, alarms and dashboard deploy sets up
(moto), status turning unhealthy, the function's own metrics, and replay of reported ranges
against DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.cli import main
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.installer.operate import teardown
from dynamo_backups.installer.template import build_template
from dynamo_backups.replay import parse_report
from tests.helpers import bodies, create_table, history, lambda_records, object_key
from tests.test_installer import (
    ACCOUNT,
    BUCKET,
    OPTIONS,
    clients,
    deploy,
    make_table,
    moto,
    policy_document,
)

__all__ = ["moto"]  # the fixture, shared with test_installer


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


# --- deploy: destination, alarms, dashboard ----------------------------------------------------


def test_alarms_notify_the_topic_and_an_s3_destination_is_allowed(moto: str) -> None:
    make_table(moto, "Users")
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:oncall"
    destination = "arn:aws:s3:::acme-failures"
    deploy(
        moto,
        replace(OPTIONS, tables=("Users",), alarm_topic=topic, on_failure=destination),
    )
    c = clients(moto)
    names = TableResources.of("Users")
    stream = policy_document(c.iam, names.stream_policy)["Statement"]
    assert stream[2:] == [
        {
            "Sid": "ReportRecordsThatFailed",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": f"{destination}/*",
        },
        {
            "Sid": "FindTheFailureBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": destination,
        },
    ]
    assert c.sqs.list_queues().get("QueueUrls", []) == []  # no queue of our own
    alarms = c.cloudwatch.describe_alarms(AlarmNames=list(names.alarms))["MetricAlarms"]
    assert sorted(alarm["AlarmName"] for alarm in alarms) == sorted(names.alarms[:2])
    assert all(alarm["AlarmActions"] == [topic] == alarm["OKActions"] for alarm in alarms)


def test_teardown_removes_alarms_and_rows_and_keeps_a_queue_that_holds_reports(
    moto: str,
) -> None:
    make_table(moto, "Users")
    make_table(moto, "Orders")
    deploy(moto)
    c = clients(moto)
    orders = TableResources.of("Orders")
    url = c.sqs.get_queue_url(QueueName=orders.failure_queue)["QueueUrl"]
    c.sqs.send_message(QueueUrl=url, MessageBody="{}")  # a report not yet replayed

    steps = teardown(c, ["Users", "Orders"], BUCKET, "Prod", delete_bucket=False, dry_run=False)
    outcomes = {step.resource: step.outcome for step in steps}
    assert c.cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert outcomes["SQS queue dynamo-backups-Users-failures"] == "deleted"
    assert outcomes["SQS queue dynamo-backups-Orders-failures"] == "kept"
    assert c.sqs.get_queue_url(QueueName=orders.failure_queue)["QueueUrl"] == url
    assert outcomes["dashboard dynamo-backups-acme-backups-Prod"] == "deleted"
    assert c.cloudwatch.list_dashboards()["DashboardEntries"] == []


def test_a_second_deploy_keeps_the_other_tables_rows_on_the_dashboard(moto: str) -> None:
    make_table(moto, "Users")
    make_table(moto, "Orders")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    deploy(moto, replace(OPTIONS, tables=("Orders",)))
    c = clients(moto)
    body = json.loads(
        c.cloudwatch.get_dashboard(DashboardName="dynamo-backups-acme-backups-Prod")[
            "DashboardBody"
        ]
    )
    rows = {widget["properties"]["title"].split(":")[0]: widget["y"] for widget in body["widgets"]}
    assert rows == {"Orders": 0, "Users": 6}


def test_the_template_has_the_queue_alarms_and_dashboard() -> None:
    options = replace(OPTIONS, tables=("Users",), alarm_topic="arn:aws:sns:us-east-1:1:oncall")
    resources = build_template(options)["Resources"]
    kinds = sorted(resource["Type"] for resource in resources.values())
    assert kinds.count("AWS::SQS::Queue") == 1 and kinds.count("AWS::SQS::QueuePolicy") == 1
    assert kinds.count("AWS::CloudWatch::Alarm") == 3
    assert kinds.count("AWS::CloudWatch::Dashboard") == 1
    queue = resources["UsersFailureQueue"]
    assert queue["DeletionPolicy"] == "Retain"
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    trigger = resources["UsersTrigger"]["Properties"]
    assert trigger["MaximumRetryAttempts"] == 10
    assert trigger["MaximumRecordAgeInSeconds"] == 21600
    assert trigger["DestinationConfig"] == {
        "OnFailure": {
            "Destination": {
                "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
                "dynamo-backups-Users-failures"
            }
        }
    }


# --- status ----------------------------------------------------------------------------------


def status(moto: str, *tables: str) -> Any:
    base = ["--endpoint-url", moto, "--region", "us-east-1", "--output", "json"]
    return CliRunner().invoke(main, [*base, "status", *tables])


def test_status_is_unhealthy_when_an_alarm_fires_or_reports_wait(moto: str) -> None:
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    healthy = status(moto, "Users")
    assert healthy.exit_code == 0, healthy.output
    (report,) = json.loads(healthy.stdout)["tables"]
    names = TableResources.of("Users")
    assert set(report["alarms"]) == set(names.alarms)
    assert "ALARM" not in report["alarms"].values()
    assert report["failure_destination"]["waiting"] == 0

    c = clients(moto)
    c.cloudwatch.set_alarm_state(
        AlarmName=names.lag_alarm, StateValue="ALARM", StateReason="IteratorAge above 600000"
    )
    lagging = status(moto, "Users")
    assert lagging.exit_code == 1
    assert f"alarm {names.lag_alarm} is in ALARM: IteratorAge above 600000" in lagging.output
    c.cloudwatch.set_alarm_state(AlarmName=names.lag_alarm, StateValue="OK", StateReason="ok")

    url = c.sqs.get_queue_url(QueueName=names.failure_queue)["QueueUrl"]
    c.sqs.send_message(QueueUrl=url, MessageBody="{}")
    waiting = status(moto, "Users")
    assert waiting.exit_code == 1
    (report,) = json.loads(waiting.stdout)["tables"]
    assert report["failure_destination"]["waiting"] == 1
    assert any("dynamo-backups replay Users" in problem for problem in report["problems"])
    assert "error: some tables need attention" in waiting.stderr


def test_status_names_a_trigger_without_a_failure_destination(moto: str) -> None:
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    c = clients(moto)
    (mapping,) = c.lambda_.list_event_source_mappings()["EventSourceMappings"]
    c.lambda_.update_event_source_mapping(UUID=mapping["UUID"], DestinationConfig={"OnFailure": {}})
    result = status(moto, "Users")
    assert result.exit_code == 1
    assert "the trigger has no failure destination" in result.output


# --- the function's own metrics ----------------------------------------------------------------


@pytest.mark.servers
def test_each_batch_logs_one_embedded_metric_format_line(
    dynamodb: Any,
    streams: Any,
    seaweedfs: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)
    with caplog.at_level(logging.INFO, logger="dynamo_backups.handler"):
        assert handler.backup({"Records": records}, None) == {"batchItemFailures": []}
    (line,) = [record.getMessage() for record in caplog.records]
    document = json.loads(line)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "DynamoBackups"
    assert directive["Dimensions"] == [["Kind", "Table"]]
    assert {metric["Name"] for metric in directive["Metrics"]} == {
        "RecordsWritten",
        "Removals",
        "RecordsFailed",
        "OldestRecordAgeMs",
    }
    assert (document["Kind"], document["Table"]) == ("backup", table)
    assert (document["RecordsWritten"], document["Removals"], document["RecordsFailed"]) == (
        3,
        1,
        0,
    )
    assert document["OldestRecordAgeMs"] >= 0
    assert document["applied"] == {"INSERT": 2, "REMOVE": 1}  # the summary, in the same line


# --- replay ------------------------------------------------------------------------------------


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
    dynamodb: Any, streams: Any, bucket: str, prefix: str, aws_env: Any, tmp_path: Path
) -> None:
    table = create_table(dynamodb)
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
