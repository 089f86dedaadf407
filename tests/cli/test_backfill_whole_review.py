"""Review of b6f329e ("backfill completeness from what a run copied"): ways the folder's
readers still give part of the table as the whole of it, with exit 0, after the checks of
``cli/pending_check.require_checked_backfill`` / ``part_of_the_table``.

Each test fails on b6f329e."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.test_backfill_end_review import ROWS, filled, invoke, past_allowance
from tests.helpers import create_table, scan_all

pytestmark = pytest.mark.servers


def half_backfilled(bucket: str, prefix: str, table: str) -> None:
    """Only segment 0 of 2 backfilled: no backfill copied the whole table."""
    half = ["--bucket", bucket, "--prefix", prefix, "--total-segments", "2"]
    done = invoke("backfill", table, "--segment", "0", *half)
    assert done.exit_code == 0, done.output


def test_restore_delete_absent_from_a_half_backfilled_folder_deletes_live_rows(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """``restore --into-existing --delete-absent`` (the README's own example, into the
    backed-up table) treats the backup as the whole table, as convert's base does: every row
    the backup lacks is deleted. With only segment 0 of 2 backfilled, the rows of segment 1
    (never changed since, so never in the stream) are absent from the backup: the restore
    deletes them from the live table with a warning only, exit 0. ``convert`` refuses this
    very folder (``whole=True``); a restore that deletes should too."""
    table = filled(dynamodb)
    half_backfilled(bucket, prefix, table)
    restored = invoke(
        "restore", bucket, f"{prefix}/{table}", table, "--into-existing", "--delete-absent"
    )
    left = len(scan_all(dynamodb, table))
    assert restored.exit_code == 2 or left == ROWS, (
        f"exit {restored.exit_code}: {ROWS - left} of {ROWS} live rows deleted\n{restored.output}"
    )


def test_a_snapshot_of_a_half_backfilled_folder_makes_a_whole_backfill_elsewhere(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """``snapshot`` of a folder where no backfill copied the whole table only warns; its
    export holds half the rows. ``backfill --from-export`` of that export into another folder
    marks its run ``copied_whole: true`` from the export's moment, so that folder claims the
    whole table and ``convert`` of it exits 0, silently (its only warning is about the journal
    trigger), with a base of half the rows (the table held all of them at the export's
    moment); restores of the journal folder lack them for good. The backfill itself saw it:
    "23/40 items" (the table's ItemCount) and said nothing."""
    table = filled(dynamodb)
    half_backfilled(bucket, prefix, table)
    export = f"s3://{bucket}/{prefix}-export"
    snapped = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", export)
    if snapped.exit_code == 2:  # an export stands for the whole table: refused
        assert "no backfill has copied the whole table" in snapped.output, snapped.output
        return
    assert snapped.exit_code == 0, snapped.output
    assert "warning:" in snapped.output  # the one word of it
    copy = f"{prefix}-copy"
    copied = invoke(
        "backfill", table, "--bucket", bucket, "--prefix", copy, "--from-export", export
    )
    assert copied.exit_code == 0, copied.output
    moment = past_allowance()
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, f"{copy}/{table}", journal, "--at", moment)
    if converted.exit_code == 2:
        return
    assert converted.exit_code == 0, converted.output
    restored = invoke("restore", bucket, journal, f"{table}-journal")
    assert restored.exit_code == 0, restored.output
    rows = len(scan_all(dynamodb, f"{table}-journal"))
    said = converted.output + restored.output
    assert rows == ROWS or "whole table" in said, (
        f"convert exit 0, no word of part of the table: a base of {rows} of {ROWS} rows\n"
        f"{converted.output}\n{copied.output}"
    )


def test_a_journal_folder_converted_with_allow_incomplete_backfill_reads_silently(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """``convert --allow-incomplete-backfill`` of a folder where no backfill copied the whole
    table: the item folder's readers warn (part of the table), the conversion warns, but it
    notes nothing in the journal folder (``record_whole_copy`` only when a whole backfill was
    found). The journal folder's base claims the whole table: every later restore of it gives
    half the rows without a word, though the item folder it came from still warns."""
    table = filled(dynamodb)
    half_backfilled(bucket, prefix, table)
    moment = past_allowance()
    folder, journal = f"{prefix}/{table}", f"{prefix}-journal/{table}"
    converted = invoke(
        "convert", bucket, folder, journal, "--at", moment, "--allow-incomplete-backfill"
    )
    assert converted.exit_code == 0, converted.output
    assert "no backfill has copied the whole table" in converted.output  # the run was told
    item = invoke("restore", bucket, folder, f"{table}-item")
    assert item.exit_code == 0, item.output
    assert "no backfill has copied the whole table" in item.output  # the item folder warns
    restored = invoke("restore", bucket, journal, f"{table}-journal")
    assert restored.exit_code == 0, restored.output
    rows = len(scan_all(dynamodb, f"{table}-journal"))
    assert rows == ROWS or "whole table" in restored.output, (
        f"the journal folder gives {rows} of {ROWS} rows without a word:\n{restored.output}"
    )


def re_created(dynamodb: Any, table: str, rows: dict[str, str]) -> None:
    """The table deleted and made again under its name (same key), holding ``rows``."""
    dynamodb.delete_table(TableName=table)
    dynamodb.get_waiter("table_not_exists").wait(TableName=table)
    create_table(dynamodb, name=table)  # with a stream, as deploy would turn on
    dynamodb.get_waiter("table_exists").wait(TableName=table)
    for key, value in rows.items():
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"S": value}})


