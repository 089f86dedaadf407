"""Hostile review of ``convert --history`` (merge 96e10ce): reproductions where the journal
folder a conversion with --history made reads otherwise than the item folder it came from, at
a moment the tool does not refuse. Each test runs against DynamoDB Local and SeaweedFS, the
item folder written by the Lambda handler (and, for other tools' versions, by plain S3 PUTs
and DELETEs, as `aws s3 cp` / `aws s3 rm` would make them)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.journal import CONVERTED_STREAM, journal_prefix, parse_piece_name
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    WRITER_REPAIR,
    WRITER_STREAM,
    TableLayout,
    VersionMetadata,
)
from dynamo_backups.jobs.journal_units import retention_clock
from tests.helpers import create_table, kill_when
from tests.jobs.test_convert import Triggers, restore_cli
from tests.jobs.test_journal_compact_restore import (
    History,
    cli,
    compact,
    invoke,
    recorded_units,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest

pytestmark = pytest.mark.servers


def _whole_second_after(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def _two_writes_in_one_second(
    s3: Any, bucket: str, object_key: str, first: bytes, second: bytes | None
) -> datetime:
    """Another tool's two writes of one object (a PUT, then a PUT or a DELETE: a delete
    marker with no tombstone) that S3 dates to the same second; that second."""
    for _ in range(20):
        s3.put_object(Bucket=bucket, Key=object_key, Body=first)
        if second is None:
            s3.delete_object(Bucket=bucket, Key=object_key)
        else:
            s3.put_object(Bucket=bucket, Key=object_key, Body=second)
        listed = s3.list_object_versions(Bucket=bucket, Prefix=object_key)
        dates = sorted(
            (e["LastModified"] for e in [*listed["Versions"], *listed.get("DeleteMarkers", [])]),
            reverse=True,
        )
        if dates[0] == dates[1]:  # the newest two: the newest write and the one before it
            return dates[0].astimezone(UTC)
        time.sleep(0.2)
    raise AssertionError("S3 never dated two writes to one second")


def test_other_tools_writes_within_one_second_restore_as_the_item_folder_before_m(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two versions without a sequence number dated to one second (another tool's PUTs, or
    a PUT and `aws s3 rm`'s delete marker): the item layout takes the one S3 received last
    (``change_key``: -position); the converted records are two SNAPSHOTs with equal
    ``ChangeOrder`` but for their eventID, a digest, so the journal's fold takes whichever
    digest is larger: half the items come back with the older write, or present where the
    item folder has them removed. restore --at a moment before M is not refused."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    keys = [f"k{i}" for i in range(12)]
    triggers.items(history.change([("put", key, i) for i, key in enumerate(keys)]))
    layout = TableLayout.of(item_prefix, table)
    latest = None
    for i, key in enumerate(keys):
        first = dumps_item({"pk": {"S": key}, "v": {"N": f"{100 + i}"}, "w": {"S": "first"}})
        second = None
        if i % 2 == 0:
            second = dumps_item({"pk": {"S": key}, "v": {"N": f"{200 + i}"}, "w": {"S": "second"}})
        written = _two_writes_in_one_second(
            s3, bucket, layout.item_object_key({"pk": {"S": key}}), first, second
        )
        latest = written if latest is None else max(latest, written)
    assert latest is not None
    at = _whole_second_after(latest)
    moment = at + timedelta(seconds=2)
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 1)

    converted = invoke(
        "--output", "json", "convert", bucket, item_folder, journal_folder, "--history",
        "--at", moment.isoformat(), "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output

    from_items = restore_cli(dynamodb, bucket, item_folder, at)
    # The item layout: the write S3 received last (the second PUT, or the delete marker).
    assert {pk: item["w"]["S"] for pk, item in from_items.items()} == {
        key: "second" for i, key in enumerate(keys) if i % 2 == 0
    }
    from_journal = restore_cli(dynamodb, bucket, journal_folder, at)
    assert from_journal == from_items


def _history(bucket: str, prefix: str, table: str, pk: str) -> list[tuple[Any, ...]]:
    """What history shows of each change (event, change time, writer, item), newest first;
    the item layout's delete markers of its own tombstones and marked copies left out."""
    shown = invoke(
        "--output", "json", "history", table, json.dumps({"pk": pk}), "--bucket", bucket,
        "--prefix", prefix,
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    return [
        (entry["event"], entry["change_time"], entry["writer"], json.dumps(entry["item"]))
        for entry in json.loads(shown.stdout)["history"]
        if entry["event"] != "delete-marker" and not entry["duplicate_of"]
    ]


def test_a_removal_without_a_sequence_number_is_shown_as_a_delete_by_history(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A removal the item folder holds without a sequence number (verify --repair's tombstone
    of an item the table no longer had, or backfill's re-written removal) is a ``delete`` in
    the item layout's history; converted, it is a SNAPSHOT with no image, and the journal
    folder's history shows it as a ``backfill`` read by writer ``backfill``, no ``delete``
    at all: the item's deletion is gone from its history."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    triggers.items(history.change([("put", "r", 1), ("put", "s", 2)]))
    layout = TableLayout.of(item_prefix, table)
    removed_at = history.time(5)
    BackupWriter(s3, bucket).remove_item(
        layout.item_object_key({"pk": {"S": "r"}}),
        VersionMetadata(WRITER_REPAIR, EVENT_REMOVE, removed_at),
    )
    moment = history.time(10)
    converted = invoke(
        "convert", bucket, item_folder, journal_folder, "--history", "--at", moment.isoformat(),
        "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output

    from_items = _history(bucket, item_prefix, table, "r")
    assert (from_items[0][0], from_items[0][2]) == ("delete", WRITER_REPAIR), from_items
    # Which table read it was (a repair's, a backfill's) a converted record does not keep
    # (docs/journal.md): every other part of each change is the same.
    without_writer = [(event, time, item) for event, time, _, item in from_items]
    from_journal = _history(bucket, journal_env, table, "r")
    assert [(event, time, item) for event, time, _, item in from_journal] == without_writer


def test_the_journal_begins_for_retention_no_later_than_its_converted_pieces(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore --at before M reads the journal from its beginning (no base), and is refused
    only once the journal "began" more than the policy's ``changes_days`` ago
    (``readable_base``: ``journal_gap_reason(clock.began, ...)``), ``began`` being
    ``layout.json``'s LastModified. A conversion into a new folder writes ``layout.json``
    last: after every converted piece, by the whole run (a killed conversion resumed days
    later: by days). The lifecycle rule expires each converted piece ``changes_days`` after
    *it* was written, so from then until ``began + changes_days - 12 h`` a restore --at
    before M is not refused and misses the expired pieces' versions: items come back absent
    or older. What the refusal needs: no converted piece older than ``began``."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    history.time = lambda index: history.t0 + timedelta(seconds=10 * index)  # type: ignore[method-assign]
    records = history.change([("put", f"k{i:03d}", i) for i in range(80)])
    triggers.items(*(records[start : start + 20] for start in range(0, len(records), 20)))
    moment = history.time(len(records))
    arguments = ["convert", bucket, item_folder, journal_folder, "--history", "--at",
                 moment.isoformat(), "--partitions", "256", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    kill_when(
        process, lambda: recorded_units(s3, bucket, journal_folder, "partition", "convert") >= 10
    )
    time.sleep(3)  # the run resumed later (on AWS: hours or days)
    resumed = invoke(*arguments, "--resume")
    assert resumed.exit_code == 0, resumed.output

    layout = TableLayout.from_folder(journal_folder)
    objects = BotocoreObjects(s3, bucket)
    clock = retention_clock(s3, objects, TableLayout.of(layout.prefix, layout.table))
    root = journal_prefix(layout.items_prefix)
    written = [
        entry["LastModified"].astimezone(UTC)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root)
        for entry in page.get("Contents", [])
        if parse_piece_name(entry["Key"][len(root) :]).stream_tag == CONVERTED_STREAM
    ]
    assert written
    assert min(written) >= clock.began, (min(written), clock.began)


def test_a_conversion_at_the_moment_of_a_journal_only_base_is_not_taken_for_done(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(convert without --history; before the merge too.) ``Conversion`` takes a complete
    manifest at M for its own ("existed": nothing to write) without looking whose it is. A
    compaction of the journal alone (the scheduled one, while both triggers write) made at
    the very moment the user converts at: convert exits 0 having written no base, and the
    folder has no base from the table. Restores then read the journal alone: every item not
    changed since the journal began is missing (latest too), and nothing refuses."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    early = history.change([("put", "old", 1), ("put", "a", 2)])
    triggers.items(early)  # before the journal trigger
    journal_manifest(s3, bucket, journal_env, table, "journal")
    both = history.change([("put", "a", 3), ("put", "b", 4)])
    triggers.items(both)
    triggers.journal(both)
    moment = history.time(3) + timedelta(seconds=30)
    compact(s3, bucket, journal_folder, moment, partitions=16)  # the journal alone

    refused = invoke(
        "convert", bucket, item_folder, journal_folder, "--at", moment.isoformat(),
        "--partitions", "16",
    )  # fmt: skip
    # Refused, naming the base (exit 2, nothing written), never taken for the conversion's.
    assert refused.exit_code == 2, refused.output
    assert "is a base another job made" in refused.output, refused.output
    converted = invoke(
        "convert", bucket, item_folder, journal_folder,
        "--at", (moment + timedelta(seconds=1)).isoformat(), "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    from_items = restore_cli(dynamodb, bucket, item_folder, None)
    assert set(from_items) == {"old", "a", "b"}
    assert restore_cli(dynamodb, bucket, journal_folder, None) == from_items


def test_a_removal_of_an_item_the_folder_never_held_is_left_out_not_a_failed_conversion(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/journal.md ("Implemented: convert --history", "Left out, counted"): a removal of
    an object none of whose versions holds the item (the item was older than the item
    trigger and never backfilled, then deleted) is left out with a warning. It is, by the
    history step; but the base's unit fails first when the removal is newer than the late
    horizon (``_removed_keys``: "no version of it holds the item's key"), every attempt,
    so such a folder (a trigger deployed, an old item deleted before the backfill) can never
    be converted, with or without --history, within 15 days of that removal."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    triggers.items(history.change([("put", "a", 1), ("put", "b", 2)]))
    # What the item trigger writes for the REMOVE of an item it never saw: a tombstone and a
    # delete marker, nothing holding the item.
    BackupWriter(s3, bucket).remove_item(
        TableLayout.of(item_prefix, table).item_object_key({"pk": {"S": "older"}}),
        VersionMetadata(WRITER_STREAM, EVENT_REMOVE, history.time(3), "000000000000000000099"),
    )
    moment = history.time(10)
    converted = invoke(
        "convert", bucket, item_folder, journal_folder, "--history", "--at", moment.isoformat(),
        "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    # Named, not silent: the base's index cannot record the removal without the key.
    assert "warning: 1 removals newer than the base's late horizon" in converted.output
    assert restore_cli(dynamodb, bucket, journal_folder, moment) == restore_cli(
        dynamodb, bucket, item_folder, moment
    )
