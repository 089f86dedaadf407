"""The functions deploy sets up for a table (pure): the backup function, the replication
function, or both, each with its role's policies. Shared by deploy and the template."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.backup.layouts import LAYOUT_JOURNAL
from dynamo_backups.core.journal import journal_prefix
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.retention import RetentionPolicy
from dynamo_backups.installer import policies
from dynamo_backups.installer.monitoring import trigger_settings
from dynamo_backups.installer.naming import CompactionResources, TableResources
from dynamo_backups.installer.plan import DeployError
from dynamo_backups.jobs.compact import RETENTION_NAME
from dynamo_backups.jobs.compact_lambda import COMPACT_HANDLER

BACKUP_HANDLER = "dynamo_backups.handler.backup"
REPLICA_HANDLER = "dynamo_backups.handler.replicate"

# The trigger of each layout (docs/journal.md, "Trigger settings and RPO"): the item layout
# writes each change as it comes; the journal layout writes an object per batch, so its
# batches are larger and Lambda gathers records for up to a window (the RPO) to fill them:
# DynamoDB's largest batch, which Lambda trims to its 6 MB invocation payload, so a busy
# shard pays one PUT per window or per 6 MB, not per 1,000 changes (docs/scale.md).
ITEM_BATCH_SIZE = 100
JOURNAL_BATCH_SIZE = 10_000
JOURNAL_BATCHING_WINDOW = 60  # seconds
MAX_BATCHING_WINDOW = 300  # Lambda's MaximumBatchingWindowInSeconds: 0 to 300

# The scheduled compaction of a journal folder (docs/journal.md, "Compaction, scheduled"):
# invoked every hour, it compacts when the newest base is --compact-every hours old (less
# 30 minutes) and otherwise returns at once; an unfinished run goes on at the next hour.
COMPACT_SCHEDULE = "rate(1 hour)"
COMPACT_TIMEOUT = 900  # Lambda's longest: the handler stops starting units 120 s before
COMPACT_MEMORY = 1024  # a partition's items are folded in memory
COMPACT_CONCURRENCY = 1  # one invocation at a time (the run lease would refuse a second)
COMPACT_PARTITIONS = 16


@dataclass(frozen=True)
class FunctionSpec:
    table: str
    kind: str  # "backup" or "replica"
    names: TableResources
    handler: str
    environment: dict[str, str]
    description: str
    # (policy name, document) of the role, beyond the shared S3 write policy
    policies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    uses_write_policy: bool = False
    destination_arn: str = ""  # where the trigger reports records it gives up on
    creates_queue: bool = False  # the destination is the function's own failure queue
    layout: str | None = None  # BACKUP_LAYOUT (None: not set, the item layout's old install)
    batch_size: int = ITEM_BATCH_SIZE
    batching_window: int | None = None  # MaximumBatchingWindowInSeconds (None: not set)

    def trigger(self, retries: int, record_age: int) -> dict[str, Any]:
        """The settings of this function's trigger (``monitoring.trigger_settings``)."""
        return trigger_settings(
            self.batch_size, retries, record_age, self.destination_arn, self.batching_window
        )


@dataclass(frozen=True)
class CompactionSpec:
    """One journal table's compaction function, its role's policies and its schedule."""

    table: str
    names: CompactionResources
    environment: dict[str, str]
    description: str
    policies: list[tuple[str, dict[str, Any]]]
    handler: str = COMPACT_HANDLER
    memory: int = COMPACT_MEMORY
    timeout: int = COMPACT_TIMEOUT
    concurrency: int = COMPACT_CONCURRENCY
    schedule: str = COMPACT_SCHEDULE


def compaction_specs(
    options: Any,
    partition: str,
    region: str,
    account: str,
    tables: list[str],
    retention: RetentionPolicy,
    kms_key: str | None = None,
) -> list[CompactionSpec]:
    """The compaction function of each journal table in ``tables`` (a DeployOptions'
    bucket, prefix and key hash; ``retention``: the folders' policy, whose compaction
    interval the function is told)."""
    specs = []
    for table in tables:
        names = CompactionResources.of(table)
        folder = TableLayout.of(options.prefix, table, options.key_hash)
        access = policies.compact_policy(
            partition,
            options.bucket,
            folder.items_prefix,
            folder.meta_prefix,
            (
                folder.manifest_key,
                folder.table_description_key,
                folder.meta_prefix + RETENTION_NAME,
            ),
            kms_key if kms_key is not None else options.kms_key,
        )
        logs = policies.logs_policy(partition, region, account, names.log_group)
        specs.append(
            CompactionSpec(
                table=table,
                names=names,
                environment={
                    "BACKUP_BUCKET": options.bucket,
                    "BACKUP_PREFIX": options.prefix,
                    "BACKUP_KEY_HASH": options.key_hash,
                    "COMPACT_TABLE": table,
                    "COMPACT_EVERY_HOURS": str(retention.compact_every_hours),
                    "COMPACT_PARTITIONS": str(COMPACT_PARTITIONS),
                },
                description=f"dynamo-backups: compacts the journal of table {table}",
                policies=[(names.access_policy, access), (names.logs_policy, logs)],
            )
        )
    return specs


