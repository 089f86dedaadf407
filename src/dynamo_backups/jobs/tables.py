"""The table a restore writes into: created from a saved description (on-demand unless told
otherwise), its key checked against the backup's, TTL switched on once the items are in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.description import DescriptionError
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.backup.reading import READ_POLICY


def create_table_request(
    description: dict[str, Any], table_name: str, billing_mode: str | None = None
) -> dict[str, Any]:
    """CreateTable arguments that rebuild the described table under ``table_name``: keys,
    indexes, billing mode and throughput (``billing_mode`` overrides the saved one),
    encryption and table class. Streams are left off (turn them on to back the new table
    up)."""
    source = description["table"]
    billing = billing_mode or (source.get("BillingModeSummary") or {}).get("BillingMode")
    throughput = source.get("ProvisionedThroughput") or {}
    if billing is None:
        billing = "PROVISIONED" if throughput.get("ReadCapacityUnits") else "PAY_PER_REQUEST"
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": source["KeySchema"],
        "AttributeDefinitions": source["AttributeDefinitions"],
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = _capacity(throughput)
    indexes = [
        _index(index, billing, global_=True) for index in source.get("GlobalSecondaryIndexes", [])
    ]
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    local = [
        _index(index, billing, global_=False) for index in source.get("LocalSecondaryIndexes", [])
    ]
    if local:
        request["LocalSecondaryIndexes"] = local
    sse = source.get("SSEDescription") or {}
    if sse.get("Status") in ("ENABLED", "ENABLING") and sse.get("SSEType") == "KMS":
        request["SSESpecification"] = {"Enabled": True, "SSEType": "KMS"}
        if sse.get("KMSMasterKeyArn"):
            request["SSESpecification"]["KMSMasterKeyId"] = sse["KMSMasterKeyArn"]
    table_class = (source.get("TableClassSummary") or {}).get("TableClass")
    if table_class:
        request["TableClass"] = table_class
    return request


def _capacity(throughput: dict[str, Any]) -> dict[str, int]:
    return {
        "ReadCapacityUnits": max(1, int(throughput.get("ReadCapacityUnits") or 1)),
        "WriteCapacityUnits": max(1, int(throughput.get("WriteCapacityUnits") or 1)),
    }


def _index(index: dict[str, Any], billing: str, global_: bool) -> dict[str, Any]:
    rebuilt = {
        "IndexName": index["IndexName"],
        "KeySchema": index["KeySchema"],
        "Projection": index["Projection"],
    }
    if global_ and billing == "PROVISIONED":
        rebuilt["ProvisionedThroughput"] = _capacity(index.get("ProvisionedThroughput") or {})
    return rebuilt


def ensure_table(
    dynamodb: Any,
    description: dict[str, Any],
    table_name: str,
    wait: Callable[[float], None] = time.sleep,
    timeout: float = 600,
    billing_mode: str | None = None,
) -> bool:
    """Create ``table_name`` from ``description`` unless it exists, and wait until it is
    ACTIVE. True if it was created. TTL is not switched on here: see ``switch_on_ttl``."""
    try:
        table_status(dynamodb, table_name)
        created = False
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        dynamodb.create_table(**create_table_request(description, table_name, billing_mode))
        created = True
    deadline = time.monotonic() + timeout
    while table_status(dynamodb, table_name) != "ACTIVE":
        if time.monotonic() > deadline:
            raise DescriptionError(f"table {table_name} did not become ACTIVE in {timeout:.0f} s")
        wait(1.0)
    return created


def table_status(dynamodb: Any, table_name: str) -> str:
    """CREATING, ACTIVE, ...; ResourceNotFoundException when there is no such table."""
    return call_with_retries(
        lambda: dynamodb.describe_table(TableName=table_name)["Table"]["TableStatus"],
        READ_POLICY,
        f"describe table {table_name}",
    )


def table_exists(dynamodb: Any, table_name: str) -> bool:
    """Whether ``table_name`` exists (any status)."""
    try:
        table_status(dynamodb, table_name)
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        return False
    return True


def has_items(dynamodb: Any, table_name: str) -> bool:
    """Whether ``table_name`` holds at least one item (one COUNT scan of one item)."""
    scan = call_with_retries(
        lambda: dynamodb.scan(TableName=table_name, Limit=1, Select="COUNT"),
        READ_POLICY,
        f"look into table {table_name}",
    )
    return bool(scan.get("Count") or scan.get("LastEvaluatedKey"))


def ttl_attribute(description: dict[str, Any]) -> str | None:
    """The TTL attribute of the described table, when TTL was on."""
    ttl = description.get("time_to_live") or {}
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName"):
        return str(ttl["AttributeName"])
    return None


def switch_on_ttl(dynamodb: Any, description: dict[str, Any], table_name: str) -> str | None:
    """Switch TTL on as the described table had it (after a restore has written its items:
    DynamoDB then deletes items already past their expiry). The attribute, or None."""
    attribute = ttl_attribute(description)
    if attribute is None:
        return None
    dynamodb.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )
    return attribute


def key_signature(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, HASH or RANGE, S/N/B) of a DescribeTable ``Table``'s key attributes."""
    types = key_types_from_description(table)
    return [
        (element["AttributeName"], element["KeyType"], types[element["AttributeName"]])
        for element in sorted(table["KeySchema"], key=lambda element: element["KeyType"])
    ]


def check_same_key(dynamodb: Any, table_name: str, description: dict[str, Any]) -> None:
    """Refuse a target whose key differs from the backup's: every write would fail, or land
    under keys the backup never had."""
    target = key_signature(
        call_with_retries(
            lambda: dynamodb.describe_table(TableName=table_name)["Table"],
            READ_POLICY,
            f"describe table {table_name}",
        )
    )
    source = key_signature(description["table"])
    if target != source:
        raise DescriptionError(
            f"table {table_name} is keyed by {_keys_text(target)}, the backup by "
            f"{_keys_text(source)}: restore into a new table (it is created with the backup's "
            "key)"
        )


def _keys_text(signature: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{name} ({kind} {type_})" for name, kind, type_ in signature)
