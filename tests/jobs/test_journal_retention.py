"""Retention and the scheduled compaction of a journal folder against DynamoDB Local and
SeaweedFS (docs/journal.md, "Retention", "Compaction, scheduled"): every object of a base is
put with its retention tag (SeaweedFS stores object tags: read back with GetObjectTagging),
the compaction function run in-process stops at its time limit and the next invocation
resumes the same run, and a compaction refuses a journal the folder's policy may have
expired."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.core.retention import (
    MONTHLY,
    RETENTION_TAG,
    RetentionPolicy,
    retention_class,
)
from dynamo_backups.jobs.compact import CompactError
from dynamo_backups.jobs.compact_lambda import CompactConfig, run_scheduled
from tests.helpers import create_table
from tests.jobs.test_journal_compact_restore import (
    History,
    base_items,
    base_manifest,
    compact,
    deliver,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest

pytestmark = pytest.mark.servers


def tags_of(s3: Any, bucket: str, key: str) -> dict[str, str]:
    answer = s3.get_object_tagging(Bucket=bucket, Key=key)
    return {tag["Key"]: tag["Value"] for tag in answer["TagSet"]}


def base_objects(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(entry["Key"] for entry in listed)


def changed_table(dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> History:
    """A journal folder with a few batches written by the Lambda handler."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    changes = history.change(
        [("put", f"k{i % 9}", i) for i in range(24)] + [("delete", "k3", 0), ("put", "k9", 9)]
    )
    deliver(changes[:10], changes[10:20], changes[20:])
    # A piece S3 dated in a compaction's cutoff second is late for that base by design (it is
    # placed by the readers): start every compaction past the last piece's second.
    time.sleep(1.05)
    return history


