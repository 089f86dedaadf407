"""A removal recorded twice is one change: a delete whose answer was lost and that was sent
again (S3 adds a delete marker on every simple DELETE, also over a delete marker), and a
REMOVE delivered again after it was written (a retried batch), or after its delete was
refused. Written through the fault proxy in front of SeaweedFS, read back with ``history``
and point-in-time selection: each change once, in the stream's order."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.reading import object_versions
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout, VersionMetadata
from dynamo_backups.core.pitr import select_at
from dynamo_backups.jobs.history import HistoryEntry, item_history
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests import faultproxy, servers
from tests.helpers import bodies, create_table, expected_name, history, lambda_records, object_key
from tests.servers import make_client

pytestmark = pytest.mark.servers

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
POLICY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)


@pytest.fixture(params=["fast", "botocore"])
def transport(request: pytest.FixtureRequest) -> str:
    """The fast transport deletes with DeleteObjects (POST ?delete), botocore with DELETE."""
    return str(request.param)


def writer_via(endpoint: str, bucket: str, transport: str) -> BackupWriter:
    client = make_client("s3", endpoint, retries={"total_max_attempts": 1})
    objects = FastObjects(client, bucket, CREDENTIALS) if transport == "fast" else None
    return BackupWriter(client, bucket, POLICY, objects)


def is_delete(request: faultproxy.Request) -> bool:
    """A delete of an item: DELETE of the key, or DeleteObjects (POST ?delete)."""
    return request.method == "DELETE" or (
        request.method == "POST" and request.path.endswith("?delete")
    )


class LoseDeleteAnswers:
    """Fault-proxy rewrite: the first ``count`` deletes reach S3 and are applied; their
    answers are lost (the connection drops on the way back)."""

    def __init__(self, count: int = 1) -> None:
        self.left = count
        self.lost = 0
        self._lock = threading.Lock()

    def __call__(
        self, request: faultproxy.Request
    ) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        with self._lock:
            if not is_delete(request) or self.left == 0:
                return None
            self.left -= 1

        def lost(answer: bytes) -> bytes:
            with self._lock:
                self.lost += 1
            raise ConnectionAbortedError("the delete's answer is lost on its way back")

        return request.body, lost


def deny_deletes(active: threading.Event) -> faultproxy.Rule:
    """While ``active``: every delete is refused, as a bucket policy denying s3:DeleteObject
    does (DELETE: 403 AccessDenied; DeleteObjects: 200 with the key's own AccessDenied)."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        if not (active.is_set() and is_delete(request)):
            return faultproxy.FORWARD
        if request.method == "DELETE":
            body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return faultproxy.Answer(403, {"Content-Type": "application/xml"}, body)
        key = request.body.split(b"<Key>", 1)[1].split(b"</Key>", 1)[0]
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult '
            b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error><Key>'
            + key
            + b"</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            b"</DeleteResult>"
        )
        return faultproxy.Answer(200, {"Content-Type": "application/xml"}, body)

    return rule


def changes(entries: list[HistoryEntry]) -> list[str]:
    """The history's changes, newest first: every entry that is not a copy of another."""
    return [entry.event for entry in entries if entry.duplicate_of is None]


def item_state(s3: Any, bucket: str, key: str) -> Any:
    """The item as a latest restore decides it (None: absent)."""
    reader = BotocoreObjects(s3, bucket)
    entries = object_versions(reader, key)
    chosen = select_at(
        entries,
        datetime.max.replace(tzinfo=UTC),
        lambda entry: VersionMetadata.from_s3(reader.head_object(key, entry.version_id)),
    )
    if chosen.version is None:
        return None
    return reader.read_object(key, chosen.version.version_id)[0]


