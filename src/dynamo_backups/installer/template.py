"""template: the resources deploy creates, as a CloudFormation template (YAML).

Built from the same names and policy documents as deploy. Account, region and partition are
the stack's pseudo parameters; the function code's S3 location and each table's stream ARN are
parameters (the tables themselves are not the stack's to change).
"""

from __future__ import annotations

import json
import re
from typing import Any

from dynamo_backups.backup.layouts import LAYOUT_JOURNAL
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.retention import lifecycle_rules
from dynamo_backups.installer import policies
from dynamo_backups.installer.functions import FunctionSpec, compaction_specs, function_specs
from dynamo_backups.installer.monitoring import (
    alarm_specs,
    compaction_alarm,
    failure_queue_attributes,
    merge_dashboard,
    row_title,
    table_widgets,
)
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
    TABLE_TAG,
    dashboard_name,
    write_policy_name,
)
from dynamo_backups.installer.package import RUNTIME
from dynamo_backups.installer.plan import DeployOptions, retention_policy
from dynamo_backups.installer.schedule import TARGET_ID

PARTITION, REGION, ACCOUNT = "${AWS::Partition}", "${AWS::Region}", "${AWS::AccountId}"


def logical_id(table: str) -> str:
    """A CloudFormation logical id for a table: letters and digits only, unique."""
    words = re.split(r"[^A-Za-z0-9]+", table)
    base = "".join(word[:1].upper() + word[1:] for word in words if word) or "Table"
    return base if base.isalnum() and base[0].isalpha() else f"T{base}"


def _sub(value: Any) -> Any:
    """Strings with ${AWS::...} become Fn::Sub, everywhere in a document."""
    if isinstance(value, dict):
        return {name: _sub(member) for name, member in value.items()}
    if isinstance(value, list):
        return [_sub(member) for member in value]
    if isinstance(value, str) and "${" in value:
        return {"Fn::Sub": value}
    return value


def _tags(extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    tags = {MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1], **(extra or {})}
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def build_template(options: DeployOptions) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    parameters: dict[str, Any] = {
        "CodeS3Bucket": {
            "Type": "String",
            "Description": "Bucket holding the function package (dynamo-backups "
            "package --out handler.zip, then upload it)",
        },
        "CodeS3Key": {"Type": "String", "Description": "Key of the function package"},
    }
    if options.bucket and options.create_bucket:
        resources.update(_bucket(options))
    if options.bucket:
        resources["WritePolicy"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": write_policy_name(options.bucket, options.prefix),
                "Description": "dynamo-backups: put and delete backup objects, nothing else",
                "PolicyDocument": _sub(
                    policies.write_policy(
                        PARTITION, options.bucket, options.prefix, options.kms_key
                    )
                ),
            },
        }
    used: set[str] = set()
    for table in options.tables:
        name = logical_id(table)
        while name in used:
            name += "X"
        used.add(name)
        parameters[f"{name}StreamArn"] = {
            "Type": "String",
            "AllowedPattern": "arn:[^:]+:dynamodb:.+:table/.+/stream/.+",
            "Description": f"The stream ARN of table {table} (view type NEW_AND_OLD_IMAGES)",
        }
        resources.update(_functions(options, table, name))
        resources.update(_compaction(options, table, name))
    resources.update(_dashboard(options))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": _description(options),
        "Parameters": parameters,
        "Resources": resources,
    }


def _description(options: DeployOptions) -> str:
    parts = []
    if options.bucket:
        parts.append(
            f"backups of {', '.join(options.tables)} into s3://{options.bucket}/{options.prefix}"
        )
    if options.replica_table:
        parts.append(f"replication of {options.tables[0]} into {options.replica_table}")
    return "dynamo-backups: " + "; ".join(parts)


def _bucket(options: DeployOptions) -> dict[str, Any]:
    encryption: dict[str, Any] = {"SSEAlgorithm": "AES256"}
    if options.kms_key:
        encryption = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": options.kms_key}
    properties: dict[str, Any] = {
        "BucketName": options.bucket,
        "VersioningConfiguration": {"Status": "Enabled"},
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {
                    "ServerSideEncryptionByDefault": encryption,
                    "BucketKeyEnabled": bool(options.kms_key),
                }
            ]
        },
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "Tags": _tags(),
    }
    if options.retain_noncurrent_days is not None:
        rule = policies.lifecycle_rule(options.prefix, options.retain_noncurrent_days)
        properties["LifecycleConfiguration"] = {
            "Rules": [
                {
                    "Id": rule["ID"],
                    "Status": "Enabled",
                    "Prefix": rule["Filter"]["Prefix"],
                    "NoncurrentVersionExpiration": {
                        "NoncurrentDays": options.retain_noncurrent_days
                    },
                }
            ]
        }
    if options.folder_layout == LAYOUT_JOURNAL:
        rules = properties.setdefault("LifecycleConfiguration", {"Rules": []})["Rules"]
        for table in options.tables:
            folder = TableLayout.of(options.prefix, table, options.key_hash).items_prefix
            rules.extend(
                _cfn_rule(rule) for rule in lifecycle_rules(folder, retention_policy(options))
            )
    statements = policies.bucket_statements(
        PARTITION, options.bucket, options.protect, list(options.admin_roles)
    )
    return {
        "BackupBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": properties,
        },
        "BackupBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": "BackupBucket"},
                "PolicyDocument": _sub({"Version": policies.VERSION, "Statement": statements}),
            },
        },
    }


