"""Test helpers: tables with streams, Lambda-shaped records read from a real stream, and a
reader of what a backup folder holds (written independently of the code under test)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from tests.conftest import unique_table_name

# stream --once where no stream answers an empty page before a record (DynamoDB Local):
# a short drain will do.
ONCE = ["--once", "--drain-empty-pages", "2", "--drain-seconds", "0"]


def create_table(
    dynamodb: Any,
    key_schema: list[tuple[str, str]] | None = None,
    view_type: str | None = "NEW_AND_OLD_IMAGES",
    name: str | None = None,
) -> str:
    """A table keyed by [(attribute, type S|N|B), ...] (hash first), with a stream."""
    key_schema = key_schema or [("pk", "S")]
    name = name or unique_table_name()
    arguments: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": attribute, "KeyType": "HASH" if position == 0 else "RANGE"}
            for position, (attribute, _) in enumerate(key_schema)
        ],
        "AttributeDefinitions": [
            {"AttributeName": attribute, "AttributeType": kind} for attribute, kind in key_schema
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if view_type:
        arguments["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view_type}
    dynamodb.create_table(**arguments)
    return name


def stream_arn(dynamodb: Any, table: str) -> str:
    return dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]


def lambda_records(dynamodb: Any, streams: Any, table: str) -> list[dict[str, Any]]:
    """Every record in the table's stream, exactly as Lambda delivers them: the raw
    GetRecords JSON of each record plus eventSourceARN."""
    arn = stream_arn(dynamodb, table)
    raw_pages: list[list[dict[str, Any]]] = []

    def keep_raw(http_response: Any, **_: Any) -> None:
        raw_pages.append(json.loads(http_response.content).get("Records", []))

    streams.meta.events.register(
        "after-call.dynamodbstreams.GetRecords", keep_raw, unique_id="tests-keep-raw"
    )
    try:
        records: list[dict[str, Any]] = []
        shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        for shard in shards:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                raw_pages.clear()
                page = streams.get_records(ShardIterator=iterator)
                records.extend(dict(record, eventSourceARN=arn) for record in raw_pages[0])
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
        return records
    finally:
        streams.meta.events.unregister(
            "after-call.dynamodbstreams.GetRecords", unique_id="tests-keep-raw"
        )


def expected_name(key: dict[str, Any]) -> str:
    """The object name the layout contract promises, computed here from its definition."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.md5(canonical).hexdigest()


def object_key(prefix: str, table: str, key: dict[str, Any]) -> str:
    return f"{prefix}/{table}/{expected_name(key)}" if prefix else f"{table}/{expected_name(key)}"


def history(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """One object's versions and delete markers, newest first, with bodies and metadata:
    [{"kind": "version"|"delete-marker", "body": ..., "metadata": {...}}]."""
    entries: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for version in page.get("Versions", []):
            if version["Key"] == key:
                entries.append({"kind": "version", **version})
        for marker in page.get("DeleteMarkers", []):
            if marker["Key"] == key:
                entries.append({"kind": "delete-marker", **marker})
    # SeaweedFS version ids sort newest first; both lists are merged by them.
    entries.sort(key=lambda entry: entry["VersionId"])
    for entry in entries:
        if entry["kind"] == "version":
            response = s3.get_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])
            entry["body"] = response["Body"].read()
            entry["metadata"] = response["Metadata"]
            entry["content_type"] = response.get("ContentType")
    return entries


def bodies(entries: list[dict[str, Any]]) -> list[Any]:
    """Each entry as its parsed body, None for an empty (tombstone) version, or 'DM'."""
    result: list[Any] = []
    for entry in entries:
        if entry["kind"] == "delete-marker":
            result.append("DM")
        elif entry["body"] == b"":
            result.append(None)
        else:
            result.append(json.loads(entry["body"]))
    return result


def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
