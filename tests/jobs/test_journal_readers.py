"""history and snapshot on both layouts (docs/journal.md, "Reading"), against DynamoDB Local
and SeaweedFS: the same table changes, delivered by the Lambda handler in the same batches (out
of order, a bisected redelivery, a batch retried whole, a TTL removal), into a folder of
either layout; the journal folder also compacted mid-way. Where the behaviour is the same, one
test parametrized over the layouts checks each answer against the changes themselves, so the
suite shows parity; then the journal-only cases (journal objects expired behind a base, the
requests one history makes, two copies that differ, the refused option)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import subprocess
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.cli import main
from dynamo_backups.core.journal import (
    TTL_PRINCIPAL,
    JournalError,
    JournalRecord,
    encode_piece,
    encode_record,
    gzip_lines,
    piece_name,
    record_of_stream,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import format_time
from dynamo_backups.jobs.journal_history import journal_item_history, records_of_item
from tests.helpers import create_table, kill_when, scan_all
from tests.jobs.test_journal_compact_restore import (
    History,
    cli,
    compact,
    recorded_units,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest, run_handler

pytestmark = pytest.mark.servers

EVENTS = {"INSERT": "insert", "MODIFY": "modify", "REMOVE": "delete"}
# (layout, compacted): the item layout, and the journal without and with a base mid-way.
LAYOUTS = [
    pytest.param("items", False, id="items"),
    pytest.param("journal", False, id="journal"),
    pytest.param("journal", True, id="journal-compacted"),
]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


class Backup:
    """A table and its backup folder in one layout, written by the Lambda handler."""

    def __init__(
        self, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, layout: str
    ) -> None:
        self.s3, self.bucket, self.prefix, self.layout = s3, bucket, prefix, layout
        self.table = create_table(dynamodb)
        self.folder = f"{prefix}/{self.table}"
        journal_manifest(s3, bucket, prefix, self.table, layout if layout == "journal" else None)
        self.history = History(dynamodb, streams, self.table, start_time())

    def deliver(self, *batches: list[dict[str, Any]]) -> None:
        for batch in batches:
            assert run_handler(copy.deepcopy(batch)) == {"batchItemFailures": []}

    def compact(self, moment: datetime) -> None:
        compact(self.s3, self.bucket, self.folder, moment, partitions=16)

    def history_of(self, pk: str) -> Any:
        return invoke(
            "--output", "json", "history", self.table, json.dumps({"pk": pk}),
            "--bucket", self.bucket, "--prefix", self.prefix,
        )  # fmt: skip

    def changes_of(self, pk: str) -> list[dict[str, Any]]:
        """What history shows of each change, from the JSON output; the item layout's own
        entries that are not changes of their own (its delete markers, the copies a
        redelivered batch wrote again) left out, as the journal drops copies."""
        shown = self.history_of(pk)
        assert shown.exit_code == 0, shown.output
        return [
            {
                "event": entry["event"],
                "change_time": entry["change_time"],
                # as a number: a base's index keeps it without DynamoDB Local's leading zeros
                "sequence_number": int(entry["sequence_number"]),
                "item": entry["item"],
            }
            for entry in json.loads(shown.stdout)["history"]
            if entry["event"] != "delete-marker" and not entry["duplicate_of"]
        ]

    def snapshot(self, at: datetime | None = None, *extra: str) -> tuple[Any, str]:
        destination = f"s3://{self.bucket}/exports/{os.urandom(4).hex()}"
        moment = ("--at", at.isoformat()) if at is not None else ()
        result = invoke(
            "--output", "json", "snapshot", self.bucket, self.folder, "--to", destination,
            *moment, *extra,
        )  # fmt: skip
        return result, destination

    def exported(self, destination: str) -> dict[str, dict[str, Any]]:
        """The export's items, read as ImportTable reads them: the files manifest-files.json
        names (and nothing else is under data/)."""
        key = destination.removeprefix(f"s3://{self.bucket}/")
        body = self.s3.get_object(Bucket=self.bucket, Key=f"{key}/manifest-files.json")["Body"]
        files = [json.loads(line) for line in body.read().decode().splitlines()]
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{key}/data/")
        assert sorted(e["Key"] for e in listed.get("Contents", [])) == sorted(
            f["dataFileS3Key"] for f in files
        )
        items: dict[str, dict[str, Any]] = {}
        for entry in files:
            data = self.s3.get_object(Bucket=self.bucket, Key=entry["dataFileS3Key"])["Body"]
            lines = gzip.decompress(data.read()).decode().splitlines()
            assert len(lines) == entry["itemCount"]
            for line in lines:
                item = json.loads(line)["Item"]
                assert item["pk"]["S"] not in items  # every item once
                items[item["pk"]["S"]] = item
        return items


def expected_changes(
    history: History, pk: str, only: set[int] | None = None
) -> list[dict[str, Any]]:
    """The item's changes as history must show them: newest first, each once (``only``: of
    the changes with these indexes)."""
    changes = []
    for index, raw in enumerate(history.records):
        record = record_of_stream(raw, index)
        if record.keys["pk"]["S"] == pk and (only is None or index in only):
            changes.append(
                {
                    "event": EVENTS[record.event_name],
                    "change_time": format_time(record.change_time),
                    "sequence_number": record.sequence,
                    "item": record.image,
                }
            )
    return changes[::-1]


def ttl_removal(record: dict[str, Any]) -> dict[str, Any]:
    """A REMOVE as the stream gives one Time to Live made (DynamoDB Local does not expire
    items): its userIdentity names DynamoDB's service."""
    return {**record, "userIdentity": {"type": "Service", "principalId": TTL_PRINCIPAL}}


