"""Hostile review of replay's settle step and of the conditional writes confirmed by version
id (commits a855c2d..878706b), against DynamoDB Local and SeaweedFS: scenarios in which a
change is lost from the backup's latest state or a replay is reported failed when nothing
went wrong."""

from __future__ import annotations

import http.client
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import (
    EVENT_SNAPSHOT,
    WRITER_BACKFILL,
    TableLayout,
    VersionMetadata,
)
from dynamo_backups.jobs.backfill_removals import restore_removals_under_backfill
from dynamo_backups.jobs.replay import Replayer, parse_report
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.faultproxy import FORWARD, Answer, BeforeForwarding, FaultProxy, Request, put_of
from tests.helpers import (
    bodies,
    create_table,
    expected_name,
    history,
    lambda_records,
    lean_scan,
    make_backfill,
    object_key,
    restore_job,
    scan_all,
)
from tests.jobs.test_replay import report_for
from tests.servers import Server, make_client

pytestmark = pytest.mark.servers


def _shard(streams: Any, record: dict[str, Any]) -> str:
    (shard,) = streams.describe_stream(StreamArn=record["eventSourceARN"])["StreamDescription"][
        "Shards"
    ]
    return str(shard["ShardId"])


def _replay(table: str, bucket: str, prefix: str, reports: Path) -> Any:
    return CliRunner().invoke(
        main, ["replay", table, "--file", str(reports), "--bucket", bucket, "--prefix", prefix]
    )


def _latest(dynamodb_local: Server, dynamodb: Any, s3: Any, bucket: str, folder: str) -> Any:
    target = unique_table_name("latest")
    job = restore_job(dynamodb_local.endpoint, s3, bucket, folder, target, key_schema="pk:S")
    assert job.run().complete
    return list(scan_all(dynamodb, target).values())


