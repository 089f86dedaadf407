"""Restore on DynamoDB Local and SeaweedFS: exact round trips through the stream and the
backfill, the table rebuilt from its description, and every refusal and failure mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.cli.restore import restore_backup_main
from dynamo_backups.core.layout import format_time, utc_now
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.helpers import (
    EDGE_ITEM,
    create_table,
    deep_map,
    make_backfill,
    object_key,
    restore_job,
    scan_all,
)

pytestmark = pytest.mark.servers


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_round_trip_through_stream_and_backfill_is_exact(
    aws_env: dict[str, str], dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, [("pk", "S"), ("sk", "B")], view_type=None)
    # Rows from before the stream, backed up by the backfill:
    for index in range(30):
        dynamodb.put_item(
            TableName=table,
            Item={
                **EDGE_ITEM,
                "pk": {"S": f"old-{index}"},
                "sk": {"B": bytes([index, 0xFF])},
                "deep": deep_map(20),
            },
        )
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    # ... then changes through the stream: inserts, updates (also of backfilled rows), deletes.
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    for index in range(20):
        dynamodb.put_item(
            TableName=table,
            Item={
                **EDGE_ITEM,
                "pk": {"S": f"new-{index}"},
                "sk": {"B": b"\x00"},
                "n38": {"N": f"-{index}.{'9' * 37}"[:40]},
            },
        )
    for index in range(0, 30, 3):
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": f"old-{index}"}, "sk": {"B": bytes([index, 0xFF])}},
            UpdateExpression="SET #text = :t REMOVE binaries",
            ExpressionAttributeNames={"#text": "text"},
            ExpressionAttributeValues={":t": {"S": f"changed ✓ {index}"}},
        )
    for index in range(1, 30, 4):
        dynamodb.delete_item(
            TableName=table, Key={"pk": {"S": f"old-{index}"}, "sk": {"B": bytes([index, 0xFF])}}
        )
    result = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once")
    assert result.exit_code == 0, result.output

    target = unique_table_name("restored")
    result = invoke("--output", "json", "restore", bucket, f"{prefix}/{table}/", target)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["created_table"] is True
    source = scan_all(dynamodb, table)
    assert report["written"] == len(source) == 30 + 20 - 8
    assert scan_all(dynamodb, target) == source


def test_table_is_rebuilt_from_its_saved_description(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = unique_table_name("described")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "l", "AttributeType": "N"},
        ],
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 7, "WriteCapacityUnits": 3},
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
                "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 2},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-l",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "l", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "a"}, "sk": {"N": "1"}, "g": {"S": "x"}, "l": {"N": "5"}}
    )
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    on_demand = unique_table_name("on-demand")
    assert invoke("restore", bucket, f"{prefix}/{table}", on_demand).exit_code == 0
    # A restore must not crawl at the source's provisioned rate: on-demand unless asked.
    described = dynamodb.describe_table(TableName=on_demand)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    target = unique_table_name("rebuilt")
    restored = invoke(
        "restore", bucket, f"{prefix}/{table}", target, "--billing-mode", "PROVISIONED"
    )
    assert restored.exit_code == 0, restored.output
    assert "warning: TTL is on again (expires)" in restored.output

    rebuilt = dynamodb.describe_table(TableName=target)["Table"]
    assert rebuilt["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert rebuilt["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
    assert rebuilt["ProvisionedThroughput"]["WriteCapacityUnits"] == 3
    assert [index["IndexName"] for index in rebuilt["GlobalSecondaryIndexes"]] == ["by-g"]
    assert rebuilt["GlobalSecondaryIndexes"][0]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert [index["IndexName"] for index in rebuilt["LocalSecondaryIndexes"]] == ["by-l"]
    ttl = dynamodb.describe_time_to_live(TableName=target)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires"
    assert (
        dynamodb.query(
            TableName=target,
            IndexName="by-g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "x"}},
        )["Count"]
        == 1
    )


def backed_up_table(dynamodb: Any, s3: Any, bucket: str, prefix: str, rows: int = 5) -> str:
    table = create_table(dynamodb, view_type=None)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "n": {"N": str(index)}})
    make_backfill(dynamodb, s3, bucket, prefix, table).run()
    return table


def test_restore_into_a_table_with_items_is_refused_unless_asked(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix)
    refused = invoke("restore", bucket, f"{prefix}/{table}", table)
    assert refused.exit_code == 2  # refused before anything is written: bad input
    assert (
        f"table {table} already has items" in refused.output and "--into-existing" in refused.output
    )
    allowed = invoke("restore", bucket, f"{prefix}/{table}", table, "--into-existing")
    assert allowed.exit_code == 0, allowed.output


def test_missing_bucket_and_empty_prefix_are_clear_errors(
    aws_env: dict[str, str], bucket: str, prefix: str
) -> None:
    missing = invoke("restore", "no-such-bucket", "Prod/Users", "T-restored")
    assert missing.exit_code == 2 and "there is no bucket no-such-bucket" in missing.output
    empty = invoke("restore", bucket, f"{prefix}/Nothing", "T-restored")
    assert empty.exit_code == 2  # bad input (README): a folder without a backup
    assert f"no backup at s3://{bucket}/{prefix}/Nothing/" in empty.output


def test_invalid_object_stops_the_restore_unless_skipped(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix)
    broken = object_key(prefix, table, {"pk": {"S": "k2"}})
    s3.put_object(Bucket=bucket, Key=broken, Body=b'{"pk": {"S": "k2"}, "n": {"N": 2.0}}')
    stopped = invoke("restore", bucket, f"{prefix}/{table}", unique_table_name("r"))
    assert stopped.exit_code == 1
    assert f"s3://{bucket}/{broken}" in stopped.output and "--skip-invalid" in stopped.output

    target = unique_table_name("r")
    skipped = invoke(
        "--output", "json", "restore", bucket, f"{prefix}/{table}", target, "--skip-invalid"
    )
    assert skipped.exit_code == 1  # complete except for what is reported
    report = json.loads(skipped.stdout)
    assert report["written"] == 4 and report["invalid"] == 1
    assert broken in report["invalid_objects"][0] and "bad N value" in report["invalid_objects"][0]
    assert len(scan_all(dynamodb, target)) == 4


def test_object_holding_another_items_key_is_reported(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix)
    misplaced = object_key(prefix, table, {"pk": {"S": "k3"}})
    s3.put_object(Bucket=bucket, Key=misplaced, Body=b'{"pk": {"S": "k4"}, "n": {"N": "4"}}')
    result = invoke("restore", bucket, f"{prefix}/{table}", unique_table_name("r"))
    assert result.exit_code == 1 and "whose object name would be" in result.output


def test_unprocessed_items_and_throttling_are_retried_until_all_written(
    dynamodb_local: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix, rows=120)
    seen = {"unprocessed": 0}

    def rule(request: faultproxy.Request) -> str:
        target = request.headers.get("x-amz-target", "")
        if target.endswith("BatchWriteItem") and request.number % 5 == 0:
            return faultproxy.THROTTLE
        return faultproxy.FORWARD

    def hold_back_half(request: faultproxy.Request) -> Any:
        """Forward half of each batch; answer the other half as UnprocessedItems."""
        if not request.headers.get("x-amz-target", "").endswith("BatchWriteItem"):
            return None
        document = json.loads(request.body)
        ((name, writes),) = document["RequestItems"].items()
        if len(writes) < 2:
            return None
        kept, held = writes[: len(writes) // 2], writes[len(writes) // 2 :]
        seen["unprocessed"] += len(held)

        def finish(payload: bytes) -> bytes:
            answer = json.loads(payload)
            answer["UnprocessedItems"] = {name: held}
            return json.dumps(answer).encode()

        return json.dumps({"RequestItems": {name: kept}}).encode(), finish

    target = unique_table_name("throttled")
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule, rewrite=hold_back_half) as proxy:
        job = restore_job(proxy.endpoint, s3, bucket, f"{prefix}/{table}", target)
        report = job.run()
    assert seen["unprocessed"] > 50 and any(fault == "throttle" for fault, _, _ in proxy.log.faults)
    assert report.complete and report.written == 120
    assert len(scan_all(dynamodb, target)) == 120


def test_keys_file_and_dry_run(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix, rows=10)
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "k1"}\n{"pk": {"S": "k7"}}\n\n{"pk": "absent"}\n')
    target = unique_table_name("some")
    result = invoke(
        "--output", "json", "restore", bucket, f"{prefix}/{table}", target, "--keys", str(keys)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["absent"] == 1
    assert sorted(scan_all(dynamodb, target)) == ['{"pk": {"S": "k1"}}', '{"pk": {"S": "k7"}}']

    dry_target = unique_table_name("dry")
    dry = invoke(
        "--output", "json", "restore", bucket, f"{prefix}/{table}", dry_target, "--dry-run"
    )
    assert dry.exit_code == 0
    report = json.loads(dry.stdout)
    assert report["written"] == 10 and len(report["sample"]) == 5
    assert dry_target not in dynamodb.list_tables()["TableNames"]

    bad_keys = tmp_path / "bad.jsonl"
    bad_keys.write_text('{"pk": 5}\n')
    bad = invoke(
        "restore", bucket, f"{prefix}/{table}", unique_table_name("b"), "--keys", str(bad_keys)
    )
    assert bad.exit_code == 2 and "bad.jsonl line 1" in bad.output  # before any write


def test_without_a_description_the_key_schema_is_asked_for(
    aws_env: dict[str, str], dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, [("pk", "S"), ("sk", "N")])
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"N": "1"}})
    from dynamo_backups.backup.writer import BackupWriter
    from dynamo_backups.pipeline.backup_applier import BackupApplier
    from tests.helpers import lambda_records

    # Only the Lambda handler ran: no description and no manifest in the bucket.
    BackupApplier(BackupWriter(s3, bucket), prefix).apply(lambda_records(dynamodb, streams, table))
    asked = invoke("restore", bucket, f"{prefix}/{table}", unique_table_name("r"))
    assert asked.exit_code == 2 and "--key-schema pk:S,sk:N" in asked.output
    target = unique_table_name("r")
    given = invoke("restore", bucket, f"{prefix}/{table}", target, "--key-schema", "pk:S,sk:N")
    assert given.exit_code == 0, given.output
    assert len(scan_all(dynamodb, target)) == 1


def test_restore_backup_has_the_checklists_interface(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix)
    target = unique_table_name("legacy")
    restore_backup_main(["--region", servers.REGION, bucket, f"{prefix}/{table}", target])
    assert "wrote 5 items" in capsys.readouterr().out
    assert len(scan_all(dynamodb, target)) == 5
    with pytest.raises(SystemExit) as refused:
        restore_backup_main([bucket, f"{prefix}/{table}", target])
    assert refused.value.code == 2
    assert "already has items" in capsys.readouterr().err


def test_at_is_checked_and_applied_from_the_command_line(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up_table(dynamodb, s3, bucket, prefix)
    bad = invoke("restore", bucket, f"{prefix}/{table}", unique_table_name("r"), "--at", "noon")
    assert bad.exit_code == 2 and "give ISO 8601 with a zone" in bad.output
    early = invoke(
        "--output",
        "json",
        "restore",
        bucket,
        f"{prefix}/{table}",
        unique_table_name("r"),
        "--at",
        "2000-01-01T00:00:00Z",
    )
    # Before the first backup the backup held nothing: said, and exit 2 (README), never a
    # silent empty table with exit 0.
    assert early.exit_code == 2, early.output
    assert "held no item at 2000-01-01" in early.stderr
    report = json.loads(early.stdout)
    assert (report["written"], report["absent"]) == (0, 5)
    future = invoke(
        "restore", bucket, f"{prefix}/{table}", unique_table_name("r"), "--at", "2100-01-01T00:00Z"
    )
    assert future.exit_code == 2 and "is in the future" in future.stderr
    late = invoke(
        "--output",
        "json",
        "restore",
        bucket,
        f"{prefix}/{table}",
        unique_table_name("r"),
        "--at",
        format_time(utc_now()),
    )
    assert json.loads(late.stdout)["written"] == 5