@pytest.fixture
def handler_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: Any, bucket: str, prefix: str) -> str:
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    return prefix


def backed_up(
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    layout: str,
    compacted: bool,
) -> Backup:
    """The same changes, in the same batches, into a folder of ``layout``: a changed, deleted
    and re-created; b deleted and re-created; t removed by TTL; batches out of order, one
    bisected and redelivered, one retried whole; the journal compacted inside a batch (when
    ``compacted``) before the last batches arrive, one of them a batch it had already."""
    monkeypatch.setenv("BACKUP_LAYOUT", layout)
    backup = Backup(dynamodb, streams, s3, bucket, prefix, layout)
    records = backup.history.change(
        [
            *[("put", "a", 1), ("put", "b", 2), ("put", "t", 3), ("put", "a", 4)],
            *[("delete", "b", 0), ("put", "c", 6), ("delete", "t", 0), ("put", "b", 8)],
            *[("put", "a", 9), ("put", "c", 10), ("delete", "a", 0), ("put", "d", 12)],
        ]
    )
    records[6] = ttl_removal(records[6])
    backup.history.records[6] = records[6]
    first, second, third = records[0:4], records[4:8], records[8:12]
    backup.deliver(second, first, third, first[1:3])
    if compacted:
        backup.compact(backup.history.time(5) + timedelta(seconds=30))  # inside the 2nd batch
    later = backup.history.change([("put", "a", 13), ("put", "e", 14)])
    backup.deliver(later, second)  # the second batch retried whole, after the base
    return backup


# --- the same on both layouts --------------------------------------------------------------


