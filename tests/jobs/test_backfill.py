"""Backfill on DynamoDB Local and SeaweedFS: copying, resuming, segments, and the two races
with a live stream handler."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.removal_check import pending_removal_checks
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.helpers import (
    bodies,
    consumer_for,
    create_table,
    history,
    lambda_records,
    lean_scan,
    make_backfill,
    object_key,
    restore_job,
    scan_all,
)

pytestmark = pytest.mark.servers


def test_backfill_copies_every_row_exactly_and_saves_the_description(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, [("pk", "S"), ("sk", "B")], view_type=None)
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    items = [
        {
            "pk": {"S": f"p{index % 7}"},
            "sk": {"B": bytes([index])},
            "n": {"N": "12345678901234567890123456789012345678"},
            "set": {"NS": ["1", "2.5"]},
            "map": {"M": {"empty": {"M": {}}, "list": {"L": [{"NULL": True}]}}},
        }
        for index in range(120)
    ]
    for item in items:
        dynamodb.put_item(TableName=table, Item=item)

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, total_segments=4, page_size=10
    ).run()
    assert (report.scanned, report.written, report.failed) == (120, 120, 0)
    assert sorted(report.segments_done) == [0, 1, 2, 3]
    for item in items:
        key = {"pk": item["pk"], "sk": item["sk"]}
        (entry,) = history(s3, bucket, object_key(prefix, table, to_wire(key)))
        assert json.loads(entry["body"]) == to_wire(item)
        assert entry["metadata"]["writer"] == "backfill"
        assert entry["metadata"]["event-name"] == "SNAPSHOT"

    layout = TableLayout.of(prefix, table)
    description = read_document(s3, bucket, layout.table_description_key)
    assert description["table"]["KeySchema"][1] == {"AttributeName": "sk", "KeyType": "RANGE"}
    assert description["time_to_live"]["AttributeName"] == "expires"
    manifest = read_document(s3, bucket, layout.manifest_key)
    assert manifest["key_types"] == {"pk": "S", "sk": "B"}

    again = make_backfill(dynamodb, s3, bucket, prefix, table).run()
    assert (again.written, again.already_backed_up) == (0, 120)


def test_scan_image_older_than_a_stream_write_is_not_written(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "racy"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    scan = lean_scan(dynamodb)

    def scan_then_change(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("Select") == "COUNT":
            return scan(request)  # the backfill's probe of DynamoDB's clock
        page = scan(request)  # the backfill holds the image with v = 1 ...
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
        consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
        return page  # ... while the stream has already written v = 2

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=scan_then_change, total_segments=1
    ).run()
    assert (report.written, report.already_backed_up) == (0, 1)
    states = bodies(history(s3, bucket, object_key(prefix, table, key)))
    assert states[0] == {**key, "v": {"N": "2"}}  # the newer state stays current


def test_item_deleted_by_the_stream_after_the_scan_stays_deleted(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    doomed, kept = {"pk": {"S": "doomed"}}, {"pk": {"S": "kept"}}
    dynamodb.put_item(TableName=table, Item={**doomed, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**kept, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    scan = lean_scan(dynamodb)

    def scan_then_delete(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("Select") == "COUNT":
            return scan(request)  # the backfill's probe of DynamoDB's clock
        page = scan(request)  # the image of "doomed" is read ...
        dynamodb.delete_item(TableName=table, Key=doomed)
        consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
        return page  # ... and the stream deletes it before the backfill writes it

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=scan_then_delete, total_segments=1
    ).run()
    # S3 lets a conditional put through over a delete marker; the backfill puts the
    # deletion back on top.
    assert report.written == 1 and report.removals_restored == 1
    states = bodies(history(s3, bucket, object_key(prefix, table, doomed)))
    assert states[:3] == ["DM", None, {**doomed, "v": {"N": "1"}}]
    assert states[3:5] == ["DM", None]  # the stream's own removal, below
    assert bodies(history(s3, bucket, object_key(prefix, table, kept)))[0] == {
        **kept,
        "v": {"N": "1"},
    }
    current = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/")
    assert [entry["Key"] for entry in current.get("Contents", [])] == [
        object_key(prefix, table, kept)
    ]


def test_interrupted_backfill_resumes_from_its_checkpoints(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(60):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index:02d}"}})
    scan = lean_scan(dynamodb)
    pages: list[int] = []

    def failing_scan(request: dict[str, Any]) -> dict[str, Any]:
        pages.append(request["Segment"])
        if request["Segment"] == 1 and pages.count(1) == 3:
            raise RuntimeError("host lost")
        return scan(request)

    first = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=failing_scan, total_segments=2, page_size=5
    ).run()
    assert first.unfinished_units == ["segment-1-of-2"]
    assert "host lost" in first.failures[0]
    starts: list[Any] = []

    def counting_scan(request: dict[str, Any]) -> dict[str, Any]:
        starts.append((request["Segment"], request.get("ExclusiveStartKey")))
        return scan(request)

    resumed = make_backfill(
        dynamodb,
        s3,
        bucket,
        prefix,
        table,
        scan=counting_scan,
        total_segments=2,
        page_size=5,
        resume=True,
    ).run()
    assert resumed.complete and sorted(resumed.segments_done) == [0, 1]
    assert resumed.scanned == 60  # the whole job's count, the first run's units included
    # Segment 0 was done: not read again. Segment 1 went on from its last page, not its start.
    assert {segment for segment, _ in starts} == {1}
    assert starts[0][1] is not None
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/")
    assert listed["KeyCount"] == 60


def test_segments_spread_over_hosts_cover_the_table_once(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(50):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index:02d}"}})
    scanned = [
        make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=3, segment=segment)
        .run()
        .scanned
        for segment in range(3)
    ]
    assert sum(scanned) == 50
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/")["KeyCount"] == 50


def test_cli_backfills_tables_by_name_prefix(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    stem = f"Prod{prefix.replace('-', '')}"
    tables = [create_table(dynamodb, view_type=None, name=f"{stem}-{name}") for name in ("A", "B")]
    other = create_table(dynamodb, view_type=None, name=f"Dev{prefix.replace('-', '')}")
    for table in [*tables, other]:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}})
    result = CliRunner().invoke(
        main,
        [
            "--output",
            "json",
            "backfill",
            "--table-prefix",
            stem,
            "--bucket",
            bucket,
            "--prefix",
            prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(entry["table"] for entry in summary["tables"]) == sorted(tables)
    assert all(entry["written"] == 1 for entry in summary["tables"])
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{other}/")["KeyCount"] == 0

    none = CliRunner().invoke(
        main, ["backfill", "--table-prefix", "NoSuchPrefix", "--bucket", bucket]
    )
    assert none.exit_code == 2 and "no table's name starts with 'NoSuchPrefix'" in none.output


def test_backfilled_state_then_stream_changes_make_one_history(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "0"}})
    make_backfill(dynamodb, s3, bucket, prefix, table).run()
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    states = bodies(history(s3, bucket, object_key(prefix, table, key)))
    assert states == [{**key, "v": {"N": "1"}}, {**key, "v": {"N": "0"}}]


def racing_scan(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    table: str,
    doomed: dict[str, Any],
) -> Any:
    """A scan whose first page holds an item the stream deletes before the backfill writes it."""
    scan = lean_scan(dynamodb)

    def scan_then_delete(request: dict[str, Any]) -> dict[str, Any]:
        page = scan(request)
        if any(item["pk"] == doomed["pk"] for item in page.get("Items", [])):
            dynamodb.delete_item(TableName=table, Key=doomed)
            consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
        return page

    return scan_then_delete


def test_a_failed_segment_does_not_skip_the_removal_check(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    doomed = {"pk": {"S": "doomed"}}
    dynamodb.put_item(TableName=table, Item={**doomed, "v": {"N": "1"}})
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    racing = racing_scan(dynamodb, streams, s3, bucket, prefix, table, doomed)

    def one_segment_fails(request: dict[str, Any]) -> dict[str, Any]:
        if request["Segment"] == 1:
            raise RuntimeError("segment 1 lost")
        return racing(request)

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=one_segment_fails, total_segments=2
    ).run()
    assert report.unfinished_units == ["segment-1-of-2"] and not report.complete
    assert "segment 1 lost" in report.failures[0]
    # The run failed, and still checked what it had written: the deletion stands.
    assert bodies(history(s3, bucket, object_key(prefix, table, doomed)))[0] == "DM"


def test_a_crash_before_the_removal_check_is_made_good_by_the_next_run(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    doomed = {"pk": {"S": "doomed"}}
    dynamodb.put_item(TableName=table, Item={**doomed, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    racing = racing_scan(dynamodb, streams, s3, bucket, prefix, table, doomed)

    def host_dies(*args: Any, **kwargs: Any) -> int:
        raise SystemExit("killed")  # the process ends before its removal check

    monkeypatch.setattr("dynamo_backups.jobs.backfill.restore_removals_under_backfill", host_dies)
    with pytest.raises(SystemExit):
        make_backfill(dynamodb, s3, bucket, prefix, table, scan=racing, total_segments=1).run()
    (pending,) = pending_removal_checks(s3, bucket, TableLayout.of(prefix, table))
    folder = f"{prefix}/.dynamo-backups/{table}/backfill/removals-check/backfill/"
    assert pending.key == f"{folder}{pending.run_id}.json" and pending.job == "backfill"
    assert bodies(history(s3, bucket, object_key(prefix, table, doomed)))[0] != "DM"

    monkeypatch.undo()
    report = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    assert report.removals_restored == 1
    assert bodies(history(s3, bucket, object_key(prefix, table, doomed)))[0] == "DM"
    # The crashed run had ended (its lease released), so this run's check covered its writes.
    check = read_document(s3, bucket, pending.key)
    assert check is not None and check["pending"] is False and check["checked_by"]
    assert not pending_removal_checks(s3, bucket, TableLayout.of(prefix, table))


def test_versions_are_dated_by_dynamodbs_clock_not_the_hosts(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    wrong = datetime.now(UTC) + timedelta(minutes=10)  # a laptop ten minutes ahead
    job = Backfill(
        dynamodb,
        lean_scan(dynamodb),
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        BackfillOptions(total_segments=1),
        clock=lambda: wrong,
    )
    job.run()
    (entry,) = history(s3, bucket, object_key(prefix, table, {"pk": {"S": "a"}}))
    dated = datetime.fromisoformat(entry["metadata"]["change-time"].replace("Z", "+00:00"))
    assert abs((dated - datetime.now(UTC)).total_seconds()) < 60


def _dynamodb_second(dynamodb: Any) -> datetime:
    """DynamoDB's clock now, to the second (an answer's Date)."""
    date = dynamodb.describe_limits()["ResponseMetadata"]["HTTPHeaders"]["date"]
    return parsedate_to_datetime(date)


def test_a_change_made_after_a_read_wins_though_the_page_is_answered_a_second_later(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """A Scan page is answered after its reads (a 1 MB page takes a while): a change made
    after an item was read, in a second before the page's Date, must come after the read in
    the stream's order. Dated by its own page's Date, the read was placed after that change,
    and the restore brought back the state the change replaced."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "racy"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    scan = lean_scan(dynamodb)
    changed: dict[str, datetime] = {}

    def page_answered_late(request: dict[str, Any]) -> dict[str, Any]:
        page = scan(request)
        if request.get("Select") == "COUNT" or changed:
            return page  # the backfill's probe of DynamoDB's clock before the page
        # The read: v = 1.
        answer = dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
        changed["at"] = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        while _dynamodb_second(dynamodb) <= changed["at"]:
            time.sleep(0.05)
        # The page's answer as a server that read the item first and answered now gives it.
        later = _dynamodb_second(dynamodb).strftime("%a, %d %b %Y %H:%M:%S GMT")
        page["ResponseMetadata"] = {"HTTPHeaders": {"date": later}}
        return page

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=page_answered_late, total_segments=1
    ).run()
    assert report.written == 1

    # The stream then writes the change, dated as AWS dates it: to the second.
    (change,) = [
        record for record in lambda_records(dynamodb, streams, table)
        if record["eventName"] == "MODIFY"
    ]  # fmt: skip
    change["eventSourceARN"] = change["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
    change["dynamodb"]["ApproximateCreationDateTime"] = changed["at"].timestamp()
    applied = BackupApplier(BackupWriter(s3, bucket), prefix).apply([change])
    assert not applied.failures, applied

    target = f"restored-{table}"
    restore_job(dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target).run()
    (restored,) = scan_all(dynamodb, target).values()
    assert restored == {**key, "v": {"N": "2"}}
