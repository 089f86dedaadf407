"""Names of what deploy creates (pure). Every name is derived from the table (or bucket and
prefix), so that a re-run, status and teardown find the same resources."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PREFIX = "dynamo-backups"
MANAGED_BY_TAG = ("managed-by", "dynamo-backups")
TABLE_TAG = "dynamo-backups:table"


def _fit(name: str, limit: int, original: str) -> str:
    """Keep [A-Za-z0-9-_]; if anything had to change or the name is too long, end it with a
    hash of the original so that two tables never share a name."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if cleaned == name and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}-{digest}"


@dataclass(frozen=True)
class TableResources:
    """The names of one table's function, role, policies and log group."""

    table: str
    function: str
    role: str
    stream_policy: str
    logs_policy: str
    write_policy: str
    read_policy: str  # the reads of its own folder a function told its layout needs
    log_group: str
    failure_queue: str  # where the trigger reports records it gave up on
    alarms: tuple[str, ...]  # lag, errors, records given up on, records failed, stopped

    @property
    def lag_alarm(self) -> str:
        return self.alarms[0]

    @property
    def errors_alarm(self) -> str:
        return self.alarms[1]

    @property
    def discarded_alarm(self) -> str:
        return self.alarms[2]

    @property
    def failed_records_alarm(self) -> str:
        return self.alarms[3]

    @property
    def stopped_alarm(self) -> str:
        return self.alarms[4]

    @classmethod
    def of(cls, table: str, replica: bool = False) -> TableResources:
        """The backup function's resources, or with ``replica`` the replication function's."""
        stem = f"{PREFIX}-replica-{table}" if replica else f"{PREFIX}-{table}"
        base = _fit(stem, 64 - len("-stream"), stem)  # room for the suffixes
        return cls(
            table=table,
            function=base,
            role=base,
            stream_policy=f"{base}-stream",
            logs_policy=f"{base}-logs",
            write_policy=f"{base}-write",
            read_policy=f"{base}-read",
            log_group=f"/aws/lambda/{base}",
            failure_queue=f"{base}-failures",
            alarms=(
                f"{base} lag",
                f"{base} errors",
                f"{base} records given up",
                f"{base} records failed",
                f"{base} stopped",
            ),
        )


@dataclass(frozen=True)
class CompactionResources:
    """The names of one journal table's scheduled compaction: its function, role, policies,
    log group and EventBridge rule (docs/journal.md, "Compaction, scheduled")."""

    table: str
    function: str
    role: str
    access_policy: str  # the folder's S3 reads and writes compaction makes
    logs_policy: str
    log_group: str
    rule: str  # the EventBridge rule that invokes the function every hour
    errors_alarm: str

    @property
    def alarms(self) -> tuple[str, ...]:
        return (self.errors_alarm,)

    @classmethod
    def of(cls, table: str) -> CompactionResources:
        stem = f"{PREFIX}-compact-{table}"
        base = _fit(stem, 64 - len("-access"), stem)  # room for the suffixes
        return cls(
            table=table,
            function=base,
            role=base,
            access_policy=f"{base}-access",
            logs_policy=f"{base}-logs",
            log_group=f"/aws/lambda/{base}",
            rule=base,
            errors_alarm=f"{base} errors",
        )


def write_policy_name(bucket: str, prefix: str) -> str:
    """The shared S3 write policy for one bucket and prefix."""
    return _fit(
        f"{PREFIX}-write-{bucket}" + (f"-{prefix}" if prefix else ""), 128, f"{bucket}/{prefix}"
    )


def dashboard_name(bucket: str | None, prefix: str) -> str:
    """One dashboard per backup folder (bucket and prefix), its tables side by side."""
    stem = f"{PREFIX}-{bucket or 'replication'}" + (f"-{prefix}" if prefix else "")
    return _fit(stem, 255, f"{bucket}/{prefix}")