def test_every_object_of_a_base_is_put_with_its_retention_tag(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    history = changed_table(dynamodb, streams, s3, bucket, journal_env)
    folder = f"{journal_env}/{history.table}"
    first, second = history.time(12), history.time(20)
    job = compact(s3, bucket, folder, first, partitions=16)
    assert job.report.retention == MONTHLY  # the folder's first base
    compact(s3, bucket, folder, second, partitions=16)

    for moment, expected in ((first, MONTHLY), (second, retention_class(second, [first]))):
        manifest = base_manifest(s3, bucket, folder, moment)
        assert manifest.retention == expected
        keys = base_objects(s3, bucket, f"{folder}/bases/{manifest.id}/")
        assert any("/data/" in key for key in keys) and any("/index/" in key for key in keys)
        assert {key.rsplit("/", 1)[-1] for key in keys} >= {"cutoff.json", "manifest.json"}
        assert {key: tags_of(s3, bucket, key) for key in keys} == {
            key: {RETENTION_TAG: expected} for key in keys
        }
    # The journal's own objects carry no tag: their rule goes by prefix and age.
    (piece, *_) = base_objects(s3, bucket, f"{folder}/journal/")
    assert tags_of(s3, bucket, piece) == {}


def test_the_compaction_function_stops_at_its_time_limit_and_the_next_invocation_resumes(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    history = changed_table(dynamodb, streams, s3, bucket, journal_env)
    folder = f"{journal_env}/{history.table}"
    config = CompactConfig(bucket, journal_env, history.table, partitions=16, unit_seconds=0)
    aws = AwsContext()
    ledger = f"{journal_env}/.dynamo-backups/{history.table}/jobs/compact/"

    ticks = itertools.count()  # a clock that moves one second per unit started
    first = run_scheduled(config, aws, 12, clock=lambda: float(next(ticks)), settle_seconds=1)
    assert first["state"] == "unfinished" and first["why"] == "no base yet"
    run = json.loads(s3.get_object(Bucket=bucket, Key=ledger + "run.json")["Body"].read())
    assert run["state"] == "running"
    units = base_objects(s3, bucket, f"{ledger}{run['run_id']}/units/")
    done = [key for key in units if "/partition" in key]
    assert 0 < len(done) < 16, units  # stopped in the partition stage
    assert not [key for key in base_objects(s3, bucket, folder) if key.endswith("manifest.json")]

    second = run_scheduled(config, aws, 900, settle_seconds=1)
    assert second["state"] == "complete", second
    assert second["why"] == f"resuming the compaction run {run['run_id']}"
    finished = json.loads(s3.get_object(Bucket=bucket, Key=ledger + "run.json")["Body"].read())
    assert (finished["run_id"], finished["state"]) == (run["run_id"], "complete")
    moment = base_manifest(s3, bucket, folder, _moment(second["moment"])).moment
    assert {i["pk"]["S"]: i for i in base_items(s3, bucket, folder, moment)} == (
        history.state_at(None)
    )

    third = run_scheduled(config, aws, 900, settle_seconds=1)
    assert third["state"] == "not due" and "is recent" in third["why"]


def _moment(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_compaction_refuses_a_journal_its_retention_may_have_expired(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
) -> None:
    history = changed_table(dynamodb, streams, s3, bucket, journal_env)
    folder = f"{journal_env}/{history.table}"
    first = history.time(12)
    compact(s3, bucket, folder, first, partitions=16)
    policy_key = f"{journal_env}/.dynamo-backups/{history.table}/retention.json"
    # A policy (as deploy records it) under which the journal after that base, hours old,
    # may be gone: the next compaction must not fold from it.
    expired = {**RetentionPolicy().to_dict(), "changes_days": 0}
    s3.put_object(Bucket=bucket, Key=policy_key, Body=json.dumps(expired).encode())
    with pytest.raises(CompactError, match=r"changes made since it may be gone"):
        compact(s3, bucket, folder, history.time(20), partitions=16)
    # Nor, with no base before its moment, the journal alone.
    with pytest.raises(CompactError, match=r"the journal \(no base yet\)"):
        compact(s3, bucket, folder, history.time(5), partitions=16)
    # The default policy keeps it: the same compaction goes ahead.
    s3.put_object(Bucket=bucket, Key=policy_key, Body=json.dumps(RetentionPolicy().to_dict()))
    compact(s3, bucket, folder, history.time(20) + timedelta(seconds=1), partitions=16)


@pytest.mark.parametrize("since", ["1e20", "yesterday"])
def test_a_malformed_journal_since_is_one_clear_error(
    s3: Any, bucket: str, prefix: str, since: str
) -> None:
    """layout.json's ``journal_since`` (written by a conversion) that is not a time: a
    LayoutError naming the file, never an unexpected OverflowError."""
    from dynamo_backups.aws.s3objects import BotocoreObjects
    from dynamo_backups.core.layout import LayoutError, TableLayout
    from dynamo_backups.jobs.journal_units import retention_clock

    layout = TableLayout.of(prefix, "Folded")
    manifest = {"layout": "journal", "key_hash": layout.key_hash, "journal_since": since}
    s3.put_object(Bucket=bucket, Key=layout.manifest_key, Body=json.dumps(manifest).encode())
    with pytest.raises(LayoutError, match="journal_since"):
        retention_clock(s3, BotocoreObjects(s3, bucket), layout)


def test_adding_the_key_schema_to_layout_json_keeps_when_the_journal_began(
    s3: Any, bucket: str, prefix: str
) -> None:
    """A journal function installed from the template records layout.json without a key
    schema; a later backfill or deploy adds it, writing layout.json again. The readers'
    retention refusal counts from when the journal began, not from that rewrite."""
    from dynamo_backups.aws.s3objects import BotocoreObjects
    from dynamo_backups.backup.manifest import ensure_manifest
    from dynamo_backups.backup.writer import BackupWriter
    from dynamo_backups.core.layout import TableLayout
    from dynamo_backups.jobs.journal_units import retention_clock

    layout = TableLayout.of(prefix, "Keyless")
    writer = BackupWriter(s3, bucket)
    ensure_manifest(writer, layout, folder_layout="journal")  # as the template's function
    first = s3.head_object(Bucket=bucket, Key=layout.manifest_key)["LastModified"]
    time.sleep(2.1)  # S3's times are to the second
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    manifest = ensure_manifest(writer, layout, schema, {"pk": "S"}, "journal")
    assert manifest["key_schema"] == schema
    assert s3.head_object(Bucket=bucket, Key=layout.manifest_key)["LastModified"] > first
    clock = retention_clock(s3, BotocoreObjects(s3, bucket), layout)
    assert clock.began == first
