"""backfill and the folder's layout: item objects copied into a journal folder would be read
by no journal reader, so a backfill into one (recorded, or asked for with --layout journal)
is refused before anything is written; a backfill base comes with compaction."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.manifest import ensure_manifest, read_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from tests.helpers import create_table

pytestmark = pytest.mark.servers


def everything_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    answer = s3.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/")
    return sorted(
        entry["Key"] for entry in answer.get("Versions", []) + answer.get("DeleteMarkers", [])
    )


def backfill(bucket: str, prefix: str, table: str, *more: str) -> Any:
    return CliRunner().invoke(
        main, ["backfill", table, "--bucket", bucket, "--prefix", prefix, *more]
    )


def test_a_backfill_into_a_journal_folder_is_refused_and_writes_nothing(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    ensure_manifest(
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        {"pk": "S"},
        "journal",
    )
    before = everything_under(s3, bucket, prefix)

    for more in ((), ("--layout", "journal")):
        result = backfill(bucket, prefix, table, *more)
        assert result.exit_code == 2, result.output
        assert "journal folder" in result.output and "compact" in result.output
        assert "nothing was written" in result.output and "Traceback" not in result.output
    assert everything_under(s3, bucket, prefix) == before  # no item object, no table.json


def test_backfill_layout_journal_on_a_new_folder_is_refused_and_writes_nothing(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})

    result = backfill(bucket, prefix, table, "--layout", "journal")

    assert result.exit_code == 2 and "journal folder" in result.output
    assert everything_under(s3, bucket, prefix) == []


def test_backfill_layout_items_into_an_item_folder_copies_as_before(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})

    result = backfill(bucket, prefix, table, "--layout", "items")

    assert result.exit_code == 0, result.output
    manifest = read_manifest(s3, bucket, TableLayout.of(prefix, table))
    assert manifest is not None and "layout" not in manifest
    items = [key for key in everything_under(s3, bucket, prefix) if "/.dynamo-backups/" not in key]
    assert len(items) == 1
