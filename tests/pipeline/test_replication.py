"""Replication on DynamoDB Local (two tables): stream-driven, throttled, failing; the table
diff and its repairs; single records; deploy --replica-table on moto."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.cli import main
from dynamo_backups.handler import ConfigurationError, ReplicaConfig, build_replica_applier
from dynamo_backups.installer.package import build_zip
from dynamo_backups.jobs.table_diff import TableDiff, TableRef
from dynamo_backups.pipeline.replica_applier import ReplicaApplier
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.deployment import OPTIONS, clients, deploy, make_table, policy_document
from tests.helpers import EDGE_ITEM, create_table, deep_map, lambda_records, scan_all
from tests.moto_stack import moto_client
from tests.servers import make_client


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def replica_of(dynamodb: Any, key_schema: list[tuple[str, str]] | None = None) -> str:
    return create_table(dynamodb, key_schema, view_type=None, name=unique_table_name("replica"))


def applier_via(endpoint: str, table: str, policy: RetryPolicy | None = None) -> ReplicaApplier:
    api = RawDynamoDB(
        make_client("dynamodb", endpoint, retries={"total_max_attempts": 1}),
        Credentials(servers.ACCESS_KEY, servers.SECRET_KEY),
    )
    return ReplicaApplier(
        lambda request: api.call("BatchWriteItem", request),
        table,
        policy or RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.1),
        sleep=lambda _: None,
    )


def raw_call(endpoint: str) -> Any:
    """DynamoDB calls in wire form against ``endpoint``."""
    return RawDynamoDB(
        make_client("dynamodb", endpoint), Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
    ).call


def edge_workload(dynamodb: Any, table: str) -> None:
    """Inserts, updates and deletes of items with every attribute type."""
    for index in range(30):
        dynamodb.put_item(
            TableName=table,
            Item={
                **EDGE_ITEM,
                "pk": {"S": f"item-{index}"},
                "sk": {"N": str(index)},
                "deep": deep_map(12),
            },
        )
    for index in range(0, 30, 3):
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": f"item-{index}"}, "sk": {"N": str(index)}},
            UpdateExpression="SET n38 = :n REMOVE binaries",
            ExpressionAttributeValues={":n": {"N": "-" + "9" * 38}},
        )
    for index in range(1, 30, 4):
        dynamodb.delete_item(
            TableName=table, Key={"pk": {"S": f"item-{index}"}, "sk": {"N": str(index)}}
        )


@pytest.mark.servers
def test_stream_driven_replication_makes_an_exact_replica(
    aws_env: dict[str, str], dynamodb: Any, tmp_path: Path
) -> None:
    schema = [("pk", "S"), ("sk", "N")]
    primary, replica = create_table(dynamodb, schema), replica_of(dynamodb, schema)
    edge_workload(dynamodb, primary)
    result = invoke(
        "--output",
        "json",
        "stream",
        primary,
        "--replica-table",
        replica,
        "--once",
        "--checkpoint-dir",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["tables"]
    assert report["applied"] == {"INSERT": 30, "MODIFY": 10, "REMOVE": 8}
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)
    assert len(scan_all(dynamodb, replica)) == 22
    assert list(tmp_path.glob("*.json"))  # the checkpoint, kept locally without a bucket

    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "late"}, "sk": {"N": "1"}})
    again = invoke(
        "stream", primary, "--replica-table", replica, "--once", "--checkpoint-dir", str(tmp_path)
    )
    assert again.exit_code == 0 and "1 records replicated" in again.output
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)


@pytest.mark.servers
def test_backup_and_replica_from_one_consumer(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    primary, replica = create_table(dynamodb), replica_of(dynamodb)
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    result = invoke(
        "stream",
        primary,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--replica-table",
        replica,
        "--once",
    )
    assert result.exit_code == 0, result.output
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{primary}/")["KeyCount"] == 1


@pytest.mark.servers
def test_lambda_handler_replicates_real_records(
    dynamodb_local: Any, dynamodb: Any, streams: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = create_table(dynamodb), replica_of(dynamodb)
    for value in range(5):
        dynamodb.put_item(TableName=primary, Item={"pk": {"S": "hot"}, "v": {"N": str(value)}})
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "gone"}})
    dynamodb.delete_item(TableName=primary, Key={"pk": {"S": "gone"}})
    monkeypatch.setenv("REPLICA_TABLE", replica)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    answer = handler.replicate({"Records": lambda_records(dynamodb, streams, primary)}, None)
    assert answer == {"batchItemFailures": []}
    assert scan_all(dynamodb, replica) == {
        '{"pk": {"S": "hot"}}': {"pk": {"S": "hot"}, "v": {"N": "4"}}
    }
    monkeypatch.delenv("REPLICA_TABLE")
    with pytest.raises(ConfigurationError, match="REPLICA_TABLE is not set"):
        handler.replicate({"Records": []}, None)


@pytest.mark.servers
def test_only_the_last_change_of_each_item_is_written(
    dynamodb_local: Any, dynamodb: Any, streams: Any
) -> None:
    primary, replica = create_table(dynamodb), replica_of(dynamodb)
    for value in range(20):
        dynamodb.put_item(TableName=primary, Item={"pk": {"S": "hot"}, "v": {"N": str(value)}})
    records = lambda_records(dynamodb, streams, primary)
    written: list[int] = []

    def count(request: faultproxy.Request) -> str:
        if request.headers.get("x-amz-target", "").endswith("BatchWriteItem"):
            written.append(len(json.loads(request.body)["RequestItems"][replica]))
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(dynamodb_local.endpoint, count) as proxy:
        result = applier_via(proxy.endpoint, replica).apply(records)
    assert result.failures == [] and result.applied == {"INSERT": 1, "MODIFY": 19}
    assert written == [1]
    assert scan_all(dynamodb, replica)['{"pk": {"S": "hot"}}']["v"] == {"N": "19"}


@pytest.mark.servers
def test_throttled_replica_writes_all_land_in_the_end(
    dynamodb_local: Any, dynamodb: Any, streams: Any
) -> None:
    primary, replica = create_table(dynamodb), replica_of(dynamodb)
    for index in range(120):
        dynamodb.put_item(
            TableName=primary, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}}
        )
    records = lambda_records(dynamodb, streams, primary)
    held = {"count": 0}

    def throttle_some(request: faultproxy.Request) -> str:
        if (
            request.headers.get("x-amz-target", "").endswith("BatchWriteItem")
            and request.number % 4 == 0
        ):
            return faultproxy.THROTTLE
        return faultproxy.FORWARD

    def hold_back_half(request: faultproxy.Request) -> Any:
        if not request.headers.get("x-amz-target", "").endswith("BatchWriteItem"):
            return None
        writes = json.loads(request.body)["RequestItems"][replica]
        if len(writes) < 2:
            return None
        kept, rest = writes[: len(writes) // 2], writes[len(writes) // 2 :]
        held["count"] += len(rest)

        def finish(payload: bytes) -> bytes:
            answer = json.loads(payload)
            answer["UnprocessedItems"] = {replica: rest}
            return json.dumps(answer).encode()

        return json.dumps({"RequestItems": {replica: kept}}).encode(), finish

    with faultproxy.FaultProxy(
        dynamodb_local.endpoint, throttle_some, rewrite=hold_back_half
    ) as proxy:
        result = applier_via(proxy.endpoint, replica).apply(records)
    assert held["count"] > 60 and any(fault == "throttle" for fault, _, _ in proxy.log.faults)
    assert result.failures == [] and result.applied_count == 120
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)


@pytest.mark.servers
def test_failed_writes_report_the_earliest_record_of_the_failed_items(
    dynamodb_local: Any, dynamodb: Any, streams: Any
) -> None:
    primary, replica = create_table(dynamodb), replica_of(dynamodb)
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "b"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    records = lambda_records(dynamodb, streams, primary)

    def down(request: faultproxy.Request) -> str:
        return faultproxy.INTERNAL_ERROR

    with faultproxy.FaultProxy(dynamodb_local.endpoint, down) as proxy:
        result = applier_via(
            proxy.endpoint, replica, RetryPolicy(max_attempts=2, base_delay=0)
        ).apply(records)
    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert result.applied_count == 0
    # A retry from there brings the replica to the primary's state.
    assert applier_via(dynamodb_local.endpoint, replica).apply(records).failures == []
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)

    records[1]["eventName"] = "UPSERT"
    partial = applier_via(dynamodb_local.endpoint, replica).apply(records)
    assert partial.first_failure.index == 1 and not partial.first_failure.retryable


@pytest.mark.servers
def test_diff_tables_finds_and_repairs_every_kind_of_difference(
    aws_env: dict[str, str], dynamodb: Any
) -> None:
    primary, replica = create_table(dynamodb, view_type=None), replica_of(dynamodb)
    for index in range(60):
        item = {"pk": {"S": f"k{index:02d}"}, "v": {"N": "1"}, "set": {"SS": ["x", "y", "z"]}}
        dynamodb.put_item(TableName=primary, Item=item)
        if index != 7:
            dynamodb.put_item(TableName=replica, Item=item)  # k07 missing from the replica
    dynamodb.put_item(TableName=replica, Item={"pk": {"S": "stale"}})  # extra in the replica
    dynamodb.put_item(
        TableName=replica,
        Item={"pk": {"S": "k11"}, "v": {"N": "2"}, "set": {"SS": ["x", "y", "z"]}},
    )  # different

    found = invoke("--output", "json", "diff-tables", primary, replica)
    assert found.exit_code == 1, found.output
    report = json.loads(found.stdout)
    assert (report["missing"], report["extra"], report["different"]) == (1, 1, 1)
    assert report["scanned_primary"] == 60 and report["scanned_replica"] == 60
    assert report["samples"]["missing"] == ['{"pk":{"S":"k07"}}']
    assert report["samples"]["extra"] == ['{"pk":{"S":"stale"}}']
    assert report["samples"]["different"] == ['{"pk":{"S":"k11"}}']

    repaired = invoke("diff-tables", primary, replica, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert invoke("diff-tables", primary, replica).exit_code == 0
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)


@pytest.mark.servers
def test_backfill_seeds_an_empty_replica_and_segments_cover_the_table_once(
    aws_env: dict[str, str], dynamodb: Any
) -> None:
    primary, replica = create_table(dynamodb, view_type=None), replica_of(dynamodb)
    for index in range(90):
        dynamodb.put_item(
            TableName=primary, Item={"pk": {"S": f"k{index}"}, "b": {"B": bytes([index])}}
        )
    copied = 0
    for segment in range(3):
        result = invoke(
            "--output",
            "json",
            "diff-tables",
            primary,
            replica,
            "--backfill",
            "--segment",
            str(segment),
            "--total-segments",
            "3",
        )
        assert result.exit_code == 0, result.output
        copied += json.loads(result.stdout)["copied"]
    assert copied == 90  # each item exactly once
    assert scan_all(dynamodb, replica) == scan_all(dynamodb, primary)
    bad = invoke("diff-tables", primary, replica, "--segment", "3", "--total-segments", "3")
    assert bad.exit_code == 2


@pytest.mark.servers
def test_diff_record_and_replicate_record(aws_env: dict[str, str], dynamodb: Any) -> None:
    primary, replica = create_table(dynamodb, view_type=None), replica_of(dynamodb)
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "n": {"N": "0.5"}})
    differs = invoke("diff-record", primary, replica, '{"pk": "a"}')
    assert differs.exit_code == 1 and "(no such item)" in differs.output
    copied = invoke("replicate-record", primary, replica, '{"pk": "a"}')
    assert copied.exit_code == 0 and f'written {{"pk": "a"}} in {replica}' in copied.output
    assert invoke("diff-record", primary, replica, '{"pk": {"S": "a"}}').exit_code == 0
    dynamodb.delete_item(TableName=primary, Key={"pk": {"S": "a"}})
    removed = invoke("replicate-record", primary, replica, '{"pk": "a"}')
    assert removed.exit_code == 0 and "deleted" in removed.output
    assert scan_all(dynamodb, replica) == {}
    other_keys = create_table(dynamodb, [("id", "N")], view_type=None)
    mismatch = invoke("diff-tables", primary, other_keys)
    assert mismatch.exit_code == 2 and "have different keys" in mismatch.output  # bad input


def test_deploy_wires_a_replication_function_with_its_own_role(moto: str) -> None:
    make_table(moto, "Users")
    make_table(moto, "Users-replica")
    options = replace(OPTIONS, tables=("Users",), replica_table="Users-replica")
    steps = deploy(moto, options)
    c = clients(moto)
    function = c.lambda_.get_function(FunctionName="dynamo-backups-replica-Users")["Configuration"]
    assert function["Handler"] == "dynamo_backups.handler.replicate"
    assert function["Environment"]["Variables"] == {"REPLICA_TABLE": "Users-replica"}
    (write,) = policy_document(c.iam, "dynamo-backups-replica-Users-write")["Statement"]
    assert write["Action"] == ["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
    assert write["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/Users-replica"
    attached = {
        p["PolicyName"]
        for p in c.iam.list_attached_role_policies(RoleName="dynamo-backups-replica-Users")[
            "AttachedPolicies"
        ]
    }
    assert attached == {
        "dynamo-backups-replica-Users-stream",
        "dynamo-backups-replica-Users-logs",
        "dynamo-backups-replica-Users-write",
    }  # no S3 at all
    assert len(c.lambda_.list_event_source_mappings()["EventSourceMappings"]) == 2
    assert not [s for s in steps if s.outcome == "warning" and "readers" in s.detail]

    # A third reader on the stream is more than a shard serves: deploy says so.
    stream = c.dynamodb.describe_table(TableName="Users")["Table"]["LatestStreamArn"]
    c.lambda_.create_function(
        FunctionName="someone-else",
        Runtime="python3.12",
        Handler="x.y",
        Role=function["Role"],
        Code={"ZipFile": build_zip()},
    )
    c.lambda_.create_event_source_mapping(
        EventSourceArn=stream, FunctionName="someone-else", StartingPosition="LATEST"
    )
    again = deploy(moto, options)
    assert [s for s in again if s.outcome == "warning" and "readers" in s.detail]


def test_replication_only_deploy_and_its_errors(moto: str) -> None:
    make_table(moto, "Users")
    options = replace(
        OPTIONS, bucket=None, tables=("Users",), replica_table="Users-replica", create_bucket=False
    )
    from dynamo_backups.installer.plan import DeployError

    with pytest.raises(DeployError, match="replica table Users-replica does not exist"):
        deploy(moto, options)
    make_table(moto, "Users-replica")
    steps = deploy(moto, options)
    c = clients(moto)
    assert [f["FunctionName"] for f in c.lambda_.list_functions()["Functions"]] == [
        "dynamo-backups-replica-Users"
    ]
    assert c.s3.list_buckets().get("Buckets") in (None, [])
    assert not any(step.resource.startswith("bucket") for step in steps)
    with pytest.raises(DeployError, match="exactly one --table"):
        deploy(moto, replace(options, tables=("Users", "Users-replica")))


def test_replicate_handler_can_assume_a_role_for_another_account(
    moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replica lives in the other account: create it there, as that account.
    role_arn = "arn:aws:iam::210987654321:role/replica-writer"
    assumed = moto_client(moto, "sts").assume_role(RoleArn=role_arn, RoleSessionName="setup")
    credentials = assumed["Credentials"]
    boto3.client(
        "dynamodb",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    ).create_table(
        TableName="Far",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = ReplicaConfig("Far", region="us-east-1", role_arn=role_arn)
    applier = build_replica_applier(config)
    records = [
        {
            "eventName": "INSERT",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/Near/stream/x",
            "dynamodb": {
                "ApproximateCreationDateTime": 1,
                "Keys": {"id": {"S": "a"}},
                "NewImage": {"id": {"S": "a"}, "n": {"N": "1"}},
                "SequenceNumber": "1",
            },
        }
    ]
    assert applier.apply(records).failures == []
    assert not clients(moto).dynamodb.list_tables()["TableNames"]  # nothing in this account
    far = boto3.client(
        "dynamodb",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    assert far.get_item(TableName="Far", Key={"id": {"S": "a"}})["Item"] == {
        "id": {"S": "a"},
        "n": {"N": "1"},
    }


def test_seeding_never_replaces_a_replicated_write_nor_revives_a_deleted_item(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    primary, replica = create_table(dynamodb), create_table(dynamodb, view_type=None)
    for name in ("gone", "newer", "plain"):
        dynamodb.put_item(TableName=primary, Item={"pk": {"S": name}, "v": {"N": "1"}})
    call = raw_call(dynamodb_local.endpoint)
    scanned = []

    def primary_call(operation: str, request: dict[str, Any]) -> dict[str, Any]:
        answer = call(operation, request)
        if operation == "Scan" and not scanned:
            scanned.append(True)
            # While the seed runs, the table changes and the replicator keeps up:
            dynamodb.delete_item(TableName=primary, Key={"pk": {"S": "gone"}})
            newer = {"pk": {"S": "newer"}, "v": {"N": "2"}}
            dynamodb.put_item(TableName=primary, Item=newer)
            dynamodb.put_item(TableName=replica, Item=newer)
        return answer

    report = TableDiff(
        TableRef(primary),
        TableRef(replica),
        primary_call,
        call,
        ["pk"],
        segments=1,
        backfill=True,
    ).run()
    assert (report.copied, report.already_there, report.deleted_since_scan) == (1, 1, 1)
    seeded = {item["pk"]["S"]: item["v"]["N"] for item in dynamodb.scan(TableName=replica)["Items"]}
    assert seeded == {"newer": "2", "plain": "1"}


def test_repair_never_undoes_a_write_the_replicator_made_meanwhile(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    primary, replica = create_table(dynamodb), create_table(dynamodb, view_type=None)
    dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    dynamodb.put_item(TableName=replica, Item={"pk": {"S": "a"}, "v": {"N": "1"}})  # behind
    call = raw_call(dynamodb_local.endpoint)

    def replica_call(operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if operation == "PutItem":
            # The replicator writes a newer change between our read and our repair.
            dynamodb.put_item(TableName=primary, Item={"pk": {"S": "a"}, "v": {"N": "3"}})
            dynamodb.put_item(TableName=replica, Item={"pk": {"S": "a"}, "v": {"N": "3"}})
        return call(operation, request)

    report = TableDiff(
        TableRef(primary), TableRef(replica), call, replica_call, ["pk"], segments=1, repair=True
    ).run()
    assert (report.different, report.repaired, report.repair_failed) == (1, 0, 1)
    item = dynamodb.get_item(TableName=replica, Key={"pk": {"S": "a"}})["Item"]
    assert item["v"] == {"N": "3"}  # the newer write stands
