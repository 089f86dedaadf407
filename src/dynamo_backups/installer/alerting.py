"""deploy's part that makes failures visible: each function's failure queue, its alarms, and
the dashboard. Reconciled like the rest of deploy (created, updated or unchanged; nothing
written on a dry run); the definitions are ``monitoring``'s."""

from __future__ import annotations

import json
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.installer import policies
from dynamo_backups.installer.functions import FunctionSpec
from dynamo_backups.installer.monitoring import (
    AlarmSpec,
    alarm_specs,
    failure_queue_attributes,
    merge_dashboard,
    row_title,
    table_widgets,
)
from dynamo_backups.installer.naming import MANAGED_BY_TAG, TABLE_TAG, dashboard_name
from dynamo_backups.installer.policies import canonical

MISSING_QUEUE_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
# The alarm fields deploy sets, compared with what DescribeAlarms returns.
ALARM_FIELDS = (
    "AlarmDescription",
    "Metrics",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "AlarmActions",
    "OKActions",
)


def queue_url(sqs: Any, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) in MISSING_QUEUE_CODES:
            return None
        raise


def ensure_failure_queue(deployer: Any, spec: FunctionSpec, role_arn: str) -> None:
    """The function's own failure queue: encrypted, 14 days, only its role may send."""
    sqs = deployer.clients.sqs
    name = spec.names.failure_queue
    policy = policies.failure_queue_policy(spec.destination_arn, [role_arn])
    attributes = {**failure_queue_attributes(), "Policy": json.dumps(policy)}
    resource = f"SQS queue {name}"
    url = queue_url(sqs, name)
    if url is None:
        deployer.changing(
            sqs.create_queue,
            QueueName=name,
            Attributes=attributes,
            tags={MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1], TABLE_TAG: spec.table},
        )
        deployer.step(resource, "created", "encrypted, messages kept 14 days", policy)
        return
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    deployer.reconcile(
        resource,
        _comparable_queue(current),
        _comparable_queue(attributes),
        lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes),
        document=policy,
        detail="encrypted, messages kept 14 days",
    )


def _comparable_queue(attributes: dict[str, str]) -> dict[str, Any]:
    return {
        "SqsManagedSseEnabled": str(attributes.get("SqsManagedSseEnabled", "")).lower(),
        "MessageRetentionPeriod": str(attributes.get("MessageRetentionPeriod", "")),
        "Policy": canonical(json.loads(attributes["Policy"])) if attributes.get("Policy") else "",
    }


NOBODY_TOLD = (
    "no --alarm-topic: the alarms change state (status shows it) but notify nobody; "
    "pass --alarm-topic with an SNS topic that someone reads"
)


def ensure_alarms(deployer: Any, spec: FunctionSpec) -> None:
    """Lag, errors, records failed, backups stopped and records given up on, each notifying
    --alarm-topic; without a topic, a warning that nobody will be told."""
    specs = alarm_specs(spec.names, spec.table, spec.destination_arn, spec.kind)
    ensure_alarm_specs(deployer, specs)
    topic = deployer.options.alarm_topic
    if not topic:
        deployer.step(f"alarms of {spec.names.function}", "warning", NOBODY_TOLD)
    if policies.arn_service(spec.destination_arn) == "s3":
        deployer.step(
            f"alarm {spec.names.discarded_alarm}",
            "warning",
            "an S3 failure destination has no CloudWatch metric: status reads the bucket",
        )


def ensure_alarm_specs(deployer: Any, specs: list[AlarmSpec]) -> None:
    """Each alarm as ``specs`` has it, notifying --alarm-topic (reconciled one by one)."""
    cloudwatch = deployer.clients.cloudwatch
    existing = {
        alarm["AlarmName"]: alarm
        for alarm in cloudwatch.describe_alarms(AlarmNames=[alarm.name for alarm in specs])[
            "MetricAlarms"
        ]
    }
    topic = deployer.options.alarm_topic
    for alarm in specs:
        desired = alarm.request(topic)
        current = existing.get(alarm.name)
        deployer.reconcile(
            f"alarm {alarm.name}",
            _comparable_alarm(current) if current else None,
            _comparable_alarm(desired),
            lambda desired=desired: cloudwatch.put_metric_alarm(
                **desired,
                Tags=[{"Key": MANAGED_BY_TAG[0], "Value": MANAGED_BY_TAG[1]}],
            ),
            detail=f"{alarm.metric} {alarm.comparison} {alarm.threshold:g}"
            + (f", notifies {topic}" if topic else ", notifies nobody"),
        )


def _comparable_alarm(alarm: dict[str, Any]) -> dict[str, Any]:
    fields = {name: alarm.get(name) for name in ALARM_FIELDS}
    fields["Threshold"] = float(fields["Threshold"] or 0)
    fields["Dimensions"] = sorted(
        (dimension["Name"], dimension["Value"]) for dimension in fields["Dimensions"] or []
    )
    fields["Metrics"] = [_comparable_query(query) for query in fields["Metrics"] or []]
    fields["DatapointsToAlarm"] = fields["DatapointsToAlarm"] or fields["EvaluationPeriods"]
    return json.loads(canonical(fields))


def _comparable_query(query: dict[str, Any]) -> dict[str, Any]:
    """A MetricDataQuery as deploy writes it, whatever DescribeAlarms adds or leaves out."""
    stat = query.get("MetricStat")
    if not stat:
        return {key: query.get(key) for key in ("Id", "Expression", "Label")}
    metric = stat["Metric"]
    return {
        "Id": query["Id"],
        "Namespace": metric["Namespace"],
        "MetricName": metric["MetricName"],
        "Dimensions": sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])),
        "Period": stat["Period"],
        "Stat": stat["Stat"],
    }


def ensure_dashboard(deployer: Any, specs: list[FunctionSpec]) -> None:
    """One dashboard per backup folder: a row per table, other tables' rows kept."""
    if not specs:
        return
    cloudwatch = deployer.clients.cloudwatch
    options = deployer.options
    name = dashboard_name(options.bucket, options.prefix)
    try:
        existing = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    except ClientError as error:
        if error_code(error) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        existing = None
    rows = {
        row_title(spec.table, spec.kind): table_widgets(
            spec.table, spec.kind, spec.names, deployer.region, spec.destination_arn
        )
        for spec in specs
    }
    desired = merge_dashboard(existing, rows)
    deployer.reconcile(
        f"dashboard {name}",
        existing,
        desired,
        lambda: cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(desired)),
        detail=f"{len({widget['y'] for widget in desired['widgets']})} tables",
    )
