"""What a deploy is given and reports (pure): its options, the clients it works with, and one
step per resource (created, updated, unchanged, or what it would do on a dry run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo_backups.aws.errors import ACCESS_DENIED_CODES, ClientError, describe_error, error_code
from dynamo_backups.core.retention import RetentionPolicy, check_policy
from dynamo_backups.installer.monitoring import (
    MAXIMUM_RECORD_AGE_SECONDS,
    MAXIMUM_RETRY_ATTEMPTS,
)
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
)


class DeployError(RuntimeError):
    """Deploy cannot go on; the message says what to fix. ``bad_input``: what was asked for
    is refused as given (a table that does not exist, a folder of another table), exit 2."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def retention_policy(options: DeployOptions) -> RetentionPolicy:
    """The journal folders' retention policy from the options (defaults where not given),
    checked: one that would expire what compaction needs is a ``RetentionPolicyError``."""
    default = RetentionPolicy()
    monthly = options.keep_monthly_bases_days
    return check_policy(
        RetentionPolicy(
            changes_days=options.keep_changes_days or default.changes_days,
            daily_days=options.keep_daily_bases_days or default.daily_days,
            weekly_days=options.keep_weekly_bases_days or default.weekly_days,
            monthly_days=default.monthly_days if monthly is None else (monthly or None),
            compact_every_hours=options.compact_every or default.compact_every_hours,
        )
    )


def retention_given(options: DeployOptions) -> list[str]:
    """The retention options given (they apply to journal folders only)."""
    names = (
        ("--keep-changes-days", options.keep_changes_days),
        ("--keep-daily-bases-days", options.keep_daily_bases_days),
        ("--keep-weekly-bases-days", options.keep_weekly_bases_days),
        ("--keep-monthly-bases-days", options.keep_monthly_bases_days),
        ("--compact-every", options.compact_every),
    )
    return [name for name, value in names if value is not None]


@dataclass(frozen=True)
class DeployOptions:
    bucket: str | None  # None: replication only
    prefix: str
    tables: tuple[str, ...]
    replica_table: str | None = None
    replica_region: str | None = None
    replica_role_arn: str | None = None
    create_bucket: bool = False
    enable_versioning: bool = False
    kms_key: str | None = None
    protect: bool = False
    admin_roles: tuple[str, ...] = ()
    retain_noncurrent_days: int | None = None
    batch_size: int | None = None  # None: the layout's (100 items, 1,000 journal)
    batching_window: int | None = None  # None: the layout's (none items, 60 s journal)
    folder_layout: str | None = None  # --layout; None: each folder's recorded one
    # A journal folder's retention (core/retention; None: the documented default).
    keep_changes_days: int | None = None
    keep_daily_bases_days: int | None = None
    keep_weekly_bases_days: int | None = None
    keep_monthly_bases_days: int | None = None  # 0: no monthly class
    compact_every: int | None = None  # hours
    maximum_retry_attempts: int = MAXIMUM_RETRY_ATTEMPTS
    maximum_record_age: int = MAXIMUM_RECORD_AGE_SECONDS
    on_failure: str | None = None  # SQS, SNS or S3 ARN; default: a queue per function
    alarm_topic: str | None = None  # SNS topic the alarms notify
    memory: int = 512
    timeout: int = 120
    architecture: str = "arm64"
    log_retention_days: int = 90
    key_hash: str = "md5"
    dry_run: bool = False


@dataclass
class Step:
    resource: str
    outcome: str  # created, updated, unchanged (or "would create", "would update"), warning
    detail: str = ""
    document: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value not in (None, "")}


@dataclass
class Clients:
    s3: Any
    iam: Any
    lambda_: Any
    dynamodb: Any
    logs: Any
    sts: Any
    replica_dynamodb: Any = None  # a client in the replica table's region, when it differs
    sqs: Any = None
    cloudwatch: Any = None
    events: Any = None  # EventBridge: the journal folders' compaction schedule


@dataclass
class Environment:
    account: str
    partition: str
    region: str


def resource_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"Key": key, "Value": value}
        for key, value in sorted({**tags, MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1]}.items())
    ]


def describe_failure(error: ClientError, what: str) -> str:
    """An AWS refusal, with the hint an operator needs."""
    code = error_code(error)
    hint = ""
    if code in ACCESS_DENIED_CODES:
        hint = " (see 'Permissions for deploy' in the README)"
    return f"{what}: {describe_error(error)}{hint}"