def _cfn_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A lifecycle rule (PutBucketLifecycleConfiguration's shape) as AWS::S3::Bucket's Rule:
    a prefix and tag filter become Prefix and TagFilters; the expiration, ExpirationInDays or
    ExpiredObjectDeleteMarker."""
    selected = rule["Filter"].get("And", rule["Filter"])
    converted: dict[str, Any] = {"Id": rule["ID"], "Status": rule["Status"]}
    converted["Prefix"] = selected["Prefix"]
    if selected.get("Tags"):
        converted["TagFilters"] = list(selected["Tags"])
    expiration = rule.get("Expiration", {})
    if "Days" in expiration:
        converted["ExpirationInDays"] = expiration["Days"]
    if expiration.get("ExpiredObjectDeleteMarker"):
        converted["ExpiredObjectDeleteMarker"] = True
    if "NoncurrentVersionExpiration" in rule:
        converted["NoncurrentVersionExpiration"] = dict(rule["NoncurrentVersionExpiration"])
    return converted


def _functions(options: DeployOptions, table: str, name: str) -> dict[str, Any]:
    stream = {"Ref": f"{name}StreamArn"}
    resources: dict[str, Any] = {}
    for spec in function_specs(options, PARTITION, REGION, ACCOUNT):
        if spec.table != table:
            continue
        logical = name + ("Replica" if spec.kind == "replica" else "")
        settings = {
            "StartingPosition": "TRIM_HORIZON",
            **_sub(spec.trigger(options.maximum_retry_attempts, options.maximum_record_age)),
        }
        if spec.creates_queue:
            resources.update(_failure_queue(spec, logical))
        resources.update(_alarms(spec, logical, options.alarm_topic))
        policy_refs = [{"Ref": "WritePolicy"}] if spec.uses_write_policy else []
        for number, (policy_name, document) in enumerate(spec.policies):
            resources[f"{logical}Policy{number}"] = {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "ManagedPolicyName": policy_name,
                    "Description": spec.description,
                    "PolicyDocument": _sub(document),
                },
            }
            policy_refs.append({"Ref": f"{logical}Policy{number}"})
        resources[f"{logical}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": spec.names.log_group,
                "RetentionInDays": options.log_retention_days,
                "Tags": _tags(),
            },
        }
        resources[f"{logical}Role"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": spec.names.role,
                "Description": spec.description,
                "AssumeRolePolicyDocument": policies.lambda_trust_policy(),
                "ManagedPolicyArns": policy_refs,
                "Tags": _tags({TABLE_TAG: table}),
            },
        }
        resources[f"{logical}Function"] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": spec.names.function,
                "Description": spec.description,
                "Runtime": RUNTIME,
                "Handler": spec.handler,
                "Architectures": [options.architecture],
                "MemorySize": options.memory,
                "Timeout": options.timeout,
                "Role": {"Fn::GetAtt": [f"{logical}Role", "Arn"]},
                "Code": {"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}},
                "Environment": {"Variables": dict(spec.environment)},
                "LoggingConfig": {"LogGroup": {"Ref": f"{logical}LogGroup"}},
                "Tags": _tags({TABLE_TAG: table}),
            },
        }
        resources[f"{logical}Trigger"] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": stream,
                "FunctionName": {"Ref": f"{logical}Function"},
                **settings,
            },
        }
    return resources


def _compaction(options: DeployOptions, table: str, name: str) -> dict[str, Any]:
    """A journal table's scheduled compaction (deploy's ``schedule`` steps): its function,
    role, policies and log group, the hourly rule and the rule's permission to invoke it.
    Its code is the stack's package, which must hold the compaction handler: the zip of
    ``dynamo-backups package --layout journal``."""
    if not options.bucket or options.folder_layout != LAYOUT_JOURNAL:
        return {}
    (spec,) = compaction_specs(
        options, PARTITION, REGION, ACCOUNT, [table], retention_policy(options)
    )
    logical = f"{name}Compact"
    resources: dict[str, Any] = {}
    refs = []
    for number, (policy_name, document) in enumerate(spec.policies):
        resources[f"{logical}Policy{number}"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": policy_name,
                "Description": spec.description,
                "PolicyDocument": _sub(document),
            },
        }
        refs.append({"Ref": f"{logical}Policy{number}"})
    resources[f"{logical}LogGroup"] = {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "LogGroupName": spec.names.log_group,
            "RetentionInDays": options.log_retention_days,
            "Tags": _tags(),
        },
    }
    resources[f"{logical}Role"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": spec.names.role,
            "Description": spec.description,
            "AssumeRolePolicyDocument": policies.lambda_trust_policy(),
            "ManagedPolicyArns": refs,
            "Tags": _tags({TABLE_TAG: table}),
        },
    }
    resources[f"{logical}Function"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "FunctionName": spec.names.function,
            "Description": spec.description,
            "Runtime": RUNTIME,
            "Handler": spec.handler,
            "Architectures": [options.architecture],
            "MemorySize": spec.memory,
            "Timeout": spec.timeout,
            "ReservedConcurrentExecutions": spec.concurrency,
            "Role": {"Fn::GetAtt": [f"{logical}Role", "Arn"]},
            "Code": {"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}},
            "Environment": {"Variables": dict(spec.environment)},
            "LoggingConfig": {"LogGroup": {"Ref": f"{logical}LogGroup"}},
            "Tags": _tags({TABLE_TAG: table}),
        },
    }
    resources[f"{logical}Schedule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": spec.names.rule,
            "Description": f"dynamo-backups: compacts the journal of table {table}",
            "ScheduleExpression": spec.schedule,
            "State": "ENABLED",
            "Targets": [{"Id": TARGET_ID, "Arn": {"Fn::GetAtt": [f"{logical}Function", "Arn"]}}],
        },
    }
    alarm = compaction_alarm(spec.names, table)
    resources[f"{logical}Alarm0"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": _sub(alarm.request(options.alarm_topic)),
    }
    permission = policies.events_invoke_permission("")
    resources[f"{logical}Permission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "FunctionName": {"Ref": f"{logical}Function"},
            "Action": permission["Action"],
            "Principal": permission["Principal"],
            "SourceArn": {"Fn::GetAtt": [f"{logical}Schedule", "Arn"]},
        },
    }
    return resources


def _failure_queue(spec: FunctionSpec, logical: str) -> dict[str, Any]:
    role_arn = f"arn:{PARTITION}:iam::{ACCOUNT}:role/{spec.names.role}"
    attributes = failure_queue_attributes()
    return {
        f"{logical}FailureQueue": {
            "Type": "AWS::SQS::Queue",
            # It holds the only record of what the trigger gave up on: it outlives the stack.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "QueueName": spec.names.failure_queue,
                "SqsManagedSseEnabled": True,
                "MessageRetentionPeriod": int(attributes["MessageRetentionPeriod"]),
                "Tags": _tags({TABLE_TAG: spec.table}),
            },
        },
        f"{logical}FailureQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [{"Ref": f"{logical}FailureQueue"}],
                "PolicyDocument": _sub(
                    policies.failure_queue_policy(spec.destination_arn, [role_arn])
                ),
            },
        },
    }


def _alarms(spec: FunctionSpec, logical: str, topic: str | None) -> dict[str, Any]:
    resources = {}
    alarms = alarm_specs(spec.names, spec.table, spec.destination_arn, spec.kind)
    for number, alarm in enumerate(alarms):
        properties = _sub(alarm.request(topic))
        resources[f"{logical}Alarm{number}"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": properties,
        }
    return resources


def _dashboard(options: DeployOptions) -> dict[str, Any]:
    specs = function_specs(options, PARTITION, REGION, ACCOUNT)
    rows = {
        row_title(spec.table, spec.kind): table_widgets(
            spec.table, spec.kind, spec.names, REGION, spec.destination_arn
        )
        for spec in specs
    }
    body = json.dumps(merge_dashboard(None, rows), sort_keys=True)
    return {
        "Dashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": dashboard_name(options.bucket, options.prefix),
                "DashboardBody": {"Fn::Sub": body},
            },
        }
    }


# --- a small YAML writer: block style, every string double-quoted (valid YAML 1.2) -----------


def to_yaml(value: Any, indent: int = 0) -> str:
    return "".join(_yaml_lines(value, indent)) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value), ensure_ascii=False)


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        for key, member in value.items():
            if isinstance(member, dict | list) and member:
                lines.append(f"{pad}{key}:\n")
                lines.extend(_yaml_lines(member, indent + 2))
            else:
                rendered = "{}" if member == {} else "[]" if member == [] else _scalar(member)
                lines.append(f"{pad}{key}: {rendered}\n")
        return lines
    if isinstance(value, list):
        for member in value:
            if isinstance(member, dict | list) and member:
                nested = _yaml_lines(member, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_scalar(member)}\n")
        return lines
    return [pad + _scalar(value) + "\n"]
