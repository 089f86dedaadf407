"""A table's description, saved beside its backup (table.json): what DescribeTable and
DescribeTimeToLive said, and what readers take from it (the key's names and types).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, TableLayout, format_time, parse_time

DESCRIPTION_FORMAT = "dynamo-backups-table"


class DescriptionError(ValueError):
    """No usable table description: the message says how to give one."""


class TableReplacedError(LayoutError):
    """The table of that name is not the one whose backup the folder holds: it was deleted
    and created again since."""


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


def table_identity(table: Mapping[str, Any]) -> tuple[str, str] | None:
    """What tells a table from another made later under its name: its TableId, else its
    creation time to the millisecond, as saved (DynamoDB Local gives no TableId); None when
    neither is known."""
    if table.get("TableId"):
        return ("TableId", str(table["TableId"]))
    created = table.get("CreationDateTime")
    if isinstance(created, str):
        try:
            created = parse_time(created)
        except ValueError:
            return None
    if not isinstance(created, datetime):
        return None
    return ("created", format_time(created.replace(microsecond=created.microsecond // 1000 * 1000)))


def is_another_table(saved: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether ``live`` (DescribeTable's) is not the table ``saved`` describes (False when
    either cannot tell)."""
    old, new = table_identity(saved), table_identity(live)
    return old is not None and new is not None and old[0] == new[0] and old != new


def other_table(saved: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """How a folder whose saved description is ``saved`` backs up another table than
    ``live`` ("backs up a table Users (...) deleted since, not this one (...)"), or None
    when it is the same table or either cannot tell."""
    if not is_another_table(saved, live):
        return None
    name = str(live.get("TableName") or saved.get("TableName") or "")
    old_region, new_region = region_of(saved), region_of(live)
    if old_region and new_region and old_region != new_region:
        return f"backs up table {name} of {old_region}, not this one of {new_region}"
    old, new = " ".join(table_identity(saved) or ()), " ".join(table_identity(live) or ())
    return f"backs up a table {name} ({old}) deleted since, not this one ({new})"


def check_same_table(
    s3: Any, bucket: str, layout: TableLayout, table: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Refuse to write ``table`` (DescribeTable's) into a folder whose saved description is
    of another table of its name (deleted since, or of another region): the folder holds that
    table's items, which a backfill would take for this one's (it skips keys already there)
    and a restore would bring back. The folder's saved description (None: it has none)."""
    description = load_description(s3, bucket, layout)
    what = other_table((description or {}).get("table") or {}, table)
    if what is None:
        return description
    where = f"s3://{bucket}/{layout.items_prefix}"
    raise TableReplacedError(
        f"{where} {what}: the folder holds that table's items, and writing this one's into "
        "it would mix the two (a backfill would skip this table's rows whose keys it holds, "
        "and a restore would bring back rows this table never had). Back this table up into "
        "another folder (another --prefix); the folder keeps the other table's history. A "
        "table that `dynamo-backups restore` made (latest) from this very folder continues "
        "it (nothing was written)"
    )


def region_of(table: Mapping[str, Any]) -> str | None:
    """The region in the table's ARN (``arn:aws:dynamodb:REGION:...``)."""
    parts = str(table.get("TableArn") or "").split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


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