def test_a_re_created_table_is_never_backed_up_into_the_old_ones_folder(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The table is deleted and made again under its name; a row of the old one, k000, is
    in the new one with another value. A backfill of the new table into the old folder once
    exited 0: it skipped k000 (its object had a current version, the old table's), so the
    folder said "old" where the table said "new", and rows of the old table only stayed as
    if alive; with only segment 0 of 2 done, the old table's whole backfill still counted
    for the new one (convert exited 0 with part of it). Now every writer of the folder
    refuses, naming both tables, before it writes."""
    table = filled(dynamodb)
    journal = f"{prefix}-journal"
    for folder, layout in ((prefix, "items"), (journal, "journal")):
        whole = invoke(
            "backfill", table, "--bucket", bucket, "--prefix", folder, "--layout", layout
        )
        assert whole.exit_code == 0, whole.output
    re_created(dynamodb, table, {"k000": "new", "fresh": "new"})
    for folder, arguments in (
        (prefix, ["--total-segments", "2", "--segment", "0"]),
        (prefix, []),
        (journal, []),
    ):
        refused = invoke("backfill", table, "--bucket", bucket, "--prefix", folder, *arguments)
        assert refused.exit_code == 2, refused.output
        assert f"s3://{bucket}/{folder}/{table}/ backs up a table {table}" in refused.output
        assert "deleted since" in refused.output
        assert "another --prefix" in refused.output and "Traceback" not in refused.output
    stream = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once")
    assert stream.exit_code == 2 and "deleted since" in stream.output, stream.output
    other = invoke("backfill", table, "--bucket", bucket, "--prefix", f"{prefix}-new")
    assert other.exit_code == 0, other.output  # as the message says
    restored = invoke("restore", bucket, f"{prefix}-new/{table}", f"{table}-new")
    assert restored.exit_code == 0, restored.output
    rows = {row["pk"]["S"]: row["v"]["S"] for row in scan_all(dynamodb, f"{table}-new").values()}
    assert rows == {"k000": "new", "fresh": "new"}


def exported(bucket: str, prefix: str, table: str) -> str:
    """An export of the table as it is now (a whole backfill's snapshot): its s3:// URL."""
    source = f"{prefix}-src"
    whole = invoke("backfill", table, "--bucket", bucket, "--prefix", source)
    assert whole.exit_code == 0, whole.output
    export = f"s3://{bucket}/{prefix}-export"
    snapped = invoke("snapshot", bucket, f"{source}/{table}", "--to", export)
    assert snapped.exit_code == 0, snapped.output
    return export


def stream_on(dynamodb: Any, table: str) -> None:
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def test_an_export_older_than_the_streams_start_is_no_whole_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """An export made at T0; a row put at T1; the table's stream switched on at T2 (its
    ``LatestStreamLabel`` says when). ``backfill --from-export`` of that export once marked
    its run whole from T0 (``whole_from``), though the row of T1 is in neither the export nor
    the stream, and convert (latest) exited 0 with no word, its base lacking the row for good.
    Now the backfill says so and its run does not count as whole."""
    table = filled(dynamodb)
    export = exported(bucket, prefix, table)
    past_allowance()
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "between"}})
    past_allowance()
    stream_on(dynamodb, table)
    assert dynamodb.describe_table(TableName=table)["Table"].get("LatestStreamLabel")
    copied = invoke(
        "backfill", table, "--bucket", bucket, "--prefix", prefix, "--from-export", export
    )
    assert copied.exit_code == 0, copied.output
    assert "before its stream began" in copied.output  # said by the backfill itself
    moment = past_allowance()
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, f"{prefix}/{table}", journal, "--at", moment)
    assert converted.exit_code == 2, converted.output  # nothing written
    assert "no backfill has copied the whole table" in converted.output


def test_an_export_made_after_the_streams_start_is_a_whole_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The other side of the comparison: the stream on first, then the export, whose
    backfill counts as whole without a word (convert needs no --allow-incomplete-backfill)."""
    table = filled(dynamodb)
    stream_on(dynamodb, table)
    past_allowance()
    export = exported(bucket, prefix, table)
    copied = invoke(
        "backfill", table, "--bucket", bucket, "--prefix", prefix, "--from-export", export
    )
    assert copied.exit_code == 0, copied.output
    assert "stream began" not in copied.output
    moment = past_allowance()
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, f"{prefix}/{table}", journal, "--at", moment)
    assert converted.exit_code == 0, converted.output
    assert "whole table" not in converted.output
    restored = invoke("restore", bucket, journal, f"{table}-journal")
    assert restored.exit_code == 0, restored.output
    assert len(scan_all(dynamodb, f"{table}-journal")) == ROWS