def test_a_backfill_version_replay_puts_back_over_a_removal_is_deleted_by_the_removal_check(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    """The trigger gives up on [INSERT, REMOVE] of an item; the item is inserted again; a
    backfill reads it (after the re-insert) and, the trigger lagging, its put-if-absent lands
    first; the trigger then writes the re-insert. Replay writes the given-up range (its
    REMOVE leaves a delete marker current) and settles: the newest change in the stream's
    order is the backfill version (read after the re-insert), so it is written again on top,
    writer "backfill", directly on the replayed delete marker. The backfill's removal check
    (the same backfill finishing, or any later one) then takes it for a backfill that passed
    over a removal and deletes the item from the backup, while the table holds it."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
    insert, remove, reinsert = lambda_records(dynamodb, streams, table)
    time.sleep(1.1)  # the backfill reads the item a clear second after the re-insert

    backfill = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    assert backfill.written == 1
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([reinsert]).failures == []  # it lagged behind the backfill's put
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([insert, remove], _shard(streams, insert)) + "\n")

    result = _replay(table, bucket, prefix, reports)
    assert result.exit_code == 0, result.output
    v3 = {**key, "v": {"N": "3"}}
    name = object_key(prefix, table, key)
    assert bodies(history(s3, bucket, name))[0] == v3  # right after replay: fine

    # Any later backfill of the table (or the same one, its scan still running during the
    # replay, finishing) runs the removal check over the whole folder.
    again = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()

    assert dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"] == v3
    entries = history(s3, bucket, name)
    assert again.removals_restored == 0, bodies(entries)
    assert bodies(entries)[0] == v3, bodies(entries)
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v3]


# --- S3's answer to If-Match when the key's current version is a delete marker ---------------
#
# AWS answers a PutObject with If-Match on a key that has no current object (none, or a
# delete marker on top) 404 NoSuchKey, not 412 (user guide "Conditional writes", error
# responses; seen against AWS in minio/minio#21526, versity/versitygw#1709). SeaweedFS answers
# 412, so the proxy below answers as AWS does, looking at the key's current entry itself.

NO_SUCH_KEY = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
    b"<Message>The specified key does not exist.</Message></Error>"
)


class AwsIfMatch:
    """A fault-proxy rule: runs ``action`` once, just before the first request ``matches``
    selects is forwarded; then answers every If-Match PUT on a key whose current entry is a
    delete marker (or that has none) 404 NoSuchKey, as AWS does."""

    def __init__(self, s3: Any, bucket: str, matches: Any, action: Any) -> None:
        self.s3, self.bucket = s3, bucket
        self.matches, self.action = matches, action
        self.fired = threading.Event()
        self.answered_404 = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str | Answer:
        with self._lock:
            if not self.fired.is_set() and self.matches(request):
                self.fired.set()
                self.action()
            if request.method == "PUT" and "if-match" in request.headers:
                key = unquote(request.path.split("?", 1)[0]).split("/", 2)[2]
                if not self._has_current_object(key):
                    self.answered_404 += 1
                    return Answer(404, {"Content-Type": "application/xml"}, NO_SUCH_KEY)
        return FORWARD

    def _has_current_object(self, key: str) -> bool:
        page = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
        for version in page.get("Versions", []):
            if version["Key"] == key and version["IsLatest"]:
                return True
        return False


def test_replay_reports_failed_a_range_it_wrote_when_the_trigger_removes_the_item_meanwhile(
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replay's settle looks (the replayed v2 current, the trigger's v3 newest) and writes v3
    again with If-Match on v2; meanwhile the item is deleted and the trigger writes that
    removal. On AWS the write is answered 404 NoSuchKey: a newer write came first, exactly
    what the 412 path handles, but the 404 escapes as an error: the range, written and
    settled (the trigger's removal is the newest change and is current), is reported FAILED,
    its report kept, and replay exits 1."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    for version in (1, 2, 3):
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
    r1, r2, r3 = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([r3]).failures == []
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([r1, r2], _shard(streams, r1)) + "\n")

    def trigger_writes_a_removal() -> None:
        dynamodb.delete_item(TableName=table, Key=key)
        assert trigger.apply(lambda_records(dynamodb, streams, table)[3:]).failures == []

    sequence = r3["dynamodb"]["SequenceNumber"]
    settle_write = put_of(expected_name(key), "x-amz-meta-sequence-number", sequence)
    rule = AwsIfMatch(s3, bucket, settle_write, trigger_writes_a_removal)
    with FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = _replay(table, bucket, prefix, reports)

    assert rule.fired.is_set() and rule.answered_404 >= 1
    entries = history(s3, bucket, object_key(prefix, table, key))
    assert bodies(entries)[:2] == ["DM", None]  # the trigger's removal is current: settled
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    assert "replayed 2 records" in result.output


def test_repair_losing_to_a_removal_is_not_an_error_that_stops_verify(
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify --repair looks at the backup (v1 current), reads the table (v2: its record was
    lost) and writes v2 with If-Match on v1; meanwhile the item is deleted and the stream
    writes that removal. On AWS the repair is answered 404 NoSuchKey: the stream's newer
    write came first, which must count as a repair that lost (as a 412 does), not stop
    verify with an error."""
    table = create_table(dynamodb)
    key, other = {"pk": {"S": "a"}}, {"pk": {"S": "b"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**other, "v": {"N": "1"}})
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply(lambda_records(dynamodb, streams, table)).failures == []
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})  # records lost
    dynamodb.put_item(TableName=table, Item={**other, "v": {"N": "2"}})
    seen = len(lambda_records(dynamodb, streams, table))

    def deleted_and_written_by_the_stream() -> None:
        dynamodb.delete_item(TableName=table, Key=key)
        assert stream.apply(lambda_records(dynamodb, streams, table)[seen:]).failures == []

    rule = AwsIfMatch(
        s3, bucket, put_of(expected_name(key), "if-match"), deleted_and_written_by_the_stream
    )
    with FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        args = ["verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"]
        result = CliRunner().invoke(main, [*args, "--output", "json"])

    assert rule.fired.is_set() and rule.answered_404 >= 1
    assert bodies(history(s3, bucket, object_key(prefix, table, key)))[:2] == ["DM", None]
    assert "Traceback" not in result.output, result.output
    assert "NoSuchKey" not in result.output, result.output
    # The other item's repair was made.
    assert bodies(history(s3, bucket, object_key(prefix, table, other)))[0] == {
        **other,
        "v": {"N": "2"},
    }


