"""Review of backfill's conditional puts through libcurl (``aws.curl_puts``, merged as
df52e63): reproductions against the real local servers (DynamoDB Local, SeaweedFS behind the
fault proxy). Each test here fails on df52e63."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws import curl_reads
from dynamo_backups.cli import main
from tests import faultproxy
from tests.helpers import create_table

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")


def _item_puts_in_flight(
    dynamodb: Any,
    seaweedfs: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    rows: int,
    options: list[str],
) -> int:
    """The most item PUTs a backfill had in flight at once (each held 0.2 s at the proxy)."""
    table = create_table(dynamodb)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def rule(request: faultproxy.Request) -> str:
        path = request.path.split("?")[0]
        if request.method == "PUT" and f"/{table}/" in path and "/.dynamo-backups/" not in path:
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.2)
            with lock:
                state["now"] -= 1
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = CliRunner().invoke(
            main, ["backfill", table, "--bucket", bucket, "--prefix", prefix, *options]
        )
    assert result.exit_code == 0, result.output
    assert f"{rows} rows read, {rows} written" in result.output, result.output
    return state["max"]


@pytest.mark.servers
def test_concurrency_one_keeps_one_put_in_flight(
    dynamodb: Any,
    seaweedfs: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--concurrency`` is "Parallel S3 writes per worker process": with 1, the obstore path
    (DYNAMO_BACKUPS_CURL_PUTS=off) keeps one put in flight; the libcurl path keeps at least
    MIN_PUTS_IN_FLIGHT (4) per unit, times the 8 segments: up to 32."""
    monkeypatch.setenv("DYNAMO_BACKUPS_CURL_PUTS", "off")
    ordinary = _item_puts_in_flight(
        dynamodb, seaweedfs, bucket, f"{prefix}-off", monkeypatch, 60, ["--concurrency", "1"]
    )
    assert ordinary == 1
    monkeypatch.delenv("DYNAMO_BACKUPS_CURL_PUTS")
    through_curl = _item_puts_in_flight(
        dynamodb, seaweedfs, bucket, f"{prefix}-on", monkeypatch, 60, ["--concurrency", "1"]
    )
    assert through_curl <= 1, f"{through_curl} puts in flight with --concurrency 1"


@pytest.mark.servers
def test_concurrency_bounds_the_puts_in_flight(
    dynamodb: Any,
    seaweedfs: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``--concurrency 8`` (8 segments) the libcurl path keeps 4 per unit: 32 at once."""
    through_curl = _item_puts_in_flight(
        dynamodb, seaweedfs, bucket, prefix, monkeypatch, 120, ["--concurrency", "8"]
    )
    assert through_curl <= 8, f"{through_curl} puts in flight with --concurrency 8"