@pytest.mark.parametrize(("layout", "compacted"), LAYOUTS)
def test_history_of_a_key_is_each_change_newest_first(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
    layout: str,
    compacted: bool,
) -> None:
    backup = backed_up(monkeypatch, dynamodb, streams, s3, bucket, handler_env, layout, compacted)
    history = backup.history
    # changed, deleted and re-created; deleted and re-created; removed by TTL (a delete, as
    # the item layout shows it); changed twice; created once
    for pk, events in (
        ("a", ["insert", "delete", "modify", "modify", "insert"]),
        ("b", ["insert", "delete", "insert"]),
        ("t", ["delete", "insert"]),
        ("c", ["modify", "insert"]),
        ("e", ["insert"]),
    ):
        changes = backup.changes_of(pk)
        assert changes == expected_changes(history, pk), pk
        assert [change["event"] for change in changes] == events, pk
    # numbers and bytes exactly as the stream gave them
    assert backup.changes_of("c")[0]["item"] == {"pk": {"S": "c"}, "v": {"N": "10.5"},
                                                 "b": {"B": "Cg=="}}  # fmt: skip

    text = invoke("history", backup.table, '{"pk": "b"}', "--bucket", bucket,
                  "--prefix", handler_env)  # fmt: skip
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[0].startswith(f"s3://{bucket}/{backup.folder}/")
    assert f"{format_time(history.time(7)):24}  insert" in text.output
    assert '"v": 8.5' in text.output

    missing = invoke("history", backup.table, '{"pk": "zz"}', "--bucket", bucket,
                     "--prefix", handler_env)  # fmt: skip
    assert missing.exit_code == 1 and "no backup of item" in missing.output


@pytest.mark.parametrize(("layout", "compacted"), LAYOUTS)
def test_snapshot_latest_and_at_a_moment_inside_a_batch(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
    layout: str,
    compacted: bool,
) -> None:
    backup = backed_up(monkeypatch, dynamodb, streams, s3, bucket, handler_env, layout, compacted)
    history = backup.history

    latest, destination = backup.snapshot()
    assert latest.exit_code == 0, latest.output
    report = json.loads(latest.stdout)
    table_now = {item["pk"]["S"]: item for item in scan_all(dynamodb, backup.table).values()}
    assert backup.exported(destination) == table_now == history.state_at(None)
    assert report["items"] == len(table_now) and report["at"] is None
    summary_key = destination.removeprefix(f"s3://{bucket}/") + "/manifest-summary.json"
    summary = json.loads(s3.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
    assert summary["itemCount"] == len(table_now) and summary["outputFormat"] == "DYNAMODB_JSON"

    for at in (
        history.time(5) + timedelta(seconds=30),  # inside the second batch (the base's moment)
        history.time(6) + timedelta(seconds=59),  # after the TTL removal, inside that batch
        history.time(10),  # the removal of a, inside the third batch
    ):
        result, destination = backup.snapshot(at, "--partitions", "256")
        assert result.exit_code == 0, result.output
        assert backup.exported(destination) == history.state_at(at), at
        assert json.loads(result.stdout)["at"] == at.isoformat()

    before, destination = backup.snapshot(history.time(0) - timedelta(minutes=5))
    assert before.exit_code == 2, before.output
    assert "--at: the backup held no item at" in before.output
    assert "before the first backup of" in before.output


@pytest.mark.parametrize(("layout", "compacted"), LAYOUTS[:2])
def test_a_restore_at_a_moment_before_the_first_change_is_refused_and_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
    layout: str,
    compacted: bool,
) -> None:
    """--at before the backup's first change: exit 2 naming the earliest change, the table
    made for it deleted again; into an existing table --delete-absent deletes nothing (the
    journal restore read no piece, and left an empty table with exit 0, before)."""
    backup = backed_up(monkeypatch, dynamodb, streams, s3, bucket, handler_env, layout, compacted)
    before = (backup.history.time(0) - timedelta(minutes=5)).isoformat()
    target = f"{backup.table}-restored"
    fresh = invoke("restore", backup.bucket, backup.folder, target, "--at", before)
    assert fresh.exit_code == 2, fresh.output
    assert "--at: the backup held no item at" in fresh.output
    assert "its earliest change" in fresh.output, fresh.output
    if layout == "journal":  # its first piece's first change (the item layout's is sampled)
        assert f"its earliest change: {format_time(backup.history.time(0))}" in fresh.output
    assert "was deleted again" in fresh.output
    assert target not in dynamodb.list_tables()["TableNames"]

    existing = create_table(dynamodb)
    dynamodb.put_item(TableName=existing, Item={"pk": {"S": "live"}, "v": {"N": "1"}})
    into = invoke("restore", backup.bucket, backup.folder, existing, "--at", before,
                  "--into-existing", "--delete-absent")  # fmt: skip
    assert into.exit_code == 2, into.output
    assert "--delete-absent deleted nothing" in into.output
    assert list(scan_all(dynamodb, existing)) != []


