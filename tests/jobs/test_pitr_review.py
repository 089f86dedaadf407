"""Review of the stream-order selection (pitr-order) on DynamoDB Local and SeaweedFS: a
wrong version picked by restore / verify / history, and what a latest restore costs."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.helpers import create_table, restore_job, scan_all

pytestmark = pytest.mark.servers


def record(table: str, key: str, event: str, changed: int, sequence: int, v: int = 0) -> Any:
    """An AWS-shaped stream record: ApproximateCreationDateTime to the second."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": changed,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{sequence:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event != "REMOVE":
        body["NewImage"] = {"pk": {"S": key}, "v": {"N": str(v)}}
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"
    return {"eventName": event, "eventSourceARN": arn, "dynamodb": body}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def write_manifest(s3: Any, bucket: str, prefix: str, table: str) -> TableLayout:
    layout = TableLayout.of(prefix, table)
    manifest = layout.manifest([{"AttributeName": "pk", "KeyType": "HASH"}])
    s3.put_object(Bucket=bucket, Key=layout.manifest_key, Body=json.dumps(manifest).encode())
    return layout


def wait_for_second_of_minute(low: int, high: int) -> None:
    while not low <= datetime.now(UTC).second <= high:
        time.sleep(0.2)


def test_aws_whole_minute_stream_change_and_a_repair_in_the_same_minute(
    aws_env: dict[str, str], dynamodb_local: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """AWS data (times to the second). The stream's INSERT v=1 happened at hh:mm:00 (1 in 60
    by chance); the MODIFY to v=2 a few seconds later has no version yet (Lambda lag, or a
    stream gap); verify --repair reads the table (v=2) in the same minute and writes it.
    verify then passes (it compares the current version), but restore and history take v=1:
    the lone stream change on a whole minute turned on "minute precision"."""
    table = create_table(dynamodb, view_type=None)
    write_manifest(s3, bucket, prefix, table)
    wait_for_second_of_minute(3, 30)
    minute = int(time.time()) // 60 * 60
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert applier.apply([record(table, "alice", "INSERT", minute, 100, v=1)]).failures == []
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "alice"}, "v": {"N": "2"}})

    repaired = invoke(
        "--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"
    )  # fmt: skip
    report = json.loads(repaired.stdout)
    assert report["repaired"] == 1, repaired.output
    shown = invoke(
        "--output", "json", "history", table, '{"pk": {"S": "alice"}}',
        "--bucket", bucket, "--prefix", prefix,
    )  # fmt: skip
    history = json.loads(shown.stdout)["history"]
    by_writer = {entry["writer"]: entry for entry in history}
    repair_time = datetime.fromisoformat(by_writer["repair"]["change_time"].replace("Z", "+00:00"))
    assert int(repair_time.timestamp()) // 60 * 60 == minute, "precondition: the same minute"

    verified = invoke("--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix)
    assert verified.exit_code == 0, verified.output  # verify: the backup matches the table

    expected = scan_all(dynamodb, table)
    target = unique_table_name("review")
    job = restore_job(
        dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target, key_schema="pk:S"
    )
    assert job.run().complete
    restored = {item["pk"]["S"]: item["v"]["N"] for item in scan_all(dynamodb, target).values()}
    assert expected == {json.dumps({"pk": {"S": "alice"}}): {"pk": {"S": "alice"}, "v": {"N": "2"}}}
    # restore and history must show the table's state (v=2), which verify just accepted
    assert (restored, history[0]["writer"]) == ({"alice": "2"}, "repair")


class CountingObjects:
    """An ObjectReader that counts the requests a selection makes."""

    def __init__(self, inner: BotocoreObjects) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1

    def read_object(self, key: str, version_id: str | None = None) -> Any:
        self._count("GetObject")
        return self.inner.read_object(key, version_id)

    def head_object(self, key: str, version_id: str | None = None) -> Any:
        self._count("HeadObject")
        return self.inner.head_object(key, version_id)

    def list_versions_page(self, *args: Any) -> Any:
        self._count("ListObjectVersions")
        return self.inner.list_versions_page(*args)

    def list_objects_page(self, *args: Any) -> Any:
        self._count("ListObjectsV2")
        return self.inner.list_objects_page(*args)


def latest_requests(
    s3: Any, bucket: str, layout: TableLayout, **options: Any
) -> tuple[Counter[str], int]:
    """The requests a latest restore's selection makes over the folder, and the items."""
    counting = CountingObjects(BotocoreObjects(s3, bucket))
    found: list[Any] = []
    lock = threading.Lock()

    def consume(selected: Any) -> None:
        with lock:
            if selected.item is not None:
                found.append(selected.item)

    BackupItems(counting, bucket, layout, ["pk"], **options).for_each(consume)
    return counting.calls, len(found)


def test_latest_restore_costs_one_get_per_item_of_a_simple_backup(
    s3: Any, bucket: str, prefix: str
) -> None:
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    records = [record(table, f"k{i}", "INSERT", now, i + 1, v=i) for i in range(20)]
    assert applier.apply(records).failures == []
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 20
    assert (calls["GetObject"], calls["HeadObject"]) == (20, 0), calls


def test_latest_restore_of_versions_apart_costs_one_get_per_item(
    s3: Any, bucket: str, prefix: str
) -> None:
    """Two versions per item received more than the skew apart (1 s here): one GET each."""
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    first = [record(table, f"k{i}", "INSERT", now - 1, i + 1, v=i) for i in range(10)]
    assert applier.apply(first).failures == []
    time.sleep(4)  # LastModified is to the second: the first versions' + 1 s < the change
    second = [record(table, f"k{i}", "MODIFY", now + 3, 100 + i, v=i) for i in range(10)]
    assert applier.apply(second).failures == []
    calls, items = latest_requests(s3, bucket, layout, skew=timedelta(seconds=1))
    assert items == 10
    assert (calls["GetObject"], calls["HeadObject"]) == (10, 0), calls


def test_latest_restore_of_a_deleted_item_costs_no_reads(s3: Any, bucket: str, prefix: str) -> None:
    """Before pitr-order a latest restore listed current objects only: a deleted item (its
    delete marker current) cost nothing. Now every item ever deleted is listed with all its
    versions and its tombstone read (and the version under it too, when the item lived less
    than the skew, as sessions, queue entries and TTL'd rows do)."""
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    live = [record(table, "live", "INSERT", now - 5, 1, v=1)]
    gone = []
    for i in range(10):
        gone.append(record(table, f"gone{i}", "INSERT", now - 4, 10 + 2 * i, v=i))
        gone.append(record(table, f"gone{i}", "REMOVE", now - 3, 11 + 2 * i))
    assert applier.apply(live + gone).failures == []
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 1
    assert calls["GetObject"] == 1, f"10 deleted items and 1 live one: {dict(calls)}"
    # No body of a deleted item is read. Each one's tombstone is read by a HEAD, and so is
    # the version under it: S3 received both in the same second (one batch), so that version
    # could hold a later change than the removal (a late copy's order is only in metadata).
    assert calls["HeadObject"] == 20, dict(calls)


def test_latest_restore_of_a_hot_item_costs_one_get(s3: Any, bucket: str, prefix: str) -> None:
    """An item changed 30 times in the last minute (a live table): before, one GET of its
    current version; now one GET per version received within the skew."""
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    burst = [record(table, "hot", "MODIFY", now - 30 + i, i + 1, v=i) for i in range(30)]
    assert applier.apply(burst).failures == []
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 1
    assert calls["GetObject"] == 1, dict(calls)
    # The 29 older versions reached S3 in the same second as the newest (one batch): any of
    # them could hold a later change; each is read by a HEAD, metadata only.
    assert calls["HeadObject"] == 29, dict(calls)


def test_history_and_restore_agree_across_names_when_a_backfill_tops_the_own_name() -> None:
    """The adopted-folder listing of tests/core/test_pitr_review.py
    (test_own_name_with_stream_history_holds_over_a_later_write_under_another_name), as
    history orders it: the own name's backfill read first (the replicator's 12:01:07 copy
    capped at the handover, 12:00:07). Restore (latest_decision) takes the replicator's
    copy: the two disagree on the item's current state."""
    from dynamo_backups.core.layout import VersionMetadata
    from dynamo_backups.core.pitr import ObjectVersion, decide_at, latest_decision
    from dynamo_backups.jobs.history import HistoryEntry, merged_order

    noon = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

    def sec(seconds: float) -> datetime:
        return noon + timedelta(seconds=seconds)

    recorded = {
        "backfill": VersionMetadata("backfill", "SNAPSHOT", sec(37)),
        "insert": VersionMetadata("stream", "INSERT", sec(7), "1"),
    }
    own = [
        ObjectVersion("own", "backfill", sec(38), False, True, 10),
        ObjectVersion("own", "insert", sec(8), False, False, 10),
    ]
    other = [
        ObjectVersion("other", "r-late", sec(67), False, True, 10),
        ObjectVersion("other", "r0", sec(-53), False, False, 10),
    ]

    def inspect(entry: ObjectVersion) -> VersionMetadata | None:
        return recorded.get(entry.version_id)

    latest = datetime(9999, 1, 1, tzinfo=UTC)
    chosen = latest_decision([decide_at(own, latest, inspect), decide_at(other, latest, inspect)])

    def shown(entry: ObjectVersion, where: str | None) -> tuple[HistoryEntry, datetime]:
        metadata = recorded.get(entry.version_id)
        when = metadata.change_time if metadata else entry.last_modified
        return (
            HistoryEntry(
                entry.version_id, entry.last_modified, "modify", when,
                metadata.writer if metadata else None, None, None, object_key=where,
            ),
            when,
        )  # fmt: skip

    history = merged_order([shown(e, None) for e in own] + [shown(e, "other") for e in other])
    assert chosen is not None
    assert chosen.entry.version_id == history[0].version_id, (
        f"history's current state {history[0].version_id}, restore's {chosen.entry.version_id}"
    )