def failure_destination(
    options: Any, names: TableResources, partition: str, region: str, account: str
) -> tuple[str, bool]:
    """The failure destination of one function: ``--on-failure``, else its own queue."""
    if options.on_failure:
        return options.on_failure, False
    return f"arn:{partition}:sqs:{region}:{account}:{names.failure_queue}", True


def backup_trigger(options: Any, layout: str | None) -> tuple[int, int | None]:
    """The batch size and batching window of a backup function writing ``layout`` (None: the
    item layout, installed as before the journal layout): ``--batch-size`` and
    ``--batching-window`` when given, else the layout's. A window is refused for the item
    layout, whose point is that each change is in S3 within seconds."""
    journal = layout == LAYOUT_JOURNAL
    window = options.batching_window
    if window is not None and not journal:
        raise DeployError(
            "--batching-window applies to the journal layout (an object per batch); the "
            "item layout writes each change as it comes: drop it, or give --layout journal"
        )
    if window is not None and not 0 <= window <= MAX_BATCHING_WINDOW:
        raise DeployError(f"--batching-window {window}: Lambda takes 0 to 300 seconds")
    if journal and window is None:
        window = JOURNAL_BATCHING_WINDOW
    default = JOURNAL_BATCH_SIZE if journal else ITEM_BATCH_SIZE
    return options.batch_size or default, window


def function_specs(
    options: Any,
    partition: str,
    region: str,
    account: str,
    layouts: Mapping[str, str | None] | None = None,
    kms_key: str | None = None,
) -> list[FunctionSpec]:
    """What to deploy for each table of ``options`` (a DeployOptions). ``layouts``: the
    layout each table's backup function is told (deploy's reading of each folder; default
    ``--layout``); ``kms_key``: the bucket's KMS key (default ``--kms-key``)."""
    specs: list[FunctionSpec] = []
    for table in options.tables:
        streams = policies.table_streams_arn(partition, region, account, table)
        if options.bucket:
            layout = (layouts or {}).get(table, options.folder_layout)
            names = TableResources.of(table)
            destination, own_queue = failure_destination(options, names, partition, region, account)
            batch_size, window = backup_trigger(options, layout)
            extra = _layout_reads(options, table, layout, names, partition, kms_key)
            specs.append(
                FunctionSpec(
                    table=table,
                    kind="backup",
                    names=names,
                    handler=BACKUP_HANDLER,
                    environment={
                        "BACKUP_BUCKET": options.bucket,
                        "BACKUP_PREFIX": options.prefix,
                        "BACKUP_KEY_HASH": options.key_hash,
                        **({"BACKUP_LAYOUT": layout} if layout else {}),
                    },
                    description=f"dynamo-backups: backs up table {table}",
                    policies=[
                        *_common(names, streams, destination, partition, region, account),
                        *extra,
                    ],
                    uses_write_policy=True,
                    destination_arn=destination,
                    creates_queue=own_queue,
                    layout=layout,
                    batch_size=batch_size,
                    batching_window=window,
                )
            )
        if options.replica_table:
            names = TableResources.of(table, replica=True)
            destination, own_queue = failure_destination(options, names, partition, region, account)
            environment = {"REPLICA_TABLE": options.replica_table}
            if options.replica_region:
                environment["REPLICA_REGION"] = options.replica_region
            if options.replica_role_arn:
                environment["REPLICA_ROLE_ARN"] = options.replica_role_arn
            replica_arn = policies.table_arn(
                partition, options.replica_region or region, account, options.replica_table
            )
            specs.append(
                FunctionSpec(
                    batch_size=options.batch_size or ITEM_BATCH_SIZE,
                    table=table,
                    kind="replica",
                    names=names,
                    handler=REPLICA_HANDLER,
                    environment=environment,
                    description=(
                        f"dynamo-backups: replicates table {table} into {options.replica_table}"
                    ),
                    destination_arn=destination,
                    creates_queue=own_queue,
                    policies=[
                        *_common(names, streams, destination, partition, region, account),
                        (
                            names.write_policy,
                            policies.replica_write_policy(replica_arn, options.replica_role_arn),
                        ),
                    ],
                )
            )
    return specs


def _layout_reads(
    options: Any,
    table: str,
    layout: str | None,
    names: TableResources,
    partition: str,
    kms_key: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    """The read policy of a function told its layout (none for the item layout installed
    as before: its role reads nothing, as it never did)."""
    if layout is None:
        return []
    folder = TableLayout.of(options.prefix, table, options.key_hash)
    journal = journal_prefix(folder.items_prefix) if layout == LAYOUT_JOURNAL else None
    document = policies.folder_read_policy(
        partition,
        options.bucket,
        folder.manifest_key,
        journal,
        kms_key if kms_key is not None else options.kms_key,
    )
    return [(names.read_policy, document)]


def _common(
    names: TableResources,
    streams: str,
    destination_arn: str | None,
    partition: str,
    region: str,
    account: str,
) -> list[tuple[str, dict[str, Any]]]:
    return [
        (names.stream_policy, policies.stream_policy(streams, destination_arn)),
        (names.logs_policy, policies.logs_policy(partition, region, account, names.log_group)),
    ]