def test_backfill_removal_check_losing_to_a_removal_is_not_an_error(
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """The removal check looks (a backfill version current on the stream's delete marker) and
    writes the removal with If-Match on it; meanwhile the item is inserted and deleted again
    and the stream writes both. On AWS the check's tombstone is answered 404 NoSuchKey: the
    newer removal came first, and nothing is left to do, but the 404 escapes."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply(lambda_records(dynamodb, streams, table)).failures == []
    name = object_key(prefix, table, key)
    image = history(s3, bucket, name)[-1]["body"]
    read_before_the_delete = datetime.now(UTC) - timedelta(seconds=120)
    backfilled = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, read_before_the_delete)
    assert BackupWriter(s3, bucket).put_item_if_absent(name, image, backfilled)

    def inserted_and_deleted_again() -> None:
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
        dynamodb.delete_item(TableName=table, Key=key)
        assert stream.apply(lambda_records(dynamodb, streams, table)[2:]).failures == []

    rule = AwsIfMatch(
        s3, bucket, put_of(expected_name(key), "if-match"), inserted_and_deleted_again
    )
    with FaultProxy(seaweedfs.endpoint, rule) as proxy:
        checked = BackupWriter(make_client("s3", proxy.endpoint), bucket)
        restored = restore_removals_under_backfill(checked, TableLayout.of(prefix, table))

    assert rule.fired.is_set() and rule.answered_404 >= 1
    assert restored == 0
    assert bodies(history(s3, bucket, name))[:2] == ["DM", None]


class LandsButAnswerLost:
    """A fault-proxy rule: the first request ``matches`` selects is sent to the server (it
    lands), and its client is answered 503 SlowDown as if the answer had been lost; the
    client's retry of the conditional write then meets its own version (412)."""

    def __init__(self, upstream: str, matches: Any) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.matches = matches
        self.fired = threading.Event()
        self.landed_status = 0

    def __call__(self, request: Request) -> str | Answer:
        if self.fired.is_set() or not self.matches(request):
            return FORWARD
        self.fired.set()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(request.method, request.path, request.body, request.headers)
            response = connection.getresponse()
            response.read()
            self.landed_status = response.status
        finally:
            connection.close()
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
        return Answer(503, {"Content-Type": "application/xml"}, body)


def test_a_repair_that_landed_but_whose_answer_was_lost_is_reported_not_repaired(
    seaweedfs: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify --repair's conditional PUT lands, its answer is lost (503), the retry meets the
    repair itself and is answered 412: counted "not repaired", verify exits 1 with "1
    differences", though the backup now holds the table's state."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply(lambda_records(dynamodb, streams, table)).failures == []
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})  # its record is lost

    rule = LandsButAnswerLost(seaweedfs.endpoint, put_of(expected_name(key), "if-match"))
    with FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        args = ["verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"]
        result = CliRunner().invoke(main, [*args, "--output", "json"])

    assert rule.fired.is_set() and rule.landed_status == 200
    v2 = {**key, "v": {"N": "2"}}
    entries = history(s3, bucket, object_key(prefix, table, key))
    assert bodies(entries)[0] == v2 and entries[0]["metadata"]["writer"] == "repair"
    assert result.exit_code == 0, result.output  # the backup holds the table's state


def test_replay_puts_an_older_backfill_image_over_the_streams_newer_change(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
) -> None:
    """Replay's settle takes "the newest change" by comparing change times across writers:
    a backfill version is dated by the Scan answer's Date header (seconds), a stream change
    by ApproximateCreationDateTime (rounded down: to the second on AWS, to the minute on
    DynamoDB Local). A change made after the scan read the item but dated no later than the
    scan's answer therefore sorts below the backfill's older image. Before this change replay
    compared stream sequence numbers only and put the stream's newer change back on top; now
    it writes the backfill's older image on top: the latest state loses the change.

    The trigger gave up on the item's INSERT (so the object is empty and the backfill's
    put-if-absent lands), the item changes right after the scan page read it, and the trigger
    writes that change on top of the backfill version. Replay of the INSERT then settles."""
    while datetime.now(UTC).second > 40:  # keep the scan and the change in one minute
        time.sleep(1)
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    scan = lean_scan(dynamodb)

    def scan_then_change(request: dict[str, Any]) -> dict[str, Any]:
        page = scan(request)  # the backfill holds the image with v = 1 ...
        if request.get("Select") != "COUNT":  # not the backfill's probe of DynamoDB's clock
            dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
        return page

    backfill = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=scan_then_change, total_segments=1
    ).run()
    assert backfill.written == 1
    insert, change = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([change]).failures == []  # it gave up on the INSERT and went on
    v2 = {**key, "v": {"N": "2"}}
    name = object_key(prefix, table, key)
    assert bodies(history(s3, bucket, name))[0] == v2
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([insert], _shard(streams, insert)) + "\n")

    result = _replay(table, bucket, prefix, reports)
    assert result.exit_code == 0, result.output

    entries = history(s3, bucket, name)
    assert dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"] == v2
    assert bodies(entries)[0] == v2, [
        (b, e.get("metadata")) for b, e in zip(bodies(entries), entries, strict=True)
    ]
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v2]


