"""A table's description, saved beside its backup (table.json): what DescribeTable and
DescribeTimeToLive said, and what readers take from it (the key's names and types).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout, format_time

DESCRIPTION_FORMAT = "dynamo-backups-table"


class DescriptionError(ValueError):
    """No usable table description: the message says how to give one."""


def describe_table(dynamodb: Any, table: str) -> dict[str, Any]:
    """What a restore needs to rebuild the table: DescribeTable plus TTL."""
    described = call_with_retries(
        lambda: dynamodb.describe_table(TableName=table)["Table"],
        READ_POLICY,
        f"describe table {table}",
    )
    try:
        ttl = call_with_retries(
            lambda: dynamodb.describe_time_to_live(TableName=table),
            READ_POLICY,
            f"describe the TTL of table {table}",
        ).get("TimeToLiveDescription", {})
    except ClientError as error:
        if error_code(error) not in ("UnknownOperationException", "UnrecognizedClientException"):
            raise
        ttl = {}
    return {
        "format": DESCRIPTION_FORMAT,
        "version": 1,
        "saved_at": format_time(datetime.now(UTC)),
        "table": _jsonable(described),
        "time_to_live": _jsonable(ttl),
    }


def save_description(
    writer: BackupWriter, layout: TableLayout, description: dict[str, Any]
) -> None:
    writer.put_document(layout.table_description_key, description)


def load_description(s3: Any, bucket: str, layout: TableLayout) -> dict[str, Any] | None:
    return read_document(s3, bucket, layout.table_description_key)


def key_schema_of(description: dict[str, Any]) -> list[dict[str, str]]:
    return description["table"]["KeySchema"]


def key_types_of(description: dict[str, Any]) -> dict[str, str]:
    """Key attribute name -> S, N or B."""
    return key_types_from_description(description["table"])


def description_from_key_schema(text: str) -> dict[str, Any]:
    """A minimal description from ``--key-schema pk:S[,sk:N]`` (hash key first)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not 1 <= len(parts) <= 2:
        raise DescriptionError("--key-schema takes one or two attributes: pk:S or pk:S,sk:N")
    schema, definitions = [], []
    for position, part in enumerate(parts):
        name, _, kind = part.partition(":")
        if not name or kind not in ("S", "N", "B"):
            raise DescriptionError(f"--key-schema entry {part!r} must be NAME:S, NAME:N or NAME:B")
        schema.append({"AttributeName": name, "KeyType": "HASH" if position == 0 else "RANGE"})
        definitions.append({"AttributeName": name, "AttributeType": kind})
    return {
        "format": DESCRIPTION_FORMAT,
        "version": 1,
        "time_to_live": {},
        "table": {
            "KeySchema": schema,
            "AttributeDefinitions": definitions,
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        },
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: _jsonable(member) for name, member in value.items() if name != "ResponseMetadata"
        }
    if isinstance(value, list):
        return [_jsonable(member) for member in value]
    if isinstance(value, datetime):
        return format_time(value)
    return value