# --- the journal only ----------------------------------------------------------------------


class CountingObjects(BotocoreObjects):
    """The bucket's objects, counting the requests a reader makes (by kind)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        super().__init__(s3, bucket)
        self.counts: Counter[str] = Counter()
        self.read: list[str] = []
        self.lock = threading.Lock()

    def read_object(self, key: str, version_id: str | None = None) -> Any:
        with self.lock:
            self.counts["GET"] += 1
            self.read.append(key)
        return super().read_object(key, version_id)

    def list_objects_page(self, prefix: str, token: str | None = None) -> Any:
        with self.lock:
            self.counts["LIST"] += 1
        return super().list_objects_page(prefix, token)


def test_history_reads_the_bases_where_the_journal_expired_and_only_the_keys_partition(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
) -> None:
    backup = backed_up(monkeypatch, dynamodb, streams, s3, bucket, handler_env, "journal", True)
    history = backup.history
    moment2 = history.time(11) + timedelta(seconds=30)
    backup.compact(moment2)  # a second base, folded from the first
    folder = open_folder(s3, bucket, handler_env, backup.table)

    counting = CountingObjects(s3, bucket)
    _, entries = journal_item_history(s3, counting, folder, {"pk": {"S": "b"}})
    pieces = s3.list_objects_v2(Bucket=bucket, Prefix=f"{backup.folder}/journal/")["Contents"]
    # every piece once, each base's manifest and the index of b's partition: no data file
    # (the journal holds b's deciding change), no other partition's index
    assert sorted(key for key in counting.read if "/journal/" in key) == sorted(
        entry["Key"] for entry in pieces
    )
    bases_read = [key for key in counting.read if "/bases/" in key]
    assert len(bases_read) == 4 and all("/data/" not in key for key in bases_read)
    assert counting.counts["GET"] == len(pieces) + 4
    assert len(entries) == 3

    # The journal's objects expire before the bases (the lifecycle's rules): what the journal
    # no longer holds, the bases' index and data still show (each change once).
    for entry in pieces:
        if entry["Key"] != max(e["Key"] for e in pieces):  # the newest piece is kept
            s3.delete_object(Bucket=bucket, Key=entry["Key"])
    left = s3.list_objects_v2(Bucket=bucket, Prefix=f"{backup.folder}/journal/")["Contents"]
    assert len(left) == 1  # the last batch (changes 12 and 13)
    # Each item: the journal's changes left, and the change that decided its state in each
    # base (the first base's moment is inside change 5's minute, the second's in 11's).
    for pk, shown in (
        ("a", {12, 10, 3}),
        ("b", {7, 4}),  # the second base's insert (its image from the base's data)
        ("t", {6, 2}),  # the TTL removal, kept in the second base's index
        ("c", {9, 5}),
        ("d", {11}),
        ("e", {13}),
    ):
        assert backup.changes_of(pk) == expected_changes(history, pk, shown), pk
    counting = CountingObjects(s3, bucket)
    journal_item_history(s3, counting, folder, {"pk": {"S": "b"}})
    data_read = [key for key in counting.read if "/data/" in key]
    assert len(data_read) == 1  # b's image, from one base's data of b's partition
    assert counting.counts["GET"] == 1 + 4 + 1

    # The snapshot reads the newest base and the journal after it.
    latest, destination = backup.snapshot()
    assert latest.exit_code == 0, latest.output
    assert backup.exported(destination) == history.state_at(None)


def test_two_different_copies_of_a_change_fail_history_and_snapshot(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
) -> None:
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    backup = Backup(dynamodb, streams, s3, bucket, handler_env, "journal")
    records = backup.history.change([("put", "a", 1), ("put", "b", 2)])
    backup.deliver(records)
    forged = replace(record_of_stream(records[0], 0), image={"pk": {"S": "a"}, "v": {"N": "9"}})
    s3.put_object(Bucket=bucket, Key=f"{backup.folder}/journal/{piece_name([forged])}",
                  Body=encode_piece([forged]))  # fmt: skip
    shown = backup.history_of("a")
    assert shown.exit_code == 1 and "two different copies" in shown.output
    assert "Traceback" not in shown.output
    result, _ = backup.snapshot()
    assert result.exit_code == 1 and "two different copies" in result.output


def test_snapshot_of_a_journal_folder_refuses_skip_invalid_before_writing(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
) -> None:
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    backup = Backup(dynamodb, streams, s3, bucket, handler_env, "journal")
    backup.deliver(backup.history.change([("put", "a", 1)]))
    before = s3.list_objects_v2(Bucket=bucket, Prefix="").get("KeyCount")
    result, _ = backup.snapshot(None, "--skip-invalid")
    assert result.exit_code == 2, result.output
    assert f"s3://{bucket}/{backup.folder}/ is a journal folder" in result.output
    assert "--skip-invalid" in result.output
    assert s3.list_objects_v2(Bucket=bucket, Prefix="").get("KeyCount") == before


def test_history_decodes_the_items_lines_whole_and_reports_any_line_it_cannot_place() -> None:
    """Only the item's lines are decoded whole; a line that is not JSON, or whose keys are
    not valid DynamoDB JSON, may be the item's: it is an error, never skipped."""
    at = start_time()
    mine, other = (
        JournalRecord("arn", str(n), "INSERT", at, {"pk": {"S": pk}}, {"pk": {"S": pk}})
        for n, pk in ((1, "a"), (2, "b"))
    )
    name = mine.name()
    lines = [encode_record(other), encode_record(mine)]
    assert records_of_item(gzip_lines(lines), name, DEFAULT_KEY_HASH, "piece") == [mine]
    for bad in (b"{not json", b'{"v":1,"keys":{"pk":{"X":"a"}}}', b'{"v":1}'):
        with pytest.raises(JournalError, match="piece line 2"):
            records_of_item(gzip_lines([lines[0], bad]), name, DEFAULT_KEY_HASH, "piece")


