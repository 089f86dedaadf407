"""Review of 8c2539a (a backfill read dated by a moment before its page was asked for; verify
--repair waiting out the deciding change's rounding): reproductions against the real local
servers. Each test states what a user is shown and what the table really held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.history import item_history
from dynamo_backups.jobs.verify import Verify
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests import servers
from tests.helpers import (
    create_table,
    history,
    lambda_records,
    lean_scan,
    make_backfill,
    object_key,
    restore_job,
    scan_all,
)
from tests.pipeline.test_journal_writes import journal_manifest
from tests.servers import make_client

pytestmark = pytest.mark.servers


def _date_of(answer: dict[str, Any]) -> datetime:
    return parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])


def _dynamodb_second(dynamodb: Any) -> datetime:
    """DynamoDB's clock now, to the second (an answer's Date)."""
    return _date_of(dynamodb.describe_limits())


def _wait_for_second(dynamodb: Any, moment: datetime) -> None:
    """Until DynamoDB's clock (to the second) is at ``moment`` or later."""
    while _dynamodb_second(dynamodb) < moment:
        time.sleep(0.05)


def _apply_as_aws(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, table: str,
    dated: dict[str, datetime],
) -> None:  # fmt: skip
    """The stream handler, lagging behind: it writes the table's stream records now, dated
    as AWS dates them (to the second: ``dated`` by each key's event, from the writes' own
    answers), from a stream AWS rounds to the second."""
    records = [
        record for record in lambda_records(dynamodb, streams, table)
        if f"{record['dynamodb']['Keys']['pk']['S']}:{record['eventName']}" in dated
    ]  # fmt: skip
    for record in records:
        record["eventSourceARN"] = record["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
        label = f"{record['dynamodb']['Keys']['pk']['S']}:{record['eventName']}"
        record["dynamodb"]["ApproximateCreationDateTime"] = dated[label].timestamp()
    applied = BackupApplier(BackupWriter(s3, bucket), prefix).apply(records)
    assert not applied.failures, applied


def _backfill_version_time(s3: Any, bucket: str, prefix: str, table: str, key: Any) -> datetime:
    (entry,) = [
        entry for entry in history(s3, bucket, object_key(prefix, table, key))
        if entry["metadata"].get("writer") == "backfill"
    ]  # fmt: skip
    return datetime.fromisoformat(entry["metadata"]["change-time"].replace("Z", "+00:00"))


def _restored_at(
    dynamodb_local: Any, s3: Any, bucket: str, prefix: str, table: str, at: datetime
) -> dict[str, Any]:
    target = f"at-{table}"
    restore_job(dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target, at=at).run()
    items = scan_all(make_client("dynamodb", dynamodb_local.endpoint), target)
    return {item["pk"]["S"]: item for item in items.values()}


def test_restore_at_a_moment_before_a_change_shows_the_change_read_on_a_later_page(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """A segment's second page is asked for after its first page's items were written to S3
    (a thousand PUTs: seconds). An item changed meanwhile, before the second page read it,
    is copied with its new state but dated by the FIRST page's answer: seconds before the
    change. The stream handler writes the change a little later (its usual lag). A restore
    --at a moment between that date and the change (after the backfill completed: no
    pending check refuses it) shows the new state at a moment the table still held the old
    one. Dated by its own page's Date (before 8c2539a) the read came after the change, and
    the restore showed the old state."""
    table = create_table(dynamodb)
    dated: dict[str, datetime] = {}
    for name in ("a", "b"):
        answer = dynamodb.put_item(TableName=table, Item={"pk": {"S": name}, "v": {"N": "1"}})
        dated[f"{name}:INSERT"] = _date_of(answer)
    # Which item a one-item page reads second: that one changes between the pages.
    first = dynamodb.scan(TableName=table, Limit=1)["Items"][0]["pk"]["S"]
    second = "b" if first == "a" else "a"
    _wait_for_second(dynamodb, max(dated.values()) + timedelta(seconds=1))

    scan = lean_scan(dynamodb)
    pages: list[dict[str, Any]] = []

    def changed_between_pages(request: dict[str, Any]) -> dict[str, Any]:
        probe = request.get("Select") == "COUNT"  # the backfill's probe of DynamoDB's clock
        if probe and len(pages) == 1:  # before the second page: the first one's writes
            _wait_for_second(dynamodb, _date_of(pages[0]) + timedelta(seconds=3))
            answer = dynamodb.put_item(TableName=table, Item={"pk": {"S": second}, "v": {"N": "2"}})
            dated[f"{second}:MODIFY"] = _date_of(answer)
        page = scan(request)
        if not probe:
            pages.append(page)
        return page

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=changed_between_pages, total_segments=1,
        page_size=1,
    ).run()  # fmt: skip
    assert report.written == 2 and report.complete
    _apply_as_aws(dynamodb, streams, s3, bucket, prefix, table, dated)

    key = {"pk": {"S": second}}
    read_dated = _backfill_version_time(s3, bucket, prefix, table, key)
    changed = dated[f"{second}:MODIFY"]
    moment = changed - timedelta(seconds=1)  # the table held v = 1 until `changed` at least
    assert moment > dated[f"{second}:INSERT"] + timedelta(seconds=1)
    restored = _restored_at(dynamodb_local, s3, bucket, prefix, table, moment)
    assert restored[second] == {**key, "v": {"N": "1"}}, (
        f"restore --at {moment.isoformat()}: {restored[second]}; the change to v = 2 was made "
        f"at {changed.isoformat()} (by DynamoDB's Date), the backfill read it and is dated "
        f"{read_dated.isoformat()}"
    )


def test_an_item_created_after_the_backfill_began_is_not_restored_before_it_existed(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """A segment's first page is dated by the DescribeTable answer taken when the attempt
    began: a segment that begins later (eight segments, two workers: it waits for others to
    finish, minutes to hours) dates everything on its first page by the attempt's start. An
    item created meanwhile, whose INSERT the stream handler writes after the backfill's copy
    (its usual lag), is then in restore --at and in history at moments before it existed."""
    table = create_table(dynamodb)
    dated: dict[str, datetime] = {}
    scan = lean_scan(dynamodb)
    created: list[bool] = []

    def begins_later(request: dict[str, Any]) -> dict[str, Any]:
        if not created:  # the segment's unit starts a while after the attempt began
            time.sleep(3)
            answer = dynamodb.put_item(TableName=table, Item={"pk": {"S": "new"}, "v": {"N": "1"}})
            dated["new:INSERT"] = _date_of(answer)
            created.append(True)
        return scan(request)

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=begins_later, total_segments=1
    ).run()
    assert report.written == 1 and report.complete
    _apply_as_aws(dynamodb, streams, s3, bucket, prefix, table, dated)

    key = {"pk": {"S": "new"}}
    read_dated = _backfill_version_time(s3, bucket, prefix, table, key)
    inserted = dated["new:INSERT"]
    _, entries = item_history(
        BotocoreObjects(s3, bucket), bucket, TableLayout.of(prefix, table), key
    )
    shown = [(entry.event, str(entry.change_time)) for entry in entries]
    moment = inserted - timedelta(seconds=1)  # the item did not exist yet
    restored = _restored_at(dynamodb_local, s3, bucket, prefix, table, moment)
    problems = []
    if "new" in restored:
        problems.append(f"restore --at {moment.isoformat()} has the item created at {inserted}")
    if read_dated < inserted:
        problems.append(f"history dates the backfill's read before the item's creation: {shown}")
    assert not problems, problems


def test_verify_repair_does_not_sleep_for_hours_on_a_version_dated_ahead(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, aws_env: Any
) -> None:
    """verify --repair waits until DynamoDB's clock passes the deciding change's latest
    moment, however far ahead it lies: a version dated ahead of the servers' clocks (a
    hand-written record without ApproximateCreationDateTime dated by a host whose clock is
    ahead: docs/layout.md, "Reads", allows for it; here two hours) makes it sleep two hours,
    silently, per item. A change can be at most the stream's rounding (a minute) ahead of
    DynamoDB's clock: anything further is no reason to wait, and a run should end (a repair,
    or a clear error for the item) in seconds, not hours."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table, "items")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}, "v": {"N": "1"}})
    (record,) = lambda_records(dynamodb, streams, table)
    record["eventSourceARN"] = record["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
    ahead = datetime.now(UTC) + timedelta(hours=2)
    record["dynamodb"]["ApproximateCreationDateTime"] = ahead.timestamp()
    applied = BackupApplier(BackupWriter(s3, bucket), prefix).apply([record])
    assert not applied.failures, applied
    # A change the trigger gave up on: only a repair can write it.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}, "v": {"N": "2"}})

    command = [sys.executable, "-m", "dynamo_backups.cli.entry", "verify", table]
    command += ["--bucket", bucket, "--prefix", prefix, "--repair"]
    environment = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    running = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    try:
        _, errors = running.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        running.send_signal(signal.SIGABRT)  # its threads' stacks, on stderr (faulthandler)
        _, errors = running.communicate(timeout=30)
        waiting = list(dict.fromkeys(line for line in errors.splitlines() if "verify.py" in line))
        pytest.fail("verify --repair still running after 60 s, in:\n" + "\n".join(waiting))
    assert "Traceback" not in errors, errors


def test_a_read_of_a_reinserted_item_is_not_buried_by_the_removal_before_it(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """An item removed, then inserted again, then read by a segment that began before the
    removal (its first page dated by the attempt's start). The handler wrote the removal
    at once; the re-insert is still on its way (the usual lag; or given up on, the stream
    trimmed). The backfill's copy lands on the delete marker, and its removal check asks
    whether the removal is the item's newest change: dated before the removal, the read
    loses, and the check writes the removal again on top of a state read AFTER it. A restore
    then has no item the table holds and the backfill read (before 8c2539a, dated by its
    page, the read came after the removal and was kept)."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "x"}}
    dated: dict[str, datetime] = {}
    dated["x:INSERT"] = _date_of(dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}}))
    _wait_for_second(dynamodb, dated["x:INSERT"] + timedelta(seconds=1))
    scan = lean_scan(dynamodb)
    begun: list[bool] = []

    def begins_later(request: dict[str, Any]) -> dict[str, Any]:
        if not begun:  # the segment starts a while after the attempt began
            begun.append(True)
            time.sleep(2)
            removed = _date_of(dynamodb.delete_item(TableName=table, Key=key))
            dated["x:REMOVE"] = removed
            _apply_as_aws(dynamodb, streams, s3, bucket, prefix, table, dated)  # on time
            _wait_for_second(dynamodb, removed + timedelta(seconds=1))
            answer = dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
            dated["x:INSERT-again"] = _date_of(answer)  # its record: still on its way
        return scan(request)

    report = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=begins_later, total_segments=1
    ).run()
    assert report.written == 1 and report.complete, report

    target = f"latest-{table}"
    restore_job(dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target).run()
    restored = {
        item["pk"]["S"]: item
        for item in scan_all(make_client("dynamodb", dynamodb_local.endpoint), target).values()
    }
    shown = [
        (entry.get("metadata", {}).get("writer"), entry.get("metadata", {}).get("event-name"),
         entry.get("metadata", {}).get("change-time"))
        for entry in history(s3, bucket, object_key(prefix, table, key))
    ]  # fmt: skip
    assert restored.get("x") == {**key, "v": {"N": "2"}}, (
        f"restored {restored}; the table holds x v = 2 (re-inserted at "
        f"{dated['x:INSERT-again']}, removed at {dated['x:REMOVE']}); S3 holds {shown}"
    )


