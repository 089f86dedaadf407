"""teardown: remove what deploy created for some tables (only resources tagged as the
tool's); streams, log groups, a failure queue that still holds reports, and the bucket stay.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code, raise_for_key_errors
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.installer.alerting import queue_url
from dynamo_backups.installer.monitoring import (
    merge_dashboard,
    row_title,
    without_tables,
)
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
    PREFIX,
    CompactionResources,
    TableResources,
    write_policy_name,
)
from dynamo_backups.installer.plan import Clients, Step


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
        if dry_run:  # what a real run would do, never what was done
            outcome = {"deleted": "would delete", "updated": "would update"}.get(outcome, outcome)
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
            for policy in (
                names.stream_policy,
                names.logs_policy,
                names.write_policy,
                names.read_policy,
            ):
                _remove_policy(clients, policy_base + policy, step, act)
            if replica and all(entry.outcome == "absent" for entry in steps[first:]):
                del steps[first:]  # no replication was deployed for this table
                continue
            step(
                f"log group {names.log_group}",
                "kept",
                "delete it when its logs are no longer needed",
            )
        _remove_compaction(clients, CompactionResources.of(table), policy_base, steps, step, act)
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


def _remove_function(
    clients: Clients, names: TableResources | CompactionResources, step: Any, act: Any
) -> None:
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


def _remove_compaction(
    clients: Clients,
    names: CompactionResources,
    policy_base: str,
    steps: list[Step],
    step: Any,
    act: Any,
) -> None:
    """A journal table's scheduled compaction: the rule (its target first), the function,
    its role and policies; its log group stays. Nothing is reported for a table that has
    none (an item folder's)."""
    first = len(steps)
    _remove_rule(clients, names, step, act)
    _remove_function(clients, names, step, act)
    _remove_alarms(clients, names, step, act)
    _remove_role(clients, names, step, act)
    for policy in (names.access_policy, names.logs_policy):
        _remove_policy(clients, policy_base + policy, step, act)
    if all(entry.outcome == "absent" for entry in steps[first:]):
        del steps[first:]
        return
    step(f"log group {names.log_group}", "kept", "delete it when its logs are no longer needed")


def _remove_rule(clients: Clients, names: CompactionResources, step: Any, act: Any) -> None:
    resource = f"EventBridge rule {names.rule}"
    if clients.events is None:
        return
    try:
        rule = clients.events.describe_rule(Name=names.rule)
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        step(resource, "absent")
        return
    tags = clients.events.list_tags_for_resource(ResourceARN=rule["Arn"]).get("Tags", [])
    if not _managed(tags):
        step(resource, "kept", "not created by dynamo-backups")
        return
    targets = clients.events.list_targets_by_rule(Rule=names.rule)["Targets"]
    if targets:
        act(
            clients.events.remove_targets,
            Rule=names.rule,
            Ids=[target["Id"] for target in targets],
        )
    act(clients.events.delete_rule, Name=names.rule)
    step(resource, "deleted", rule.get("ScheduleExpression", ""))


def _remove_alarms(
    clients: Clients, names: TableResources | CompactionResources, step: Any, act: Any
) -> None:
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


def _remove_role(
    clients: Clients, names: TableResources | CompactionResources, step: Any, act: Any
) -> None:
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


TEARDOWN_RETRIES = RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=10.0)


def _empty_and_delete_bucket(s3: Any, bucket: str, step: Any, act: Any) -> None:
    def delete_versions(Bucket: str, Delete: dict[str, Any]) -> None:
        # DeleteObjects answers 200 even when it deleted nothing (a locked version, a denied
        # key): each key's error is raised, not left for delete_bucket's BucketNotEmpty; a
        # busy key (SlowDown, InternalError) is sent again, alone with the others that failed.
        pending = list(Delete["Objects"])

        def attempt() -> None:
            nonlocal pending
            answer = s3.delete_objects(Bucket=Bucket, Delete={**Delete, "Objects": pending})
            failed = {(e.get("Key"), e.get("VersionId")) for e in answer.get("Errors") or []}
            pending = [
                entry
                for entry in pending
                if {(entry["Key"], entry["VersionId"]), (entry["Key"], None)} & failed
            ]
            raise_for_key_errors(answer)

        call_with_retries(attempt, TEARDOWN_RETRIES, f"DeleteObjects in bucket {Bucket}")

    removed = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        doomed = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            act(delete_versions, Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
            removed += len(doomed)
    act(s3.delete_bucket, Bucket=bucket)
    step(f"bucket {bucket}", "deleted", f"{removed:,} object versions and delete markers with it")
