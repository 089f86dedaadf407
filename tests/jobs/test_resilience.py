"""Every AWS call is retried: with the first attempt of every distinct request reset by a
proxy in front of SeaweedFS and DynamoDB Local, backfill, stream, restore, verify and history
still complete; a server that never answers is one error line, never a traceback."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests import faultproxy
from tests.conftest import unique_table_name
from tests.helpers import ONCE, create_table, scan_all

pytestmark = pytest.mark.servers


def first_attempts_reset() -> faultproxy.Rule:
    """Reset the connection of the first attempt of every distinct request."""
    seen: set[tuple[str, str, str]] = set()
    lock = threading.Lock()

    def rule(request: faultproxy.Request) -> str:
        identity = (request.method, request.path, request.headers.get("x-amz-target", ""))
        with lock:
            if identity in seen:
                return faultproxy.FORWARD
            seen.add(identity)
        return faultproxy.RESET

    return rule


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_one_reset_on_any_call_never_fails_a_command(
    aws_env: Any,
    dynamodb_local: Any,
    seaweedfs: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    for index in range(12):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "n": {"N": "1"}})
    with (
        faultproxy.FaultProxy(seaweedfs.endpoint, first_attempts_reset()) as s3_proxy,
        faultproxy.FaultProxy(dynamodb_local.endpoint, first_attempts_reset()) as ddb_proxy,
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_proxy.endpoint)
        target = unique_table_name("resilient")
        for command in (
            ["backfill", table, "--bucket", bucket, "--prefix", prefix],
            [
                "stream",
                table,
                "--bucket",
                bucket,
                "--prefix",
                prefix,
                *ONCE,
            ],
            ["restore", bucket, f"{prefix}/{table}", target],
            ["verify", table, "--bucket", bucket, "--prefix", prefix],
            ["history", table, '{"pk": "k3"}', "--bucket", bucket, "--prefix", prefix],
        ):
            result = invoke(*command)
            assert result.exit_code == 0, (command, result.output)
        faults = len(s3_proxy.log.faults) + len(ddb_proxy.log.faults)
    # Every kind of call met a reset: versioning, documents, listings, HEADs, puts, reads,
    # DescribeTable, Scan, BatchWriteItem, GetRecords ...
    assert faults > 60
    kinds = {path.split("?", 1)[-1] for _, _, path in s3_proxy.log.faults if "?" in path}
    assert {"versioning"} <= {kind.split("&")[0].split("=")[0] for kind in kinds}
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)


def test_a_server_that_never_answers_is_one_error_line(
    aws_env: Any,
    seaweedfs: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    with faultproxy.FaultProxy(seaweedfs.endpoint, lambda _: faultproxy.RESET) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "versioning of bucket" in line and "gave up after" in line