def test_a_change_made_after_a_repairs_read_wins_though_getitem_answers_a_second_later(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """The commit's own reasoning for Scan pages, applied to verify --repair: its read is
    dated by the GetItem answer's Date, which comes after the read. A change made between
    the read and an answer in the next second is placed before the repair (AWS: its second
    plus one; the repair: the answer's second plus one), and restore brings back the state
    the change replaced. _read_after waits for the deciding change only, not for this."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table, "items")
    key = {"pk": {"S": "x"}}

    def as_aws(record: dict[str, Any], moment: datetime) -> dict[str, Any]:
        record["eventSourceARN"] = record["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
        record["dynamodb"]["ApproximateCreationDateTime"] = moment.timestamp()
        return record

    inserted = _date_of(dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}}))
    (insert,) = lambda_records(dynamodb, streams, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert not applier.apply([as_aws(insert, inserted)]).failures
    # A change the trigger gave up on: the backup lacks v = 2, a repair must write it.
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
    _wait_for_second(dynamodb, inserted + timedelta(seconds=2))  # no wait in _read_after
    changed: dict[str, datetime] = {}

    class AnsweredLate(Verify):
        def _get_item(self, key: dict[str, Any]) -> Any:
            item, read_at = super()._get_item(key)  # the read: v = 2
            if changed:
                return item, read_at
            answer = dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
            changed["at"] = _date_of(answer)
            _wait_for_second(dynamodb, changed["at"] + timedelta(seconds=1))
            return item, changed["at"] + timedelta(seconds=1)  # the answer's Date

    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    report = AnsweredLate(
        api.call,
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        BackupWriter(s3, bucket),
        BotocoreObjects(s3, bucket),
        TableLayout.of(prefix, table),
        segments=1,
        partitions=1,
        repair=True,
    ).run()
    assert report.different == 1 and changed, report
    # The trigger writes the change to v = 3 (made after the repair's read), dated as AWS.
    (change,) = [
        record for record in lambda_records(dynamodb, streams, table)
        if record["dynamodb"]["NewImage"]["v"]["N"] == "3"
    ]  # fmt: skip
    assert not applier.apply([as_aws(change, changed["at"])]).failures

    target = f"latest-{table}"
    restore_job(dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target).run()
    restored = scan_all(make_client("dynamodb", dynamodb_local.endpoint), target)
    assert list(restored.values()) == [{**key, "v": {"N": "3"}}]
