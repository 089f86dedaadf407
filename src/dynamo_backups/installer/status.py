"""status: how each table's backup is doing, read from what deploy set up: the stream, the
functions and their triggers (last result, retry policy, failure destination), the alarms,
the reports waiting in the failure destination, the lag and the backup folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.description import load_description, other_table
from dynamo_backups.backup.journal_store import newest_base
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL
from dynamo_backups.core.journal import journal_prefix
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.installer.monitoring import (
    LAG_ALARM_MINUTES,
)
from dynamo_backups.installer.naming import (
    CompactionResources,
    TableResources,
)
from dynamo_backups.installer.plan import Clients
from dynamo_backups.installer.policies import arn_resource, arn_service

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
    compaction: dict[str, Any] = field(default_factory=dict)  # a journal folder's schedule

    def to_dict(self) -> dict[str, Any]:
        shown = dict(self.__dict__)
        if not self.compaction:
            del shown["compaction"]  # an item folder's report is as it always was
        return shown


def table_status(clients: Clients, cloudwatch: Any, table: str) -> TableStatus:
    status = TableStatus(table)
    described = _stream_status(clients, status)
    found = False
    for replica in (False, True):
        names = TableResources.of(table, replica=replica)
        config = _function_status(clients, names, status, replica)
        if config is None:
            continue
        found = True
        variables = (config.get("Environment") or {}).get("Variables", {})
        replaced = _other_table(clients, variables, described)
        _trigger_status(clients, names, status, table_replaced=replaced is not None)
        if replaced is not None:
            status.problems.append(replaced)
        if variables.get("BACKUP_BUCKET"):
            _backup_status(
                clients,
                variables["BACKUP_BUCKET"],
                variables.get("BACKUP_PREFIX", ""),
                table,
                status,
                variables.get("BACKUP_LAYOUT"),
            )
            if variables.get("BACKUP_LAYOUT") == LAYOUT_JOURNAL:
                _compaction_status(clients, cloudwatch, variables, table, status)
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


def _stream_status(clients: Clients, status: TableStatus) -> dict[str, Any] | None:
    """The table's stream, into ``status``; the table's description (None: no table)."""
    try:
        described: dict[str, Any] = clients.dynamodb.describe_table(TableName=status.table)["Table"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        status.problems.append(f"table {status.table} does not exist")
        return None
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
    return described


def _other_table(
    clients: Clients, variables: dict[str, str], described: dict[str, Any] | None
) -> str | None:
    """What to do when the function's folder backs up another table of this name (one
    deleted since, or of another region), which deploy refuses to write into; else None."""
    bucket = variables.get("BACKUP_BUCKET")
    if not bucket or described is None:
        return None
    layout = TableLayout.of(variables.get("BACKUP_PREFIX", ""), str(described["TableName"]))
    try:
        saved = (load_description(clients.s3, bucket, layout) or {}).get("table") or {}
    except ClientError:
        return None  # the folder's own status (the backup's line) says what is wrong
    what = other_table(saved, described)
    if what is None:
        return None
    return (
        f"s3://{bucket}/{layout.items_prefix} {what}; deploy refuses to write this table "
        "into it: deploy with another --prefix (the function moves there, and the folder "
        "keeps the other table's history)"
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


def _trigger_status(
    clients: Clients, names: TableResources, status: TableStatus, table_replaced: bool = False
) -> None:
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
        if mapping.get("MaximumBatchingWindowInSeconds"):  # the journal layout's
            status.triggers[-1]["MaximumBatchingWindowInSeconds"] = mapping[
                "MaximumBatchingWindowInSeconds"
            ]
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
            status.problems.append(
                "the trigger reads the stream of the table deleted since"
                if table_replaced
                else "the trigger reads an old stream of the table: run deploy"
            )


def _backup_status(
    clients: Clients,
    bucket: str,
    prefix: str,
    table: str,
    status: TableStatus,
    folder_layout: str | None = None,
) -> None:
    """How many objects the backup holds: items, or for a function writing the journal
    layout (``BACKUP_LAYOUT``), the journal's objects (a batch each)."""
    layout = TableLayout.of(prefix, table)
    journal = folder_layout == LAYOUT_JOURNAL
    folder = journal_prefix(layout.items_prefix) if journal else layout.items_prefix
    count, token = 0, None
    try:
        while count < OBJECT_COUNT_LIMIT:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": folder}
            if token:
                kwargs["ContinuationToken"] = token
            page = clients.s3.list_objects_v2(**kwargs)
            count += page.get("KeyCount", 0)
            token = page.get("NextContinuationToken")
            if not token:
                break
    except ClientError as error:
        status.backup = {"folder": f"s3://{bucket}/{folder}", "error": describe_error(error)}
        return
    counted = "journal_objects" if journal else "items"
    status.backup = {"folder": f"s3://{bucket}/{folder}", counted: count, "at_least": bool(token)}