def test_two_replays_and_a_busy_trigger_end_with_the_tables_state_on_top(
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """Two replays of the same report (a queue message seen twice) run at once while the
    item keeps changing and the trigger writes each change: both must finish, and the
    table's last state must be the backup's current one."""
    table = create_table(dynamodb)
    keys = [{"pk": {"S": f"k{n}"}} for n in range(4)]
    for version in (1, 2, 3):
        for key in keys:
            dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
    records = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    given_up, went_on = records[:8], records[8:]
    assert trigger.apply(went_on).failures == []
    report = parse_report(report_for(given_up, _shard(streams, records[0])))
    done = threading.Event()
    outcomes: list[Any] = []

    def replay_once() -> None:
        replayer = Replayer(streams, BackupApplier(BackupWriter(s3, bucket), prefix))
        outcomes.append(replayer.replay(report))

    def busy_trigger() -> None:
        seen = len(records)
        version = 10
        while not done.is_set():
            for key in keys:
                dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(version)}})
                # identical images too: the same ETag as an earlier version
                dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
            version += 1
            fresh = lambda_records(dynamodb, streams, table)[seen:]
            seen += len(fresh)
            assert trigger.apply(fresh).failures == []

    writer_thread = threading.Thread(target=busy_trigger)
    writer_thread.start()
    replays = [threading.Thread(target=replay_once) for _ in range(2)]
    for thread in replays:
        thread.start()
    for thread in replays:
        thread.join(timeout=300)
    done.set()
    writer_thread.join(timeout=120)

    assert [outcome.written for outcome in outcomes] == [True, True], [
        outcome.problem for outcome in outcomes
    ]
    for key in keys:
        live = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        entries = history(s3, bucket, object_key(prefix, table, key))
        assert bodies(entries)[0] == live, (key, bodies(entries)[:6])


def test_a_malformed_list_of_reports_is_an_error_line_not_a_traceback(
    bucket: str, prefix: str, aws_env: Any, tmp_path: Path
) -> None:
    """A report file that starts as a JSON list but is cut off (a copy and paste gone
    wrong): reports_in_file's json.loads raises JSONDecodeError, which no one turns into a
    reason; the CLI's handler does not know it either."""
    reports = tmp_path / "reports.json"
    reports.write_text('[{"DDBStreamBatchInfo": {}}, {"cut off')
    result = _replay("Users", bucket, prefix, reports)
    assert result.exit_code != 0
    assert not isinstance(result.exception, ValueError), repr(result.exception)
    assert "error:" in result.output


def test_a_backfill_put_landing_between_replays_write_and_its_settle_is_then_deleted(
    seaweedfs: Server,
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trigger gave up on [INSERT, REMOVE] and went on (the re-insert v3 is current).
    Replay writes the range: its REMOVE leaves a delete marker on top until the settle step.
    A backfill running meanwhile reads the item (v3) and its put-if-absent passes over that
    delete marker. The settle step then finds the backfill version the newest change and
    current: nothing to write. Before this change replay put the trigger's v3 back on top
    unconditionally; now the backfill version stays directly on the replayed delete marker,
    and the backfill's removal check deletes the item from the backup."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
    insert, remove, reinsert = lambda_records(dynamodb, streams, table)
    trigger = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert trigger.apply([reinsert]).failures == []
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for([insert, remove], _shard(streams, insert)) + "\n")
    name = object_key(prefix, table, key)
    v3 = {**key, "v": {"N": "3"}}
    image = history(s3, bucket, name)[0]["body"]
    time.sleep(1.1)  # the backfill reads the item a clear second after the re-insert

    def backfill_scan_puts_the_item() -> None:
        read_at = datetime.now(UTC)
        scanned = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, read_at)
        assert BackupWriter(s3, bucket).put_item_if_absent(name, image, scanned)

    deleted = threading.Event()

    def settle_looks(request: Request) -> bool:
        """The first request about the item after replay wrote its delete marker (the
        settle step's look; before this change, its unconditional put back)."""
        marker = request.method == "POST" and request.path.endswith("?delete")
        if marker and expected_name(key).encode() in request.body:  # DeleteObjects
            deleted.set()
            return False
        return deleted.is_set() and expected_name(key) in request.path

    hook = BeforeForwarding(settle_looks, backfill_scan_puts_the_item)
    with FaultProxy(seaweedfs.endpoint, hook) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = _replay(table, bucket, prefix, reports)
    seen_requests = [(r.method, r.path[-60:]) for r in proxy.log.requests]
    assert hook.fired.is_set(), seen_requests
    assert result.exit_code == 0, result.output
    assert bodies(history(s3, bucket, name))[0] == v3

    # The backfill finishes: its removal check runs over the folder.
    again = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()

    assert dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"] == v3
    entries = history(s3, bucket, name)
    assert again.removals_restored == 0, bodies(entries)
    assert _latest(dynamodb_local, dynamodb, s3, bucket, f"{prefix}/{table}") == [v3]
