"""AWS Lambda entry points for DynamoDB stream events.

``backup(event, context)`` writes each change into the versioned backup bucket, and
``replicate(event, context)`` applies it to a replica table. They need
the standard library, boto3 (which the Lambda runtime has) and obstore (a native wheel that
``dynamo-backups package`` puts in the zip for the function's architecture).

Environment:
    BACKUP_BUCKET        required: the versioned bucket
    BACKUP_PREFIX        optional: folder for all tables' backups, e.g. "Prod"
    BACKUP_KEY_HASH      optional: md5 (default) or sha256; how objects are named
    BACKUP_CONCURRENCY   optional: parallel writes per batch (default 16)
    BACKUP_MAX_ATTEMPTS  optional: attempts per write before a record is reported failed
    BACKUP_LAYOUT        optional: items or journal, the layout the function was installed for;
                         each table's folder is written in the layout its layout.json records
                         (read once per cold start), which must be this one when it is set
    DYNAMO_BACKUPS_TRANSPORT  optional: "fast" (default: object writes through obstore) or
                         "botocore" (every request through botocore)

    REPLICA_TABLE        required by replicate: the table to keep in step
    REPLICA_REGION       optional: its region (default: the function's)
    REPLICA_ROLE_ARN     optional: a role to assume for a replica in another account
    REPLICA_ENDPOINT_URL optional: another DynamoDB endpoint
    REPLICA_MAX_ATTEMPTS optional: attempts per write before a record is reported failed
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.context import AwsContext, TransportSettingError, chosen_transport
from dynamo_backups.aws.retry import RetryPolicy, deadline_clock
from dynamo_backups.backup.checkpoints import LEASE_SECONDS, write_timeouts
from dynamo_backups.backup.layouts import LAYOUTS
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.keys import DEFAULT_KEY_HASH, check_key_hash
from dynamo_backups.core.layout import normalize_prefix
from dynamo_backups.core.metrics import batch_metrics
from dynamo_backups.core.stream_records import BatchResult, records_of
from dynamo_backups.pipeline.appliers import BatchApplier, FolderAppliers
from dynamo_backups.pipeline.backup_applier import DEFAULT_CONCURRENCY
from dynamo_backups.pipeline.replica_applier import ReplicaApplier

logger = logging.getLogger("dynamo_backups.handler")

# Leave this much of the invocation's time unused, so the answer is sent before the timeout.
DEADLINE_MARGIN_SECONDS = 3.0
WRITE_ATTEMPTS = 40


class ConfigurationError(RuntimeError):
    """The function's environment is missing or has a bad setting."""


@dataclass(frozen=True)
class BackupConfig:
    """The backup function's settings, from its environment."""

    bucket: str
    prefix: str = ""
    key_hash: str = DEFAULT_KEY_HASH
    concurrency: int = DEFAULT_CONCURRENCY
    # Enough attempts to ride out minutes of a fault; the invocation's deadline cuts them short.
    max_attempts: int = WRITE_ATTEMPTS
    transport: str = "fast"
    layout: str | None = None  # BACKUP_LAYOUT: what the function was installed to write

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BackupConfig:
        bucket = environ.get("BACKUP_BUCKET", "").strip()
        if not bucket:
            raise ConfigurationError(
                "BACKUP_BUCKET is not set: set it in the function's environment to the name "
                "of the versioned backup bucket"
            )
        try:
            return cls(
                bucket=bucket,
                prefix=normalize_prefix(environ.get("BACKUP_PREFIX", "")),
                key_hash=check_key_hash(environ.get("BACKUP_KEY_HASH", "") or DEFAULT_KEY_HASH),
                concurrency=_positive_int(environ, "BACKUP_CONCURRENCY", DEFAULT_CONCURRENCY),
                max_attempts=_positive_int(environ, "BACKUP_MAX_ATTEMPTS", WRITE_ATTEMPTS),
                transport=chosen_transport(environ),
                layout=_layout_setting(environ),
            )
        except (ValueError, TransportSettingError) as error:
            raise ConfigurationError(f"bad backup setting: {error}") from None


def _layout_setting(environ: Mapping[str, str]) -> str | None:
    text = environ.get("BACKUP_LAYOUT", "").strip()
    if text and text not in LAYOUTS:
        raise ValueError(f"BACKUP_LAYOUT must be one of {', '.join(LAYOUTS)}, not {text!r}")
    return text or None


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


def lambda_context() -> AwsContext:
    """Clients for a Lambda invocation: short timeouts, since the retry policy (with the
    invocation's deadline) does the retrying; capped, as the stream consumer's writes are, to
    the write time limit (``checkpoints.write_timeouts``): a journal put S3 dates before a
    compaction's cutoff has landed by the time the compaction lists (its settle time)."""
    connect, read = write_timeouts(LEASE_SECONDS, 5.0, 30.0)
    return AwsContext(connect_timeout=connect, read_timeout=read)


