"""Readers and a backfill whose removal check never ran: the backfill put a row back on top
of the stream's deletion of it, then its process ended in the check (killed, or a second
Ctrl-C). Until a backfill completes the check, restore, snapshot and verify refuse the folder
(or read it with --allow-incomplete-backfill, warned), instead of bringing the row back."""

from __future__ import annotations

import json
import shlex
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests.helpers import bodies, create_table, history, make_backfill, object_key, scan_all

pytestmark = pytest.mark.servers

DOOMED = {"pk": {"S": "doomed"}}
CHECK = "dynamo_backups.jobs.backfill.restore_removals_under_backfill"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def backfill_killed_in_its_removal_check(
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    stop: type[BaseException],
) -> str:
    """A table of 10 rows and one more, "doomed", whose object holds the stream's deletion
    (a version, then a delete marker) while the row is still in the table, as when the stream
    deleted it after the scan read it; the backfill wrote it back over the deletion and ended
    (``stop``) in its removal check."""
    table = create_table(dynamodb, view_type=None)
    for index in range(10):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    dynamodb.put_item(TableName=table, Item={**DOOMED, "v": {"N": "1"}})
    doomed = object_key(prefix, table, DOOMED)
    s3.put_object(Bucket=bucket, Key=doomed, Body=json.dumps(DOOMED).encode())
    s3.delete_object(Bucket=bucket, Key=doomed)

    def ends(*args: Any, **kwargs: Any) -> int:
        raise stop("killed in the removal check")

    with monkeypatch.context() as patched:
        patched.setattr(CHECK, ends)
        with pytest.raises(stop):
            make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    # The scenario happened: the deleted row is a current object again.
    assert bodies(history(s3, bucket, doomed))[0] not in ("DM", None)
    return table


