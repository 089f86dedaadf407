"""Test helpers: tables with streams, Lambda-shaped records read from a real stream, and a
reader of what a backup folder holds (written independently of the code under test)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.credentials import Credentials

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.checkpoints import S3CheckpointStore
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import item_to_wire
from dynamo_backups.core.draining import DrainRule
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions
from dynamo_backups.jobs.restore import Restore, RestoreOptions
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.consumer import StreamConsumer
from tests import servers
from tests.conftest import unique_table_name
from tests.servers import make_client

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


def scan_all(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    """Every item of a table in wire form, keyed by its canonical key text."""
    description = dynamodb.describe_table(TableName=table)["Table"]
    names = [element["AttributeName"] for element in description["KeySchema"]]
    items: dict[str, dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            wire = item_to_wire(item)
            items[json.dumps({name: wire[name] for name in names}, sort_keys=True)] = wire
    return items


def restore_job(
    dynamodb_endpoint: str,
    s3: Any,
    bucket: str,
    folder: str,
    table: str,
    aws: AwsContext | None = None,
    **options: Any,
) -> Restore:
    dynamodb = make_client("dynamodb", dynamodb_endpoint)
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    return Restore(
        s3,
        BotocoreObjects(s3, bucket),
        dynamodb,
        lambda request: api.call("BatchWriteItem", request),
        bucket,
        folder,
        table,
        RestoreOptions(**options),
        aws=aws,
    )


def make_backfill(
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    table: str,
    scan: Any = None,
    aws: AwsContext | None = None,
    **options: Any,
) -> Backfill:
    """A backfill with the given clients; with ``aws``, workers in other processes make
    theirs from the environment's endpoints."""
    return Backfill(
        dynamodb,
        scan or lean_scan(dynamodb),
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        BackfillOptions(**options),
        aws=aws,
    )


EDGE_ITEM: dict[str, Any] = {
    "pk": {"S": "edge"},
    "text": {"S": "naïve café ☃ 𝄞 中文 עברית e\u0301"},
    "empty_text": {"S": ""},
    "n38": {"N": "12345678901234567890123456789012345678"},
    "n_negative_small": {"N": "-0.000000000000000000000000000000000000012345"},
    "n_exponent": {"N": "1.5E+100"},
    "n_tiny": {"N": "1E-130"},
    "n_max": {"N": "9.9999999999999999999999999999999999999E+125"},
    "n_min": {"N": "-9.9999999999999999999999999999999999999E+125"},
    "n_zero": {"N": "-0"},
    "binary": {"B": bytes(range(256))},
    "empty_binary": {"B": b""},
    "strings": {"SS": ["a", "ünï", "𝄞"]},
    "numbers": {"NS": ["1", "-2.5", "12345678901234567890123456789012345678", "1E-130"]},
    "binaries": {"BS": [b"\x00", b"\xff\xfe", b"plain"]},
    "null": {"NULL": True},
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
    "map": {"M": {"inner": {"S": "x"}, "n": {"N": "0.1"}, "empty": {"M": {}}}},
    "list": {
        "L": [{"S": "a"}, {"N": "1"}, {"B": b"\x01"}, {"NULL": True}, {"L": []}, {"SS": ["z"]}]
    },
}


def deep_map(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "bottom"}
    for level in range(levels):
        value = {"M": {f"level{level}": value}} if level % 2 else {"L": [value]}
    return value


# DynamoDB Local and the scripts below answer no empty page before a record: a short drain
# will do (the tests of draining itself script such pages).
QUICK_DRAIN = DrainRule(empty_pages=6, seconds=0.0, page_interval=0.001)


def lean_scan(dynamodb: Any) -> Any:
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    return lambda request: api.call("Scan", request)


def consumer_for(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    table: str,
    processor: Any = None,
    **options: Any,
) -> StreamConsumer:
    writer = BackupWriter(s3, bucket)
    store = S3CheckpointStore(writer, TableLayout.of(prefix, table).checkpoint_key("test"))
    processor = processor or BackupApplier(writer, prefix).apply
    options.setdefault("drain", QUICK_DRAIN)
    return StreamConsumer(dynamodb, streams, table, processor, store, **options)


def kill_when(process: Any, ready: Any, timeout: float = 120) -> None:
    """SIGKILL ``process`` (no chance to tidy up) as soon as ``ready()`` holds, polled; it
    must not end by itself first, and ``ready`` must come within ``timeout`` seconds."""
    import signal

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


REPO_ROOT = Path(__file__).resolve().parents[1]


def module_at(
    commit: str, core_module: str, renames: Mapping[str, str] | None = None
) -> types.ModuleType:
    """``src/dynamo_backups/core/<core_module>.py`` as it was at ``commit`` (``git show``),
    loaded as ``_parent_<core_module>``, its imports renamed by ``renames`` (to load it over
    other modules of that commit): what a review compares the code under review with."""
    path = f"src/dynamo_backups/core/{core_module}.py"
    source = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{commit}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for old, new in (renames or {}).items():
        source = source.replace(old, new)
    name = f"_parent_{core_module}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the code runs
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


class FixedCredentials:
    """A credentials source (what FastObjects and RawDynamoDB ask) that always gives one."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def get_frozen_credentials(self) -> Credentials:
        return self.credentials
