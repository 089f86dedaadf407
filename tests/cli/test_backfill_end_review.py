"""Review of "a moment before the first complete backfill ended" (backup/removal_check.py
``whole_since``, cli/pending_check.py, convert's refusal): done removal-check markers are
taken to mean a backfill of the whole table ran to its end, which they do not.

Each test shows a way a conversion still writes a journal base that lacks rows the table held
at its moment (claiming the whole table, so restores of the journal folder lack them for
good), or a refusal that fires where the base would be complete."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from dynamo_backups.backup.removal_check import removal_check_markers, whole_since
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from tests.cli.test_interrupt import ROWS as BIG
from tests.cli.test_interrupt import (
    cli,
    environment,
    filled_table,
    interrupt_when,
    objects_under,
)
from tests.helpers import create_table, lean_scan, make_backfill, scan_all

pytestmark = pytest.mark.servers

ROWS = 40
CHECK = "dynamo_backups.jobs.backfill.restore_removals_under_backfill"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def filled(dynamodb: Any, rows: int = ROWS) -> str:
    table = create_table(dynamodb, view_type=None)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index:03d}"}})
    return table


def scan_failing_segment(dynamodb: Any, segment: int) -> Any:
    """A Scan that DynamoDB refuses for one segment (a permission or throttling failure that
    outlasts the retries): that segment's rows are never read."""
    scan = lean_scan(dynamodb)

    def scanned(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("Segment") == segment:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "Scan"
            )
        return scan(request)

    return scanned


def past_allowance() -> str:
    """A moment after everything so far, past the clocks' allowance (2 s) and S3's second."""
    time.sleep(3.5)
    return datetime.now(UTC).isoformat()


def journal_rows(dynamodb: Any, bucket: str, journal: str, table: str) -> int:
    """How many rows a restore of the journal folder (latest) gives."""
    restored = invoke("restore", bucket, journal, f"{table}-journal")
    assert restored.exit_code == 0, restored.output
    return len(scan_all(dynamodb, f"{table}-journal"))


def whole(s3: Any, bucket: str, prefix: str, table: str) -> Any:
    return whole_since(removal_check_markers(s3, bucket, TableLayout.of(prefix, table))[1])


def convert_between(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, table: str, rows: int, complete: Any
) -> None:
    """After a backfill run that did not read the whole table but whose marker is done: a
    moment M past it, then a complete backfill (``complete()``, a fresh run: its reads, hence
    its versions, are after M). The first complete backfill ended after M, so convert at M must
    be refused: its base can hold only the rows the first run copied."""
    counted = whole(s3, bucket, prefix, table)  # what the check takes for the backfill's end
    moment = past_allowance()
    time.sleep(1.5)  # the complete run's reads are dated (to the second) after M's second
    complete()
    ended = whole(s3, bucket, prefix, table)
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, f"{prefix}/{table}", journal, "--at", moment)
    if converted.exit_code != 0:
        assert converted.exit_code == 2, converted.output
        return
    base = journal_rows(dynamodb, bucket, journal, table)
    raise AssertionError(
        f"convert --at {moment} was accepted: a base of {base} of {rows} rows; taken for the "
        f"first complete backfill: {counted} (the complete one: {ended})\n{converted.output}"
    )


def test_a_backfill_that_failed_midway_is_not_a_complete_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A whole-table backfill (2 segments) whose segment 1 failed: its removal check still runs
    in full over what was written, and marks the run's marker done; ``whole_since`` then takes
    that run for a complete backfill of the whole table. After a fresh complete run, convert
    at a moment between the two passes its check and writes a base lacking the rows."""
    table = filled(dynamodb)
    backfill = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=scan_failing_segment(dynamodb, 1),
        total_segments=2,
    )  # fmt: skip
    try:
        report = backfill.run()
        assert not report.complete
    except Exception:  # a failed unit may end the run with an error: the same marker
        pass
    copied = objects_under(s3, bucket, f"{prefix}/{table}/")
    assert 0 < copied < ROWS  # the scenario: part of the table copied

    def complete() -> None:
        again = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
        assert again.exit_code == 0, again.output

    convert_between(dynamodb, s3, bucket, prefix, table, ROWS, complete)


def test_a_backfill_stopped_by_ctrl_c_is_not_a_complete_backfill(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """Ctrl-C once: the backfill stops, checks the rows written so far against deletions, and
    that check marks its marker done (exit 130). That run now counts as a complete backfill
    of the whole table; a later complete run does not move that end."""
    table = filled_table(dynamodb)
    items = f"{prefix}/{table}/"
    command = cli(
        "backfill", table, "--bucket", bucket, "--prefix", prefix, "--segments", "2",
        "--workers", "2", "--max-items-per-second", "250",
    )  # fmt: skip
    stopped, _ = interrupt_when(
        command, environment(aws_env), lambda: objects_under(s3, bucket, items) >= 100
    )
    assert stopped.returncode == 130, stopped.stderr
    copied = objects_under(s3, bucket, items)
    assert copied < BIG, "the backfill ended before Ctrl-C: no scenario"

    def complete() -> None:
        again = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
        assert again.exit_code == 0, again.output

    convert_between(dynamodb, s3, bucket, prefix, table, BIG, complete)


def test_a_killed_run_covered_by_another_segments_check_is_not_a_complete_segment(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``backfill --segment 1 --total-segments 2`` read nothing (its scan failed) and was
    killed in its removal check: its marker stays pending. ``--segment 0`` then completes,
    its check covers the ended run's writes and marks that marker done (``checked_by``): now
    both segments of 2 look complete when segment 0 ended, though segment 1's rows are first
    copied by a later run of it."""
    table = filled(dynamodb)

    def killed(*args: Any, **kwargs: Any) -> int:
        raise SystemExit("killed in the removal check")

    with monkeypatch.context() as patched:
        patched.setattr(CHECK, killed)
        first = make_backfill(
            dynamodb, s3, bucket, prefix, table, scan=scan_failing_segment(dynamodb, 1),
            total_segments=2, segment=1,
        )  # fmt: skip
        with pytest.raises(SystemExit):
            first.run()
    assert objects_under(s3, bucket, f"{prefix}/{table}/") == 0
    pending, _ = removal_check_markers(s3, bucket, TableLayout.of(prefix, table))
    assert [check.job for check in pending] == ["backfill-segment-1-of-2"]

    segments = ["--bucket", bucket, "--prefix", prefix, "--total-segments", "2"]
    second = invoke("backfill", table, "--segment", "0", *segments)
    assert second.exit_code == 0, second.output
    pending, _ = removal_check_markers(s3, bucket, TableLayout.of(prefix, table))
    assert pending == []  # covered: marked done by segment 0's check
    copied = objects_under(s3, bucket, f"{prefix}/{table}/")
    assert 0 < copied < ROWS

    def complete() -> None:  # segment 1, run at last (a fresh run of it)
        again = invoke("backfill", table, "--segment", "1", *segments)
        assert again.exit_code == 0, again.output

    convert_between(dynamodb, s3, bucket, prefix, table, ROWS, complete)


