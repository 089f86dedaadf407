"""Nothing skipped unnoticed, as deploy sets it up (moto): the failure destination, alarms and
dashboard, status turning unhealthy, and the function's own metrics line per batch."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.cli import main
from dynamo_backups.core.metrics import batch_metrics
from dynamo_backups.core.stream_records import BatchResult
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.installer.teardown import teardown
from dynamo_backups.installer.template import build_template
from tests.deployment import ACCOUNT, BUCKET, OPTIONS, clients, deploy, make_table, policy_document
from tests.helpers import create_table, lambda_records

NOW = datetime(2026, 12, 5, tzinfo=UTC)

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
    assert sorted(alarm["AlarmName"] for alarm in alarms) == sorted(
        set(names.alarms) - {names.discarded_alarm}
    )
    assert all(alarm["AlarmActions"] == [topic] == alarm["OKActions"] for alarm in alarms)


def test_an_alarm_fires_when_the_table_is_written_and_the_function_not_invoked(
    moto: str,
) -> None:
    """A disabled or deleted trigger reports no IteratorAge and no Errors: only writes to the
    table without invocations of the function show that backups stopped."""
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    names = TableResources.of("Users")
    (stopped,) = clients(moto).cloudwatch.describe_alarms(AlarmNames=[names.stopped_alarm])[
        "MetricAlarms"
    ]
    queries = {query["Id"]: query for query in stopped["Metrics"]}
    writes = queries["writes"]["MetricStat"]
    assert writes["Metric"] == {
        "Namespace": "AWS/DynamoDB",
        "MetricName": "ConsumedWriteCapacityUnits",
        "Dimensions": [{"Name": "TableName", "Value": "Users"}],
    }
    invocations = queries["invocations"]["MetricStat"]
    assert invocations["Metric"] == {
        "Namespace": "AWS/Lambda",
        "MetricName": "Invocations",
        "Dimensions": [{"Name": "FunctionName", "Value": names.function}],
    }
    assert writes["Stat"] == invocations["Stat"] == "Sum"
    expression = queries["e1"]["Expression"]
    assert "FILL(writes, 0) > 0" in expression and "FILL(invocations, 0) == 0" in expression
    assert (stopped["Threshold"], stopped["ComparisonOperator"]) == (0.0, "GreaterThanThreshold")
    assert stopped["EvaluationPeriods"] == stopped["DatapointsToAlarm"] == 3


def test_records_reported_back_to_the_trigger_raise_an_alarm(moto: str) -> None:
    """batchItemFailures are not Lambda Errors: the alarm watches the function's own
    RecordsFailed metric, with the dimensions the handler's metrics line carries."""
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    names = TableResources.of("Users")
    (failed,) = clients(moto).cloudwatch.describe_alarms(AlarmNames=[names.failed_records_alarm])[
        "MetricAlarms"
    ]
    emitted = batch_metrics("backup", BatchResult(record_count=1, tables={"Users"}), NOW)
    (directive,) = emitted["_aws"]["CloudWatchMetrics"]
    assert failed["Namespace"] == directive["Namespace"]
    assert failed["MetricName"] in {metric["Name"] for metric in directive["Metrics"]}
    (dimension_names,) = directive["Dimensions"]
    assert failed["Dimensions"] == [
        {"Name": name, "Value": emitted[name]} for name in dimension_names
    ]
    assert emitted[failed["MetricName"]] == 1
    assert (failed["Statistic"], failed["Threshold"]) == ("Sum", 0.0)


def test_deploy_says_plainly_when_the_alarms_notify_nobody(moto: str) -> None:
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    steps = deploy(moto, replace(OPTIONS, tables=("Users",)))
    (warning,) = [step for step in steps if step.resource.startswith("alarms of ")]
    assert warning.outcome == "warning"
    assert "notify nobody" in warning.detail and "--alarm-topic" in warning.detail
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:oncall"
    with_topic = replace(OPTIONS, tables=("Users",), alarm_topic=topic)
    steps = deploy(moto, with_topic)
    assert not [step for step in steps if step.resource.startswith("alarms of ")]
    again = [step for step in deploy(moto, with_topic) if step.resource.startswith("alarm ")]
    assert len(again) == 5  # the expression alarm compares equal to what was written
    assert all(step.outcome == "unchanged" for step in again), again


def test_template_warns_when_the_alarms_notify_nobody() -> None:
    result = CliRunner().invoke(
        main, ["template", "--bucket", "acme-backups", "--prefix", "Prod", "--table", "Users"]
    )
    assert result.exit_code == 0, result.output
    assert "notify nobody" in result.stderr


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
    assert kinds.count("AWS::CloudWatch::Alarm") == 5
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