def test_a_delete_applied_but_unanswered_and_sent_again_is_one_removal(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """INSERT, REMOVE, INSERT again. The REMOVE's delete reaches S3 and is applied, its
    answer is lost, the retry adds a second delete marker on the first. ``history`` shows
    the removal once, the second marker as a copy of the first, in the stream's order (the
    re-insert newest); a latest restore takes the re-inserted item."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "twice"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
    records = lambda_records(dynamodb, streams, table)
    assert [record["eventName"] for record in records] == ["INSERT", "REMOVE", "INSERT"]

    lose = LoseDeleteAnswers()
    with faultproxy.FaultProxy(seaweedfs.endpoint, rewrite=lose) as proxy:
        result = BackupApplier(writer_via(proxy.endpoint, bucket, transport), prefix).apply(records)
    assert result.failures == [] and lose.lost == 1
    name = object_key(prefix, table, key)
    # What S3 holds: the lost delete and its retry are two markers.
    assert bodies(history(s3, bucket, name)) == [
        {**key, "v": {"N": "2"}},
        "DM",
        "DM",
        None,
        {**key, "v": {"N": "1"}},
    ]

    layout = TableLayout.of(prefix, table, "md5")
    _, entries = item_history(BotocoreObjects(s3, bucket), bucket, layout, key)
    assert changes(entries) == ["insert", "delete-marker", "delete", "insert"]
    listed = object_versions(BotocoreObjects(s3, bucket), name)  # S3's order, newest first
    again_id, first_id = listed[1].version_id, listed[2].version_id
    marks = {entry.version_id: entry.duplicate_of for entry in entries}
    assert marks[again_id] == first_id and marks[first_id] is None
    # In the stream's order: the markers sit on their tombstone, under the re-insert.
    assert [entry.event for entry in entries] == [
        "insert",
        "delete-marker",
        "delete-marker",
        "delete",
        "insert",
    ]
    assert json.loads(item_state(s3, bucket, name)) == {**key, "v": {"N": "2"}}


def test_a_removal_delivered_again_after_it_was_written_is_one_change(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """A batch retried from an earlier record of another item (Lambda retries from the
    earliest failed record; other items' chains had gone on) delivers a REMOVE that was
    written in full again: a second tombstone and a second marker. Both are copies of the
    first removal: ``history`` has the removal once."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "again"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    records = lambda_records(dynamodb, streams, table)
    writer = writer_via(seaweedfs.endpoint, bucket, transport)
    assert BackupApplier(writer, prefix).apply(records).failures == []
    assert BackupApplier(writer, prefix).apply(records[1:]).failures == []  # redelivered

    name = object_key(prefix, table, key)
    assert bodies(history(s3, bucket, name)) == ["DM", None, "DM", None, {**key, "v": {"N": "1"}}]
    layout = TableLayout.of(prefix, table, "md5")
    _, entries = item_history(BotocoreObjects(s3, bucket), bucket, layout, key)
    assert changes(entries) == ["delete-marker", "delete", "insert"]
    assert item_state(s3, bucket, name) is None


def test_a_removal_whose_delete_was_refused_then_delivered_again_is_one_change(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """A policy denies s3:DeleteObject: the REMOVE's tombstone is written, its delete refused
    (the record fails for good and is delivered again, twice, still refused); once the
    delete is allowed, the next delivery writes its marker. Every tombstone after the first
    is a copy: the removal is one change, its marker not a second one."""
    table = create_table(dynamodb)
    key = {"pk": {"S": "denied"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    records = lambda_records(dynamodb, streams, table)
    denied = threading.Event()
    denied.set()
    with faultproxy.FaultProxy(seaweedfs.endpoint, deny_deletes(denied)) as proxy:
        applier = BackupApplier(writer_via(proxy.endpoint, bucket, transport), prefix)
        first = applier.apply(records)
        assert [failure.index for failure in first.failures] == [1]
        assert not first.failures[0].retryable and "AccessDenied" in first.failures[0].reason
        for _ in range(2):
            assert not applier.apply(records[1:]).failures[0].retryable
        denied.clear()
        assert applier.apply(records[1:]).failures == []

    name = object_key(prefix, table, key)
    assert bodies(history(s3, bucket, name))[0] == "DM"
    layout = TableLayout.of(prefix, table, "md5")
    _, entries = item_history(BotocoreObjects(s3, bucket), bucket, layout, key)
    assert changes(entries) == ["delete-marker", "delete", "insert"]
    assert item_state(s3, bucket, name) is None
    assert expected_name(key) in name


def test_replay_takes_a_removal_under_repeated_markers_as_current() -> None:
    """replay's settle step writes the newest change again only when it is not current: a
    removal whose tombstone has two markers on it (a delete sent again) is current, and is
    not written a third time."""
    from dynamo_backups.core.pitr import ObjectVersion, newest_change
    from dynamo_backups.jobs.replay import _is_current

    moment = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def entry(version: str, marker: bool = False, size: int = 0) -> ObjectVersion:
        return ObjectVersion("k", version, moment, marker, version == "m2", size)

    entries = [entry("m2", marker=True), entry("m1", marker=True), entry("t"), entry("v", size=9)]
    stamps = {"t": "2", "v": "1"}
    event = {"t": "REMOVE", "v": "INSERT"}
    newest = newest_change(
        entries,
        lambda found: VersionMetadata(
            writer="stream",
            event_name=event[found.version_id],
            change_time=moment,
            sequence_number=stamps[found.version_id],
        ),
    )
    assert newest is not None and newest.entry.version_id == "t" and newest.removed
    assert _is_current(entries, newest)
