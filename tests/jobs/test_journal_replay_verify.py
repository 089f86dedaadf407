"""replay, verify and verify --repair on a journal folder (docs/journal.md, "Implemented:
replay and verify"), against DynamoDB Local and SeaweedFS: a range the trigger gave up on,
replayed into the journal (never as item objects), seen by restore and compaction, replayed
again without doubling and without burying a newer change; and verify's answers, options and
exit codes on both layouts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.core.layout import parse_time
from tests.helpers import create_table, lambda_records
from tests.jobs.test_journal_compact_restore import (
    base_items,
    compact,
    restore,
    restored_state,
)
from tests.jobs.test_replay import report_for
from tests.pipeline.test_journal_writes import item_objects, journal_manifest, run_handler

pytestmark = pytest.mark.servers


@pytest.fixture
def journal_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: Any, bucket: str, prefix: str) -> str:
    """The handler's environment for a function installed with --layout journal."""
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    return prefix


def deliver(records: list[dict[str, Any]]) -> None:
    assert run_handler(copy.deepcopy(records)) == {"batchItemFailures": []}


def folder_keys(s3: Any, bucket: str, prefix: str, table: str) -> list[str]:
    """Every object (every version and delete marker) under the table's folder."""
    keys: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=f"{prefix}/{table}/"
    ):
        keys += [entry["Key"] for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    return keys


def by_pk(items: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = items.values() if isinstance(items, dict) else items
    return {item["pk"]["S"]: item for item in values}


def table_items(dynamodb: Any, table: str) -> dict[str, Any]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return by_pk(items)


# --- replay --------------------------------------------------------------------------------


def test_a_replayed_range_becomes_journal_pieces_that_restore_and_compaction_read(
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    prefix = journal_env
    table = create_table(dynamodb)
    folder = f"{prefix}/{table}"
    journal_manifest(s3, bucket, prefix, table, "journal")
    for pk, value in [("a", 1), ("b", 1), ("c", 1)]:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "v": {"N": str(value)}})
    # Given up on: a's second state (a newer one follows), c removed, d inserted.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "c"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "d"}, "v": {"N": "1.50"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "3"}})
    records = lambda_records(dynamodb, streams, table)
    given_up, went_on = records[3:6], records[:3] + records[6:]
    deliver(went_on)
    compact(s3, bucket, folder, None, partitions=16)  # a base made before the replay
    arn = records[0]["eventSourceARN"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for(given_up, shard["ShardId"]) + "\n")
    replay = ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix]

    result = CliRunner().invoke(main, replay)

    assert result.exit_code == 0, result.output
    assert "replayed 3 records" in result.output
    written = folder_keys(s3, bucket, prefix, table)
    # Nothing in the item layout: every object is the journal's or a base's.
    assert item_objects(s3, bucket, prefix, table) == []
    assert all(key.startswith((f"{folder}/journal/", f"{folder}/bases/")) for key in written)
    # The replayed changes are late for the base: restore places them against its index.
    live = table_items(dynamodb, table)
    assert set(live) == {"a", "b", "d"} and live["a"]["v"]["N"] == "3"
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == live  # a's newer state kept, c removed, d there

    # Replayed again: the same pieces (If-None-Match, checked), nothing doubled or buried.
    again = CliRunner().invoke(main, replay)
    assert again.exit_code == 0, again.output
    assert sorted(folder_keys(s3, bucket, prefix, table)) == sorted(written)
    job = compact(s3, bucket, folder, None, partitions=16)  # the next base folds them in
    moment = parse_time(job.report.moment or "")
    assert by_pk(base_items(s3, bucket, folder, moment)) == live
