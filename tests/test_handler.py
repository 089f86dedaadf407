"""The Lambda handler, fed real stream records read from DynamoDB Local, writing into
SeaweedFS (SigV4 checked). Records are shaped exactly as Lambda delivers them."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups import handler
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.handler import ConfigurationError
from dynamo_backups.installer.samples import CONSOLE_SAMPLE_CLASSIC, CONSOLE_SAMPLE_CURRENT
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests import faultproxy, servers
from tests.helpers import (
    EDGE_ITEM,
    bodies,
    create_table,
    deep_map,
    expected_name,
    history,
    lambda_records,
    object_key,
)
from tests.servers import make_client

pytestmark = pytest.mark.servers


class FakeContext:
    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(params=["fast", "botocore"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both ways the handler can write: the fast transport (obstore), or botocore."""
    return request.param


def writer_via(
    endpoint: str, bucket: str, transport: str, policy: RetryPolicy | None = None, pool: int = 32
) -> BackupWriter:
    client = make_client(
        "s3", endpoint, retries={"total_max_attempts": 1}, max_pool_connections=pool
    )
    objects = None
    if transport == "fast":
        objects = FastObjects(client, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    return BackupWriter(client, bucket, policy, objects)


@pytest.fixture
def backup_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: Any, bucket: str, prefix: str) -> str:
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    return prefix


def run_handler(records: list[dict[str, Any]], context: Any = None) -> dict[str, Any]:
    return handler.backup({"Records": records}, context or FakeContext())


def test_insert_modify_remove_become_versions_then_a_delete_marker(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "item-1"}}
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    dynamodb.delete_item(TableName=table, Key=key)
    records = lambda_records(dynamodb, streams, table)
    assert [record["eventName"] for record in records] == ["INSERT", "MODIFY", "REMOVE"]

    assert run_handler(records) == {"batchItemFailures": []}

    entries = history(s3, bucket, object_key(backup_env, table, key))
    assert bodies(entries) == [
        "DM",
        None,
        {"pk": {"S": "item-1"}, "v": {"N": "2"}},
        {"pk": {"S": "item-1"}, "v": {"N": "1"}},
    ]
    tombstone, modify, insert = entries[1], entries[2], entries[3]
    for entry, record in ((insert, records[0]), (modify, records[1]), (tombstone, records[2])):
        assert entry["metadata"]["event-name"] == record["eventName"]
        assert entry["metadata"]["sequence-number"] == record["dynamodb"]["SequenceNumber"]
        assert entry["metadata"]["writer"] == "stream"
        assert entry["metadata"]["key-hash"] == "md5"
        assert entry["metadata"]["change-time"].endswith("Z")
    assert insert["content_type"] == "application/json"


