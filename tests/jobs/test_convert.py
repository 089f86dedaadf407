"""``convert``: an item-layout folder's state at a moment as a base of a journal folder (docs/
journal.md, "Converting an item-layout folder"), against DynamoDB Local and SeaweedFS. The
table's changes are written by the Lambda handler into an item folder (the item trigger) and,
from a point on, into a journal folder under another prefix too (the journal trigger deployed
beside it, some of its batches late or out of order); the restores of the journal folder
after the conversion must equal the item folder's restores of the same moments. Also: a
conversion killed with SIGKILL and resumed, the refusals (nothing written), and a restore
``--at`` before a journal folder's first base, refused when the journal began mid-way."""

from __future__ import annotations

import copy
import os
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.core.base import BasePaths
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.compact import LATE_HORIZON
from dynamo_backups.jobs.convert import Conversion, ConvertOptions
from tests.helpers import create_table, kill_when
from tests.jobs.test_journal_compact_restore import (
    History,
    base_items,
    base_manifest,
    cli,
    compact,
    invoke,
    recorded_units,
    restored_state,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest, run_handler

pytestmark = pytest.mark.servers


class Triggers:
    """The two backup functions of one table: the item trigger writing the item folder, the
    journal trigger writing the journal folder (the handler reads its environment at every
    invocation, so one process plays both)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, item_prefix: str, journal_prefix: str):
        self.monkeypatch = monkeypatch
        self.item_prefix, self.journal_prefix = item_prefix, journal_prefix

    def _deliver(self, prefix: str, layout: str, batches: tuple[list[dict[str, Any]], ...]) -> None:
        self.monkeypatch.setenv("BACKUP_PREFIX", prefix)
        self.monkeypatch.setenv("BACKUP_LAYOUT", layout)
        for batch in batches:
            assert run_handler(copy.deepcopy(batch)) == {"batchItemFailures": []}

    def items(self, *batches: list[dict[str, Any]]) -> None:
        self._deliver(self.item_prefix, "items", batches)

    def journal(self, *batches: list[dict[str, Any]]) -> None:
        self._deliver(self.journal_prefix, "journal", batches)


def restore_cli(
    dynamodb: Any, bucket: str, folder: str, at: datetime | None
) -> dict[str, dict[str, Any]]:
    """The folder restored (latest, or --at) by the restore command, whatever its layout."""
    target = f"restored-{os.urandom(4).hex()}"
    extra = ["--at", at.isoformat()] if at is not None else []
    result = invoke("restore", bucket, folder, target, *extra)
    assert result.exit_code == 0, result.output
    return restored_state(dynamodb, target)


def versions_under(s3: Any, bucket: str, *prefixes: str) -> list[tuple[str, str]]:
    """Every object version and delete marker under the prefixes (what a refusal leaves)."""
    found = []
    for prefix in prefixes:
        listed = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
        for entry in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
            found.append((entry["Key"], entry["VersionId"]))
    return sorted(found)


def test_convert_then_restore_equals_the_item_folders_restores(
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
    journal_manifest(s3, bucket, item_prefix, table, "items")  # the item trigger's deploy
    history = History(dynamodb, streams, table, start_time())
    early = history.change(
        [("put", f"k{i}", i) for i in range(6)] + [("delete", "k1", 0), ("put", "k6", 6)]
    )
    triggers.items(early[:4], early[4:])  # before the journal trigger: the item folder alone
    journal_manifest(s3, bucket, journal_env, table, "journal")  # deployed beside
    both = history.change(
        [
            *[("put", "k0", 20), ("delete", "k2", 0), ("put", "k7", 22), ("put", "k3", 23)],
            *[("delete", "k7", 0), ("put", "k2", 25), ("put", "k8", 26), ("delete", "k4", 0)],
        ]
    )
    triggers.items(both[:3], both[3:])
    triggers.journal(both[3:5], both[:3], both[1:4])  # out of order, a redelivery
    held = both[5:]  # reaches the journal after the conversion: late changes
    moment = history.time(13) + timedelta(seconds=30)  # inside the held batch

    converted = invoke(
        "convert", bucket, item_folder, journal_folder, "--at", moment.isoformat(),
        "--partitions", "16",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    base = base_manifest(s3, bucket, journal_folder, moment)
    first_hour = history.time(8).replace(minute=0)
    assert (base.cutoff, base.previous, base.reflects_before) == (None, None, first_hour)
    assert {i["pk"]["S"]: i for i in base_items(s3, bucket, journal_folder, moment)} == (
        history.state_at(moment)
    )
    assert base.item_count == len(history.state_at(moment))

    triggers.journal(held)  # late for the base: weighed against its index
    after = history.change([("put", "k1", 30), ("delete", "k0", 0), ("put", "k9", 32)])
    triggers.items(after)
    triggers.journal(after[1:], after[:1])
    # The item trigger removed: the journal alone from here.
    last = history.change([("put", "k5", 40), ("delete", "k9", 0), ("put", "k2", 42)])
    triggers.journal(last)

    for at in (moment, history.time(17) + timedelta(seconds=30)):
        from_items = restore_cli(dynamodb, bucket, item_folder, at)
        assert from_items == history.state_at(at), at
        assert restore_cli(dynamodb, bucket, journal_folder, at) == from_items, at
    assert restore_cli(dynamodb, bucket, journal_folder, None) == restored_state(dynamodb, table)
    # A compaction on top folds the journal into the converted base and keeps its rule.
    moment2 = history.time(20) + timedelta(seconds=30)
    compact(s3, bucket, journal_folder, moment2, partitions=16)
    base2 = base_manifest(s3, bucket, journal_folder, moment2)
    assert (base2.previous, base2.reflects_before) == (base.id, base.reflects_before)
    assert {i["pk"]["S"]: i for i in base_items(s3, bucket, journal_folder, moment2)} == (
        history.state_at(moment2)
    )
    assert restore_cli(dynamodb, bucket, journal_folder, None) == restored_state(dynamodb, table)

    # Before the base the journal alone holds part of the table (it began mid-way): refused,
    # naming the earliest restorable moment, nothing written.
    before = history.time(11) + timedelta(seconds=30)
    meta = TableLayout.from_folder(journal_folder).meta_prefix
    written = versions_under(s3, bucket, meta)
    refused = invoke("restore", bucket, journal_folder, f"{table}-x", "--at", before.isoformat())
    assert refused.exit_code == 2, refused.output
    assert base.id in refused.output or moment.isoformat()[:19] in refused.output, refused.output
    assert versions_under(s3, bucket, meta) == written
    assert f"{table}-x" not in dynamodb.list_tables()["TableNames"]


def test_a_conversion_killed_mid_way_and_resumed(
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
    history = History(dynamodb, streams, table, start_time())
    records = history.change(
        [("put", f"k{i:03d}", i) for i in range(90)]
        + [("delete", f"k{i:03d}", 0) for i in range(0, 90, 7)]
    )
    triggers.items(*(records[start : start + 25] for start in range(0, len(records), 25)))
    moment = history.time(100) + timedelta(seconds=30)  # inside the deletions
    arguments = ["convert", bucket, item_folder, journal_folder, "--at", moment.isoformat(),
                 "--partitions", "256", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    kill_when(
        process, lambda: recorded_units(s3, bucket, journal_folder, "partition", "convert") >= 10
    )
    assert 10 <= recorded_units(s3, bucket, journal_folder, "partition", "convert") < 256
    layout = TableLayout.from_folder(journal_folder)
    paths = BasePaths(layout.items_prefix, moment)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=paths.manifest_key)
    # Not a journal backup yet: no layout.json claims it.
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=layout.manifest_key)
    refused = invoke("restore", bucket, journal_folder, f"{table}-x")
    assert refused.exit_code != 0, refused.output

    resumed = invoke(*arguments, "--resume", "--engine", "processes", "--workers", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "journal folder now" in resumed.output, resumed.output
    items = base_items(s3, bucket, journal_folder, moment)
    assert len(items) == len({item["pk"]["S"] for item in items})  # each item once
    expected = history.state_at(moment)
    assert {item["pk"]["S"]: item for item in items} == expected
    assert base_manifest(s3, bucket, journal_folder, moment).item_count == len(expected)
    # No journal after M (no trigger writes this folder): the latest is the state at M.
    from_items = restore_cli(dynamodb, bucket, item_folder, moment)
    assert from_items == expected
    assert restore_cli(dynamodb, bucket, journal_folder, None) == from_items

    # Once more: the base is there, nothing is written but the ledger's run.
    again = invoke(*arguments)
    assert again.exit_code == 0 and "complete already" in again.output, again.output


def test_convert_refuses_a_folder_holding_an_item_backup_or_another_layout(
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
    item_folder = f"{item_prefix}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    triggers.items(history.change([("put", "a", 1), ("put", "b", 2)]))
    recorded_items = f"{journal_env}-recorded"  # an item backup with its layout.json
    journal_manifest(s3, bucket, recorded_items, table, "items")
    bare_items = f"{journal_env}-bare"  # item objects, no layout.json (another tool's)
    s3.put_object(Bucket=bucket, Key=f"{bare_items}/{table}/0cc175b9c0f1b6a831c399e269772661",
                  Body=b'{"pk": {"S": "a"}}')  # fmt: skip
    journal_folder = f"{journal_env}/{table}"  # a journal folder: not a source
    journal_manifest(s3, bucket, journal_env, table, "journal")
    watched = [f"{p}/" for p in (item_prefix, recorded_items, bare_items, journal_env)]
    watched += [f"{p}/.dynamo-backups/" for p in (item_prefix, recorded_items, bare_items)]
    before = versions_under(s3, bucket, *watched)
    for source, target, named in (
        (item_folder, f"{recorded_items}/{table}", "items layout"),
        (item_folder, f"{bare_items}/{table}", "holds objects of its own"),
        (item_folder, item_folder, "overlap"),
        (item_folder, f"{item_folder}/inside", "overlap"),
        (journal_folder, f"{journal_env}-new/{table}", "journal layout"),
    ):
        result = invoke("convert", bucket, source, target)
        assert result.exit_code == 2, (target, result.output)
        assert named in result.output and "Traceback" not in result.output, result.output
    assert versions_under(s3, bucket, *watched) == before
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{journal_env}-new/")


def test_convert_at_now_into_a_new_folder(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --at the moment is S3's clock when the run began (read once the item layout's
    writes in flight have landed); a folder with no journal is weighed from that moment."""
    table = create_table(dynamodb)
    item_prefix = f"{journal_env}-items"
    item_folder, journal_folder = f"{item_prefix}/{table}", f"{journal_env}/{table}"
    triggers = Triggers(monkeypatch, item_prefix, journal_env)
    journal_manifest(s3, bucket, item_prefix, table, "items")
    history = History(dynamodb, streams, table, start_time())
    triggers.items(history.change([("put", "a", 1), ("put", "b", 2), ("delete", "a", 0)]))
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    job = Conversion(
        s3, BotocoreObjects(s3, bucket), bucket, item_folder, journal_folder,
        ConvertOptions(settle_seconds=1.0),
    )  # fmt: skip
    report = job.run()
    assert report.complete and report.layout_written, report
    moment = datetime.fromisoformat(report.moment or "")
    assert started <= moment <= datetime.now(UTC)
    base = base_manifest(s3, bucket, journal_folder, moment)
    assert base.reflects_before == moment and not base.reflects_reads
    assert base.late_horizon == moment - LATE_HORIZON - timedelta(minutes=1)
    assert report.warnings  # no journal at or before the moment: said so
    assert restore_cli(dynamodb, bucket, journal_folder, None) == restored_state(dynamodb, table)
