"""``convert --history`` (docs/journal.md, "Converting an item-layout folder"), against DynamoDB
Local and SeaweedFS: the item folder's versions copied into the journal folder as ``converted``
pieces, so that the journal folder reads as the item folder before the base too. The table's
changes are written by the Lambda handler into the item folder and, from a point on, into a
journal folder beside it (its first batch also holding the item folder's last change: the
trigger started at TRIM_HORIZON), with a compaction of the journal alone made before the
conversion; a backfill's reads are in the item folder before the stream's first change. Also:
a conversion killed with SIGKILL and resumed (no record twice), and the refusal of a folder
whose base holds the table already."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.journal_store import first_piece
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.journal import (
    CONVERTED_STREAM,
    converted_record,
    decode_piece,
    encode_piece,
    journal_prefix,
    parse_piece_name,
    piece_name,
    record_of_stream,
)
from dynamo_backups.core.layout import (
    EVENT_SNAPSHOT,
    WRITER_BACKFILL,
    TableLayout,
    VersionMetadata,
)
from tests.helpers import create_table, kill_when
from tests.jobs.test_convert import Triggers, restore_cli
from tests.jobs.test_journal_compact_restore import (
    History,
    base_manifest,
    cli,
    compact,
    invoke,
    recorded_units,
)
from tests.pipeline.test_journal_writes import journal_manifest

pytestmark = pytest.mark.servers


class SpacedHistory(History):
    """The table's changes ten minutes apart, so that they span several hour folders."""

    def time(self, index: int) -> datetime:
        return self.t0 + timedelta(minutes=10 * index)


def spaced_start() -> datetime:
    """Seven hours back (less 20 minutes): 36 changes end half an hour ago."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=7) + timedelta(minutes=20)


def backfilled(s3: Any, bucket: str, item_prefix: str, table: str, read_at: datetime,
               *items: tuple[str, int]) -> None:  # fmt: skip
    """The item layout's backfill reads (versions with SNAPSHOT metadata) of ``items``."""
    layout = TableLayout.of(item_prefix, table)
    writer = BackupWriter(s3, bucket)
    for pk, value in items:
        item = {"pk": {"S": pk}, "v": {"N": f"{value}.50"}}
        metadata = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, read_at)
        writer.put_item(layout.item_object_key({"pk": {"S": pk}}), dumps_item(item), metadata)


