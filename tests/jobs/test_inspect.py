"""history, verify and snapshot, on DynamoDB Local and SeaweedFS; the native-import restore on
moto, which implements ImportTable."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.cli import main
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotOptions
from tests.helpers import create_table, object_key, scan_all
from tests.moto_stack import moto_server


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


@pytest.mark.servers
def test_history_shows_every_version_newest_first(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, [("id", "S"), ("n", "N")])
    key = {"id": {"S": "abc"}, "n": {"N": "7"}}
    dynamodb.put_item(TableName=table, Item={**key, "balance": {"N": "0.1"}})
    dynamodb.put_item(TableName=table, Item={**key, "balance": {"N": "12345678901234567890.5"}})
    dynamodb.delete_item(TableName=table, Key=key)
    assert invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once").exit_code == 0

    text = invoke(
        "history", table, '{"id": "abc", "n": 7.0}', "--bucket", bucket, "--prefix", prefix
    )
    assert text.exit_code == 0, text.output
    events = re.findall(r"^\s*\S*\s+(delete marker|delete|modify|insert)\b", text.output, re.M)
    assert events == ["delete marker", "delete", "modify", "insert"]
    assert '"balance": 12345678901234567890.5' in text.output

    as_json = invoke(
        "--output",
        "json",
        "history",
        table,
        json.dumps(key),
        "--bucket",
        bucket,
        "--prefix",
        prefix,
    )
    entries = json.loads(as_json.stdout)["history"]
    assert [entry["event"] for entry in entries] == ["delete-marker", "delete", "modify", "insert"]
    assert entries[2]["item"]["balance"] == {"N": "12345678901234567890.5"}
    assert entries[2]["writer"] == "stream" and entries[2]["sequence_number"]

    missing = invoke(
        "history", table, '{"id": "nope", "n": 1}', "--bucket", bucket, "--prefix", prefix
    )
    assert missing.exit_code == 1 and "no backup of item" in missing.output
    nothing = invoke("history", "NoManifest", '{"id": "x"}', "--bucket", bucket, "--prefix", prefix)
    assert nothing.exit_code == 2
    assert f"no backup at s3://{bucket}/{prefix}/NoManifest/" in nothing.output
    # a folder of objects only (another tool's): a backup, but its key types are unknown
    s3.put_object(Bucket=bucket, Key=f"{prefix}/NoManifest/0123", Body=b"{}")
    untyped = invoke("history", "NoManifest", '{"id": "x"}', "--bucket", bucket, "--prefix", prefix)
    assert untyped.exit_code == 2 and "cannot tell the type of key attribute 'id'" in untyped.output


@pytest.mark.servers
def test_verify_finds_each_kind_of_difference_and_repair_fixes_them(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(40):
        dynamodb.put_item(
            TableName=table,
            Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}, "b": {"B": bytes([index])}},
        )
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    clean = invoke("verify", table, "--bucket", bucket, "--prefix", prefix)
    assert clean.exit_code == 0, clean.output

    # Changes the backup never saw (no stream):
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "new"}})  # missing from the backup
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k3"}})  # only in the backup
    dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "k5"}, "v": {"N": "2"}, "b": {"B": bytes([5])}}
    )  # different
    found = invoke("--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix)
    assert found.exit_code == 1
    report = json.loads(found.stdout)
    assert (report["missing"], report["extra"], report["different"]) == (1, 1, 1)
    assert report["items_in_table"] == 40 and report["objects_in_backup"] == 40
    assert report["samples"] == {
        "missing": ['{"pk":{"S":"new"}}'],
        "extra": ['{"pk":{"S":"k3"}}'],
        "different": ['{"pk":{"S":"k5"}}'],
    }

    repaired = invoke(
        "--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"
    )
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout)["repaired"] == 3
    again = invoke("verify", table, "--bucket", bucket, "--prefix", prefix)
    assert again.exit_code == 0, again.output
    history = invoke(
        "--output", "json", "history", table, '{"pk": "k3"}', "--bucket", bucket, "--prefix", prefix
    )
    events = [entry["event"] for entry in json.loads(history.stdout)["history"]]
    assert events == ["delete-marker", "delete", "backfill"]


@pytest.mark.servers
def test_snapshot_writes_a_dynamodb_export(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(30):
        dynamodb.put_item(
            TableName=table,
            Item={
                "pk": {"S": f"k{index}"},
                "pad": {"S": "x" * 200},
                "n": {"N": "12345678901234567890123456789012345678"},
            },
        )
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    folder = open_folder(s3, bucket, prefix, table)
    report = Snapshot(
        s3,
        BotocoreObjects(s3, bucket),
        folder,
        f"s3://{bucket}/{prefix}-export/snap",
        SnapshotOptions(file_bytes=2000, partitions=1),
    ).run()
    assert report.complete and report.items == 30 and len(report.files) >= 3

    exported: dict[str, Any] = {}
    for entry in report.files:
        data = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read())
        lines = data.decode().splitlines()
        assert len(lines) == entry["items"]
        for line in lines:
            item = json.loads(line)["Item"]
            exported[json.dumps({"pk": item["pk"]}, sort_keys=True)] = item
    assert exported == scan_all(dynamodb, table)
    summary = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}-export/snap/manifest-summary.json")[
            "Body"
        ].read()
    )
    assert summary["itemCount"] == 30 and summary["outputFormat"] == "DYNAMODB_JSON"
    manifest = s3.get_object(Bucket=bucket, Key=f"{prefix}-export/snap/manifest-files.json")
    assert len(manifest["Body"].read().decode().splitlines()) == len(report.files)

    via_cli = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", f"s3://{bucket}/{prefix}-cli")
    assert via_cli.exit_code == 0, via_cli.output
    assert "30 items in" in via_cli.output


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # moto's state is this process's: the server is reset when the test ends (moto_server),
    # or the next test on this worker that expects an empty account finds these tables.
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    with moto_server() as endpoint:
        yield endpoint


def test_native_import_restores_through_importtable_on_moto(moto_endpoint: str) -> None:
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

    dynamodb, s3 = client("dynamodb"), client("s3")
    s3.create_bucket(Bucket="backups")
    s3.put_bucket_versioning(Bucket="backups", VersioningConfiguration={"Status": "Enabled"})
    dynamodb.create_table(
        TableName="Source",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    items = [
        {
            "pk": {"S": f"item-{index}"},
            "g": {"N": str(index % 3)},
            "n": {"N": "-12345678901234567890.123456789"},
            "b": {"B": bytes([index, 255])},
            "m": {"M": {"l": {"L": [{"SS": ["x", "y"]}]}}},
        }
        for index in range(12)
    ]
    for item in items:
        dynamodb.put_item(TableName="Source", Item=item)
    base = ["--endpoint-url", moto_endpoint, "--region", "us-east-1"]
    backfilled = invoke(*base, "backfill", "Source", "--bucket", "backups", "--prefix", "Prod")
    assert backfilled.exit_code == 0, backfilled.output

    result = invoke(
        *base,
        "--output",
        "json",
        "restore",
        "backups",
        "Prod/Source",
        "Imported",
        "--native-import",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["import"]["status"] == "COMPLETED" and summary["import"]["imported"] == 12
    assert summary["snapshot"]["items"] == 12
    imported = dynamodb.describe_table(TableName="Imported")["Table"]
    assert [index["IndexName"] for index in imported["GlobalSecondaryIndexes"]] == ["by-g"]
    restored = {
        item["pk"]["S"]: to_wire(item) for item in dynamodb.scan(TableName="Imported")["Items"]
    }
    assert restored == {item["pk"]["S"]: to_wire(item) for item in items}

    exists = invoke(*base, "restore", "backups", "Prod/Source", "Imported", "--native-import")
    assert exists.exit_code == 1 and "table Imported exists" in exists.output


@pytest.mark.servers
def test_history_resolves_the_key_from_the_description_after_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, [("pk", "B")], view_type=None)
    dynamodb.put_item(TableName=table, Item={"pk": {"B": b"\x00\x01"}, "v": {"S": "x"}})
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    shown = invoke(
        "--output",
        "json",
        "history",
        table,
        '{"pk": "AAE="}',
        "--bucket",
        bucket,
        "--prefix",
        prefix,
    )
    assert shown.exit_code == 0, shown.output
    (entry,) = json.loads(shown.stdout)["history"]
    assert entry["event"] == "backfill" and entry["item"]["v"] == {"S": "x"}
    assert json.loads(shown.stdout)["object"].endswith(
        object_key(prefix, table, {"pk": {"B": "AAE="}})
    )