def test_a_journal_snapshot_killed_mid_way_and_resumed_on_processes_exports_every_item_once(
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    handler_env: str,
) -> None:
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    backup = Backup(dynamodb, streams, s3, bucket, handler_env, "journal")
    history = backup.history
    records = history.change([("put", f"k{i:03d}", i % 250) for i in range(100)])
    backup.deliver(*(records[start : start + 10] for start in range(0, 100, 10)))
    backup.compact(history.time(40) + timedelta(seconds=30))  # a base, and journal after it
    at = history.time(80) + timedelta(seconds=30)
    destination = f"s3://{bucket}/exports/{os.urandom(4).hex()}"
    arguments = ["snapshot", bucket, backup.folder, "--to", destination, "--at", at.isoformat(),
                 "--partitions", "256", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    job = "snapshot-" + hashlib.sha256(f"{destination}/".encode()).hexdigest()[:12]
    kill_when(process, lambda: recorded_units(s3, bucket, backup.folder, "partition", job) >= 20)
    assert 20 <= recorded_units(s3, bucket, backup.folder, "partition", job) < 256
    key = destination.removeprefix(f"s3://{bucket}/")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{key}/manifest-")

    # Resumed on another engine: the same base and journal objects as the first attempt read.
    resumed = invoke(*arguments, "--resume", "--engine", "processes", "--workers", "2")
    assert resumed.exit_code == 0, resumed.output
    assert backup.exported(destination) == history.state_at(at)  # each item once
