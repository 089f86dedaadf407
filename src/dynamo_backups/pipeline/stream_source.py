"""Which stream a consumer reads and in what order: the table's current stream, refused with
a clear error when it is off or its records carry no new image (``stream_of_table``), and its
shards, parents before children (``ready_shards``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy, call_with_retries
from dynamo_backups.backup.checkpoints import StreamCheckpoint

NEW_IMAGE_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")


class StreamError(RuntimeError):
    """The stream cannot be read or a batch cannot be applied; the message says what to do."""


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None
    closed: bool


def ready_shards(shards: Sequence[Shard], checkpoint: StreamCheckpoint) -> list[Shard]:
    """Unfinished shards whose parent is finished or no longer listed (trimmed)."""
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if not checkpoint.is_finished(shard.shard_id)
        and (
            shard.parent_id is None
            or shard.parent_id not in listed
            or checkpoint.is_finished(shard.parent_id)
        )
    ]


def stream_of_table(
    dynamodb: Any, table: str, policy: RetryPolicy | None = None
) -> tuple[str, dict[str, Any]]:
    """The table's current stream ARN and description; a clear error when it has none, or
    one whose records lack the new image."""
    try:
        description = call_with_retries(
            lambda: dynamodb.describe_table(TableName=table)["Table"],
            policy or RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=10),
            f"describe table {table}",
        )
    except RetriesExhausted as error:
        raise StreamError(str(error)) from None
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise StreamError(
                f"table {table} does not exist (check the name and --region)"
            ) from None
        raise StreamError(f"cannot describe table {table}: {describe_error(error)}") from None
    specification = description.get("StreamSpecification") or {}
    arn = description.get("LatestStreamArn")
    if not specification.get("StreamEnabled") or not arn:
        raise StreamError(
            f"table {table} has no stream: enable one with view type NEW_AND_OLD_IMAGES "
            f"(aws dynamodb update-table --table-name {table} --stream-specification "
            "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES)"
        )
    view = specification.get("StreamViewType")
    if view not in NEW_IMAGE_VIEWS:
        raise StreamError(
            f"table {table} has a stream with view type {view}, whose records carry no new "
            "image: the stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    return arn, description
