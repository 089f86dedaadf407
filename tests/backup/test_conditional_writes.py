"""Conditional writes against SeaweedFS with a newer write injected between the look and the
write: S3 conditions on ETags only, and identical bodies share one (every tombstone is the
empty body's), so the condition alone lets such a write through. What a concurrent writer
(the real stream applier) wrote meanwhile must stay the current state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.faultproxy import BeforeForwarding, FaultProxy, Request, put_of
from tests.helpers import bodies, create_table, expected_name, history, lambda_records, object_key
from tests.servers import Server, make_client


@pytest.fixture
def proxy_of(seaweedfs: Server) -> Iterator[Callable[[BeforeForwarding], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def start(hook: BeforeForwarding) -> FaultProxy:
        proxy = FaultProxy(seaweedfs.endpoint, hook).__enter__()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.__exit__(None, None, None)


@pytest.mark.servers
def test_backfill_removal_check_keeps_an_identical_image_reinserted_meanwhile(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    proxy_of: Callable[[BeforeForwarding], FaultProxy],
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    item = {**key, "v": {"N": "1"}}
    before_delete = datetime.now(UTC) - timedelta(seconds=120)
    dynamodb.put_item(TableName=table, Item=item)
    dynamodb.delete_item(TableName=table, Key=key)
    dynamodb.put_item(TableName=table, Item=item)  # the very same image again
    insert, remove, reinsert = lambda_records(dynamodb, streams, table)
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply([insert, remove]).failures == []
    # A backfill read the item before the delete; its put-if-absent passed over the marker.
    name = object_key(prefix, table, key)
    image = history(s3, bucket, name)[-1]["body"]  # the same bytes the stream writes for it
    backfilled = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, before_delete)
    assert BackupWriter(s3, bucket).put_item_if_absent(name, image, backfilled)

    # The stream delivers the re-insert just as the removal check writes its tombstone.
    def reinserted() -> None:
        assert stream.apply([reinsert]).failures == []

    hook = BeforeForwarding(put_of(expected_name(key), "if-match"), reinserted)
    proxy = proxy_of(hook)
    checked = BackupWriter(make_client("s3", proxy.endpoint), bucket)
    restored = restore_removals_under_backfill(checked, TableLayout.of(prefix, table))

    assert hook.fired.is_set()
    entries = history(s3, bucket, name)
    etags = {
        (entry["metadata"].get("writer"), entry["metadata"].get("sequence-number")): entry["ETag"]
        for entry in entries
        if entry["kind"] == "version"
    }
    # The re-insert and the backfill version share an ETag: the condition alone cannot tell.
    assert etags["stream", reinsert["dynamodb"]["SequenceNumber"]] == etags["backfill", None]
    assert restored == 0
    assert bodies(entries)[0] == item  # the re-inserted item is current again
    assert entries[0]["metadata"]["sequence-number"] == reinsert["dynamodb"]["SequenceNumber"]


@pytest.mark.servers
def test_repair_over_a_removal_keeps_a_removal_the_stream_wrote_meanwhile(
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    proxy_of: Callable[[BeforeForwarding], FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key)
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply(lambda_records(dynamodb, streams, table)).failures == []
    # The re-insert's record never reached the backup: verify --repair will write it.
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
    seen = len(lambda_records(dynamodb, streams, table))

    # Between the repair's look (a delete marker: If-None-Match) and its write, the item is
    # deleted again and the stream writes that removal (a newer delete marker).
    def deleted_again() -> None:
        dynamodb.delete_item(TableName=table, Key=key)
        records = lambda_records(dynamodb, streams, table)
        assert stream.apply(records[seen:]).failures == []

    hook = BeforeForwarding(put_of(expected_name(key), "if-none-match"), deleted_again)
    proxy = proxy_of(hook)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    args = ["verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output

    assert hook.fired.is_set()
    entries = history(s3, bucket, object_key(prefix, table, key))
    # The table no longer holds the item, and neither does the backup's current state.
    assert dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item") is None
    assert bodies(entries)[0] == "DM"
    assert bodies(entries)[1] is None  # a tombstone dates the removal


@pytest.mark.servers
def test_repair_never_puts_the_state_it_read_over_a_change_made_after_the_read(
    aws_env: dict[str, str],
    dynamodb_local: Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "a"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    stream = BackupApplier(BackupWriter(s3, bucket), prefix)
    assert stream.apply(lambda_records(dynamodb, streams, table)).failures == []
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})  # its record is lost
    seen = len(lambda_records(dynamodb, streams, table))
    fired = threading.Event()

    # Just after repair's GetItem has read v2, the item changes to v3 and the stream writes it.
    def changed_after_the_read(answer: bytes) -> bytes:
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "3"}})
        assert stream.apply(lambda_records(dynamodb, streams, table)[seen:]).failures == []
        return answer

    def on_get_item(request: Request) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        target = request.headers.get("x-amz-target", "")
        if not target.endswith(".GetItem") or fired.is_set():
            return None
        fired.set()
        return request.body, changed_after_the_read

    with FaultProxy(dynamodb_local.endpoint, rewrite=on_get_item) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        args = ["verify", table, "--bucket", bucket, "--prefix", prefix, "--repair"]
        result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output

    assert fired.is_set()
    v3 = {**key, "v": {"N": "3"}}
    assert dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"] == v3
    assert bodies(history(s3, bucket, object_key(prefix, table, key)))[0] == v3
