"""Restore through DynamoDB's own ImportTable: a snapshot of the backup in export format,
then one import that creates the table. For tables too large for BatchWriteItem."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynamo_backups.backup.description import DescriptionError
from dynamo_backups.jobs.tables import create_table_request

IMPORT_FIELDS = (
    "TableName",
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "SSESpecification",
)


@dataclass
class ImportReport:
    import_arn: str
    status: str
    imported: int
    errors: int
    failure: str | None
    seconds: float


def import_request(
    description: dict[str, Any], table: str, bucket: str, data_prefix: str
) -> dict[str, Any]:
    """ImportTable arguments that create ``table`` as described, from the snapshot's data."""
    if description["table"].get("LocalSecondaryIndexes"):
        raise DescriptionError(
            "ImportTable cannot create local secondary indexes: restore this table without "
            "--native-import"
        )
    creation = {
        name: value
        for name, value in create_table_request(description, table).items()
        if name in IMPORT_FIELDS
    }
    return {
        "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": data_prefix},
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "TableCreationParameters": creation,
    }


def run_import(
    dynamodb: Any,
    description: dict[str, Any],
    table: str,
    bucket: str,
    data_prefix: str,
    wait: Callable[[float], None] = time.sleep,
    timeout: float = 24 * 3600,
    switch_ttl: bool = True,
) -> ImportReport:
    """Start the import and wait for its end; TTL is applied to the new table afterwards
    (unless ``switch_ttl`` is False: a caller that writes more items first switches it)."""
    started = time.monotonic()
    answer = dynamodb.import_table(**import_request(description, table, bucket, data_prefix))
    arn = answer["ImportTableDescription"]["ImportArn"]
    while True:
        state = dynamodb.describe_import(ImportArn=arn)["ImportTableDescription"]
        if state["ImportStatus"] not in ("IN_PROGRESS", "CANCELLING"):
            break
        if time.monotonic() - started > timeout:
            raise DescriptionError(f"import {arn} still running after {timeout:.0f} s")
        wait(2.0)
    ttl = description.get("time_to_live") or {}
    if (
        switch_ttl
        and state["ImportStatus"] == "COMPLETED"
        and ttl.get("AttributeName")
        and ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
    ):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    failure = state.get("FailureMessage")
    return ImportReport(
        arn,
        state["ImportStatus"],
        int(state.get("ImportedItemCount") or 0),
        int(state.get("ErrorCount") or 0),
        f"{state.get('FailureCode')}: {failure}" if failure else None,
        round(time.monotonic() - started, 3),
    )
