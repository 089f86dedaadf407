"""Least-privilege policy documents (pure), shared by deploy and the template."""

from __future__ import annotations

import json
import re
from typing import Any

VERSION = "2012-10-17"
TLS_SID = "DynamoBackupsDenyInsecureTransport"
PROTECT_SID = "DynamoBackupsProtectHistory"
OUR_SIDS = (TLS_SID, PROTECT_SID)
LIFECYCLE_RULE_ID = "dynamo-backups-noncurrent-versions"
PROTECTED_ACTIONS = [
    "s3:DeleteObjectVersion",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
]


def objects_arn(partition: str, bucket: str, prefix: str) -> str:
    return (
        f"arn:{partition}:s3:::{bucket}/{prefix}/*"
        if prefix
        else f"arn:{partition}:s3:::{bucket}/*"
    )


def write_policy(
    partition: str, bucket: str, prefix: str, kms_key_arn: str | None = None
) -> dict[str, Any]:
    """Put and delete objects under the backup prefix: no listing, no reading, no deleting of
    versions (a delete only adds a delete marker in a versioned bucket)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "WriteBackupObjects",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": objects_arn(partition, bucket, prefix),
        }
    ]
    if kms_key_arn:
        statements.append(
            {
                "Sid": "EncryptWithTheBucketKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey"],
                "Resource": kms_key_arn,
            }
        )
    return {"Version": VERSION, "Statement": statements}


def folder_read_policy(
    partition: str,
    bucket: str,
    manifest_key: str,
    journal_prefix: str | None,
    kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """What a function told its layout (``BACKUP_LAYOUT``) reads of its own table's folder:
    the folder's ``layout.json`` (so it refuses a folder recorded in the other layout), and
    for the journal layout the objects under ``journal/`` (a put refused with 412 is read
    back and compared). Nothing else: no listing, no item objects, no other table."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadTheFoldersLayout",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:{partition}:s3:::{bucket}/{manifest_key}",
        }
    ]
    if journal_prefix is not None:
        statements.append(
            {
                "Sid": "ReadBackJournalObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:{partition}:s3:::{bucket}/{journal_prefix}*",
            }
        )
    if kms_key_arn:
        statements.append(
            {
                "Sid": "DecryptWithTheBucketKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": kms_key_arn,
            }
        )
    return {"Version": VERSION, "Statement": statements}


def compact_policy(
    partition: str,
    bucket: str,
    table_folder: str,
    meta_prefix: str,
    records: tuple[str, ...],
    kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """What the scheduled compaction of one journal folder reads and writes
    (``jobs/compact``, ``jobs/compact_lambda``), and nothing more: it lists the journal, the
    bases and its own runs; reads those and the table's records (``layout.json``,
    ``table.json``, ``retention.json``, its ledger and scratch files); puts a base's objects
    with their retention tag, and its ledger. No delete: compaction deletes nothing (the
    lifecycle rules expire), and no item object, no other table.

    The listing grant also decides what S3 answers for a key that is not there: 404 where
    the role may list it, else 403. Compaction reads keys that may be missing (its first
    ``run.json``, a base's ``cutoff.json`` and ``manifest.json``, ``retention.json``) and
    takes 404 as "none"; so the listable prefixes cover every key it reads, the table's
    ``records`` (layout, description, retention policy) by their exact keys."""
    journal = f"{table_folder}journal/"
    bases = f"{table_folder}bases/"
    runs = f"{meta_prefix}jobs/compact/"
    objects = f"arn:{partition}:s3:::{bucket}/"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ListTheJournalBasesAndRuns",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:{partition}:s3:::{bucket}",
            "Condition": {
                "StringLike": {"s3:prefix": [f"{journal}*", f"{bases}*", f"{runs}*", *records]}
            },
        },
        {
            "Sid": "ReadTheJournalBasesAndTableRecords",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"{objects}{journal}*", f"{objects}{bases}*", f"{objects}{meta_prefix}*"],
        },
        {
            "Sid": "WriteBasesWithTheirRetentionTag",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:PutObjectTagging"],
            "Resource": f"{objects}{bases}*",
        },
        {
            "Sid": "RecordTheCompactionRuns",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": f"{objects}{runs}*",
        },
    ]
    if kms_key_arn:
        statements.append(
            {
                "Sid": "UseTheBucketKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": kms_key_arn,
            }
        )
    return {"Version": VERSION, "Statement": statements}


def events_invoke_permission(rule_arn: str) -> dict[str, str]:
    """The function's resource policy statement (``lambda:AddPermission``) letting the
    EventBridge rule, and only it, invoke the function."""
    return {
        "Action": "lambda:InvokeFunction",
        "Principal": "events.amazonaws.com",
        "SourceArn": rule_arn,
    }


