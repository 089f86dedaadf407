"""The command line: help, version, the stream command end to end, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups import __version__
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.cli import main
from tests.helpers import ONCE, bodies, create_table, history, object_key


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_explains_commands_options_and_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for text in (
        "stream",
        "demo",
        "--region",
        "--profile",
        "--endpoint-url",
        "Exit codes",
        "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    ):
        assert text in result.output
    stream_help = invoke("stream", "--help").output
    for text in ("--bucket", "--prefix", "--once", "--checkpoint-dir", "Example"):
        assert text in stream_help


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_streams_client_uses_the_dynamodb_endpoint_when_only_that_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")
    assert (
        AwsContext(region="us-east-1").client("dynamodbstreams").meta.endpoint_url
        == "http://127.0.0.1:1"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", "http://127.0.0.1:2")
    assert (
        AwsContext(region="us-east-1").client("dynamodbstreams").meta.endpoint_url
        == "http://127.0.0.1:2"
    )
    assert (
        AwsContext(region="us-east-1", endpoint_url="http://127.0.0.1:3")
        .client("dynamodbstreams")
        .meta.endpoint_url
        == "http://127.0.0.1:3"
    )


@pytest.mark.servers
def test_stream_once_backs_up_and_reports_json(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1.10"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "b"}})  # a no-op: no record
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "b"}})
    result = invoke(
        "--output", "json", "stream", table, "--bucket", bucket, "--prefix", prefix, "--once"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tables"][0]["records"] == 3
    assert summary["tables"][0]["applied"] == {"INSERT": 2, "REMOVE": 1}
    assert bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "a"}}))) == [
        {"pk": {"S": "a"}, "n": {"N": "1.1"}}
    ]
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}/.dynamo-backups/{table}/layout.json")[
            "Body"
        ].read()
    )
    assert manifest["key_hash"] == "md5" and manifest["key_schema"][0]["AttributeName"] == "pk"

    again = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, "--once")
    assert again.exit_code == 0 and f"{table}: 0 records backed up" in again.stdout


@pytest.mark.servers
def test_stream_refuses_a_bucket_without_versioning(
    aws_env: dict[str, str], dynamodb: Any, s3: Any
) -> None:
    s3.create_bucket(Bucket="unversioned-bucket")
    table = create_table(dynamodb)
    result = invoke("stream", table, "--bucket", "unversioned-bucket", "--once")
    assert result.exit_code == 1
    assert "bucket unversioned-bucket has versioning Off" in result.output


@pytest.mark.servers
def test_stream_errors_name_the_table_or_bucket(
    aws_env: dict[str, str], dynamodb: Any, bucket: str
) -> None:
    missing = invoke("stream", "no-such-table", "--bucket", bucket, "--once")
    # a wrong name is bad input: exit 2 (README), said before anything is read or written
    assert missing.exit_code == 2 and "no table no-such-table" in missing.output
    no_bucket = invoke("stream", create_table(dynamodb), "--bucket", "no-such-bucket", "--once")
    assert no_bucket.exit_code == 2 and "bucket no-such-bucket does not exist" in no_bucket.output
    unstreamed = create_table(dynamodb, view_type=None)
    result = invoke("stream", unstreamed, "--bucket", bucket, "--once")
    # the user's to fix (exit 2), with how to turn the stream on
    assert result.exit_code == 2 and f"table {unstreamed} has no stream" in result.output
    assert "dynamo-backups deploy" in result.output
    bad_name = invoke("stream", "a/b", "--bucket", bucket, "--once")
    assert bad_name.exit_code == 2 and "not a DynamoDB table name" in bad_name.output


def test_demo_runs_end_to_end_in_well_under_a_minute() -> None:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "dynamo_backups.cli.entry", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "Validate Functionality" in out
    assert "Prod/" in out and "ExampleTableWithStream/" in out
    assert "DELETE MARKER" in out and "REMOVE" in out and "MODIFY" in out
    assert elapsed < 60


@pytest.mark.servers
def test_stream_fails_when_the_bucket_refuses_writes(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, seaweedfs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that cannot write must exit non-zero with the reason, never look done."""
    from tests import faultproxy

    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    s3.create_bucket(Bucket="refusing-bucket")
    s3.put_bucket_versioning(
        Bucket="refusing-bucket", VersioningConfiguration={"Status": "Enabled"}
    )

    def refuse_puts(request: faultproxy.Request) -> str:
        # The items go in; saving the checkpoint fails, inside the consumer's thread.
        failing = request.method == "PUT" and "/checkpoints/" in request.path
        return faultproxy.INTERNAL_ERROR if failing else faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, refuse_puts) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = invoke("stream", table, "--bucket", "refusing-bucket", "--once")
    assert result.exit_code == 1
    assert "checkpoints" in result.output and "InternalError" in result.output


@pytest.mark.servers
def test_global_options_work_after_the_command_name_too(
    dynamodb: Any, seaweedfs: Any, bucket: str, prefix: str, aws_env: Any, monkeypatch: Any
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    result = invoke(
        "stream",
        table,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        *ONCE,
        "--output",
        "json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["tables"]  # --output json, given after the command
    assert report["records"] == 1

    # Without the S3 endpoint variable, --endpoint-url after the command is what finds it.
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    found = invoke(
        "history",
        table,
        '{"pk": {"S": "a"}}',
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--endpoint-url",
        seaweedfs.endpoint,
        "--region",
        "us-east-1",
    )
    assert found.exit_code == 0, found.output
    assert "(1 version, newest first)" in found.output
