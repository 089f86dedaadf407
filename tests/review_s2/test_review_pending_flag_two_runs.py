"""Review of the removal-pending merge: the pending flag is one S3 document per backfill *job
name*, but nothing stops two runs of the same job from running at once (the ledger only warns
"the run of ... did not finish; this one starts over"). The run that finishes first writes
``{"pending": false}`` over the marker while the other run still has unchecked writes, and
readers then stop refusing the folder.

Scenario, against DynamoDB Local and SeaweedFS:
1. backfill run B (scan of the whole table) reads row "doomed"; its put-if-absent of it is
   held in flight (fault proxy in front of S3, B's client only);
2. the row is deleted from the table and the stream handler records the removal (tombstone
   dated after B's read, then a delete marker);
3. a second, fresh run A of the same job ("backfill") runs to completion: its check finds
   nothing (the delete marker is current) and it marks the job's check done;
4. B's held put lands on top of the stream's deletion (S3 lets If-None-Match through over a
   delete marker); B then loses S3 (every further request refused) and dies in its check.

The folder now holds a row the table deleted as the current object, no check ever ran over
it, and the marker says "checked": restore/snapshot/verify read it without a word. The
design claims the marker is marked done "only once the check has run in full" over the job's
writes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.removal_check import pending_removal_checks
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import WRITER_STREAM, TableLayout, VersionMetadata
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions
from tests import faultproxy
from tests.helpers import bodies, create_table, history, lean_scan, object_key
from tests.servers import make_client

pytestmark = pytest.mark.servers

DOOMED = {"pk": {"S": "doomed"}}
DENIED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Access Denied</Message></Error>"
)


class HoldThenCut:
    """Holds the put-if-absent of ``name`` until ``release``; every request after it is
    refused (the host lost S3, then died)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrived, self.release = threading.Event(), threading.Event()
        self.cut = False

    def __call__(self, request: faultproxy.Request) -> str | faultproxy.Answer:
        if self.cut:
            return faultproxy.Answer(403, {"Content-Type": "application/xml"}, DENIED)
        path = request.path.split("?")[0]
        if (
            request.method == "PUT"
            and path.endswith(self.name)
            and ("if-none-match" in request.headers)
        ):
            self.arrived.set()
            self.release.wait(60)
            self.cut = True  # this one is forwarded; nothing after it
        return faultproxy.FORWARD


def test_review_a_second_run_of_the_same_job_clears_the_flag_over_unchecked_writes(
    seaweedfs: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    dynamodb.put_item(TableName=table, Item={**DOOMED, "v": {"N": "1"}})
    doomed = object_key(prefix, table, DOOMED)
    layout = TableLayout.of(prefix, table)

    rule = HoldThenCut(doomed.rsplit("/", 1)[1])
    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        b_s3 = make_client("s3", proxy.endpoint, retries={"total_max_attempts": 1})
        run_b = Backfill(
            dynamodb,
            lean_scan(dynamodb),
            BackupWriter(b_s3, bucket, RetryPolicy(max_attempts=2, base_delay=0.01)),
            layout,
            BackfillOptions(total_segments=1),
            retry_policy=RetryPolicy(max_attempts=2, base_delay=0.01),
        )
        ended: list[BaseException | None] = []

        def run() -> None:
            try:
                run_b.run()
                ended.append(None)
            except BaseException as error:  # B dies: that is the scenario
                ended.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert rule.arrived.wait(60), "run B never wrote the doomed row"

        # The row is deleted after B read it; the stream handler records the removal.
        dynamodb.delete_item(TableName=table, Key=DOOMED)
        BackupWriter(s3, bucket).remove_item(
            doomed,
            VersionMetadata(WRITER_STREAM, "REMOVE", datetime.now(UTC), "900000000000000000001"),
        )

        # A second run of the same job, started meanwhile, completes (check included).
        run_a = Backfill(
            dynamodb,
            lean_scan(dynamodb),
            BackupWriter(s3, bucket),
            layout,
            BackfillOptions(total_segments=1),
        ).run()
        assert run_a.complete

        rule.release.set()
        thread.join(120)
        assert not thread.is_alive()
        assert ended and ended[0] is not None, "run B was meant to die in its check"

    # B's write of the deleted row is the current object, on top of the stream's removal ...
    current = history(s3, bucket, doomed)
    assert bodies(current)[:3] == [{**DOOMED, "v": {"N": "1"}}, "DM", None], bodies(current)
    # ... no check ever ran over it, yet the folder's marker says every check is done.
    pending = pending_removal_checks(s3, bucket, layout)
    assert pending, (
        "run B's removal check never ran over its write of a deleted row, but run A marked "
        "the job's check done: readers no longer refuse the folder"
    )
