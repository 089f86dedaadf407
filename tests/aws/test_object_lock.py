"""Every write path into an Object Lock bucket with a default retention, the bucket
docs/security.md recommends.

S3 refuses a PutObject into such a bucket unless it carries Content-MD5 or a checksum
(``x-amz-sdk-checksum-algorithm`` with its ``x-amz-checksum-*``); moto enforces that rule as
S3 does. Tables live in DynamoDB Local; the bucket in moto; item writes go through the
default (fast) transport unless a test says otherwise, the tool's own documents, checkpoints
and conditional writes through botocore.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from tests import faultproxy, servers
from tests.helpers import ONCE, create_table, lambda_records, object_key
from tests.jobs.test_replay import report_for
from tests.servers import make_client

pytestmark = pytest.mark.servers

RETENTION_DAYS = 1


@pytest.fixture
def locked_bucket(moto_session: str) -> str:
    """A new bucket with Object Lock on and a default retention (governance, one day)."""
    s3 = make_client("s3", moto_session)
    name = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": RETENTION_DAYS}},
        },
    )
    return name


@pytest.fixture
def moto_s3(moto_session: str) -> Any:
    return make_client("s3", moto_session)


@pytest.fixture(params=["when_supported", "when_required"])
def locked_env(
    request: pytest.FixtureRequest,
    dynamodb_local: servers.Server,
    moto_session: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI and the handler pointed at DynamoDB Local and at moto's S3; with botocore's
    default checksum setting, and with "when_required" (a setting users of S3-compatible
    stores make), under which botocore sends no checksum for a put of its own accord."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", request.param)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_session)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", moto_session)


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


def object_state(s3: Any, bucket: str, key: str) -> tuple[Any, list[Any]]:
    """The current state of one object ("DM" under a delete marker, else its parsed body) and
    the bodies of all its versions (None for a tombstone), sorted; every version's retention
    checked on the way."""
    answer = s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [entry for entry in answer.get("Versions", []) if entry["Key"] == key]
    markers = [entry for entry in answer.get("DeleteMarkers", []) if entry["Key"] == key]
    found: list[Any] = []
    current: Any = "DM" if any(marker["IsLatest"] for marker in markers) else None
    for version in versions:
        got = s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
        assert got["ObjectLockMode"] == "GOVERNANCE"  # the default retention applied
        body = got["Body"].read()
        parsed = json.loads(body) if body else None
        found.append(parsed)
        if version["IsLatest"]:
            current = parsed
    return current, sorted(found, key=lambda body: json.dumps(body, sort_keys=True))


def change_three_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """a inserted, b inserted then modified, c inserted then deleted: the keys."""
    keys = [{"pk": {"S": name}} for name in ("a", "b", "c")]
    for key in keys:
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**keys[1], "v": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key=keys[2])
    return keys


def assert_three_items_backed_up(s3: Any, bucket: str, prefix: str, table: str) -> None:
    def item(name: str, value: str) -> dict[str, Any]:
        return {"pk": {"S": name}, "v": {"N": value}}

    state = {
        name: object_state(s3, bucket, object_key(prefix, table, {"pk": {"S": name}}))
        for name in ("a", "b", "c")
    }
    assert state["a"] == (item("a", "1"), [item("a", "1")])
    assert state["b"] == (item("b", "2"), [item("b", "1"), item("b", "2")])
    # A removal is a tombstone version, then a delete marker on top of it.
    assert state["c"] == ("DM", [None, item("c", "1")])


# --- the write paths ---------------------------------------------------------------------------


def test_the_stream_handler_writes_into_an_object_lock_bucket(
    dynamodb: Any,
    streams: Any,
    moto_s3: Any,
    locked_bucket: str,
    prefix: str,
    locked_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_BUCKET", locked_bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "2")
    table = create_table(dynamodb)
    change_three_items(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    assert handler.backup({"Records": records}, Context()) == {"batchItemFailures": []}
    assert_three_items_backed_up(moto_s3, locked_bucket, prefix, table)


def test_stream_writes_into_an_object_lock_bucket(
    dynamodb: Any, moto_s3: Any, locked_bucket: str, prefix: str, locked_env: None
) -> None:
    table = create_table(dynamodb)
    change_three_items(dynamodb, table)
    result = invoke("stream", table, "--bucket", locked_bucket, "--prefix", prefix, *ONCE)
    assert result.exit_code == 0, result.output
    assert_three_items_backed_up(moto_s3, locked_bucket, prefix, table)


def test_backfill_writes_into_an_object_lock_bucket(
    dynamodb: Any, moto_s3: Any, locked_bucket: str, prefix: str, locked_env: None
) -> None:
    table = create_table(dynamodb, view_type=None)
    for name in ("k1", "k2", "k3"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}, "v": {"N": "1"}})
    backfill = invoke("backfill", table, "--bucket", locked_bucket, "--prefix", prefix)
    assert backfill.exit_code == 0, backfill.output
    for name in ("k1", "k2", "k3"):
        item = {"pk": {"S": name}, "v": {"N": "1"}}
        key = object_key(prefix, table, {"pk": {"S": name}})
        assert object_state(moto_s3, locked_bucket, key) == (item, [item])


def test_verify_repair_writes_into_an_object_lock_bucket(
    dynamodb: Any,
    moto_s3: Any,
    locked_bucket: str,
    prefix: str,
    locked_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb, view_type=None)
    for name in ("k1", "k2", "k3"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}, "v": {"N": "1"}})
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", "botocore")  # seeded another way
    backfill = invoke("backfill", table, "--bucket", locked_bucket, "--prefix", prefix)
    assert backfill.exit_code == 0, backfill.output
    monkeypatch.delenv("DYNAMO_BACKUPS_TRANSPORT")

    # Changes the backup never saw (no stream), then verify --repair writes them.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "k1"}, "v": {"N": "2"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k2"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "k4"}, "v": {"N": "1"}})
    repaired = invoke(
        "--output", "json", "verify", table, "--bucket", locked_bucket, "--prefix", prefix,
        "--repair",
    )  # fmt: skip
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout)["repaired"] == 3
    again = invoke("verify", table, "--bucket", locked_bucket, "--prefix", prefix)
    assert again.exit_code == 0, again.output

    def state(name: str) -> tuple[Any, list[Any]]:
        key = object_key(prefix, table, {"pk": {"S": name}})
        return object_state(moto_s3, locked_bucket, key)

    def item(name: str, value: str) -> dict[str, Any]:
        return {"pk": {"S": name}, "v": {"N": value}}

    assert state("k1") == (item("k1", "2"), [item("k1", "1"), item("k1", "2")])
    assert state("k2") == ("DM", [None, item("k2", "1")])
    assert state("k4") == (item("k4", "1"), [item("k4", "1")])


def test_replay_writes_into_an_object_lock_bucket(
    dynamodb: Any,
    streams: Any,
    moto_s3: Any,
    locked_bucket: str,
    prefix: str,
    locked_env: None,
    tmp_path: Path,
) -> None:
    table = create_table(dynamodb)
    change_three_items(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    arn = records[0]["eventSourceARN"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    reports = tmp_path / "reports.jsonl"
    reports.write_text(report_for(records, shard["ShardId"]) + "\n")
    # The folder's layout.json, as deploy writes it (replay refuses a folder with no backup).
    ensure_manifest(BackupWriter(moto_s3, locked_bucket), TableLayout.of(prefix, table))
    result = invoke(
        "replay", table, "--file", str(reports), "--bucket", locked_bucket, "--prefix", prefix
    )
    assert result.exit_code == 0, result.output
    assert f"replayed {len(records)} records" in result.output
    assert_three_items_backed_up(moto_s3, locked_bucket, prefix, table)


# --- what goes over the wire ------------------------------------------------------------------

_SIGNED = re.compile(r"SignedHeaders=([^,]+)")


def test_every_write_carries_a_signed_checksum_of_its_body_as_botocore_sends_one(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """Each put and DeleteObjects names its checksum algorithm and carries that checksum of
    the body the server received, signed; SeaweedFS accepts them as S3 does."""
    seen: list[faultproxy.Request] = []

    def keep(request: faultproxy.Request) -> str:
        if request.method in ("PUT", "POST"):
            seen.append(request)
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, keep) as proxy:
        client = make_client("s3", proxy.endpoint)
        objects = FastObjects(client, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
        objects.put_object(f"{prefix}/item", b'{"pk":{"S":"a"}}', "application/json", {"x": "1"})
        objects.put_object(f"{prefix}/new", b"{}", "application/json", {}, if_none_match=True)
        objects.put_object(f"{prefix}/item", b"", "application/x-tombstone", {"x": "2"})
        objects.delete_object(f"{prefix}/item")
        client.put_object(Bucket=bucket, Key=f"{prefix}/botocore", Body=b"{}")

    ours, theirs = seen[:4], seen[4]
    assert [request.method for request in seen] == ["PUT", "PUT", "PUT", "POST", "PUT"]
    for request in [*ours, theirs]:
        algorithm = request.headers["x-amz-sdk-checksum-algorithm"].lower()
        checksum = request.headers[f"x-amz-checksum-{algorithm}"]
        signed = _SIGNED.search(request.headers["authorization"]).group(1).split(";")
        assert "x-amz-sdk-checksum-algorithm" in signed
        assert f"x-amz-checksum-{algorithm}" in signed
        if algorithm == "sha256":
            assert checksum == base64.b64encode(hashlib.sha256(request.body).digest()).decode()
    assert {request.headers["x-amz-sdk-checksum-algorithm"] for request in ours} == {"SHA256"}
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/new")["Body"].read() == b"{}"


# --- what Object Lock refuses, said plainly --------------------------------------------------


def test_teardown_says_which_locked_version_it_cannot_delete(moto: str) -> None:
    """DeleteObjects answers 200 with a per-key AccessDenied for each locked version: the
    first is raised (naming the key), not left for delete_bucket's BucketNotEmpty."""
    from dynamo_backups.installer.teardown import teardown
    from tests.deployment import clients

    c = clients(moto)
    c.s3.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
    c.s3.put_object_lock_configuration(
        Bucket="vault",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": RETENTION_DAYS}},
        },
    )
    for name in ("a", "b"):
        c.s3.put_object(Bucket="vault", Key=f"Prod/Users/{name}", Body=b"{}")
    with pytest.raises(ClientError) as refused:
        teardown(c, ["Users"], "vault", "Prod", delete_bucket=True, dry_run=False)
    assert error_code(refused.value) == "AccessDenied"
    assert "(key Prod/Users/" in str(refused.value) and "1 other keys" in str(refused.value)
    assert c.s3.head_bucket(Bucket="vault")


