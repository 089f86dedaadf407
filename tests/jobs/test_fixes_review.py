"""Hostile review of c2da754 (backfill pages dated by a clock probe, repairs dated by the
GetItem answer before their read) and fd4e314 (convert --history): reproductions against the
real local servers. Each test states what a user is shown and what the table really held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_backup
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions
from dynamo_backups.jobs.layouts import layout_named
from dynamo_backups.jobs.verify import Verify
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests import servers
from tests.helpers import (
    create_table,
    history,
    lambda_records,
    lean_scan,
    object_key,
    restore_job,
    scan_all,
)
from tests.jobs.test_backfill_dating_review import _date_of, _wait_for_second
from tests.jobs.test_convert import Triggers, restore_cli
from tests.jobs.test_journal_compact_restore import (
    History,
    deliver,
    invoke,
    start_time,
)
from tests.jobs.test_journal_replay_verify import Backed, backed  # noqa: F401 - a fixture
from tests.pipeline.test_journal_writes import journal_manifest
from tests.servers import make_client

pytestmark = pytest.mark.servers


def _as_aws(record: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """A stream record as AWS delivers it: dated to the second by DynamoDB's clock."""
    record["eventSourceARN"] = record["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
    record["dynamodb"]["ApproximateCreationDateTime"] = moment.timestamp()
    return record


def _restored(
    dynamodb_local: Any, s3: Any, bucket: str, prefix: str, table: str, **options: Any
) -> dict[str, Any]:
    target = f"r{len(options)}-{table}"
    restore_job(dynamodb_local.endpoint, s3, bucket, f"{prefix}/{table}", target, **options).run()
    items = scan_all(make_client("dynamodb", dynamodb_local.endpoint), target)
    return {item["pk"]["S"]: item for item in items.values()}


def _shown(s3: Any, bucket: str, prefix: str, table: str, key: Any) -> list[Any]:
    return [
        (entry.get("metadata", {}).get("writer"), entry.get("metadata", {}).get("event-name"),
         entry.get("metadata", {}).get("change-time"))
        for entry in history(s3, bucket, object_key(prefix, table, key))
    ]  # fmt: skip


@pytest.mark.parametrize("meanwhile", ["modify", "delete"])
def test_a_repair_is_not_dated_before_a_change_made_while_the_backup_was_read(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    dynamodb_local: Any,
    meanwhile: str,
) -> None:
    """verify --repair dates its read by "the GetItem answer before it". When no wait is
    needed (the deciding change is long past) that answer is the compare's GetItem, and
    between it and the repair's own GetItem the backup's versions of the item are listed and
    read from S3 (seconds on a long history, or a slow S3). A change made meanwhile, in a
    later second, is read by the repair and dated by the earlier answer: restore --at a
    moment between the two shows the new state while the table still held the old one (the
    class of misdating c2da754 fixed for backfill pages). A delete made meanwhile: the repair
    writes a delete marker dated by that answer, and restore --at a moment between has no
    item the table held then (nor the one the backup held)."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table, "items")
    key = {"pk": {"S": "x"}}
    inserted = _date_of(dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}}))
    (insert,) = lambda_records(dynamodb, streams, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert not applier.apply([_as_aws(insert, inserted)]).failures
    # A change the trigger gave up on: the backup lacks v = 2, a repair must write it.
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
    _wait_for_second(dynamodb, inserted + timedelta(seconds=2))  # no wait in _read_after
    moments: dict[str, datetime] = {}

    class SlowBackupRead(Verify):
        def _get_item(self, key: dict[str, Any]) -> Any:
            item, read_at = super()._get_item(key)
            moments.setdefault("compared", read_at)
            return item, read_at

        def _backup_item(self, key: dict[str, Any]) -> Any:
            selected = super()._backup_item(key)
            if "changed" not in moments and "compared" in moments:
                # The backup's history read takes a few seconds; the table changes meanwhile.
                _wait_for_second(dynamodb, moments["compared"] + timedelta(seconds=3))
                if meanwhile == "modify":
                    answer = dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
                else:
                    answer = dynamodb.delete_item(TableName=table, Key=key)
                moments["changed"] = _date_of(answer)
            return selected

    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    report = SlowBackupRead(
        api.call,
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        BackupWriter(s3, bucket),
        BotocoreObjects(s3, bucket),
        TableLayout.of(prefix, table),
        segments=1,
        partitions=1,
        repair=True,
    ).run()
    assert report.different == 1 and "changed" in moments, report
    # The trigger writes that change a little later (its usual lag), dated as AWS.
    change = lambda_records(dynamodb, streams, table)[-1]
    assert not applier.apply([_as_aws(change, moments["changed"])]).failures

    moment = moments["changed"] - timedelta(seconds=1)  # the table held v = 2 then
    restored = _restored(dynamodb_local, s3, bucket, prefix, table, at=moment)
    # v = 1 (the backup's own state then) or v = 2 (the table's) are honest; v = 3 (or no
    # item) is a state the table had only after that moment.
    assert restored.get("x") in ({**key, "v": {"N": "1"}}, {**key, "v": {"N": "2"}}), (
        f"restore --at {moment.isoformat()} gave {restored.get('x')}, the {meanwhile} made at "
        f"{moments['changed'].isoformat()}; the table held v = 2 then (compared at "
        f"{moments['compared'].isoformat()}); S3 holds {_shown(s3, bucket, prefix, table, key)}"
    )


def test_a_probe_answer_without_a_date_does_not_date_reads_by_a_host_clock_ahead(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, dynamodb_local: Any
) -> None:
    """DatedScan falls back to the host's clock when the probe's answer has no Date (a proxy
    that drops it; the journal backfill refuses such an answer). A host clock an hour ahead
    then dates the read an hour after it happened: a change made just after the read, which
    the trigger writes after the backfill's copy (its usual lag), is placed before the read
    and loses to it. Restore (latest) brings back the state the change replaced. (Before
    c2da754 a page without a Date kept the previous floor; the attempt's start fell back to
    the host's clock too. The design rule: "a host whose clock is off cannot misdate them".)"""
    table = create_table(dynamodb)
    key = {"pk": {"S": "x"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    scan = lean_scan(dynamodb)

    def dateless_probe(request: dict[str, Any]) -> dict[str, Any]:
        answer = scan(request)
        if request.get("Select") == "COUNT":
            answer["ResponseMetadata"]["HTTPHeaders"].pop("date", None)
        return answer

    backfill = Backfill(
        dynamodb,
        dateless_probe,
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        BackfillOptions(total_segments=1),
        clock=lambda: datetime.now(UTC) + timedelta(hours=1),  # this host's clock is off
    )
    report = backfill.run()
    # Refused, as the journal backfill refuses it: nothing dated by this host's clock.
    assert report.written == 0 and report.unfinished_units == ["segment-0-of-1"], report
    assert any("carries no Date header" in failure for failure in map(str, report.failures))
    assert history(s3, bucket, object_key(prefix, table, key)) == []


@pytest.mark.parametrize("backed", ["journal", "journal-after-a-base"], indirect=True)
def test_a_journal_repair_is_not_dated_before_a_change_made_since_its_compare(
    backed: Backed,  # noqa: F811
    dynamodb_local: Any,
) -> None:
    """The journal's verify --repair reads every candidate of a partition first, then the
    journal again (pieces listed and read from ten minutes before the run's moment), and
    only then each repair's read, dated by that candidate's first GetItem: minutes earlier
    on a partition with many differences. A change made meanwhile is in the repair's read
    and dated by the first answer: restore --at a moment between shows the new state while
    the table held the old one, and history shows the change before it happened."""
    backed.put("new", "7")  # the trigger never writes it: missing from the backup
    folder = open_backup(backed.s3, backed.bucket, backed.prefix, backed.table)
    key = {"pk": {"S": "new"}}
    moments: dict[str, datetime] = {}
    dynamodb = backed.dynamodb

    class Busy(layout_named(backed.folder_layout).verify):  # type: ignore[misc]
        def _get_item(self, asked: dict[str, Any]) -> Any:
            if asked == key and "compared" in moments and "changed" not in moments:
                # The journal re-read and the other candidates take a while; meanwhile:
                _wait_for_second(dynamodb, moments["compared"] + timedelta(seconds=3))
                item = {**key, "v": {"N": "8"}, "b": {"B": b"new"}}
                moments["changed"] = _date_of(dynamodb.put_item(TableName=backed.table, Item=item))
            item, read_at = super()._get_item(asked)
            if asked == key:
                moments.setdefault("compared", read_at)
            return item, read_at

    api = RawDynamoDB(
        make_client("dynamodb", dynamodb_local.endpoint),
        Credentials(servers.ACCESS_KEY, servers.SECRET_KEY),
    )
    report = Busy(
        api.call,
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        BackupWriter(backed.s3, backed.bucket),
        BotocoreObjects(backed.s3, backed.bucket),
        folder.layout,
        segments=1,
        partitions=16,
        repair=True,
    ).run()
    assert report.missing == 1 and "changed" in moments, report
    # The trigger writes v = 8 a little later (the earlier v = 7 it gave up on), as AWS dates it.
    records = lambda_records(dynamodb, backed.streams, backed.table)
    (change,) = [r for r in records if r["dynamodb"].get("NewImage", {}).get("v") == {"N": "8"}]
    deliver([_as_aws(change, moments["changed"])])

    moment = moments["changed"] - timedelta(seconds=1)  # the table held v = 7 then
    target = f"at-{backed.table}"
    result = CliRunner().invoke(
        main, ["restore", backed.bucket, backed.folder, target, "--at", moment.isoformat()]
    )
    assert result.exit_code == 0, result.output
    restored = {
        item["pk"]["S"]: item
        for item in scan_all(make_client("dynamodb", dynamodb_local.endpoint), target).values()
    }
    assert restored.get("new", {}).get("v") != {"N": "8"}, (
        f"restore --at {moment.isoformat()} gave new v = 8, made at "
        f"{moments['changed'].isoformat()} (compared at {moments['compared'].isoformat()}); "
        "the table held v = 7 then"
    )


def test_a_conversion_of_another_item_folder_at_the_same_moment_is_not_taken_for_done(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fd4e314 refuses a complete base at M that no conversion claimed, but takes any
    conversion's claim for its own: a conversion of ANOTHER item folder (the item trigger
    moved to a new prefix: the old folder holds the items changed before, the new one those
    changed since) into the same journal folder at the same moment reports the base as
    existing, exits 0 and writes nothing. The journal folder then lacks every item only the
    second folder holds, and nothing says so (an unfinished claim of another run is refused:
    "another job has claimed the base")."""
    table = create_table(dynamodb)
    old_prefix, new_prefix = f"{journal_env}-old", f"{journal_env}-new"
    journal_folder = f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, old_prefix, journal_env)
    journal_manifest(s3, bucket, old_prefix, table, "items")
    journal_manifest(s3, bucket, new_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    triggers.items(history.change([("put", "old", 1)]))  # into the old folder
    triggers.item_prefix = new_prefix
    triggers.items(history.change([("put", "new", 2)]))  # the trigger moved
    moment = history.time(2) + timedelta(seconds=30)
    at = ["--at", moment.isoformat(), "--partitions", "16"]

    first = invoke("convert", bucket, f"{old_prefix}/{table}", journal_folder, *at)
    assert first.exit_code == 0, first.output
    second = invoke("convert", bucket, f"{new_prefix}/{table}", journal_folder, *at)
    restored = restore_cli(dynamodb, bucket, journal_folder, None)
    assert second.exit_code != 0 or "new" in restored, (
        f"the second conversion exited 0 ({second.output!r}) and the journal folder restores "
        f"{sorted(restored)}: the item only {new_prefix}/{table} holds is lost"
    )
