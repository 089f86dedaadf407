"""What a latest restore reads (GET and HEAD) for the common shapes of an item's history, on
SeaweedFS, written by the stream handler as it runs: changes that reach S3 as they happen,
deletions, items of removals only."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.jobs.test_pitr_review import latest_requests, record, write_manifest

pytestmark = pytest.mark.servers


def test_a_hot_item_written_as_it_changes_costs_a_get_and_the_heads_within_the_allowance(
    s3: Any, bucket: str, prefix: str
) -> None:
    """Six changes a second apart, each written when it happened (a live table): only the
    versions S3 received within the allowance (2 s) and the precision (1 s) of the newest
    change are read, by HEAD; the newest by one GET."""
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    for index in range(6):
        changed = int(time.time())
        assert (
            applier.apply([record(table, "hot", "MODIFY", changed, index + 1, v=index)]).failures
            == []
        )
        time.sleep(1.05)
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 1
    assert calls["GetObject"] == 1, dict(calls)
    assert 1 <= calls["HeadObject"] <= 3, dict(calls)  # not 5: older versions are not read


def test_a_deleted_item_whose_removal_came_later_costs_one_head(
    s3: Any, bucket: str, prefix: str
) -> None:
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    inserts = [record(table, f"gone{i}", "INSERT", now, 10 + 2 * i, v=i) for i in range(5)]
    assert applier.apply(inserts).failures == []
    time.sleep(4)  # more than the allowance and the precision after the inserts reached S3
    removals = [record(table, f"gone{i}", "REMOVE", now + 4, 11 + 2 * i) for i in range(5)]
    assert applier.apply(removals).failures == []
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 0
    assert (calls["GetObject"], calls["HeadObject"]) == (0, 5), dict(calls)


def test_an_item_of_removals_only_costs_no_read(s3: Any, bucket: str, prefix: str) -> None:
    """A removal of an item the backup never held (a backfill that started after its insert,
    say): only a tombstone and a delete marker. Absent whichever decides."""
    table = unique_table_name("cost")
    layout = write_manifest(s3, bucket, prefix, table)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    now = int(time.time())
    removals = [record(table, f"never{i}", "REMOVE", now, 1 + i) for i in range(5)]
    assert applier.apply(removals).failures == []
    calls, items = latest_requests(s3, bucket, layout)
    assert items == 0
    assert (calls["GetObject"], calls["HeadObject"]) == (0, 0), dict(calls)
