"""A job's last phase after a resume, where units ran in other processes: restore
--delete-absent on --engine processes whose workers are killed mid-way deletes, on --resume,
only what the backup lacked (the units the killed attempt finished count as kept, though they
ran in processes that are gone); verify resumed on Spark after an attempt on processes
compares against a scan it can read, and never against what a killed attempt left.
DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.engines.processes import ProcessEngine
from dynamo_backups.jobs.verify import Verify, item_digest
from tests import faultproxy, servers
from tests.engines.test_engines import spark  # noqa: F401 (the module's local Spark)
from tests.helpers import create_table, expected_name, make_backfill, scan_all

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


# --- verify: the compare after the scan, resumed on Spark ----------------------------------


def refuse_listing(prefix: str) -> faultproxy.Rule:
    """S3 refuses (for good: AccessDenied) every listing of ``prefix``."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        query = parse_qs(urlsplit(request.path).query)
        if request.method == "GET" and query.get("prefix") == [prefix]:
            return ACCESS_DENIED
        return faultproxy.FORWARD

    return rule


ACCESS_DENIED = faultproxy.Answer(
    403,
    {"Content-Type": "application/xml"},
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Access Denied</Message></Error>",
)


def verify_job(dynamodb: Any, s3: Any, bucket: str, prefix: str, table: str) -> Verify:
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    folder = open_folder(s3, bucket, prefix, table)
    return Verify(
        api.call,
        dynamodb.describe_table(TableName=table)["Table"]["KeySchema"],
        BackupWriter(s3, bucket),
        BotocoreObjects(s3, bucket),
        folder.layout,
        segments=3,
        partitions=16,
        resume=True,
        aws=AwsContext(),
    )


def name_in(partition: str, stem: str) -> dict[str, Any]:
    """A key whose object name starts with ``partition``."""
    return next(
        key
        for index in range(10_000)
        if expected_name(key := {"pk": {"S": f"{stem}{index}"}}).startswith(partition)
    )


def test_verify_resumed_on_spark_finds_what_the_first_attempts_scan_saw(
    spark: Any,  # noqa: F811 (the fixture imported above)
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first attempt ran on processes (its spill on local disk, gone with it) and one
    compare unit failed; the resumed run on Spark must scan again into S3, and read only the
    chunks its scan units recorded, not what a killed attempt left."""
    table = create_table(dynamodb, view_type=None)
    for index in range(40):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    changed = {"pk": {"S": "k5"}}
    partition = expected_name(changed)[0]
    missing = name_in(partition, "new")
    dynamodb.put_item(TableName=table, Item={**missing, "v": {"N": "1"}})  # not in the backup
    items_prefix = f"{prefix}/{table}/"

    with faultproxy.FaultProxy(seaweedfs.endpoint, refuse_listing(items_prefix + partition)) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        first = verify_job(dynamodb, s3, bucket, prefix, table).run(ProcessEngine(2))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    assert first.unfinished_units == [f"compare-{partition}"], first.errors
    assert first.missing == 0  # the partition holding it was not compared

    # What a scan attempt killed half-way on Spark leaves in the run's spill: a chunk of the
    # table as it was then (k5 as the backup has it).
    run = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}/.dynamo-backups/{table}/jobs/verify/run.json")[
            "Body"
        ].read()
    )
    old = {**changed, "v": {"N": "5"}}
    name = expected_name(changed)
    etag = s3.head_object(Bucket=bucket, Key=items_prefix + name)["ETag"].strip('"')
    line = f"{name}\t{item_digest(old)}\t{etag}\t{json.dumps(changed)}\n"
    stale = (
        f"{prefix}/.dynamo-backups/{table}/jobs/verify/{run['run_id']}/scratch/spill/"
        f"{partition}/scan-s3-2-of-3-000001.tsv.gz"
    )
    s3.put_object(Bucket=bucket, Key=stale, Body=gzip.compress(line.encode()))
    dynamodb.put_item(TableName=table, Item={**changed, "v": {"N": "555"}})  # not backed up

    resumed = verify_job(dynamodb, s3, bucket, prefix, table).run(spark)
    assert not resumed.errors and not resumed.unfinished_units, resumed.errors
    assert (resumed.missing, resumed.different, resumed.extra) == (1, 1, 0), resumed.samples
    assert resumed.samples["missing"] == [json.dumps(missing, separators=(",", ":"))]
    assert resumed.samples["different"] == [json.dumps(changed, separators=(",", ":"))]
