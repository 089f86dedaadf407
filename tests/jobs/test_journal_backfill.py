"""``backfill`` into a journal folder writes a base of the table (docs/journal.md, "The backfill
base"), against DynamoDB Local and SeaweedFS, with the table's stream written to the journal by
the Lambda handler while the scan runs: a change made during the scan must win over the row
the scan read, in every reader (restore latest, ``--at``, a compaction on top). Also a backfill
killed with SIGKILL mid-way and resumed."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.dynamodb import BotocoreDynamoDB
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.journal import record_of_stream
from dynamo_backups.core.layout import TableLayout, parse_time
from dynamo_backups.jobs.backfill import BackfillOptions
from dynamo_backups.jobs.journal_backfill import JournalBackfill
from tests.helpers import create_table, kill_when, lambda_records, wait_until
from tests.jobs.test_journal_compact_restore import (
    base_items,
    base_manifest,
    cli,
    compact,
    recorded_units,
    restore,
    restored_state,
)
from tests.pipeline.test_journal_writes import journal_manifest, run_handler

pytestmark = pytest.mark.servers


class Trigger:
    """The journal trigger: delivers the table's new stream records to the handler (journal
    layout) every ``interval`` seconds, from the records after ``skip`` on (the journal began
    then: the rows written before are the backfill's to find)."""

    def __init__(self, dynamodb: Any, streams: Any, table: str, skip: int) -> None:
        self.dynamodb, self.streams, self.table = dynamodb, streams, table
        self.delivered = skip
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def deliver(self) -> int:
        records = lambda_records(self.dynamodb, self.streams, self.table)
        new = records[self.delivered :]
        for start in range(0, len(new), 25):
            assert run_handler(new[start : start + 25]) == {"batchItemFailures": []}
        self.delivered = len(records)
        return len(new)

    def _loop(self) -> None:
        try:
            while not self.stop.wait(0.3):
                self.deliver()
        except BaseException as error:  # reported by the test
            self.errors.append(error)

    def __enter__(self) -> Trigger:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.errors, self.errors
        self.deliver()  # whatever the last round left


class Writer:
    """Changes the table (puts, updates, deletes, new items) until stopped."""

    def __init__(self, dynamodb: Any, table: str, keys: int, seed: int) -> None:
        self.dynamodb, self.table, self.keys = dynamodb, table, keys
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.changes = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                key = f"k{self.rng.randrange(self.keys + 40):03d}"  # some new ones too
                if self.rng.random() < 0.25:
                    self.dynamodb.delete_item(TableName=self.table, Key={"pk": {"S": key}})
                else:
                    value = self.rng.randrange(10**6)
                    self.dynamodb.put_item(TableName=self.table, Item=row(key, value))
                self.changes += 1
                time.sleep(0.005)
        except BaseException as error:
            self.errors.append(error)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.errors, self.errors


def row(key: str, value: int) -> dict[str, Any]:
    return {"pk": {"S": key}, "v": {"N": f"{value}.25"}, "b": {"B": value.to_bytes(4, "big")}}


def fill(dynamodb: Any, table: str, count: int) -> None:
    for index in range(count):
        dynamodb.put_item(TableName=table, Item=row(f"k{index:03d}", index))


def stream_state_at(
    records: list[dict[str, Any]], first: dict[str, dict[str, Any]], moment: datetime
) -> dict[str, dict[str, Any]]:
    """The state at ``moment`` as the stream dates it: the rows before the journal began
    (``first``), then each change made at or before it (one shard: in sequence order)."""
    state: dict[str, Any] = dict(first)
    for index, raw in enumerate(records):
        record = record_of_stream(raw, index)
        if record.change_time <= moment:
            state[record.keys["pk"]["S"]] = record.image
    return {key: image for key, image in state.items() if image is not None}


def backfill_job(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, table: str, **options: Any
) -> JournalBackfill:
    """The journal folder's backfill job, its Scan answers in DynamoDB JSON as the wire has
    them (with the answer's Date)."""
    api = BotocoreDynamoDB(dynamodb)
    return JournalBackfill(
        dynamodb,
        lambda request: api.call("Scan", request),
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        BackfillOptions(**options),
    )


def test_a_backfill_base_with_the_stream_writing_during_the_scan(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")  # deploy --layout journal
    fill(dynamodb, table, 300)
    before = lambda_records(dynamodb, streams, table)
    first = restored_state(dynamodb, table)  # the rows the journal does not have
    with Trigger(dynamodb, streams, table, len(before)) as trigger, Writer(dynamodb, table, 300, 7):
        # The trigger writes before the scan begins (waited for, not slept: under load a
        # second was not always enough).
        wait_until(
            lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/journal/")["KeyCount"],
            timeout=60,
        )
        job = backfill_job(
            dynamodb, s3, bucket, journal_env, table,
            total_segments=4, page_size=7, max_items_per_second=120, resume=False,
        )  # fmt: skip
        job.flush_items = 20
        report = job.run()
        time.sleep(1.0)  # changes after the base too
    assert report.complete, report
    assert report.warnings == []  # the trigger wrote before the scan
    assert trigger.delivered > len(before) + 20  # the scan met changes (a workload check)
    assert report.scanned > 250 and report.base is not None  # some rows deleted meanwhile
    moment = parse_time(report.moment or "")
    records = lambda_records(dynamodb, streams, table)[len(before) :]
    during = [
        r for r in records if record_of_stream(r).change_time <= moment
    ]  # made before the base's moment (the same minute: DynamoDB Local dates by the minute)
    assert during, "no change fell inside the scan"

    manifest = base_manifest(s3, bucket, folder, moment)
    assert manifest.cutoff is None and manifest.reflects_before is not None
    assert manifest.reflects_before <= moment and manifest.previous is None
    assert len(base_items(s3, bucket, folder, moment)) == manifest.item_count == report.written

    table_now = restored_state(dynamodb, table)
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == table_now
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    target, _ = restore(dynamodb_local, s3, bucket, folder, later)
    assert restored_state(dynamodb, target) == table_now
    # At the base's moment, as the stream dates the changes (every change of its minute).
    target, _ = restore(dynamodb_local, s3, bucket, folder, moment)
    assert restored_state(dynamodb, target) == stream_state_at(records, first, moment)

    # A compaction on top reads every journal change of the scan against the reads.
    with Writer(dynamodb, table, 300, 8):
        time.sleep(0.5)
    trigger.deliver()
    after = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(1.1)
    job2 = compact(s3, bucket, folder, after)
    assert job2.report.previous == manifest.id
    table_now = restored_state(dynamodb, table)
    assert {item["pk"]["S"]: item for item in base_items(s3, bucket, folder, after)} == table_now
    assert base_manifest(s3, bucket, folder, after).reflects_before == manifest.reflects_before
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == table_now


def test_a_backfill_into_an_empty_journal_warns_that_no_writer_has_written(
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    """A base alone holds the rows as the scan read them: with no stream writer on, the
    changes made during and after it are missed. An empty journal says none has written."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "journal")
    fill(dynamodb, table, 5)
    job = backfill_job(dynamodb, s3, bucket, journal_env, table, total_segments=1, resume=False)
    report = job.run()
    assert report.complete and report.written == 5, report
    assert len(report.warnings) == 1 and "no stream writer has written" in report.warnings[0]
    assert any(line.startswith("  warning: the journal of") for line in report.details())
    # Once a writer has written a piece, a backfill says nothing.
    assert run_handler(lambda_records(dynamodb, streams, table)) == {"batchItemFailures": []}
    time.sleep(1.1)
    again = backfill_job(dynamodb, s3, bucket, journal_env, table, total_segments=1, resume=False)
    assert again.run().warnings == []


def test_a_backfill_base_killed_mid_way_and_resumed(
    aws_env: dict[str, str],
    dynamodb: Any,
    dynamodb_local: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    fill(dynamodb, table, 400)
    before = lambda_records(dynamodb, streams, table)
    arguments = ["backfill", table, "--bucket", bucket, "--prefix", journal_env,
                 "--segments", "16", "--workers", "2", "--max-items-per-second", "150"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    with Trigger(dynamodb, streams, table, len(before)), Writer(dynamodb, table, 400, 9):
        time.sleep(1.0)
        process = subprocess.Popen(
            cli(*arguments), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        kill_when(process, lambda: recorded_units(s3, bucket, folder, "segment", "backfill") >= 3)
        done = recorded_units(s3, bucket, folder, "segment", "backfill")
        assert 3 <= done < 16
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/bases/")

        result = CliRunner().invoke(main, [*arguments, "--resume"])
        assert result.exit_code == 0, result.output
        assert "base s3://" in result.output
    table_now = restored_state(dynamodb, table)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/bases/")["Contents"]
    (manifest_key,) = [e["Key"] for e in listed if e["Key"].endswith("/manifest.json")]
    moment = datetime.strptime(manifest_key.split("/")[-2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    items = base_items(s3, bucket, folder, moment)
    assert len(items) == len({item["pk"]["S"] for item in items})  # each item once
    target, _ = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == table_now