@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt], ids=["killed", "ctrl-c"])
def test_readers_refuse_a_folder_whose_backfill_check_is_pending_until_it_is_completed(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    stop: type[BaseException],
) -> None:
    before = datetime.now(UTC) - timedelta(hours=1)
    table = backfill_killed_in_its_removal_check(dynamodb, s3, bucket, prefix, monkeypatch, stop)
    folder = f"{prefix}/{table}"
    where = f"s3://{bucket}/{folder}/"
    now = datetime.now(UTC).isoformat()

    refused = [
        invoke("restore", bucket, folder, f"{table}-latest"),
        invoke("restore", bucket, folder, f"{table}-at", "--at", now),
        invoke("snapshot", bucket, folder, "--to", f"s3://{bucket}/exports/{table}"),
        invoke("verify", table, "--bucket", bucket, "--prefix", prefix),
    ]
    for result in refused:
        assert result.exit_code == 2, result.output
        (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert where in line and "has not checked its writes against deletions" in line
        assert "--resume" in line and "Traceback" not in result.output
    assert f"{table}-latest" not in dynamodb.list_tables()["TableNames"]  # nothing written
    resume = line.split("`")[1]
    command = ["dynamo-backups", "backfill", table, "--bucket", bucket, "--prefix", prefix]
    assert resume == shlex.join([*command, "--segments", "1", "--resume"])

    # Before the backfill began, the folder is what the stream wrote: nothing to refuse (it
    # held no item then, which the restore says on its own).
    earlier = invoke("restore", bucket, folder, f"{table}-before", "--at", before.isoformat())
    assert "the backup held no item at" in earlier.output, earlier.output
    # A conversion's base at that moment would claim the whole table, which no backfill has
    # copied yet (the one begun later has not ended): refused.
    journal = f"{prefix}-journal/{table}"
    early = invoke("convert", bucket, folder, journal, "--at", before.isoformat())
    assert early.exit_code == 2, early.output
    assert "no backfill has copied the whole table" in early.output

    # Told to, a restore reads the folder as it is, with a warning.
    allowed = invoke("restore", bucket, folder, f"{table}-as-is", "--allow-incomplete-backfill")
    assert allowed.exit_code == 0, allowed.output
    assert "warning:" in allowed.output and where in allowed.output

    resumed = invoke(*shlex.split(resume)[1:])
    assert resumed.exit_code == 0, resumed.output
    restored = invoke("restore", bucket, folder, f"{table}-checked")
    assert restored.exit_code == 0, restored.output
    assert scan_all(dynamodb, f"{table}-checked") == scan_all(dynamodb, table)
    assert invoke("verify", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0


def test_a_new_run_over_a_pending_check_keeps_its_moment_and_a_later_check_covers_ended_runs(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second run that dies too keeps the first one's moment (its writes are unchecked).
    Both runs ended (their leases released), so another job's check that completes after, over
    the whole folder, covers their writes. (A check never covers a run that may still write:
    tests/jobs/test_backfill_pending_runs.py.)"""
    table = backfill_killed_in_its_removal_check(
        dynamodb, s3, bucket, prefix, monkeypatch, SystemExit
    )
    folder = f"{prefix}/{table}"
    first = invoke("restore", bucket, folder, f"{table}-a").output
    with monkeypatch.context() as patched:
        patched.setattr(CHECK, lambda *args, **kwargs: (_ for _ in ()).throw(SystemExit()))
        with pytest.raises(SystemExit):
            make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    second = invoke("restore", bucket, folder, f"{table}-b").output
    began = first.split(" began writing at ")[1].split(" ")[0]
    assert f" began writing at {began} " in second, (first, second)

    other = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=2, segment=1).run()
    assert other.complete
    checked = invoke("restore", bucket, folder, f"{table}-c")
    assert checked.exit_code == 0, checked.output
    assert scan_all(dynamodb, f"{table}-c") == scan_all(dynamodb, table)


def test_a_read_of_part_of_the_table_a_backfill_copied_is_warned_and_not_converted(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """Rows the table held before its stream began have a version only from the moment the
    backfill read them: a restore --at before that finds a part of the table, and said
    nothing (exit 0, fewer rows). Now it warns: while only some segments were copied, that no
    backfill copied the whole table; then, for a moment before the first backfill that did
    ended, naming it. A moment after it is read without a word."""
    table = create_table(dynamodb, view_type=None)
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    folder, where = f"{prefix}/{table}", f"s3://{bucket}/{prefix}/{table}/"
    half = ["--bucket", bucket, "--prefix", prefix, "--total-segments", "2"]
    assert invoke("backfill", table, "--segment", "0", *half).exit_code == 0
    between = datetime.now(UTC)  # half the table copied
    partial = invoke("restore", bucket, folder, f"{table}-half", "--at", between.isoformat())
    assert partial.exit_code == 0, partial.output
    (line,) = [line for line in partial.output.splitlines() if line.startswith("warning:")]
    assert where in line and "no backfill has copied the whole table" in line
    copied = len(scan_all(dynamodb, f"{table}-half"))
    assert 0 < copied < 20

    assert invoke("backfill", table, "--segment", "1", *half).exit_code == 0
    warned = invoke("restore", bucket, folder, f"{table}-early", "--at", between.isoformat())
    assert warned.exit_code == 0, warned.output
    assert len(scan_all(dynamodb, f"{table}-early")) == copied  # still a part of the table
    (line,) = [line for line in warned.output.splitlines() if line.startswith("warning:")]
    assert where in line and "before the first backfill that copied the whole table" in line
    assert "(backfill-segment-" in line
    snapshot = ["--to", f"s3://{bucket}/exports/{table}", "--at", between.isoformat()]
    exported = invoke("snapshot", bucket, folder, *snapshot)
    assert "before the first backfill that copied the whole" in exported.output, exported.output

    time.sleep(3.5)  # past the backfill's end and the clocks' allowance
    later = datetime.now(UTC).isoformat()
    whole = invoke("restore", bucket, folder, f"{table}-whole", "--at", later)
    assert whole.exit_code == 0 and "warning:" not in whole.output, whole.output
    assert scan_all(dynamodb, f"{table}-whole") == scan_all(dynamodb, table)

    # A conversion's base claims the whole table at its moment: refused, not warned.
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, folder, journal, "--at", between.isoformat())
    assert converted.exit_code == 2, converted.output
    (line,) = [line for line in converted.output.splitlines() if line.startswith("error:")]
    assert where in line and "--allow-incomplete-backfill" in line
    assert not s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}-journal/").get("KeyCount")
    told = ["--at", between.isoformat(), "--allow-incomplete-backfill"]
    assert invoke("convert", bucket, folder, journal, *told).exit_code == 0