def build_backup_applier(config: BackupConfig, aws: AwsContext) -> FolderAppliers:
    """The applier for ``config``: writes through the chosen transport, each table's folder
    in the layout it records (``pipeline/appliers``)."""
    s3 = aws.client("s3", pool=config.concurrency, retries=1)
    objects = aws.objects(s3, config.bucket, pool=config.concurrency)
    writer = BackupWriter(s3, config.bucket, RetryPolicy(max_attempts=config.max_attempts), objects)
    return FolderAppliers(
        writer, config.prefix, config.key_hash, config.concurrency, declared=config.layout
    )


_appliers: dict[BackupConfig, FolderAppliers] = {}


def _backup_applier() -> FolderAppliers:
    # Built at the first invocation, not at import, so a bad setting is reported as that
    # invocation's error; kept for the container's life so clients and threads are reused.
    config = BackupConfig.from_environ(os.environ)
    if config not in _appliers:
        _appliers[config] = build_backup_applier(config, lambda_context())
    return _appliers[config]


def backup(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda handler: back up a batch of DynamoDB stream records."""
    return _handle_batch("backup", _backup_applier, event, context)


def deadline_of(context: Any) -> float | None:
    """The ``deadline_clock()`` time by which the batch must stop starting new writes."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    seconds = remaining() / 1000.0
    return deadline_clock() + max(0.0, seconds - min(DEADLINE_MARGIN_SECONDS, seconds * 0.1))


def batch_summary(kind: str, result: BatchResult, started: float) -> dict[str, Any]:
    """The structured summary of one batch (never item contents)."""
    summary: dict[str, Any] = {
        "message": f"{kind} batch",
        "tables": sorted(result.tables),
        "records": result.record_count,
        "applied": dict(sorted(result.applied.items())),
        "failed": len(result.failures),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    first = result.first_failure
    if first is not None:
        summary["first_failure"] = {
            "index": first.index,
            "sequence_number": first.sequence_number,
            "retryable": first.retryable,
            "reason": first.reason,
        }
    return summary


def log_batch(kind: str, result: BatchResult, started: float) -> None:
    """One JSON line per batch: the summary and, as Embedded Metric Format, its metrics."""
    summary = {**batch_summary(kind, result, started), **batch_metrics(kind, result, _now())}
    level = logging.ERROR if result.failures else logging.INFO
    logger.log(level, json.dumps(summary, sort_keys=True))


def _now() -> datetime:
    return datetime.now(UTC)


def _ensure_log_output() -> None:
    # One bare JSON line per batch on stdout, which Lambda sends to CloudWatch Logs (the
    # runtime's own root handler would wrap it in a text prefix). A host process such as the
    # CLI configures logging itself and is left alone.
    in_lambda = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
    if not logger.handlers and (in_lambda or not logger.hasHandlers()):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


# --- replication -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaConfig:
    """The replication function's settings, from its environment."""

    table: str
    region: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = 12

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReplicaConfig:
        table = environ.get("REPLICA_TABLE", "").strip()
        if not table:
            raise ConfigurationError(
                "REPLICA_TABLE is not set: set it in the function's environment to the name of "
                "the replica table"
            )
        try:
            return cls(
                table=table,
                region=environ.get("REPLICA_REGION", "").strip() or None,
                role_arn=environ.get("REPLICA_ROLE_ARN", "").strip() or None,
                endpoint_url=environ.get("REPLICA_ENDPOINT_URL", "").strip() or None,
                max_attempts=_positive_int(environ, "REPLICA_MAX_ATTEMPTS", 12),
            )
        except ValueError as error:
            raise ConfigurationError(f"bad replica setting: {error}") from None


def build_replica_applier(config: ReplicaConfig, aws: AwsContext | None = None) -> ReplicaApplier:
    aws = aws or lambda_context()
    if config.role_arn:
        aws = aws.assume_role(config.role_arn, config.region)
    client = aws.client(
        "dynamodb", pool=16, retries=1, region=config.region, endpoint_url=config.endpoint_url
    )
    api = aws.dynamodb_api(client, libcurl=False)  # no pycurl in the function's package
    return ReplicaApplier(
        lambda request: api.call("BatchWriteItem", request),
        config.table,
        RetryPolicy(max_attempts=config.max_attempts, base_delay=0.05, max_delay=10),
    )


_replica_appliers: dict[ReplicaConfig, ReplicaApplier] = {}


def _replica_applier() -> ReplicaApplier:
    config = ReplicaConfig.from_environ(os.environ)
    if config not in _replica_appliers:
        _replica_appliers[config] = build_replica_applier(config)
    return _replica_appliers[config]


def replicate(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda handler: apply a batch of DynamoDB stream records to the replica table."""
    return _handle_batch("replicate", _replica_applier, event, context)


def _handle_batch(
    kind: str,
    applier_for_environment: Callable[[], BatchApplier | ReplicaApplier],
    event: Mapping[str, Any],
    context: Any,
) -> dict[str, Any]:
    """Apply one batch, log its metrics line and answer with the records that failed."""
    _ensure_log_output()
    started = time.monotonic()
    applier = applier_for_environment()
    result = applier.apply(records_of(event), deadline_of(context))
    log_batch(kind, result, started)
    return result.lambda_response()
