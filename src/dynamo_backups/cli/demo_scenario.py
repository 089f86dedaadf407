"""A zero-set-up demonstration on an in-process AWS emulator (moto).

It creates a table with a stream and a versioned bucket, changes a few items, runs the
stream consumer with the Lambda handler's code, and shows what the checklist's "Validate
Functionality" step asks an operator to look for. It also checks what it shows, and says so
when something does not hold.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.checkpoints import S3CheckpointStore
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.reading import iter_key_histories, iter_versions
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_plain, item_to_plain, loads_item
from dynamo_backups.core.keys import canonical_key
from dynamo_backups.core.layout import TableLayout, VersionMetadata, format_time
from dynamo_backups.core.pitr import newest_first
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.consumer import StreamConsumer

BUCKET = "dynamo-backups-demo"
PREFIX = "Prod"
TABLE = "ExampleTableWithStream"
REGION = "us-east-1"
ACCOUNT_ENDPOINT_MODE = "AWS_ACCOUNT_ID_ENDPOINT_MODE"


@dataclass
class DemoResult:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        self.lines.append(line)

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


@contextmanager
def emulated_aws() -> Iterator[None]:
    """moto in this process, with endpoint variables that would bypass it set aside."""
    try:
        from moto import mock_aws
    except ImportError:
        raise RuntimeError("the demo needs moto: pip install 'dynamo-backups[demo]'") from None
    saved = {
        name: os.environ.pop(name)
        for name in list(os.environ)
        if name.startswith("AWS_ENDPOINT_URL") or name == ACCOUNT_ENDPOINT_MODE
    }
    # Recent botocore sends Streams calls to account-based hosts, which moto does not serve.
    os.environ[ACCOUNT_ENDPOINT_MODE] = "disabled"
    try:
        with mock_aws():
            yield
    finally:
        del os.environ[ACCOUNT_ENDPOINT_MODE]
        os.environ.update(saved)


def run_demo(progress: Callable[[str], None] = lambda _: None) -> DemoResult:
    result = DemoResult()
    with emulated_aws():
        aws = AwsContext(region=REGION)
        s3, dynamodb, streams = (
            aws.client("s3"),
            aws.client("dynamodb"),
            aws.client("dynamodbstreams"),
        )
        progress(f"creating versioned bucket {BUCKET} and table {TABLE} with a stream")
        _create_bucket(s3)
        _create_table(dynamodb)
        progress("writing, updating and deleting items")
        changed, deleted, kept = _change_items(dynamodb)
        progress("running the stream consumer (the Lambda handler's code)")
        layout = TableLayout.of(PREFIX, TABLE)
        writer = BackupWriter(s3, BUCKET)
        ensure_manifest(writer, layout, [{"AttributeName": "Id", "KeyType": "HASH"}])
        consumer = StreamConsumer(
            dynamodb,
            streams,
            TABLE,
            BackupApplier(writer, PREFIX).apply,
            S3CheckpointStore(writer, layout.checkpoint_key("demo")),
        )
        report = consumer.run(once=True)
        counts = ", ".join(f"{name} {count}" for name, count in sorted(report.applied.items()))
        result.say(f"Stream consumed: {report.records} records ({counts})")
        result.check(report.records == 7, f"expected 7 stream records, got {report.records}")
        _validate(result, s3, layout, changed, deleted, kept)
    return result


def _create_bucket(s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


def _create_table(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def _change_items(dynamodb: Any) -> tuple[dict, dict, dict]:
    changed, deleted, kept = {"Id": {"N": "101"}}, {"Id": {"N": "103"}}, {"Id": {"N": "102"}}
    dynamodb.put_item(
        TableName=TABLE,
        Item={
            **changed,
            "Message": {"S": "New item!"},
            "Balance": {"N": "12345678901234567890.123456789"},
        },
    )
    dynamodb.put_item(
        TableName=TABLE,
        Item={**kept, "Message": {"S": "Unchanged"}, "Tags": {"SS": ["blue", "green"]}},
    )
    dynamodb.put_item(TableName=TABLE, Item={**deleted, "Message": {"S": "Short-lived"}})
    for message in ("This item has changed", "And changed again"):
        dynamodb.update_item(
            TableName=TABLE,
            Key=changed,
            UpdateExpression="SET Message = :m",
            ExpressionAttributeValues={":m": {"S": message}},
        )
    dynamodb.update_item(
        TableName=TABLE,
        Key=deleted,
        UpdateExpression="SET Message = :m",
        ExpressionAttributeValues={":m": {"S": "About to go"}},
    )
    dynamodb.delete_item(TableName=TABLE, Key=deleted)
    return changed, deleted, kept


def _validate(
    result: DemoResult, s3: Any, layout: TableLayout, changed: dict, deleted: dict, kept: dict
) -> None:
    histories = {
        entries[0].key: newest_first(entries)
        for entries in iter_key_histories(
            iter_versions(BotocoreObjects(s3, BUCKET), layout.items_prefix)
        )
    }
    result.say()
    result.say("Validate Functionality (the checklist's last step), in the bucket:")
    result.say(f"s3://{BUCKET}/")
    result.say(f"  {PREFIX}/                                  <- the BackupPrefix folder")
    result.say(f"    {TABLE}/                 <- one folder per table")
    for label, key in (("changed twice", changed), ("unchanged", kept), ("deleted", deleted)):
        object_key = layout.item_object_key(key)
        entries = histories.get(object_key, [])
        name = layout.name_of(object_key)
        versions = sum(1 for entry in entries if not entry.is_delete_marker)
        state = (
            "deleted (delete marker on top)"
            if entries and entries[0].is_delete_marker
            else "current"
        )
        counted = f"{versions} version" + ("" if versions == 1 else "s")
        result.say(f"      {name}  {_plain_key(key)}: {label}; {counted}, {state}")
        expected = hashlib.md5(canonical_key(key), usedforsecurity=False).hexdigest()
        result.check(name == expected, f"object name {name} is not md5 of {canonical_key(key)!r}")
    result.say(f"    .dynamo-backups/{TABLE}/  <- the tool's own files (layout.json, checkpoints)")
    result.check(len(histories) == 3, f"expected 3 item objects, found {len(histories)}")
    result.say()
    result.say("Each object name is the MD5 of the item's canonical key, e.g.")
    changed_name = layout.name_of(layout.item_object_key(changed))
    result.say(f"  md5({canonical_key(changed).decode()}) = {changed_name}")
    _show_history(result, s3, layout, changed, "changed twice", expect=3)
    _show_history(result, s3, layout, deleted, "deleted", expect=4)
    result.say()
    result.say(
        "New rows, updates and deletions appear as new versions; old versions remain "
        "after a delete."
    )


def _show_history(
    result: DemoResult, s3: Any, layout: TableLayout, key: dict, label: str, expect: int
) -> None:
    object_key = layout.item_object_key(key)
    entries = newest_first(list(iter_versions(BotocoreObjects(s3, BUCKET), object_key)))
    result.say()
    result.say(f"Versions of item {_plain_key(key)} ({label}), newest first:")
    for entry in entries:
        if entry.is_delete_marker:
            result.say(f"  {entry.version_id[:12]}  DELETE MARKER")
            continue
        body, fields = BotocoreObjects(s3, BUCKET).read_object(object_key, entry.version_id)
        metadata = VersionMetadata.from_s3(fields) or VersionMetadata("?", "?", entry.last_modified)
        when = format_time(metadata.change_time)
        if entry.is_tombstone:
            result.say(
                f"  {entry.version_id[:12]}  {when}  REMOVE  (tombstone: when it was deleted)"
            )
            continue
        item = item_to_plain(loads_item(body, object_key))
        result.say(
            f"  {entry.version_id[:12]}  {when}  {metadata.event_name:<7} "
            f"{dumps_plain(item, indent=None)}"
        )
    result.check(
        len(entries) == expect,
        f"item {_plain_key(key)}: expected {expect} history entries, found {len(entries)}",
    )


def _plain_key(key: dict) -> str:
    return dumps_plain(item_to_plain(key), indent=None)
