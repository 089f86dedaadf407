"""Snapshots sized for ImportTable: at most 4,000,000 items a file, at most 50,000 files, the
file size raised for a table too large for that, and a destination that must be empty."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import BackupFolder, open_folder
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs import snapshot as snapshot_module
from dynamo_backups.jobs.snapshot import (
    DEFAULT_FILE_BYTES,
    JSON_SIZE_FACTOR,
    MAX_IMPORT_FILES,
    Snapshot,
    SnapshotOptions,
)
from tests.helpers import create_table


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def backed_up(dynamodb: Any, bucket: str, prefix: str, rows: int) -> str:
    table = create_table(dynamodb, view_type=None)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    return table


def run_snapshot(s3: Any, bucket: str, folder: BackupFolder, to: str, **options: Any) -> Any:
    return Snapshot(s3, BotocoreObjects(s3, bucket), folder, to, SnapshotOptions(**options)).run()


@pytest.mark.servers
def test_no_file_holds_more_items_than_importtable_takes_in_one(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, bucket, prefix, rows=30)
    monkeypatch.setattr(snapshot_module, "MAX_ITEMS_PER_FILE", 4)
    folder = open_folder(s3, bucket, prefix, table)
    report = run_snapshot(s3, bucket, folder, f"s3://{bucket}/{prefix}-snap", partitions=1)
    assert report.complete and report.items == 30
    assert [entry["items"] for entry in report.files] == [4, 4, 4, 4, 4, 4, 4, 2]
    for entry in report.files:
        body = s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read()
        assert len(gzip.decompress(body).splitlines()) == entry["items"]


@pytest.mark.servers
def test_more_files_than_one_import_takes_is_an_error_and_no_manifest(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, bucket, prefix, rows=30)
    monkeypatch.setattr(snapshot_module, "MAX_IMPORT_FILES", 3)
    result = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", f"s3://{bucket}/{prefix}-many")
    assert result.exit_code == 1
    assert "ImportTable takes 3 at most" in result.output and "larger --file-size" in result.output
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}-many/manifest")
    assert listed["KeyCount"] == 0


def test_a_large_table_gets_files_large_enough_for_one_import() -> None:
    layout = TableLayout.of("Prod", "Users")
    size = 10**13  # 10 TB in DynamoDB
    folder = BackupFolder("b", layout, None, {"table": {"TableSizeBytes": size}})
    job = Snapshot(None, None, folder, "s3://dest/x", SnapshotOptions(partitions=256))
    needed = -(-size * JSON_SIZE_FACTOR // (MAX_IMPORT_FILES - 256))
    assert job._file_bytes() == needed > DEFAULT_FILE_BYTES
    small = BackupFolder("b", layout, None, {"table": {"TableSizeBytes": 10**6}})
    job = Snapshot(None, None, small, "s3://dest/x", SnapshotOptions())
    assert job._file_bytes() == DEFAULT_FILE_BYTES


@pytest.mark.servers
def test_a_snapshot_needs_an_empty_place_and_resumes_over_its_own_files(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, bucket, prefix, rows=40)
    to = f"s3://{bucket}/{prefix}-place"
    original = snapshot_module._PartitionFiles.write

    def fail_in_partition_3(self: Any, item: dict[str, Any]) -> None:
        if self.prefix.endswith("/data/3-"):
            raise RuntimeError("host lost")
        original(self, item)

    with monkeypatch.context() as patched:
        patched.setattr(snapshot_module._PartitionFiles, "write", fail_in_partition_3)
        first = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", to)
    assert first.exit_code == 1 and "host lost" in first.output, first.output
    assert "no manifest written" in first.output

    again = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", to)
    assert again.exit_code == 2 and "already holds files" in again.output
    # What an attempt killed half-way leaves: a file of the unit that did not finish.
    s3.put_object(Bucket=bucket, Key=f"{prefix}-place/data/3-00007.json.gz", Body=b"stale")
    resumed = invoke(
        "--output", "json", "snapshot", bucket, f"{prefix}/{table}", "--to", to, "--resume"
    )
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["items"] == 40
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}-place/data/")
    keys = sorted(entry["Key"] for entry in listed["Contents"])
    assert keys == sorted(entry["key"] for entry in report["files"])  # the stale file is gone
