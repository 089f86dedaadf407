"""status, teardown and test-function: look at, remove, and try what deploy set up."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.installer.alerting import queue_url
from dynamo_backups.installer.deploy import Clients, Step
from dynamo_backups.installer.monitoring import (
    LAG_ALARM_MINUTES,
    merge_dashboard,
    row_title,
    without_tables,
)
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
    PREFIX,
    TableResources,
    write_policy_name,
)
from dynamo_backups.installer.policies import arn_resource, arn_service
from dynamo_backups.installer.samples import CONSOLE_SAMPLE_CURRENT, SAMPLE_KEY, SAMPLE_TABLE
from dynamo_backups.layout import TableLayout

OBJECT_COUNT_LIMIT = 100_000


@dataclass
class TableStatus:
    table: str
    stream: dict[str, Any] = field(default_factory=dict)
    function: dict[str, Any] = field(default_factory=dict)
    replica_function: dict[str, Any] = field(default_factory=dict)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    backup: dict[str, Any] = field(default_factory=dict)
    iterator_age_ms: float | None = None
    alarms: dict[str, str] = field(default_factory=dict)  # name -> OK, ALARM, ...
    failure_destination: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def table_status(clients: Clients, cloudwatch: Any, table: str) -> TableStatus:
    status = TableStatus(table)
    _stream_status(clients, status)
    found = False
    for replica in (False, True):
        names = TableResources.of(table, replica=replica)
        config = _function_status(clients, names, status, replica)
        if config is None:
            continue
        found = True
        _trigger_status(clients, names, status)
        variables = (config.get("Environment") or {}).get("Variables", {})
        if variables.get("BACKUP_BUCKET"):
            _backup_status(
                clients,
                variables["BACKUP_BUCKET"],
                variables.get("BACKUP_PREFIX", ""),
                table,
                status,
            )
        age = _iterator_age(cloudwatch, names.function)
        if age is not None:
            status.iterator_age_ms = max(age, status.iterator_age_ms or 0.0)
        _alarm_status(cloudwatch, names, status)
    lag_ms = status.iterator_age_ms or 0.0
    if lag_ms > LAG_ALARM_MINUTES * 60_000:
        status.problems.append(
            f"the backup is {lag_ms / 60_000:,.0f} minutes behind its stream (records older "
            "than 24 hours are lost): see the function's errors"
        )
    if not found:
        status.problems.append(f"no function {TableResources.of(table).function}: run deploy")
    return status


def _stream_status(clients: Clients, status: TableStatus) -> None:
    try:
        described = clients.dynamodb.describe_table(TableName=status.table)["Table"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        status.problems.append(f"table {status.table} does not exist")
        return
    specification = described.get("StreamSpecification") or {}
    status.stream = {
        "enabled": bool(specification.get("StreamEnabled")),
        "view_type": specification.get("StreamViewType"),
        "arn": described.get("LatestStreamArn"),
    }
    if not status.stream["enabled"]:
        status.problems.append("the table has no stream")
    elif status.stream["view_type"] not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        status.problems.append(
            f"the stream's view type {status.stream['view_type']} has no new images"
        )


def _function_status(
    clients: Clients, names: TableResources, status: TableStatus, replica: bool
) -> dict[str, Any] | None:
    try:
        config = clients.lambda_.get_function(FunctionName=names.function)["Configuration"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        return None
    shown = {
        name: config.get(name)
        for name in (
            "FunctionName",
            "Runtime",
            "Handler",
            "MemorySize",
            "Timeout",
            "LastModified",
            "State",
            "LastUpdateStatus",
            "CodeSha256",
            "Role",
        )
    }
    shown["Environment"] = (config.get("Environment") or {}).get("Variables", {})
    if replica:
        status.replica_function = shown
    else:
        status.function = shown
    if config.get("State") not in (None, "Active"):
        status.problems.append(
            f"the function is {config.get('State')}: {config.get('StateReason')}"
        )
    return config


def _trigger_status(clients: Clients, names: TableResources, status: TableStatus) -> None:
    mappings = clients.lambda_.list_event_source_mappings(FunctionName=names.function)[
        "EventSourceMappings"
    ]
    for mapping in mappings:
        status.triggers.append(
            {
                name: mapping.get(name)
                for name in (
                    "UUID",
                    "FunctionArn",
                    "State",
                    "LastProcessingResult",
                    "BatchSize",
                    "EventSourceArn",
                    "MaximumRetryAttempts",
                    "MaximumRecordAgeInSeconds",
                    "BisectBatchOnFunctionError",
                    "FunctionResponseTypes",
                    "DestinationConfig",
                )
            }
        )
    if not mappings:
        status.problems.append("the function has no stream trigger: run deploy")
    for mapping in mappings:
        if mapping.get("State") not in ("Enabled", "Enabling", "Updating", "Creating"):
            status.problems.append(f"trigger {mapping['UUID']} is {mapping.get('State')}")
        result = str(mapping.get("LastProcessingResult") or "")
        if result.startswith("PROBLEM"):
            status.problems.append(f"the trigger's last batch: {result}")
        destination = (
            (mapping.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
        )
        if not destination:
            status.problems.append(
                "the trigger has no failure destination: records it gives up on would leave "
                "no trace; run deploy"
            )
        else:
            _destination_status(clients, destination, status)
        if status.stream.get("arn") and mapping.get("EventSourceArn") != status.stream["arn"]:
            status.problems.append("the trigger reads an old stream of the table: run deploy")


def _backup_status(
    clients: Clients, bucket: str, prefix: str, table: str, status: TableStatus
) -> None:
    layout = TableLayout.of(prefix, table)
    count, token = 0, None
    try:
        while count < OBJECT_COUNT_LIMIT:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": layout.items_prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = clients.s3.list_objects_v2(**kwargs)
            count += page.get("KeyCount", 0)
            token = page.get("NextContinuationToken")
            if not token:
                break
    except ClientError as error:
        status.backup = {
            "folder": f"s3://{bucket}/{layout.items_prefix}",
            "error": describe_error(error),
        }
        return
    status.backup = {
        "folder": f"s3://{bucket}/{layout.items_prefix}",
        "items": count,
        "at_least": bool(token),
    }


def _destination_status(clients: Clients, destination: str, status: TableStatus) -> None:
    """Anything in the failure destination is a range of records the trigger gave up on."""
    service, name = arn_service(destination), arn_resource(destination)
    waiting = None
    try:
        if service == "sqs" and clients.sqs is not None:
            url = clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes = clients.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            waiting = sum(int(value) for value in attributes.values())
        elif service == "s3":
            listed = clients.s3.list_objects_v2(Bucket=destination.split(":::", 1)[1], MaxKeys=1)
            waiting = listed.get("KeyCount", 0)
    except ClientError as error:
        status.problems.append(
            f"cannot read the failure destination {destination}: {describe_error(error)}"
        )
        return
    status.failure_destination = {"arn": destination, "waiting": waiting}
    if waiting:
        status.problems.append(
            f"the trigger gave up on records ({waiting} reports in {destination}): run "
            f"dynamo-backups replay {status.table} while the stream still holds them"
        )


def _alarm_status(cloudwatch: Any, names: TableResources, status: TableStatus) -> None:
    try:
        alarms = cloudwatch.describe_alarms(AlarmNames=list(names.alarms))["MetricAlarms"]
    except ClientError as error:
        status.problems.append(f"cannot read the alarms: {describe_error(error)}")
        return
    for alarm in alarms:
        status.alarms[alarm["AlarmName"]] = alarm["StateValue"]
        if alarm["StateValue"] == "ALARM":
            status.problems.append(
                f"alarm {alarm['AlarmName']} is in ALARM: {alarm.get('StateReason', '')}".strip()
            )
    if not alarms:
        status.problems.append("no alarms watch this backup: run deploy")


def _iterator_age(cloudwatch: Any, function: str) -> float | None:
    """The largest IteratorAge of the last 15 minutes, where CloudWatch has it."""
    now = datetime.now(UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda",
            MetricName="IteratorAge",
            Dimensions=[{"Name": "FunctionName", "Value": function}],
            StartTime=now - timedelta(minutes=15),
            EndTime=now,
            Period=300,
            Statistics=["Maximum"],
        )["Datapoints"]
    except ClientError:
        return None
    return max((point["Maximum"] for point in points), default=None)


def triggers_writing_to(lambda_client: Any, stream_arn: str, bucket: str, prefix: str) -> list[str]:
    """The Lambda functions a trigger feeds from this stream that back it up into the same
    bucket and prefix: a second writer there would interleave versions."""
    found = []
    mappings = lambda_client.list_event_source_mappings(EventSourceArn=stream_arn)
    for mapping in mappings.get("EventSourceMappings", []):
        if mapping.get("State") in ("Disabled", "Deleting"):
            continue
        function = mapping["FunctionArn"]
        config = lambda_client.get_function_configuration(FunctionName=function)
        variables = (config.get("Environment") or {}).get("Variables", {})
        if variables.get("BACKUP_BUCKET") == bucket and (
            variables.get("BACKUP_PREFIX", "").strip("/") == prefix.strip("/")
        ):
            found.append(function.rsplit(":", 1)[-1])
    return found


# --- teardown --------------------------------------------------------------------------------


def teardown(
    clients: Clients,
    tables: list[str],
    bucket: str | None,
    prefix: str,
    delete_bucket: bool,
    dry_run: bool,
) -> list[Step]:
    """Remove what deploy created for ``tables`` (only resources tagged as the tool's).
    Streams, log groups and the bucket stay, the bucket unless ``delete_bucket``."""
    steps: list[Step] = []

    def step(resource: str, outcome: str, detail: str = "") -> None:
        if dry_run and outcome == "deleted":
            outcome = "would delete"
        steps.append(Step(resource, outcome, detail))

    def act(call: Callable[..., Any], **kwargs: Any) -> None:
        if not dry_run:
            call(**kwargs)

    account = clients.sts.get_caller_identity()
    partition = account["Arn"].split(":")[1]
    policy_base = f"arn:{partition}:iam::{account['Account']}:policy/"
    for table in tables:
        for replica in (False, True):
            names = TableResources.of(table, replica=replica)
            first = len(steps)
            _remove_function(clients, names, step, act)
            _remove_alarms(clients, names, step, act)
            _remove_failure_queue(clients, names, step, act)
            _remove_role(clients, names, step, act)
            for policy in (names.stream_policy, names.logs_policy, names.write_policy):
                _remove_policy(clients, policy_base + policy, step, act)
            if replica and all(entry.outcome == "absent" for entry in steps[first:]):
                del steps[first:]  # no replication was deployed for this table
                continue
            step(
                f"log group {names.log_group}",
                "kept",
                "delete it when its logs are no longer needed",
            )
        step(f"stream of table {table}", "kept", "other readers may use it")
    _remove_dashboard_rows(clients, set(tables), step, act)
    if bucket is not None:
        _remove_policy(
            clients,
            policy_base + write_policy_name(bucket, prefix),
            step,
            act,
            only_unattached=True,
            dry_run=dry_run,
            roles_leaving=len(tables),
        )
        if delete_bucket:
            _empty_and_delete_bucket(clients.s3, bucket, step, act)
        else:
            step(f"bucket {bucket}", "kept", "with every backup in it")
    return steps


def _managed(tags: Any) -> bool:
    if isinstance(tags, dict):
        return tags.get(MANAGED_BY_TAG[0]) == MANAGED_BY_TAG[1]
    return any(
        tag.get("Key") == MANAGED_BY_TAG[0] and tag.get("Value") == MANAGED_BY_TAG[1]
        for tag in tags or []
    )


def _remove_function(clients: Clients, names: TableResources, step: Any, act: Any) -> None:
    try:
        function = clients.lambda_.get_function(FunctionName=names.function)
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        step(f"Lambda function {names.function}", "absent")
        return
    if not _managed(function.get("Tags") or {}):
        step(f"Lambda function {names.function}", "kept", "not created by dynamo-backups")
        return
    for mapping in clients.lambda_.list_event_source_mappings(FunctionName=names.function)[
        "EventSourceMappings"
    ]:
        act(clients.lambda_.delete_event_source_mapping, UUID=mapping["UUID"])
        step(f"trigger {mapping['UUID']}", "deleted", mapping.get("EventSourceArn", ""))
    act(clients.lambda_.delete_function, FunctionName=names.function)
    step(f"Lambda function {names.function}", "deleted")


def _remove_alarms(clients: Clients, names: TableResources, step: Any, act: Any) -> None:
    if clients.cloudwatch is None:
        return
    found = clients.cloudwatch.describe_alarms(AlarmNames=list(names.alarms))["MetricAlarms"]
    if found:
        act(clients.cloudwatch.delete_alarms, AlarmNames=[a["AlarmName"] for a in found])
    for alarm in found:
        step(f"alarm {alarm['AlarmName']}", "deleted")


def _remove_failure_queue(clients: Clients, names: TableResources, step: Any, act: Any) -> None:
    """The failure queue goes only when empty: its messages are the sole record of what the
    trigger gave up on."""
    if clients.sqs is None:
        return
    url = queue_url(clients.sqs, names.failure_queue)
    if url is None:
        return
    attributes = clients.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    waiting = sum(int(value) for value in attributes.values())
    resource = f"SQS queue {names.failure_queue}"
    if waiting:
        step(
            resource,
            "kept",
            f"it holds {waiting} reports of records given up on: replay them, then delete it",
        )
        return
    act(clients.sqs.delete_queue, QueueUrl=url)
    step(resource, "deleted", "it was empty")


def _remove_dashboard_rows(clients: Clients, tables: set[str], step: Any, act: Any) -> None:
    """Take these tables' rows off every dynamo-backups dashboard; delete one left empty."""
    if clients.cloudwatch is None:
        return
    rows = tables | {row_title(table, "replica") for table in tables}
    listed = clients.cloudwatch.list_dashboards(DashboardNamePrefix=PREFIX + "-")
    for entry in listed.get("DashboardEntries", []):
        name = entry["DashboardName"]
        body = json.loads(clients.cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
        kept = without_tables(body, rows)
        if kept == merge_dashboard(body, {}):
            continue
        if kept["widgets"]:
            act(
                clients.cloudwatch.put_dashboard, DashboardName=name, DashboardBody=json.dumps(kept)
            )
            step(f"dashboard {name}", "updated", "rows of these tables removed")
        else:
            act(clients.cloudwatch.delete_dashboards, DashboardNames=[name])
            step(f"dashboard {name}", "deleted")


def _remove_role(clients: Clients, names: TableResources, step: Any, act: Any) -> None:
    iam = clients.iam
    try:
        role = iam.get_role(RoleName=names.role)["Role"]
    except ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        step(f"IAM role {names.role}", "absent")
        return
    if not _managed(iam.list_role_tags(RoleName=names.role).get("Tags", [])):
        step(f"IAM role {names.role}", "kept", "not created by dynamo-backups")
        return
    for attached in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]:
        act(iam.detach_role_policy, RoleName=names.role, PolicyArn=attached["PolicyArn"])
    act(iam.delete_role, RoleName=names.role)
    step(f"IAM role {names.role}", "deleted")


def _remove_policy(
    clients: Clients,
    arn: str,
    step: Any,
    act: Any,
    only_unattached: bool = False,
    dry_run: bool = False,
    roles_leaving: int = 0,
) -> None:
    iam = clients.iam
    name = arn.rsplit("/", 1)[1]
    try:
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
    except ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        step(f"IAM policy {name}", "absent")
        return
    if not _managed(iam.list_policy_tags(PolicyArn=arn).get("Tags", [])):
        step(f"IAM policy {name}", "kept", "not created by dynamo-backups")
        return
    attached = policy.get("AttachmentCount", 0) - (roles_leaving if dry_run else 0)
    if only_unattached and attached > 0:
        step(f"IAM policy {name}", "kept", f"still attached to {attached} roles of other tables")
        return
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            act(iam.delete_policy_version, PolicyArn=arn, VersionId=version["VersionId"])
    act(iam.delete_policy, PolicyArn=arn)
    step(f"IAM policy {name}", "deleted")


def _empty_and_delete_bucket(s3: Any, bucket: str, step: Any, act: Any) -> None:
    removed = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        doomed = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            act(s3.delete_objects, Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
            removed += len(doomed)
    act(s3.delete_bucket, Bucket=bucket)
    step(f"bucket {bucket}", "deleted", f"{removed:,} object versions and delete markers with it")


# --- test-function ---------------------------------------------------------------------------


@dataclass
class FunctionTest:
    function: str
    status_code: int
    function_error: str | None
    response: Any
    folder: str | None
    versions_found: int
    delete_markers_found: int

    @property
    def passed(self) -> bool:
        return (
            self.function_error is None
            and self.versions_found >= 2
            and self.delete_markers_found >= 1
        )


def run_function_test(clients: Clients, table: str) -> FunctionTest:
    """The checklist's "Test function": invoke the deployed function with the console's
    "DynamoDB Update" sample, then look for its objects in the bucket."""
    names = TableResources.of(table)
    config = clients.lambda_.get_function_configuration(FunctionName=names.function)
    variables = (config.get("Environment") or {}).get("Variables", {})
    answer = clients.lambda_.invoke(
        FunctionName=names.function,
        InvocationType="RequestResponse",
        Payload=json.dumps(CONSOLE_SAMPLE_CURRENT).encode("utf-8"),
    )
    raw = answer["Payload"].read()
    try:
        response: Any = json.loads(raw)
    except ValueError:
        response = raw.decode("utf-8", "replace")
    folder, versions, markers = None, 0, 0
    bucket = variables.get("BACKUP_BUCKET")
    if bucket and not answer.get("FunctionError"):
        layout = TableLayout.of(
            variables.get("BACKUP_PREFIX", ""),
            SAMPLE_TABLE,
            variables.get("BACKUP_KEY_HASH") or "md5",
        )
        object_key = layout.item_object_key(SAMPLE_KEY)
        folder = f"s3://{bucket}/{layout.items_prefix}"
        listed = clients.s3.list_object_versions(Bucket=bucket, Prefix=object_key)
        versions = sum(1 for entry in listed.get("Versions", []) if entry["Key"] == object_key)
        markers = sum(1 for entry in listed.get("DeleteMarkers", []) if entry["Key"] == object_key)
    return FunctionTest(
        names.function,
        answer.get("StatusCode", 0),
        answer.get("FunctionError"),
        response,
        folder,
        versions,
        markers,
    )
