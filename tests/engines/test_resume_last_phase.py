"""A job's last phase after a resume on another process's units: restore --delete-absent on
--engine processes whose workers are killed mid-way deletes, on --resume, only what the
backup lacked (the units the killed attempt finished count as kept, though they ran in
processes that are gone). DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.helpers import create_table, make_backfill, scan_all

pytestmark = pytest.mark.servers

ROWS = 120


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def kill_workers_at(target: str, number: int) -> tuple[faultproxy.Rule, dict[str, int]]:
    """Kills every worker process when the ``number``th ``target`` call goes by (it is still
    forwarded: the workers die with its answer in flight)."""
    seen = {"calls": 0, "killed": 0}

    def rule(request: faultproxy.Request) -> str:
        if request.headers.get("x-amz-target", "").endswith(target):
            seen["calls"] += 1
            if seen["calls"] == number:
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                    seen["killed"] += 1
        return faultproxy.FORWARD

    return rule, seen


def recorded_units(s3: Any, bucket: str, prefix: str, table: str) -> list[str]:
    jobs = f"{prefix}/.dynamo-backups/{table}/jobs/restore-into-{table}/"
    keys = [
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=jobs)
        for entry in page.get("Contents", [])
    ]
    return [key for key in keys if "/units/" in key]


def test_delete_absent_resumed_on_processes_after_killed_workers_deletes_only_the_absent(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    backup = scan_all(dynamodb, table)
    for index in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"extra{index}"}})
    args = [
        "--output",
        "json",
        "restore",
        bucket,
        f"{prefix}/{table}",
        table,
        "--into-existing",
        "--delete-absent",
        "--engine",
        "processes",
        "--workers",
        "2",
        "--unwritten-keys",
        str(tmp_path / "unwritten.jsonl"),
    ]
    rule, seen = kill_workers_at("BatchWriteItem", 9)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*args)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert seen["killed"] >= 1 and first.exit_code == 1, first.output
    assert json.loads(first.stdout)["unfinished_units"]
    assert 0 < len(recorded_units(s3, bucket, prefix, table)) < 16  # some units were done
    assert len(scan_all(dynamodb, table)) == ROWS + 5  # an incomplete run deletes nothing

    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["deleted_absent"] == 5 and report["objects"] == ROWS, report
    assert scan_all(dynamodb, table) == backup