def _compaction_status(
    clients: Clients, cloudwatch: Any, variables: dict[str, str], table: str, status: TableStatus
) -> None:
    """A journal folder's scheduled compaction: its function, its rule, and the newest
    complete base (moment, retention class, items), with a problem where the schedule is
    missing or off, or the newest base is two compaction intervals late."""
    names = CompactionResources.of(table)
    shown: dict[str, Any] = {"function": names.function}
    status.compaction = shown
    try:
        config = clients.lambda_.get_function(FunctionName=names.function)["Configuration"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        status.problems.append(
            f"no compaction function {names.function}: the journal is never compacted; run deploy"
        )
        return
    compaction_variables = (config.get("Environment") or {}).get("Variables", {})
    every = int(compaction_variables.get("COMPACT_EVERY_HOURS") or 24)
    shown["every_hours"] = every
    _schedule_status(clients, names, shown, status)
    _compaction_alarm_status(cloudwatch, names, shown, status)
    bucket, prefix = variables["BACKUP_BUCKET"], variables.get("BACKUP_PREFIX", "")
    folder = TableLayout.of(prefix, table, variables.get("BACKUP_KEY_HASH") or "md5")
    now = datetime.now(UTC)
    try:
        # An hour ahead of this host's clock: a base S3 dated just now is not passed over.
        base = newest_base(
            clients.s3,
            BotocoreObjects(clients.s3, bucket),
            folder.items_prefix,
            now + timedelta(hours=1),
        )
    except ClientError as error:
        status.problems.append(f"cannot read the bases: {describe_error(error)}")
        return
    if base is None:
        shown["newest_base"] = None
        return
    shown["newest_base"] = {
        "id": base.id,
        "moment": base.moment.isoformat(),
        "retention": base.retention,
        "items": base.item_count,
    }
    age = now - base.moment
    if age > timedelta(hours=2 * every + 1):
        status.problems.append(
            f"the newest base ({base.id}) is {age.total_seconds() / 3600:,.0f} hours old, "
            f"with a compaction due every {every}: see the log group {names.log_group}"
        )


def _compaction_alarm_status(
    cloudwatch: Any, names: CompactionResources, shown: dict[str, Any], status: TableStatus
) -> None:
    try:
        alarms = cloudwatch.describe_alarms(AlarmNames=[names.errors_alarm])["MetricAlarms"]
    except ClientError as error:
        status.problems.append(f"cannot read the compaction's alarm: {describe_error(error)}")
        return
    for alarm in alarms:
        shown["alarm"] = alarm["StateValue"]
        if alarm["StateValue"] == "ALARM":
            status.problems.append(
                f"alarm {alarm['AlarmName']} is in ALARM: {alarm.get('StateReason', '')}".strip()
            )


def _schedule_status(
    clients: Clients, names: CompactionResources, shown: dict[str, Any], status: TableStatus
) -> None:
    if clients.events is None:
        return
    try:
        rule = clients.events.describe_rule(Name=names.rule)
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        status.problems.append(f"no EventBridge rule {names.rule}: run deploy")
        return
    shown["schedule"] = rule.get("ScheduleExpression")
    shown["rule_state"] = rule.get("State")
    if rule.get("State") != "ENABLED":
        status.problems.append(
            f"the compaction schedule {names.rule} is {rule.get('State')}: run deploy"
        )


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
