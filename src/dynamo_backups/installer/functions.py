"""The functions deploy sets up for a table (pure): the backup function, the replication
function, or both, each with its role's policies. Shared by deploy and the template."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.installer import policies
from dynamo_backups.installer.naming import TableResources

BACKUP_HANDLER = "dynamo_backups.handler.backup"
REPLICA_HANDLER = "dynamo_backups.handler.replicate"


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


def failure_destination(
    options: Any, names: TableResources, partition: str, region: str, account: str
) -> tuple[str, bool]:
    """The failure destination of one function: ``--on-failure``, else its own queue."""
    if options.on_failure:
        return options.on_failure, False
    return f"arn:{partition}:sqs:{region}:{account}:{names.failure_queue}", True


def function_specs(options: Any, partition: str, region: str, account: str) -> list[FunctionSpec]:
    """What to deploy for each table of ``options`` (a DeployOptions)."""
    specs: list[FunctionSpec] = []
    for table in options.tables:
        streams = policies.table_streams_arn(partition, region, account, table)
        if options.bucket:
            names = TableResources.of(table)
            destination, own_queue = failure_destination(options, names, partition, region, account)
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
                    },
                    description=f"dynamo-backups: backs up table {table}",
                    policies=_common(names, streams, destination, partition, region, account),
                    uses_write_policy=True,
                    destination_arn=destination,
                    creates_queue=own_queue,
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