def changes_of(bucket: str, prefix: str, table: str, pk: str) -> list[tuple[Any, ...]]:
    """What history shows of each change (the item layout's delete markers and marked copies
    left out: they are not changes of their own), newest first."""
    shown = invoke(
        "--output", "json", "history", table, json.dumps({"pk": pk}), "--bucket", bucket,
        "--prefix", prefix,
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    return [
        (
            entry["event"],
            entry["change_time"],
            int(entry["sequence_number"]) if entry["sequence_number"] else None,
            json.dumps(entry["item"], sort_keys=True),
        )
        for entry in json.loads(shown.stdout)["history"]
        if entry["event"] != "delete-marker" and not entry["duplicate_of"]
    ]


def converted_records(s3: Any, bucket: str, journal_folder: str) -> list[Any]:
    """Every record of the journal folder's converted pieces."""
    root = journal_prefix(TableLayout.from_folder(journal_folder).items_prefix)
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        for entry in page.get("Contents", []):
            if parse_piece_name(entry["Key"][len(root) :]).stream_tag != CONVERTED_STREAM:
                continue
            body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            records.extend(decode_piece(body, entry["Key"]))
    return records


def assert_reads_alike(
    dynamodb: Any, bucket: str, item_folder: str, journal_folder: str, moments: list[Any]
) -> None:
    """Restores of both folders at each moment (None: latest) equal, and the history of
    a few keys the same, each change once."""
    for at in moments:
        from_items = restore_cli(dynamodb, bucket, item_folder, at)
        assert from_items, at
        assert restore_cli(dynamodb, bucket, journal_folder, at) == from_items, at
    item_prefix, table = item_folder.split("/")
    journal_prefix_, _ = journal_folder.split("/")
    for pk in ("b0", "k0", "k1", "k2", "k3", "k4", "k5"):
        from_items = changes_of(bucket, item_prefix, table, pk)
        from_journal = changes_of(bucket, journal_prefix_, table, pk)
        assert from_journal == from_items, pk
        assert len(set(from_journal)) == len(from_journal), pk  # each change once


def test_convert_history_reads_as_the_item_folder_at_every_moment(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = SpacedHistory(dynamodb, streams, table, spaced_start())
    # Older than the converted base's late horizon (15 days): a reader taking the converted
    # piece for a late change would refuse every restore from the base (LateChangeError).
    read_at = history.time(0) - timedelta(days=20)
    backfilled(s3, bucket, item_prefix, table, read_at, ("b0", 90), ("k2", 91))
    early = history.change(
        [("put", "k0", 0), ("put", "k1", 1), ("put", "k2", 2), ("put", "k3", 3),
         ("put", "k0", 4), ("delete", "k1", 0), ("put", "k4", 5), ("delete", "k3", 0),
         ("put", "k3", 6), ("put", "k5", 7)]
    )  # fmt: skip
    triggers.items(early[:5], early[5:])  # the item folder alone
    journal_manifest(s3, bucket, journal_env, table, "journal")  # the journal trigger beside
    both = history.change(
        [("put", "k0", 20), ("delete", "k2", 0), ("put", "k6", 22), ("put", "k1", 23),
         ("delete", "k4", 0), ("put", "k2", 25)]
    )  # fmt: skip
    triggers.items(both[:3], both[3:])
    # TRIM_HORIZON: the journal's first batch holds the item folder's last change too (the
    # boundary B); then out of order, a redelivery.
    triggers.journal(early[-1:], both[2:4], both[:2], both[1:3], both[4:])
    journal_only_base = history.time(12) + timedelta(minutes=5)
    compact(s3, bucket, journal_folder, journal_only_base, partitions=16)  # overlap: scheduled
    more = history.change([("put", "k7", 30), ("delete", "k0", 0), ("put", "k4", 32)])
    triggers.items(more)
    triggers.journal(more[:2])  # more[2:] is in flight: it reaches the journal after
    moment = history.time(18) + timedelta(minutes=5)

    converted = invoke(
        "--output", "json", "convert", bucket, item_folder, journal_folder, "--history",
        "--at", moment.isoformat(), "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    report = json.loads(converted.stdout)
    # 9 stream versions before the journal's first change, 2 backfill reads and the change in
    # flight copied; the 9 changes the journal holds (B's included) are not.
    assert (report["converted_records"], report["in_journal"]) == (12, 9), report
    base = base_manifest(s3, bucket, journal_folder, moment)
    assert base.converted_history and base.reflects_before is not None
    records = converted_records(s3, bucket, journal_folder)
    assert len(records) == 12 and len({r.identity for r in records}) == 12
    first = first_piece(BotocoreObjects(s3, bucket), f"{journal_folder}/")
    assert first is not None and first.stream_tag == CONVERTED_STREAM
    assert first.first_time == read_at  # the journal folder now begins with the item folder

    triggers.journal(more[2:])  # the batch in flight: history shows its change once
    after = history.change([("put", "k8", 40), ("put", "k1", 41), ("delete", "k5", 0)])
    triggers.items(after)
    triggers.journal(after)
    # A compaction on top: made after the converted pieces (not late to it), from the
    # converted base, which does not take them for late changes either.
    compacted = history.time(20) + timedelta(minutes=5)
    compact(s3, bucket, journal_folder, compacted, partitions=16)
    assert base_manifest(s3, bucket, journal_folder, compacted).previous == base.id

    moments = [
        read_at + timedelta(minutes=1),  # the backfill's reads alone
        history.time(3) + timedelta(minutes=1),
        history.time(7) + timedelta(minutes=1),  # before the journal begins
        history.time(9),  # the journal's first change (B), in both folders
        history.time(11) + timedelta(minutes=1),  # between B and the journal-only base
        journal_only_base,
        history.time(14) + timedelta(minutes=1),  # between that base and M
        moment,
        history.time(20) + timedelta(minutes=1),  # after M
        compacted,
        None,  # latest
    ]
    assert_reads_alike(dynamodb, bucket, item_folder, journal_folder, moments)
    # The boundary: k5's put, in both folders, once.
    assert [entry[0] for entry in changes_of(bucket, journal_env, table, "k5")] == [
        "delete",
        "insert",
    ]

    # A snapshot --at before the journal began equals the item folder's restore then.
    at = history.time(7) + timedelta(minutes=1)
    destination = f"s3://{bucket}/exports/{os.urandom(4).hex()}"
    exported = invoke("snapshot", bucket, journal_folder, "--to", destination, "--at",
                      at.isoformat())  # fmt: skip
    assert exported.exit_code == 0, exported.output

    # A folder whose base holds the table already is refused (exit 2, naming the base).
    again = invoke(
        "convert", bucket, item_folder, journal_folder, "--history", "--at",
        (history.time(21) + timedelta(minutes=1)).isoformat(),
    )  # fmt: skip
    assert again.exit_code == 2, again.output
    assert base.id in again.output and "Traceback" not in again.output, again.output


def test_a_history_conversion_killed_mid_way_and_resumed(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = SpacedHistory(dynamodb, streams, table, spaced_start())
    operations = [("put", f"k{i:03d}", i) for i in range(0, 60)]
    operations += [("put", f"k{i:03d}", i + 100) for i in range(0, 60, 3)]
    operations += [("delete", f"k{i:03d}", 0) for i in range(0, 60, 7)]
    # Ten minutes apart would be 15 hours: these are a minute apart.
    history.time = lambda index: history.t0 + timedelta(minutes=index)  # type: ignore[method-assign]
    records = history.change(operations)
    triggers.items(*(records[start : start + 25] for start in range(0, len(records), 25)))
    moment = history.time(len(records) - 3) + timedelta(seconds=30)  # inside the deletions
    arguments = ["convert", bucket, item_folder, journal_folder, "--history", "--at",
                 moment.isoformat(), "--partitions", "256", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    kill_when(
        process, lambda: recorded_units(s3, bucket, journal_folder, "partition", "convert") >= 10
    )
    killed_with = converted_records(s3, bucket, journal_folder)
    assert len(killed_with) > 0

    resumed = invoke(*arguments, "--resume", "--engine", "processes", "--workers", "2")
    assert resumed.exit_code == 0, resumed.output
    copied = converted_records(s3, bucket, journal_folder)
    made = [r for r in records if history.time(records.index(r)) <= moment]
    assert len(copied) == len(made)  # every change once: no piece written twice
    assert len({r.identity for r in copied}) == len(made)
    for at in (history.time(30), history.time(70) + timedelta(seconds=30), moment):
        from_items = restore_cli(dynamodb, bucket, item_folder, at)
        assert restore_cli(dynamodb, bucket, journal_folder, at) == from_items, at


def test_history_refuses_a_converted_copy_differing_from_the_journals(
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
) -> None:
    """A converted change and the journal's copy of it (same sequence number and change time)
    are shown once; two that differ are an error (exit 1), never one of them in silence."""
    table = "Users"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    root = journal_prefix(TableLayout.of(journal_env, table).items_prefix)
    made = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    streamed = record_of_stream(
        {
            "eventID": "e1",
            "eventName": "INSERT",
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/Users/stream/x",
            "dynamodb": {
                "ApproximateCreationDateTime": made.timestamp(),
                "Keys": {"pk": {"S": "a"}},
                "NewImage": {"pk": {"S": "a"}, "v": {"N": "1"}},
                "SequenceNumber": "100",
            },
        }
    )
    keys = {"pk": {"S": "a"}}
    for image, expected in (({"pk": {"S": "a"}, "v": {"N": "1"}}, 0),
                            ({"pk": {"S": "a"}, "v": {"N": "2"}}, 1)):  # fmt: skip
        copy = converted_record(keys, image, "INSERT", made, timedelta(seconds=1), "100")
        for records in ([streamed], [copy]):
            s3.put_object(Bucket=bucket, Key=root + piece_name(records),
                          Body=encode_piece(records))  # fmt: skip
        shown = invoke(
            "--output", "json", "history", table, '{"pk": "a"}', "--bucket", bucket,
            "--prefix", journal_env,
        )  # fmt: skip
        assert shown.exit_code == expected, shown.output
        if expected:
            assert "two different copies" in shown.output, shown.output
        else:
            assert len(json.loads(shown.stdout)["history"]) == 1