def test_every_attribute_type_is_stored_exactly(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    item = {**EDGE_ITEM, "deep": deep_map(30)}
    dynamodb.put_item(TableName=table, Item=item)
    (record,) = lambda_records(dynamodb, streams, table)

    assert run_handler([record]) == {"batchItemFailures": []}

    (entry,) = history(s3, bucket, object_key(backup_env, table, {"pk": {"S": "edge"}}))
    stored = json.loads(entry["body"])
    # DynamoDB Local 3.x sends the empty map as a bare {} (the service sends {"M": {}}):
    assert record["dynamodb"]["NewImage"]["map"]["M"]["empty"] == {}
    assert stored == {**record["dynamodb"]["NewImage"], "map": EDGE_ITEM["map"]}
    # ... which is the table's own item, binary as base64 and numbers as DynamoDB's text:
    live = dynamodb.get_item(TableName=table, Key={"pk": {"S": "edge"}}, ConsistentRead=True)
    assert stored == to_wire(live["Item"])
    assert stored["n38"] == {"N": "12345678901234567890123456789012345678"}
    assert base64.b64decode(stored["binary"]["B"]) == bytes(range(256))
    assert b'"N":"12345678901234567890123456789012345678"' in entry["body"]


def test_item_near_the_400_kb_limit(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    item = {"pk": {"S": "big"}, "blob": {"S": "x" * 400_000}, "more": {"B": b"\x07" * 9_000}}
    dynamodb.put_item(TableName=table, Item=item)
    (record,) = lambda_records(dynamodb, streams, table)
    assert run_handler([record]) == {"batchItemFailures": []}
    (entry,) = history(s3, bucket, object_key(backup_env, table, {"pk": {"S": "big"}}))
    assert json.loads(entry["body"]) == record["dynamodb"]["NewImage"]
    assert len(entry["body"]) > 400_000


@pytest.mark.parametrize(
    "key_schema",
    [
        [("pk", "S")],
        [("pk", "N")],
        [("pk", "B")],
        [("pk", "S"), ("sk", "N")],
        [("pk", "N"), ("sk", "B")],
        [("pk", "B"), ("sk", "S")],
    ],
    ids=lambda schema: "+".join(kind for _, kind in schema),
)
def test_key_types_name_objects_by_canonical_key(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    backup_env: str,
    key_schema: list[tuple[str, str]],
) -> None:
    values = {
        "S": [{"S": "a"}, {"S": "ü/b"}],
        "N": [{"N": "-1.5"}, {"N": "12345678901234567890123456789012345678"}],
        "B": [{"B": b"\x00\x01"}, {"B": b"\xff"}],
    }
    table = create_table(dynamodb, key_schema)
    keys = []
    for index in range(2):
        key = {name: values[kind][index] for name, kind in key_schema}
        dynamodb.put_item(TableName=table, Item={**key, "payload": {"N": str(index)}})
        keys.append(key)
    records = lambda_records(dynamodb, streams, table)
    assert run_handler(records) == {"batchItemFailures": []}
    for key in keys:
        wire_key = to_wire(key)
        reordered = dict(reversed(list(wire_key.items())))
        assert expected_name(wire_key) == expected_name(reordered)
        (entry,) = history(s3, bucket, object_key(backup_env, table, reordered))
        assert json.loads(entry["body"])["payload"] in ({"N": "0"}, {"N": "1"})


def test_one_key_changed_many_times_keeps_every_version_in_order(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    key = {"pk": {"S": "hot"}}
    dynamodb.put_item(TableName=table, Item={**key, "n": {"N": "0"}})
    for value in range(1, 31):
        dynamodb.put_item(TableName=table, Item={**key, "n": {"N": str(value)}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "other"}})
    records = lambda_records(dynamodb, streams, table)
    assert len(records) == 32
    # Within one batch (20 changes of one key) and across batches (the rest).
    assert run_handler(records[:20]) == {"batchItemFailures": []}
    assert run_handler(records[20:]) == {"batchItemFailures": []}

    entries = history(s3, bucket, object_key(backup_env, table, key))
    assert [body["n"]["N"] for body in bodies(entries)] == [str(v) for v in range(30, -1, -1)]
    sequence_numbers = [int(entry["metadata"]["sequence-number"]) for entry in entries]
    assert sequence_numbers == sorted(sequence_numbers, reverse=True)


def test_console_sample_events_smoke_test(s3: Any, bucket: str, backup_env: str) -> None:
    """The checklist's "Test function" step: the console's DynamoDB Update sample."""
    for event in (CONSOLE_SAMPLE_CLASSIC, CONSOLE_SAMPLE_CURRENT):
        assert handler.backup(event, FakeContext()) == {"batchItemFailures": []}
    entries = history(
        s3, bucket, object_key(backup_env, "ExampleTableWithStream", {"Id": {"N": "101"}})
    )
    assert bodies(entries)[:4] == [
        "DM",
        None,
        {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
        {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
    ]
    listed = s3.list_object_versions(Bucket=bucket, Prefix=f"{backup_env}/ExampleTableWithStream/")
    assert len(listed["Versions"]) == 6 and len(listed["DeleteMarkers"]) == 2


def test_distinct_keys_are_written_in_parallel(
    dynamodb: Any, streams: Any, seaweedfs: Any, bucket: str, prefix: str, transport: str
) -> None:
    table = create_table(dynamodb)
    for index in range(100):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index:03d}"}})
    records = lambda_records(dynamodb, streams, table)
    delay = 0.1
    with faultproxy.FaultProxy(seaweedfs.endpoint, delay=delay) as proxy:
        applier = BackupApplier(
            writer_via(proxy.endpoint, bucket, transport), prefix, concurrency=16
        )
        started = time.monotonic()
        result = applier.apply(records)
        elapsed = time.monotonic() - started
    assert result.failures == [] and result.applied_count == 100
    assert proxy.log.max_in_flight >= 8
    # 100 sequential round trips through the proxy would take at least 10 s; 16 at a time,
    # about 0.7 s. Half the sequential time leaves seconds for a loaded CI machine (a 0.02 s
    # delay, bounded at 2 s, once took 2.06 s under a full parallel suite).
    assert elapsed < 100 * delay / 2


def test_missing_bucket_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKUP_BUCKET", raising=False)
    with pytest.raises(ConfigurationError, match="BACKUP_BUCKET is not set"):
        handler.backup(CONSOLE_SAMPLE_CURRENT, FakeContext())
    monkeypatch.setenv("BACKUP_BUCKET", "b")
    monkeypatch.setenv("BACKUP_CONCURRENCY", "lots")
    with pytest.raises(
        ConfigurationError, match="BACKUP_CONCURRENCY must be a positive whole number"
    ):
        handler.backup(CONSOLE_SAMPLE_CURRENT, FakeContext())


def test_keys_only_stream_is_refused_and_nothing_written(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    backup_env: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = create_table(dynamodb, view_type="KEYS_ONLY")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)
    with caplog.at_level(logging.INFO, logger="dynamo_backups.handler"):
        response = run_handler(records)
    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert "must use NEW_IMAGE or NEW_AND_OLD_IMAGES" in caplog.text
    assert "KEYS_ONLY" in caplog.text
    assert (
        s3.list_object_versions(Bucket=bucket, Prefix=f"{backup_env}/{table}/").get("Versions")
        is None
    )


def test_invalid_record_stops_the_batch_there(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    for name in ("a", "b", "c"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}})
    records = lambda_records(dynamodb, streams, table)
    del records[1]["dynamodb"]["Keys"]
    result = handler.build_backup_applier(
        handler.BackupConfig(bucket, backup_env), handler.lambda_context()
    ).apply(records)
    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]
    }
    assert (
        "record 1" in result.failures[0].reason
        and "has no dynamodb.Keys" in result.failures[0].reason
    )
    assert not result.failures[0].retryable
    assert len(history(s3, bucket, object_key(backup_env, table, {"pk": {"S": "a"}}))) == 1
    assert history(s3, bucket, object_key(backup_env, table, {"pk": {"S": "c"}})) == []


