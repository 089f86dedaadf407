"""Backfill's pending removal check is recorded per run: nothing stops two runs of the same job
from running at once (the ledger only warns "the run of ... has not ended (it may still be
running, or it stopped); this one starts over"), and the run that finishes first must not
mark done the check of a run that still has unchecked writes (with one marker per job, it
wrote ``{"pending": false}`` over it, and readers stopped refusing the folder). A run's check
covers another run's writes only once that run has provably ended: its run lease released,
or lapsed unrenewed.

Scenario, against DynamoDB Local and SeaweedFS:
1. backfill run B (scan of the whole table) reads row "doomed"; its put-if-absent of it is
   held in flight (fault proxy in front of S3, B's client only);
2. the row is deleted from the table and the stream handler records the removal (tombstone
   dated after B's read, then a delete marker);
3. a second, fresh run A of the same job ("backfill") runs to completion: its check finds
   nothing (the delete marker is current) and it marks the job's check done;
4. B's held put lands on top of the stream's deletion (S3 lets If-None-Match through over a
   delete marker); B then loses S3 (every further request refused) and dies in its check.

The folder now holds a row the table deleted as the current object and no check ever ran over
it: run B's marker must still be pending, so that restore/snapshot/verify refuse the folder.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup import run_lease
from dynamo_backups.backup.removal_check import pending_removal_checks
from dynamo_backups.backup.run_lease import RunLease, lease_ended
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import WRITER_STREAM, TableLayout, VersionMetadata
from dynamo_backups.jobs.backfill import Backfill, BackfillOptions
from tests import faultproxy
from tests.helpers import (
    bodies,
    create_table,
    history,
    lean_scan,
    make_backfill,
    object_key,
)
from tests.servers import make_client

pytestmark = pytest.mark.servers

DOOMED = {"pk": {"S": "doomed"}}
CHECK = "dynamo_backups.jobs.backfill.restore_removals_under_backfill"
DENIED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Access Denied</Message></Error>"
)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


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


def test_a_run_that_completes_leaves_pending_the_check_of_a_run_still_writing(
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


def deleted_under_the_table(s3: Any, bucket: str, prefix: str, table: str) -> str:
    """The doomed row's object holds a deletion (a version, then a delete marker) while the row
    is still in the table: a backfill writes the row back on top, a write its check must see."""
    doomed = object_key(prefix, table, DOOMED)
    s3.put_object(Bucket=bucket, Key=doomed, Body=json.dumps(DOOMED).encode())
    s3.delete_object(Bucket=bucket, Key=doomed)
    return doomed


def test_a_killed_runs_check_stays_pending_until_its_lease_lapses_then_a_later_check_covers_it(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run C writes the deleted row back and is killed in its check, its lease left as it was
    (no release). A run completing while C's lease may still be renewed leaves C's check
    pending (C might be a live host cut off for a moment); once C's lease has lapsed unrenewed
    by S3's clock, C has provably stopped writing, and the next run's completed check, which
    lists the whole folder, covers C's writes and marks C's check done."""
    monkeypatch.setattr(run_lease, "RUN_LEASE_SECONDS", 15.0)
    table = create_table(dynamodb, view_type=None)
    for index in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    dynamodb.put_item(TableName=table, Item={**DOOMED, "v": {"N": "1"}})
    doomed = deleted_under_the_table(s3, bucket, prefix, table)
    layout = TableLayout.of(prefix, table)

    def killed(lease: RunLease) -> None:  # the process is gone: no renewal, no release
        lease._stop.set()
        if lease._thread is not None:
            lease._thread.join()

    with monkeypatch.context() as patched:
        patched.setattr(CHECK, lambda *args, **kwargs: (_ for _ in ()).throw(SystemExit()))
        patched.setattr(RunLease, "release", killed)
        with pytest.raises(SystemExit):
            make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    (run_c,) = pending_removal_checks(s3, bucket, layout)
    assert bodies(history(s3, bucket, doomed))[0] not in ("DM", None)

    # C's lease was renewed moments ago: C may still write, so D's check cannot cover it.
    assert not lease_ended(s3, bucket, run_c.lease or "")
    run_d = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    assert run_d.complete
    assert [check.key for check in pending_removal_checks(s3, bucket, layout)] == [run_c.key]

    give_up = time.monotonic() + 60
    while not lease_ended(s3, bucket, run_c.lease or ""):  # lapsed by S3's clock
        assert time.monotonic() < give_up, "run C's lease never lapsed"
        time.sleep(1)
    run_e = make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=1).run()
    assert run_e.complete
    assert pending_removal_checks(s3, bucket, layout) == []


def test_scan_and_export_backfills_keep_apart_their_runs_and_each_resume_command_works(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A --from-export backfill and a scan backfill of the same folder are both killed in their
    check. Each is a job of its own (ledger, lease, marker), so the reader's error names a
    command for each, and the export's --resume continues its own run (one job for both: the
    scan's run, the latest, had other options, and the resume was refused)."""
    table = create_table(dynamodb, view_type=None)
    for index in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    dynamodb.put_item(TableName=table, Item={**DOOMED, "v": {"N": "1"}})
    export = f"s3://{bucket}/{prefix}-export"
    source = f"{prefix}-source"
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", source).exit_code == 0
    assert invoke("snapshot", bucket, f"{source}/{table}", "--to", export).exit_code == 0
    doomed = deleted_under_the_table(s3, bucket, prefix, table)
    layout = TableLayout.of(prefix, table)

    def killed_in_its_check(options: BackfillOptions) -> None:
        with monkeypatch.context() as patched:
            patched.setattr(CHECK, lambda *args, **kwargs: (_ for _ in ()).throw(SystemExit()))
            job = Backfill(dynamodb, lean_scan(dynamodb), BackupWriter(s3, bucket), layout, options)
            with pytest.raises(SystemExit):
                job.run()

    killed_in_its_check(BackfillOptions(from_export=export))
    killed_in_its_check(BackfillOptions(total_segments=1))
    jobs = sorted(check.job for check in pending_removal_checks(s3, bucket, layout))
    assert jobs == ["backfill", "backfill-from-export"]
    assert bodies(history(s3, bucket, doomed))[0] not in ("DM", None)

    refused = invoke("restore", bucket, f"{prefix}/{table}", f"{table}-refused")
    assert refused.exit_code == 2, refused.output
    commands = refused.output.split("`")[1::2]
    base = ["dynamo-backups", "backfill", table, "--bucket", bucket, "--prefix", prefix]
    assert sorted(commands) == sorted(
        [
            shlex.join([*base, "--segments", "1", "--resume"]),
            shlex.join([*base, "--from-export", export, "--resume"]),
        ]
    ), refused.output

    export_resume = shlex.split(commands[[("--from-export" in c) for c in commands].index(True)])
    resumed = invoke("--output", "json", *export_resume[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "other options" not in resumed.output
    # The resumed run cleared its own marker; the scan run had ended (its lease released), so
    # the resumed run's check covered its writes too.
    assert pending_removal_checks(s3, bucket, layout) == []
    restored = invoke("restore", bucket, f"{prefix}/{table}", f"{table}-checked")
    assert restored.exit_code == 0, restored.output
