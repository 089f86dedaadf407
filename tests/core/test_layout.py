"""Object keys, metadata and times of the backup layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dynamo_backups.core.layout import (
    LayoutError,
    TableLayout,
    VersionMetadata,
    epoch_to_datetime,
    format_time,
    parse_stream_arn,
    parse_time,
)
from tests.helpers import expected_name

KEY = {"Id": {"N": "101"}}


@pytest.mark.parametrize("prefix", ["Prod", "Prod/", "/Prod"])
def test_object_key_under_prefix(prefix: str) -> None:
    layout = TableLayout.of(prefix, "Users")
    assert layout.item_object_key(KEY) == f"Prod/Users/{expected_name(KEY)}"
    assert layout.items_prefix == "Prod/Users/"


def test_object_key_without_prefix() -> None:
    layout = TableLayout.of("", "Users")
    assert layout.item_object_key(KEY) == f"Users/{expected_name(KEY)}"


def test_tool_files_live_outside_the_items_folder() -> None:
    layout = TableLayout.of("Prod", "Users")
    for key in (layout.manifest_key, layout.table_description_key, layout.checkpoint_key("c")):
        assert key.startswith("Prod/.dynamo-backups/Users/")
        assert not key.startswith(layout.items_prefix)


def test_restore_folder_form() -> None:
    assert TableLayout.from_folder("Prod/Users/") == TableLayout.of("Prod", "Users")
    assert TableLayout.from_folder("Users") == TableLayout.of("", "Users")
    with pytest.raises(LayoutError, match="must name the table's folder"):
        TableLayout.from_folder("/")


def test_bad_names_are_refused_clearly() -> None:
    with pytest.raises(LayoutError, match="not a DynamoDB table name"):
        TableLayout.of("", "a/b")
    with pytest.raises(LayoutError, match="reserved"):
        TableLayout.of("", ".dynamo-backups")
    with pytest.raises(LayoutError, match="empty path segment"):
        TableLayout.of("a//b", "Users")


def test_stream_arn_parts() -> None:
    arn = parse_stream_arn(
        "arn:aws:dynamodb:us-west-2:account-id:table/ExampleTableWithStream/stream/2015-06-27T00:48:05.899"
    )
    assert (arn.region, arn.account, arn.table) == (
        "us-west-2",
        "account-id",
        "ExampleTableWithStream",
    )
    with pytest.raises(LayoutError, match="malformed eventSourceARN"):
        parse_stream_arn("arn:aws:dynamodb:us-west-2:1:table/T")


def test_times() -> None:
    assert epoch_to_datetime(1795782900.0) == datetime(2026, 11, 27, 12, 35, tzinfo=UTC)
    assert format_time(epoch_to_datetime("1795782953.505")) == "2026-11-27T12:35:53.505Z"
    assert parse_time("2026-11-27T13:35:53+01:00") == datetime(2026, 11, 27, 12, 35, 53, tzinfo=UTC)
    assert parse_time("1795782953") == datetime(2026, 11, 27, 12, 35, 53, tzinfo=UTC)
    with pytest.raises(ValueError, match="has no zone"):
        parse_time("2026-11-27T12:00:00")


def test_metadata_round_trip() -> None:
    metadata = VersionMetadata("stream", "MODIFY", epoch_to_datetime(1795782953.5), "000123", "md5")
    assert metadata.to_s3() == {
        "writer": "stream",
        "event-name": "MODIFY",
        "change-time": "2026-11-27T12:35:53.500Z",
        "sequence-number": "000123",
        "key-hash": "md5",
    }
    assert VersionMetadata.from_s3(metadata.to_s3()) == metadata
    assert VersionMetadata.from_s3({}) is None
