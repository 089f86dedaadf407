"""backfill and the folder's layout: into a journal folder (recorded, or asked for with
--layout journal) it writes a base, never item objects (which no journal reader reads); what
a journal backfill does not take is refused before anything is written."""

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


def test_a_backfill_into_a_journal_folder_writes_a_base_not_item_objects(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    journal_folder(s3, bucket, prefix, table)

    result = backfill(bucket, prefix, table)

    assert result.exit_code == 0, result.output
    assert "base s3://" in result.output
    written = [k for k in everything_under(s3, bucket, prefix) if "/.dynamo-backups/" not in k]
    assert written and all(f"/{table}/bases/" in key for key in written)  # no item object
    assert any(key.endswith("/manifest.json") for key in written)


def test_backfill_layout_journal_on_a_new_folder_records_the_layout_and_writes_a_base(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})

    result = backfill(bucket, prefix, table, "--layout", "journal")

    assert result.exit_code == 0, result.output
    manifest = read_manifest(s3, bucket, TableLayout.of(prefix, table))
    assert manifest is not None and manifest["layout"] == "journal"


@pytest.mark.parametrize(
    "more", [("--segment", "0", "--total-segments", "2"), ("--from-export", "new")]
)
def test_what_a_journal_backfill_does_not_take_is_refused_before_any_write(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str, more: Any
) -> None:
    table = create_table(dynamodb)
    journal_folder(s3, bucket, prefix, table)
    before = everything_under(s3, bucket, prefix)

    result = backfill(bucket, prefix, table, *more)

    assert result.exit_code == 2, result.output
    assert "journal folder" in result.output and "nothing was written" in result.output
    assert "Traceback" not in result.output
    assert everything_under(s3, bucket, prefix) == before


def test_backfill_layout_items_into_a_journal_folder_is_refused(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    journal_folder(s3, bucket, prefix, table)
    before = everything_under(s3, bucket, prefix)

    result = backfill(bucket, prefix, table, "--layout", "items")

    assert result.exit_code == 2 and "journal" in result.output, result.output
    assert everything_under(s3, bucket, prefix) == before


def journal_folder(s3: Any, bucket: str, prefix: str, table: str) -> None:
    ensure_manifest(
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        {"pk": "S"},
        "journal",
    )


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
