"""Review of 92e4411 ("a table deleted and made again is not backed up into the old one's
folder"): where the identity check still lets two tables mix in one folder, and where it
refuses a legitimate flow with no way forward. Each test failed on 92e4411."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dynamo_backups.backup.description import _jsonable, table_identity
from tests.cli.test_backfill_end_review import invoke
from tests.cli.test_backfill_whole_review import re_created, stream_on
from tests.helpers import create_table, scan_all


def old_table(dynamodb: Any) -> str:
    """A table with a stream: k000 (to be changed by its namesake) and gone (not in it)."""
    table = create_table(dynamodb)
    for key in ("k000", "gone"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"S": "old"}})
    return table


def latest(dynamodb: Any, bucket: str, folder: str, into: str) -> dict[str, str]:
    """What a restore (latest) of the folder gives: key -> v."""
    restored = invoke("restore", bucket, folder, into)
    assert restored.exit_code == 0, restored.output
    return {row["pk"]["S"]: row["v"]["S"] for row in scan_all(dynamodb, into).values()}


def versions(s3: Any, bucket: str, folder: str) -> list[tuple[str, str]]:
    """Every version and delete marker under the folder (what a writer changed)."""
    found: list[tuple[str, str]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=folder):
        for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
            found.append((entry["Key"], entry["VersionId"]))
    return sorted(found)


@pytest.mark.servers
def test_a_folder_only_stream_wrote_takes_a_re_created_tables_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """`stream` (a host's consumer, README "stream") backs the table up and never saves its
    description. The table is deleted and made again (k000 with another value, gone absent);
    `backfill` of the new table into that folder exits 0, "1 already in the backup": k000
    keeps the old table's value, gone stays alive, and table.json now names the new table,
    so no later writer can tell either. Exactly the mixing 92e4411 refuses elsewhere."""
    table = old_table(dynamodb)
    streamed = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once")
    assert streamed.exit_code == 0, streamed.output
    re_created(dynamodb, table, {"k000": "new", "fresh": "new"})
    backfilled = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    if backfilled.exit_code == 2:
        assert "deleted since" in backfilled.output, backfilled.output
        return
    assert backfilled.exit_code == 0, backfilled.output
    rows = latest(dynamodb, bucket, f"{prefix}/{table}", f"{table}-latest")
    assert rows == {"k000": "new", "fresh": "new"}, f"{rows}\n{backfilled.output}"


@pytest.mark.servers
def test_verify_repair_writes_a_re_created_table_into_the_old_ones_folder(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """backfill, stream and deploy refuse the re-created table; `verify --repair` of the
    same folder exits 0, "repaired: 3": the new table's rows written as repairs, the old
    table's own row deleted, all in the old table's history (and table.json still names the
    old table, so backfill refuses afterwards what repair already merged). Plain `verify`
    reports 3 differences without a word that the table is another one."""
    table = old_table(dynamodb)
    whole = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert whole.exit_code == 0, whole.output
    re_created(dynamodb, table, {"k000": "new", "fresh": "new"})
    before = versions(s3, bucket, f"{prefix}/{table}/")
    repaired = invoke("verify", table, "--bucket", bucket, "--prefix", prefix, "--repair")
    after = versions(s3, bucket, f"{prefix}/{table}/")
    assert (repaired.exit_code, after) == (2, before), repaired.output
    assert "deleted since" in repaired.output


@pytest.mark.servers
def test_a_table_restored_into_its_own_name_can_be_backed_up_again(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The disaster this tool exists for: the table is deleted by mistake and `restore`d
    (latest) from its folder into its own name. The restore report says: "the source had one
    (NEW_AND_OLD_IMAGES): turn it on and deploy the backup for T". Its rows are exactly the
    folder's latest state, so backing it up into the same folder keeps one history; yet
    backfill (and stream, deploy) refuse "T made again ... a restore would bring back rows the
    new table never had" (it has them all), and offer only another --prefix: the table's
    history then splits in two folders (restore --at before the accident needs the old one,
    after it the new one), and no option continues the old folder."""
    table = old_table(dynamodb)
    whole = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert whole.exit_code == 0, whole.output
    dynamodb.delete_table(TableName=table)
    dynamodb.get_waiter("table_not_exists").wait(TableName=table)
    restored = invoke("restore", bucket, f"{prefix}/{table}", table)
    assert restored.exit_code == 0, restored.output
    assert f"deploy the backup for {table}" in restored.output
    stream_on(dynamodb, table)
    again = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert again.exit_code == 0, again.output
    streamed = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once")
    assert streamed.exit_code == 0, streamed.output


def test_a_creation_time_under_a_millisecond_is_the_same_table_once_saved() -> None:
    """table.json keeps CreationDateTime as format_time wrote it ("...:00.000Z" for 500 us);
    read back it is a whole second, which format_time writes "...:00Z": the same table
    compared with its own saved description is "made again"."""
    live = {"CreationDateTime": datetime(2026, 12, 5, 12, 0, 0, 500, tzinfo=UTC)}
    assert table_identity(live) == table_identity(_jsonable(live))