def test_transient_s3_faults_are_retried_until_written(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    table = create_table(dynamodb)
    for round_ in range(3):
        for index in range(10):
            dynamodb.put_item(
                TableName=table, Item={"pk": {"S": f"k{index}"}, "round": {"N": str(round_)}}
            )
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k0"}})
    records = lambda_records(dynamodb, streams, table)
    faults = [faultproxy.SLOW_DOWN, faultproxy.INTERNAL_ERROR, faultproxy.RESET]
    # Every other request fails, cycling through the three kinds of fault.
    cycle = [
        faults[0],
        faultproxy.FORWARD,
        faults[1],
        faultproxy.FORWARD,
        faults[2],
        faultproxy.FORWARD,
    ]

    def rule(request: faultproxy.Request) -> str:
        return cycle[request.number % len(cycle)]

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        policy = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05)
        writer = writer_via(proxy.endpoint, bucket, transport, policy)
        result = BackupApplier(writer, prefix).apply(records)
    assert len(proxy.log.faults) > 20
    assert {fault for fault, _, _ in proxy.log.faults} == set(faults)
    assert result.failures == [] and result.applied_count == len(records)
    for index in range(1, 10):
        entries = history(s3, bucket, object_key(prefix, table, {"pk": {"S": f"k{index}"}}))
        # A reset after the server stored a put makes a duplicate version: same state, same order.
        rounds = [body["round"]["N"] for body in bodies(entries)]
        assert sorted(set(rounds), reverse=True) == ["2", "1", "0"]
        assert rounds == sorted(rounds, reverse=True)
    assert bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "k0"}})))[0] == "DM"


def test_permanent_failure_reports_earliest_record_and_applies_nothing_after_it(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    table = create_table(dynamodb)
    stuck = {"pk": {"S": "stuck"}}
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "before"}})
    dynamodb.put_item(TableName=table, Item={**stuck, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "between"}})
    dynamodb.put_item(TableName=table, Item={**stuck, "v": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key=stuck)
    records = lambda_records(dynamodb, streams, table)
    stuck_name = expected_name(stuck)

    def rule(request: faultproxy.Request) -> str:
        return faultproxy.INTERNAL_ERROR if stuck_name in request.path else faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        writer = writer_via(
            proxy.endpoint, bucket, transport, RetryPolicy(max_attempts=3, base_delay=0.01)
        )
        result = BackupApplier(writer, prefix).apply(records)
    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]
    }
    assert "gave up after 3 attempts: InternalError" in result.first_failure.reason
    assert history(s3, bucket, object_key(prefix, table, stuck)) == []
    assert len(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "before"}}))) == 1

    # Lambda retries from the failed record once S3 is back: everything lands, in order.
    retry = BackupApplier(BackupWriter(s3, bucket), prefix).apply(records[1:])
    assert retry.failures == []
    assert bodies(history(s3, bucket, object_key(prefix, table, stuck))) == [
        "DM",
        None,
        {**stuck, "v": {"N": "2"}},
        {**stuck, "v": {"N": "1"}},
    ]


def test_deadline_leaves_unwritten_records_for_the_retry(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, backup_env: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "late"}})
    records = lambda_records(dynamodb, streams, table)
    response = run_handler(records, FakeContext(remaining_ms=0))
    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert history(s3, bucket, object_key(backup_env, table, {"pk": {"S": "late"}})) == []


def test_one_structured_log_line_per_batch_without_item_contents(
    dynamodb: Any,
    streams: Any,
    backup_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "secret": {"S": "hunter2"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "backup-fn")
    monkeypatch.setattr(handler.logger, "handlers", [])
    monkeypatch.setattr(handler.logger, "propagate", True)
    run_handler(records)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["tables"] == [table]
    assert summary["applied"] == {"INSERT": 1, "REMOVE": 1}
    assert summary["failed"] == 0 and summary["records"] == 2
    assert summary["duration_ms"] >= 0
    assert "hunter2" not in lines[0]
