"""Consumers with leased S3 checkpoints for the lease tests, and a holder that runs in its own
process (so that a test can kill it):

    python -m tests.backup.leasing TABLE BUCKET PREFIX HOST LEASE_SECONDS

runs one follow-mode consumer whose lease names HOST, against the servers that the
``AWS_ENDPOINT_URL_DYNAMODB`` and ``AWS_ENDPOINT_URL_S3`` variables name, until killed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.checkpoints import (
    LEASE_SECONDS,
    CheckpointIdentity,
    Lease,
    S3CheckpointStore,
)
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.consumer import StreamConsumer
from tests.helpers import QUICK_DRAIN
from tests.servers import make_client

CONSUMER = "lease-test"
QUICK = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


def lease_on(host: str) -> Lease:
    """This process's lease, as if it ran on ``host``."""
    return dataclasses.replace(Lease(), host=host)


def lease_store(
    s3: Any,
    bucket: str,
    prefix: str,
    table: str,
    *,
    host: str | None = None,
    lease_seconds: float = LEASE_SECONDS,
    policy: RetryPolicy | None = None,
    kind: type[S3CheckpointStore] = S3CheckpointStore,
    **options: Any,
) -> S3CheckpointStore:
    """The checkpoint store of consumer ``lease-test`` of ``table``."""
    writer = BackupWriter(s3, bucket, policy=policy)
    identity = CheckpointIdentity(
        f"arn:aws:dynamodb:ddblocal:000000000000:table/{table}", CONSUMER, bucket, prefix
    )
    return kind(
        writer,
        identity.object_key(TableLayout.of(prefix, table)),
        identity,
        policy=policy,
        lease=lease_on(host) if host else None,
        lease_seconds=lease_seconds,
        **options,
    )


def lease_consumer(
    dynamodb: Any, streams: Any, store: S3CheckpointStore, table: str, prefix: str, **options: Any
) -> StreamConsumer:
    """A consumer backing ``table`` up into ``prefix`` through ``store``'s writer."""
    applier = BackupApplier(store.writer, prefix, concurrency=4).apply
    options.setdefault("poll_interval", 0.05)
    options.setdefault("drain", QUICK_DRAIN)
    return StreamConsumer(dynamodb, streams, table, applier, store, **options)


def main(argv: list[str]) -> None:
    table, bucket, prefix, host, seconds = argv
    dynamodb = make_client("dynamodb", os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    streams = make_client("dynamodbstreams", os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    s3 = make_client("s3", os.environ["AWS_ENDPOINT_URL_S3"])
    store = lease_store(s3, bucket, prefix, table, host=host, lease_seconds=float(seconds))
    lease_consumer(dynamodb, streams, store, table, prefix).run(once=False)


if __name__ == "__main__":
    main(sys.argv[1:])
