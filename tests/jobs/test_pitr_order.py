"""The stream's order decides, at any distance in time (issue 19, item 4): late copies of older
changes (a retry, a replay, a second writer) written through the handler hours of change time
above newer ones, on DynamoDB Local and SeaweedFS. Latest restore, restore --at, history,
verify and snapshot must all take the newer change."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotOptions
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.helpers import create_table, restore_job, scan_all

pytestmark = pytest.mark.servers

HOUR = 3600


def record(table: str, key: str, event: str, changed: int, sequence: int, v: int = 0) -> Any:
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": changed,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{sequence:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event != "REMOVE":
        body["NewImage"] = {"pk": {"S": key}, "v": {"N": str(v)}}
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"
    return {"eventName": event, "eventSourceARN": arn, "dynamodb": body}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def history_of(table: str, key: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    shown = invoke(
        "--output", "json", "history", table, json.dumps({"pk": {"S": key}}),
        "--bucket", bucket, "--prefix", prefix,
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)["history"]  # type: ignore[no-any-return]


def test_late_older_copies_hours_above_newer_changes_lose_everywhere(
    aws_env: dict[str, str], dynamodb_local: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    now = int(time.time())
    three, two = now - 3 * HOUR, now - 2 * HOUR
    # What the stream said, in its order, and the table it left:
    history = {
        "alice": [("INSERT", three, 1, 1), ("MODIFY", two, 4, 2)],
        "bob": [("INSERT", three, 2, 1), ("REMOVE", two, 5, 0)],
        "carol": [("INSERT", three, 3, 1), ("REMOVE", three + 600, 6, 0), ("INSERT", two, 7, 3)],
    }
    for key, v in (("alice", 2), ("carol", 3)):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"N": str(v)}})
    s3.put_object(
        Bucket=bucket,
        Key=TableLayout.of(prefix, table).manifest_key,
        Body=json.dumps(
            TableLayout.of(prefix, table).manifest([{"AttributeName": "pk", "KeyType": "HASH"}])
        ).encode(),
    )
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    for key, changes in history.items():
        for event, changed, sequence, v in changes:
            assert applier.apply([record(table, key, event, changed, sequence, v)]).failures == []
    # ... then late copies of older changes reach S3, on top of everything (a retry, a replay,
    # a second writer): alice's and bob's first insert, carol's removal.
    time.sleep(1.1)  # S3's LastModified is to the second: the copies are received later
    for key, (event, changed, sequence, v) in (
        ("alice", history["alice"][0]),
        ("bob", history["bob"][0]),
        ("carol", history["carol"][1]),
    ):
        assert applier.apply([record(table, key, event, changed, sequence, v)]).failures == []
    time.sleep(1.1)
    expected = scan_all(dynamodb, table)
    assert sorted(json.loads(name)["pk"]["S"] for name in expected) == ["alice", "carol"]

    # restore, latest and at a moment after every copy arrived (a 1-second skew here makes
    # the moment lie well after the copies, as hours do with the default 5 minutes)
    folder = f"{prefix}/{table}"
    for at in (None, datetime.now(UTC)):
        target = unique_table_name("order")
        job = restore_job(
            dynamodb_local.endpoint, s3, bucket, folder, target,
            at=at, key_schema="pk:S", skew=timedelta(seconds=1),
        )  # fmt: skip
        assert job.run().complete
        assert scan_all(dynamodb, target) == expected, f"at {at}"
    # ... and at a moment between the changes, the older state
    target = unique_table_name("order")
    job = restore_job(
        dynamodb_local.endpoint, s3, bucket, folder, target,
        at=datetime.fromtimestamp(three + 60, UTC), key_schema="pk:S",
    )  # fmt: skip
    assert job.run().complete
    restored = scan_all(dynamodb, target).values()
    assert {item["pk"]["S"]: item["v"]["N"] for item in restored} == {
        "alice": "1",
        "bob": "1",
        "carol": "1",
    }

    # history: in the changes' order, the late copy marked as such
    alice = history_of(table, "alice", bucket, prefix)
    assert [(entry["event"], entry["sequence_number"]) for entry in alice] == [
        ("modify", f"{4:021d}"),
        ("insert", f"{1:021d}"),
        ("insert", f"{1:021d}"),
    ]
    assert [entry["received_late"] for entry in alice] == [False, True, False]
    assert alice[1]["duplicate_of"] == alice[2]["version_id"]
    assert alice[0]["duplicate_of"] is None and alice[2]["duplicate_of"] is None
    carol = history_of(table, "carol", bucket, prefix)
    assert [entry["event"] for entry in carol] == [
        "insert", "delete-marker", "delete", "delete-marker", "delete", "insert",
    ]  # fmt: skip
    assert carol[2]["received_late"] and carol[2]["duplicate_of"] == carol[4]["version_id"]
    text = invoke(
        "history", table, '{"pk": {"S": "alice"}}', "--bucket", bucket, "--prefix", prefix
    ).output
    assert "received late" in text and f"duplicate of version {alice[2]['version_id']}" in text

    # verify: the table holds the newer changes, as the backup does
    verified = invoke("--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix)
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert (report["missing"], report["extra"], report["different"]) == (0, 0, 0)

    # snapshot, latest
    destination = f"s3://{bucket}/{prefix}-export/order"
    snapshot = Snapshot(
        s3,
        BotocoreObjects(s3, bucket),
        open_folder(s3, bucket, prefix, table),
        destination,
        SnapshotOptions(partitions=1),
    ).run()
    assert snapshot.complete
    exported = {}
    for entry in snapshot.files:
        data = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read())
        for line in data.decode().splitlines():
            item = json.loads(line)["Item"]
            exported[json.dumps({"pk": item["pk"]}, sort_keys=True)] = item
    assert exported == expected