def table_streams_arn(partition: str, region: str, account: str, table: str) -> str:
    """The streams of one table: the current one and any later one (turning a stream off and on
    again gives it a new label, and the function must go on reading it)."""
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table}/stream/*"


def stream_policy(streams_arn: str, destination_arn: str | None = None) -> dict[str, Any]:
    """Read one table's streams. ListStreams has no resource-level permission in IAM, so it is
    granted on "*" (it lists stream ARNs only, never data)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadTheTablesStream",
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
            ],
            "Resource": streams_arn,
        },
        {
            "Sid": "ListStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:ListStreams"],
            "Resource": "*",
        },
    ]
    if destination_arn:
        statements.extend(destination_statements(destination_arn))
    return {"Version": VERSION, "Statement": statements}


def arn_service(arn: str) -> str:
    """The service of an ARN, also of one holding ${AWS::...} placeholders (the template)."""
    return re.sub(r"\$\{[^}]*\}", "x", arn).split(":")[2]


def arn_resource(arn: str) -> str:
    """What an ARN names after its account part (a queue's or topic's name)."""
    return re.sub(r"\$\{[^}]*\}", "x", arn).split(":", 5)[5]


def destination_statements(destination_arn: str) -> list[dict[str, Any]]:
    """What the function's role needs for Lambda to report discarded records there: send to
    the queue, publish to the topic, or put objects into the bucket."""
    service = arn_service(destination_arn)
    if service == "s3":
        return [
            {
                "Sid": "ReportRecordsThatFailed",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": f"{destination_arn}/*",
            },
            {
                "Sid": "FindTheFailureBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": destination_arn,
            },
        ]
    action = "sqs:SendMessage" if service == "sqs" else "sns:Publish"
    return [
        {
            "Sid": "ReportRecordsThatFailed",
            "Effect": "Allow",
            "Action": [action],
            "Resource": destination_arn,
        }
    ]


def failure_queue_policy(queue_arn: str, sender_role_arns: list[str]) -> dict[str, Any]:
    """The failure queue's own policy: TLS only, and no one but the functions' roles may
    send to it (reading it stays with the account's IAM policies)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "OnlyTheFunctionsSend",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": sorted(sender_role_arns)}},
            },
        ],
    }


def table_arn(partition: str, region: str, account: str, table: str) -> str:
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table}"


def replica_write_policy(replica_table_arn: str, role_arn: str | None = None) -> dict[str, Any]:
    """Write (put and delete items) into the replica table only; or, for a replica in another
    account, assume the role that may."""
    if role_arn:
        statement = {
            "Sid": "ActAsTheReplicaWriter",
            "Effect": "Allow",
            "Action": ["sts:AssumeRole"],
            "Resource": role_arn,
        }
    else:
        statement = {
            "Sid": "WriteTheReplica",
            "Effect": "Allow",
            "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
            "Resource": replica_table_arn,
        }
    return {"Version": VERSION, "Statement": [statement]}


def logs_policy(partition: str, region: str, account: str, log_group: str) -> dict[str, Any]:
    """Write to the function's own log group only (deploy creates the group)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"arn:{partition}:logs:{region}:{account}:log-group:{log_group}:*",
            }
        ],
    }


def lambda_trust_policy() -> dict[str, Any]:
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def bucket_statements(
    partition: str, bucket: str, protect: bool, admin_roles: list[str]
) -> list[dict[str, Any]]:
    """The tool's statements of the bucket policy: TLS only, and with ``protect``, no deleting
    of versions nor changing of versioning, lifecycle or policy but by the admin roles."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": TLS_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    if protect:
        statements.append(
            {
                "Sid": PROTECT_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": PROTECTED_ACTIONS,
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": sorted(admin_roles)}},
            }
        )
    return statements


def merge_bucket_policy(
    existing: dict[str, Any] | None, ours: list[dict[str, Any]]
) -> dict[str, Any]:
    """The bucket's policy with the tool's statements replaced and every other one kept."""
    kept = [
        statement
        for statement in (existing or {}).get("Statement", [])
        if statement.get("Sid") not in OUR_SIDS
    ]
    return {"Version": (existing or {}).get("Version", VERSION), "Statement": kept + ours}


def lifecycle_rule(prefix: str, days: int) -> dict[str, Any]:
    """Expire versions that are no longer current after ``days`` (point in time reaches back
    that far)."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
    }


def canonical(document: Any) -> str:
    """Policy documents compared as AWS keeps them: one-element lists equal their element."""

    def simplify(value: Any) -> Any:
        if isinstance(value, dict):
            return {name: simplify(member) for name, member in value.items()}
        if isinstance(value, list):
            simplified = [simplify(member) for member in value]
            return simplified[0] if len(simplified) == 1 else simplified
        return value

    return json.dumps(simplify(document), sort_keys=True)
