"""S3 answers a conditional request 409 ConditionalRequestConflict when a concurrent
operation on the same key is in progress: no verdict on the condition ("On a 409 failure you
should retry", AWS's PutObject reference). The writer's conditional writes send it again and
let S3 judge the condition then; they never take it for "another write came first". The 409s
are S3's answers, given by the fault proxy in front of SeaweedFS."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import VersionMetadata
from tests import faultproxy, servers
from tests.helpers import bodies, history
from tests.servers import make_client

pytestmark = pytest.mark.servers

CONFLICT = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ConditionalRequestConflict</Code>"
    b"<Message>A conflicting conditional operation is currently in progress against this "
    b"resource. Please try again.</Message></Error>"
)
METADATA = VersionMetadata(
    writer="repair",
    event_name="SNAPSHOT",
    change_time=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
)
REMOVAL = VersionMetadata(
    writer="backfill",
    event_name="REMOVE",
    change_time=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    sequence_number="000000000000000000007",
)


class Conflicts:
    """A fault-proxy rule: the first ``count`` requests carrying ``header`` (a condition) are
    answered 409 ConditionalRequestConflict; the rest are forwarded."""

    def __init__(self, header: str, count: int) -> None:
        self.header, self.left, self.answered = header, count, 0
        self._lock = threading.Lock()

    def __call__(self, request: faultproxy.Request) -> str | faultproxy.Answer:
        with self._lock:
            if self.header not in request.headers or self.left == 0:
                return faultproxy.FORWARD
            self.left -= 1
            self.answered += 1
        return faultproxy.Answer(409, {"Content-Type": "application/xml"}, CONFLICT)


@pytest.fixture(params=["fast", "botocore"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def writer_via(endpoint: str, bucket: str, transport: str = "botocore") -> BackupWriter:
    client = make_client("s3", endpoint, retries={"total_max_attempts": 1})
    objects = None
    if transport == "fast":
        objects = FastObjects(client, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    return BackupWriter(client, bucket, RetryPolicy(max_attempts=5, base_delay=0.01), objects)


def test_a_put_if_absent_that_met_a_conflict_is_sent_again_and_written(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """Backfill's If-None-Match put of an item the backup lacks meets two 409s: it is sent
    again and written, not counted as "already in the backup" (which would leave the item
    out of the backup for good)."""
    key = f"{prefix}/T/0cc175b9c0f1b6a831c399e269772661"
    conflicts = Conflicts("if-none-match", 2)
    with faultproxy.FaultProxy(seaweedfs.endpoint, conflicts) as proxy:
        version = writer_via(proxy.endpoint, bucket, transport).put_item_if_absent(
            key, b'{"pk":{"S":"a"}}', METADATA
        )
    assert conflicts.answered == 2
    assert version is not None
    assert bodies(history(s3, bucket, key)) == [{"pk": {"S": "a"}}]


def test_a_put_if_absent_over_an_item_after_a_conflict_is_still_refused(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """The write the conflict was with landed first: sent again, the put meets it (412) and
    counts as "already in the backup", writing nothing."""
    key = f"{prefix}/T/92eb5ffee6ae2fec3ad71c777531578f"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"pk":{"S":"b"},"v":{"N":"2"}}')
    conflicts = Conflicts("if-none-match", 1)
    with faultproxy.FaultProxy(seaweedfs.endpoint, conflicts) as proxy:
        version = writer_via(proxy.endpoint, bucket, transport).put_item_if_absent(
            key, b'{"pk":{"S":"b"}}', METADATA
        )
    assert conflicts.answered == 1 and version is None
    assert bodies(history(s3, bucket, key)) == [{"pk": {"S": "b"}, "v": {"N": "2"}}]


def test_a_conflict_that_never_ends_is_an_error_not_a_refusal(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    key = f"{prefix}/T/4a8a08f09d37b73795649038408b5f33"
    conflicts = Conflicts("if-none-match", 1000)
    with faultproxy.FaultProxy(seaweedfs.endpoint, conflicts) as proxy:
        writer = writer_via(proxy.endpoint, bucket, transport)
        with pytest.raises(RetriesExhausted, match="ConditionalRequestConflict"):
            writer.put_item_if_absent(key, b'{"pk":{"S":"c"}}', METADATA)
    assert conflicts.answered == 5
    assert history(s3, bucket, key) == []


def test_an_if_match_write_that_met_a_conflict_is_sent_again_and_written(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """verify --repair's If-Match put over the version it saw meets a 409: sent again, it is
    written over that version, not reported as lost to a newer write."""
    key = f"{prefix}/T/8277e0910d750195b448797616e091ad"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"pk":{"S":"d"},"v":{"N":"1"}}')
    writer = BackupWriter(s3, bucket)
    seen = writer.current_version(key)
    conflicts = Conflicts("if-match", 1)
    with faultproxy.FaultProxy(seaweedfs.endpoint, conflicts) as proxy:
        written = writer_via(proxy.endpoint, bucket).put_item_if_current(
            key, b'{"pk":{"S":"d"},"v":{"N":"2"}}', METADATA, seen
        )
    assert conflicts.answered == 1 and written
    assert bodies(history(s3, bucket, key)) == [
        {"pk": {"S": "d"}, "v": {"N": "2"}},
        {"pk": {"S": "d"}, "v": {"N": "1"}},
    ]


def test_a_conditional_delete_that_met_a_conflict_is_sent_again(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A conditional removal's delete marker (If-Match the tombstone it wrote) meets a 409:
    sent again, the marker goes on the tombstone, not left off as if a newer write had
    buried it."""
    key = f"{prefix}/T/e1671797c52e15f763380b45e841ec32"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"pk":{"S":"e"}}')
    writer = BackupWriter(s3, bucket)
    seen = writer.current_version(key)
    conflicts = Conflicts("if-match", 0)

    def arm_for_the_delete(request: faultproxy.Request) -> str | faultproxy.Answer:
        if request.method == "DELETE" and conflicts.answered == 0:
            conflicts.left = 1
        return conflicts(request)

    with faultproxy.FaultProxy(seaweedfs.endpoint, arm_for_the_delete) as proxy:
        removed = writer_via(proxy.endpoint, bucket).remove_item_if_current(key, REMOVAL, seen)
    assert conflicts.answered == 1 and removed
    assert bodies(history(s3, bucket, key)) == ["DM", None, {"pk": {"S": "e"}}]
