"""A table whose one key attribute is named like a DynamoDB type tag ("L", "BS", "B").

Object names and journal records were made by converting the key (and a one-attribute image)
to wire form as a whole, which read ``{"L": {"S": "a"}}`` as a typed list value: every item of
a table keyed "L" or "BS" got one object name (each backup overwrote the last: one item
restored), one keyed "B" could not be named at all, and a key-only item's journal record held
``{"L": ["S"]}``. Now every key and item is converted attribute by attribute. DynamoDB Local
and SeaweedFS, through the CLI and the Lambda handler."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.keys import object_name
from dynamo_backups.core.layout import TableLayout
from tests.helpers import create_table, lambda_records, scan_all
from tests.pipeline.test_journal_writes import run_handler

pytestmark = pytest.mark.servers


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


def keyed_like_a_type(dynamodb: Any, attribute: str, kind: str) -> tuple[str, list[Any]]:
    """A table keyed by ``attribute`` of type ``kind``: four items, three of them the key
    alone (a one-attribute item)."""
    table = create_table(dynamodb, key_schema=[(attribute, kind)])
    values: list[Any] = {
        "B": [b"\x01", b"\x02", b"\x03", b"\x04"],
        "N": ["1", "2.5", "-3", "40"],
    }.get(kind, ["a", "b", "c", "d"])
    for index, value in enumerate(values):
        item = {attribute: {kind: value}}
        if index == 3:
            item["n"] = {"N": "1.50"}
        dynamodb.put_item(TableName=table, Item=item)
    return table, values


def test_names_of_keys_named_like_a_type_are_the_keys_own() -> None:
    for attribute in ("L", "BS", "B", "M", "S"):
        names = {object_name({attribute: {"S": value}}) for value in "abc"}
        assert len(names) == 3, attribute  # one per key, not one per table


@pytest.mark.parametrize("transport", ["fast", "botocore"])
@pytest.mark.parametrize(("attribute", "kind"), [("L", "S"), ("BS", "N"), ("B", "S")])
def test_an_item_folder_of_a_table_keyed_like_a_type_restores_every_item(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: Any,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    attribute: str,
    kind: str,
    transport: str,
) -> None:
    """Through either transport: botocore's client converts binary for the calls, which
    read every key-only item of such a table as a typed value too."""
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", transport)
    table, values = keyed_like_a_type(dynamodb, attribute, kind)
    backfill = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert backfill.exit_code == 0, backfill.output
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/")
    assert len(listed.get("Contents", [])) == len(values)  # one object per item
    target = f"{table}-restored"
    restored = invoke("restore", bucket, f"{prefix}/{table}", target)
    assert restored.exit_code == 0, restored.output
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)


@pytest.mark.parametrize(("attribute", "kind"), [("L", "S"), ("B", "B")])
def test_a_journal_folder_of_a_table_keyed_like_a_type_restores_every_item(
    aws_env: Any,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    attribute: str,
    kind: str,
) -> None:
    table, _ = keyed_like_a_type(dynamodb, attribute, kind)
    ensure_manifest(
        BackupWriter(s3, bucket),
        TableLayout.of(journal_env, table),
        [{"AttributeName": attribute, "KeyType": "HASH"}],
        {attribute: kind},
        "journal",
    )
    dynamodb.delete_item(TableName=table, Key={attribute: {kind: b"\x02" if kind == "B" else "b"}})
    records = lambda_records(dynamodb, streams, table)
    assert run_handler(copy.deepcopy(records)) == {"batchItemFailures": []}
    target = f"{table}-restored"
    restored = invoke("restore", bucket, f"{journal_env}/{table}", target)
    assert restored.exit_code == 0, restored.output
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)
    assert len(scan_all(dynamodb, target)) == 3