def test_teardown_sends_again_the_keys_deletes_objects_calls_busy(moto: str) -> None:
    """Under load S3 answers DeleteObjects with a per-key SlowDown for some keys and deletes
    the others: teardown sends those keys again (by version id) instead of giving up."""
    import dataclasses
    import http.client
    from urllib.parse import urlsplit

    from dynamo_backups.installer.teardown import teardown
    from tests.deployment import clients
    from tests.moto_stack import moto_client

    c = clients(moto)
    c.s3.create_bucket(Bucket="busy")
    c.s3.put_bucket_versioning(Bucket="busy", VersioningConfiguration={"Status": "Enabled"})
    for name in ("a", "b", "c"):
        c.s3.put_object(Bucket="busy", Key=f"Prod/Users/{name}", Body=b"{}")
    c.s3.put_object(Bucket="busy", Key="Prod/Users/a", Body=b"{}")
    busy = {"left": 1}
    batches: list[int] = []

    def first_key_busy(request: faultproxy.Request) -> Any:
        if not (request.method == "POST" and "delete" in request.path.split("?", 1)[-1]):
            return faultproxy.FORWARD
        batches.append(request.body.count(b"<Object>"))
        if busy["left"] == 0:
            return faultproxy.FORWARD
        busy["left"] -= 1
        version = re.search(rb"<VersionId>([^<]+)</VersionId>", request.body).group(1)
        key = re.search(rb"<Key>([^<]+)</Key>", request.body).group(1)
        # The server deletes every other key; the answer calls the first one busy.
        body = re.sub(
            rb"<Object><Key>[^<]+</Key><VersionId>" + version + rb"</VersionId>"
            rb"</Object>",
            b"",
            request.body,
            count=1,
        )
        parts = urlsplit(moto)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("host")}
        connection.request(request.method, request.path, body=body, headers=headers)
        assert connection.getresponse().status == 200
        connection.close()
        answer = (
            '<?xml version="1.0" encoding="UTF-8"?><DeleteResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error>'
            f"<Key>{key.decode()}</Key><VersionId>{version.decode()}</VersionId>"
            "<Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            "</Error></DeleteResult>"
        ).encode()
        return faultproxy.Answer(200, {"Content-Type": "application/xml"}, answer)

    with faultproxy.FaultProxy(moto, first_key_busy) as proxy:
        through_proxy = dataclasses.replace(c, s3=moto_client(proxy.endpoint, "s3", "us-east-1"))
        teardown(through_proxy, ["Users"], "busy", "Prod", delete_bucket=True, dry_run=False)
    assert batches == [4, 1]  # the busy key alone, sent again
    assert "busy" not in [b["Name"] for b in c.s3.list_buckets()["Buckets"]]