def test_convert_at_a_moment_while_the_backfill_is_half_done_is_refused_as_later(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A folder where only segment 0 of 2 was backfilled (segment 1 still to run) has no
    complete backfill, so ``whole_since`` was None and nothing was checked: convert at a moment
    after segment 0 was accepted, and its base lacked segment 1's rows for good. Once segment 1
    had run, the very same conversion (same moment) was refused: the verdict depended on
    whether the backfill had finished by the time convert ran, not on the moment."""
    table = filled(dynamodb)
    half = ["--bucket", bucket, "--prefix", prefix, "--total-segments", "2"]
    assert invoke("backfill", table, "--segment", "0", *half).exit_code == 0
    moment = past_allowance()
    journal = f"{prefix}-journal/{table}"
    early = invoke("convert", bucket, f"{prefix}/{table}", journal, "--at", moment)
    assert early.exit_code == 2, early.output  # part of the table: refused, nothing written
    assert "no backfill has copied the whole table" in early.output
    assert not s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}-journal/").get("KeyCount")

    assert invoke("backfill", table, "--segment", "1", *half).exit_code == 0
    again = invoke("convert", bucket, f"{prefix}/{table}", f"{journal}-2", "--at", moment)
    assert again.exit_code == 2, again.output  # the same moment, refused still
    assert "before the first backfill that copied the whole table" in again.output


def test_a_from_export_backfill_is_whole_from_the_exports_moment(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A ``--from-export`` backfill dates every row by the export's moment; the folder is
    whole from then on. A conversion at a moment between the export and the end of the
    backfill is refused all the same (exit 2), though its base would hold every row."""
    table = filled(dynamodb)
    # The stream on before the export: only then is the export a whole copy (a change made
    # after it is in the stream; tests/cli/test_export_gap_review.py).
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    past_allowance()
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    export = f"s3://{bucket}/{prefix}-export"
    snapped = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", export)
    assert snapped.exit_code == 0, snapped.output
    after_export = past_allowance()
    time.sleep(2)
    copy = f"{prefix}-copy"
    copied = invoke(
        "backfill", table, "--bucket", bucket, "--prefix", copy, "--from-export", export
    )
    assert copied.exit_code == 0, copied.output

    restored = invoke("restore", bucket, f"{copy}/{table}", f"{table}-at", "--at", after_export)
    assert restored.exit_code == 0, restored.output
    assert len(scan_all(dynamodb, f"{table}-at")) == ROWS  # the moment is whole
    journal = f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, f"{copy}/{table}", journal, "--at", after_export)
    assert converted.exit_code == 0, converted.output
    assert "warning:" not in restored.output, restored.output


def test_a_journal_folder_converted_with_history_warns_as_its_item_folder_did(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """``convert --history`` copies the item folder's versions into the journal, so that
    ``restore --at`` of the journal folder gives what the item folder gives before the base.
    The item folder warns for a moment before its first complete backfill ended (part of the
    table); the journal folder, which has no backfill markers, gives the same part of the
    table without a word."""
    table = filled(dynamodb)
    half = ["--bucket", bucket, "--prefix", prefix, "--total-segments", "2"]
    assert invoke("backfill", table, "--segment", "0", *half).exit_code == 0
    between = past_allowance()
    time.sleep(1.5)
    assert invoke("backfill", table, "--segment", "1", *half).exit_code == 0
    later = past_allowance()
    folder, journal = f"{prefix}/{table}", f"{prefix}-journal/{table}"
    converted = invoke("convert", bucket, folder, journal, "--at", later, "--history")
    assert converted.exit_code == 0, converted.output

    item = invoke("restore", bucket, folder, f"{table}-item", "--at", between)
    assert item.exit_code == 0, item.output
    assert "before the first backfill that copied the whole table" in item.output, item.output
    rows = len(scan_all(dynamodb, f"{table}-item"))
    assert 0 < rows < ROWS
    from_journal = invoke("restore", bucket, journal, f"{table}-journal", "--at", between)
    assert from_journal.exit_code in (0, 2), from_journal.output
    if from_journal.exit_code == 0:
        assert len(scan_all(dynamodb, f"{table}-journal")) == rows  # the same part
        assert "before the first backfill that copied the whole table" in from_journal.output, (
            f"{rows} of {ROWS} rows, no warning:\n{from_journal.output}"
        )
