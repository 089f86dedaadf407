"""What a user hits restoring for real: a backup named with sha256 read by every reader,
duplicate keys, unwritten keys kept in full, the target's key checked, TTL only after the
items, and --delete-absent ending the table exactly as it was. DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.cli import main
from dynamo_backups.jobs import restore as restore_job
from tests import faultproxy
from tests.conftest import unique_table_name
from tests.helpers import ONCE, create_table, scan_all

pytestmark = pytest.mark.servers


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def streamed(dynamodb: Any, bucket: str, prefix: str, table: str, *extra: str) -> None:
    result = invoke(
        "stream",
        table,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        *ONCE,
        *extra,
    )
    assert result.exit_code == 0, result.output


def test_a_backup_named_with_sha256_is_read_by_every_reader(
    aws_env: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    table = create_table(dynamodb, [("pk", "S"), ("sk", "N")], view_type=None)
    for index in range(6):
        dynamodb.put_item(
            TableName=table, Item={"pk": {"S": f"k{index}"}, "sk": {"N": "1"}, "v": {"N": "1"}}
        )
    backfilled = invoke(
        "backfill", table, "--bucket", bucket, "--prefix", prefix, "--key-hash", "sha256"
    )
    assert backfilled.exit_code == 0, backfilled.output
    time.sleep(1.1)  # S3 keeps whole seconds
    moment = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "k0"}, "sk": {"N": "1"}, "v": {"N": "2"}})
    # The repair writes the new state under the sha256 name the folder's layout gives.
    repaired = invoke("verify", table, "--bucket", bucket, "--prefix", prefix, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired: 1" in repaired.output
    folder = f"{prefix}/{table}"

    latest = unique_table_name("sha-latest")
    assert invoke("restore", bucket, folder, latest).exit_code == 0
    assert scan_all(dynamodb, latest) == scan_all(dynamodb, table)
    before = unique_table_name("sha-at")
    assert invoke("restore", bucket, folder, before, "--at", moment).exit_code == 0
    assert all(item["v"] == {"N": "1"} for item in scan_all(dynamodb, before).values())
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "k0", "sk": 1}\n')
    one = unique_table_name("sha-keys")
    assert invoke("restore", bucket, folder, one, "--keys", str(keys)).exit_code == 0
    assert list(scan_all(dynamodb, one).values()) == [
        {"pk": {"S": "k0"}, "sk": {"N": "1"}, "v": {"N": "2"}}
    ]
    history = invoke(
        "history", table, '{"pk": "k0", "sk": 1}', "--bucket", bucket, "--prefix", prefix
    )
    assert history.exit_code == 0 and "(2 versions, newest first)" in history.output
    verified = invoke("verify", table, "--bucket", bucket, "--prefix", prefix)
    assert verified.exit_code == 0, verified.output
    snapshot = invoke("snapshot", bucket, folder, "--to", f"s3://{bucket}/{prefix}-snapshot")
    assert snapshot.exit_code == 0, snapshot.output
    assert (
        '"items": 6'
        in invoke(
            "--output",
            "json",
            "snapshot",
            bucket,
            folder,
            "--to",
            f"s3://{bucket}/{prefix}-snapshot2",
        ).output
    )


def backed_up(dynamodb: Any, bucket: str, prefix: str, rows: int = 4) -> str:
    table = create_table(dynamodb)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "n": {"N": "1"}})
    streamed(dynamodb, bucket, prefix, table)
    return table


def test_a_key_given_twice_is_restored_once(
    aws_env: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, bucket, prefix)
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "k1"}\n{"pk": {"S": "k1"}}\n{"pk": "k2"}\n{"pk": "k1"}\n')
    target = unique_table_name("twice")
    folder = f"{prefix}/{table}"
    asked = invoke("restore", bucket, folder, target, "--keys", str(keys), "--engine", "processes")
    assert asked.exit_code == 1 and "use --engine threads" in asked.output
    # The environment's engine gives way: --keys runs in this process.
    monkeypatch.setenv("DYNAMO_BACKUPS_ENGINE", "processes")
    result = invoke("restore", bucket, folder, target, "--keys", str(keys))
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(key)["pk"]["S"] for key in scan_all(dynamodb, target)) == [
        "k1",
        "k2",
    ]


@pytest.mark.parametrize("bucket_access", ["read-write", "read-only"])
def test_keys_not_written_are_kept_in_full_for_a_second_run(
    aws_env: Any,
    dynamodb_local: Any,
    seaweedfs: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bucket_access: str,
) -> None:
    # Read-only: no ledger, so the unwritten keys come back in the units' results.
    table = backed_up(dynamodb, bucket, prefix, rows=30)
    target = unique_table_name("partial")
    dynamodb.create_table(
        TableName=target,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def refuse_writes(request: faultproxy.Request) -> str:
        target_header = request.headers.get("x-amz-target", "")
        return faultproxy.INTERNAL_ERROR if target_header.endswith("BatchWriteItem") else "forward"

    unwritten = tmp_path / "unwritten.jsonl"
    with contextlib.ExitStack() as proxies:
        # Giving up is what is tested, not how long the default budget lasts (over a minute).
        short = proxies.enter_context(monkeypatch.context())
        short.setattr(restore_job, "RETRY_POLICY", RetryPolicy(max_attempts=4, base_delay=0.01))
        proxy = proxies.enter_context(faultproxy.FaultProxy(dynamodb_local.endpoint, refuse_writes))
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        if bucket_access == "read-only":
            s3_proxy = proxies.enter_context(faultproxy.FaultProxy(seaweedfs.endpoint, read_only))
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint)
        failed = invoke(
            "restore",
            bucket,
            f"{prefix}/{table}",
            target,
            "--into-existing",
            "--unwritten-keys",
            str(unwritten),
            "--write-concurrency",
            "2",
            "--partitions",
            "1",  # one unit: every batch gives up at once, not one group after another
        )
    assert failed.exit_code == 1
    assert "30 items NOT written" in failed.output
    assert f"every key not written is in {unwritten}" in failed.output
    lines = unwritten.read_text().splitlines()
    assert sorted(json.loads(line)["pk"]["S"] for line in lines) == sorted(
        f"k{index}" for index in range(30)
    )  # all of them, not a sample

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    again = invoke(
        "restore", bucket, f"{prefix}/{table}", target, "--into-existing", "--keys", str(unwritten)
    )
    assert again.exit_code == 0, again.output
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)


def test_a_target_keyed_otherwise_is_refused_before_anything_is_written(
    aws_env: Any, dynamodb: Any, bucket: str, prefix: str
) -> None:
    table = backed_up(dynamodb, bucket, prefix)
    other = create_table(dynamodb, [("id", "N")], view_type=None)
    result = invoke("restore", bucket, f"{prefix}/{table}", other, "--into-existing")
    assert result.exit_code == 2
    assert f"table {other} is keyed by id (HASH N), the backup by pk (HASH S)" in result.output
    assert dynamodb.scan(TableName=other)["Count"] == 0


def test_ttl_is_switched_on_only_after_the_items_are_written(
    aws_env: Any,
    dynamodb_local: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    # Expiring tomorrow: DynamoDB Local's own TTL sweep deletes expired items (at times before
    # the backfill reads them); what is checked here is the order of the restore's calls.
    tomorrow = str(int(time.time()) + 86400)
    for index in range(5):
        item = {"pk": {"S": f"k{index}"}, "expires": {"N": tomorrow}}
        dynamodb.put_item(TableName=table, Item=item)
    backfilled = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert backfilled.exit_code == 0, backfilled.output
    assert "5 rows read" in backfilled.output, backfilled.output
    with faultproxy.FaultProxy(dynamodb_local.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        target = unique_table_name("ttl")
        result = invoke("restore", bucket, f"{prefix}/{table}", target)
        operations = [
            request.headers.get("x-amz-target", "").rsplit(".", 1)[-1]
            for request in proxy.log.requests
        ]
    assert result.exit_code == 0, result.output
    assert "warning: TTL is on again (expires)" in result.output
    assert "UpdateTimeToLive" in operations
    last_write = max(i for i, name in enumerate(operations) if name == "BatchWriteItem")
    assert operations.index("UpdateTimeToLive") > last_write
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    kept = unique_table_name("no-ttl")
    assert invoke("restore", bucket, f"{prefix}/{table}", kept, "--no-ttl").exit_code == 0
    ttl = dynamodb.describe_time_to_live(TableName=kept)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_delete_absent_ends_the_table_exactly_as_it_was(
    aws_env: Any, dynamodb: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    # Versions dated by the servers' clocks to the second (DynamoDB Local dates stream
    # records to the minute): a backfill, then a repair of what changed.
    table = create_table(dynamodb, view_type=None)
    for name in ("a", "b", "c"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}, "v": {"N": "1"}})
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    then = scan_all(dynamodb, table)
    time.sleep(1.1)
    moment = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}, "v": {"N": "2"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "later"}, "v": {"N": "1"}})
    repaired = invoke("verify", table, "--bucket", bucket, "--prefix", prefix, "--repair")
    assert "repaired: 3" in repaired.output, repaired.output

    refused = invoke("restore", bucket, f"{prefix}/{table}", table, "--delete-absent")
    assert refused.exit_code == 2 and "give --into-existing too" in refused.output
    result = invoke(
        "restore",
        bucket,
        f"{prefix}/{table}",
        table,
        "--into-existing",
        "--at",
        moment,
        "--delete-absent",
    )
    assert result.exit_code == 0, result.output
    assert "deleted 1 items the backup did not hold then" in result.output
    assert scan_all(dynamodb, table) == then

    # With --keys, only the listed keys are made as they were.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "later"}, "v": {"N": "9"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "other"}, "v": {"N": "9"}})
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "later"}\n{"pk": "a"}\n')
    listed = invoke(
        "restore",
        bucket,
        f"{prefix}/{table}",
        table,
        "--into-existing",
        "--at",
        moment,
        "--delete-absent",
        "--keys",
        str(keys),
    )
    assert listed.exit_code == 0, listed.output
    names = sorted(json.loads(key)["pk"]["S"] for key in scan_all(dynamodb, table))
    assert names == ["a", "b", "c", "other"]


ACCESS_DENIED = faultproxy.Answer(
    403,
    {"Content-Type": "application/xml"},
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Access Denied</Message></Error>",
)


def read_only(request: faultproxy.Request) -> str | faultproxy.Answer:
    """S3 as a role that may only read the bucket answers writes."""
    return ACCESS_DENIED if request.method in ("PUT", "POST", "DELETE") else faultproxy.FORWARD


def test_a_role_that_may_only_read_the_bucket_restores_without_a_ledger(
    aws_env: Any,
    seaweedfs: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, bucket, prefix, rows=12)
    with faultproxy.FaultProxy(seaweedfs.endpoint, read_only) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        target = unique_table_name("read-only")
        result = invoke("--output", "json", "restore", bucket, f"{prefix}/{table}", target)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"] == 12
    assert "keeps no ledger" in result.stderr
    assert any(request.method == "PUT" for request in proxy.log.requests)  # it did try
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)
