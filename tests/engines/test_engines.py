"""Every bulk command on --engine processes and --engine spark (local[2]) against DynamoDB
Local and SeaweedFS: the same objects, the same table and the same report as on threads; a
unit killed mid-way is done again on --resume, nothing duplicated or lost; one rate budget
for all the worker processes."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.engines.processes import ProcessEngine
from dynamo_backups.engines.spark import SparkEngine
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotOptions
from dynamo_backups.jobs.verify import Verify
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.helpers import (
    EDGE_ITEM,
    create_table,
    make_backfill,
    restore_job,
    scan_all,
)

pytestmark = pytest.mark.servers

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(scope="module")
def spark(dynamodb_local: servers.Server, seaweedfs: servers.Server) -> Iterator[SparkEngine]:
    """One local Spark for the module. Its Python workers start with the environment Spark
    started with, so the servers' endpoints are set first (and removed at the end: each test
    sets its own)."""
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_local.endpoint
    os.environ["AWS_ENDPOINT_URL_S3"] = seaweedfs.endpoint
    engine = SparkEngine("local[2]")
    engine.session.sparkContext.setLogLevel("ERROR")
    yield engine
    engine.close()
    for name in ENDPOINT_VARIABLES:
        os.environ.pop(name, None)


@pytest.fixture(params=["processes", "spark"])
def engine(request: pytest.FixtureRequest) -> Any:
    chosen = request.getfixturevalue("spark") if request.param == "spark" else ProcessEngine(2)
    request.getfixturevalue("aws_env")  # after Spark's start: its teardown must not keep it
    return chosen


def key(index: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"p{index % 9}"},
        "sk": {"N": f"{index}.0000000000000000000000000000001"},
    }


def filled_table(dynamodb: Any, rows: int = 80) -> str:
    table = create_table(dynamodb, [("pk", "S"), ("sk", "N")], view_type=None)
    for index in range(rows):
        item = {**EDGE_ITEM, **key(index), "bin": {"B": bytes([index, 0, 255])}}
        dynamodb.put_item(TableName=table, Item=item)
    return table


def folder_state(s3: Any, bucket: str, items_prefix: str) -> dict[str, list[Any]]:
    """Each object name with its versions' bodies (and writer, event), newest first."""
    state: dict[str, list[Any]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=items_prefix
    ):
        for version in page.get("Versions", []):
            answer = s3.get_object(
                Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
            )
            metadata = answer["Metadata"]
            state.setdefault(version["Key"][len(items_prefix) :], []).append(
                (answer["Body"].read(), metadata.get("writer"), metadata.get("event-name"))
            )
        assert not page.get("DeleteMarkers")
    return state


def counts(report: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(report, name) for name in names}


def test_backfill_writes_on_any_engine_what_it_writes_on_threads(
    engine: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = filled_table(dynamodb)
    threads = make_backfill(dynamodb, s3, bucket, f"{prefix}-t", table, total_segments=4).run()
    other = make_backfill(
        dynamodb, s3, bucket, f"{prefix}-e", table, aws=AwsContext(), total_segments=4
    ).run(engine)
    names = ("scanned", "written", "already_backed_up", "failed", "segments_done", "units")
    assert counts(other, *names) == counts(threads, *names)
    assert other.complete and other.written == 80
    expected = folder_state(s3, bucket, f"{prefix}-t/{table}/")
    assert folder_state(s3, bucket, f"{prefix}-e/{table}/") == expected
    assert all(len(versions) == 1 for versions in expected.values())


def backed_up(dynamodb: Any, s3: Any, bucket: str, prefix: str, rows: int = 80) -> str:
    table = filled_table(dynamodb, rows)
    assert make_backfill(dynamodb, s3, bucket, prefix, table, total_segments=2).run().complete
    return table


def test_restore_on_any_engine_rebuilds_the_table_as_threads_do(
    engine: Any, dynamodb_local: servers.Server, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up(dynamodb, s3, bucket, prefix)
    folder = f"{prefix}/{table}"
    on_threads, on_engine = unique_table_name("rt"), unique_table_name("re")
    threads = restore_job(dynamodb_local.endpoint, s3, bucket, folder, on_threads).run()
    other = restore_job(
        dynamodb_local.endpoint, s3, bucket, folder, on_engine, aws=AwsContext()
    ).run(engine)
    names = ("objects", "written", "absent", "invalid", "unwritten", "complete")
    assert counts(other, *names) == counts(threads, *names)
    assert (
        scan_all(dynamodb, on_engine) == scan_all(dynamodb, on_threads) == scan_all(dynamodb, table)
    )


def test_verify_and_snapshot_on_any_engine_report_what_threads_report(
    engine: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up(dynamodb, s3, bucket, prefix, rows=40)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "new"}, "sk": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key=key(1))
    dynamodb.put_item(TableName=table, Item={**key(0), "changed": {"BOOL": True}})
    folder = open_folder(s3, bucket, prefix, table)
    key_schema = dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]

    def verify(on: Any, aws: AwsContext | None) -> Any:
        writer = BackupWriter(s3, bucket)
        api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
        job = Verify(
            api.call,
            key_schema,
            writer,
            BotocoreObjects(s3, bucket),
            folder.layout,
            segments=3,
            aws=aws,
        )
        return job.run(on)

    threads, other = verify(None, None), verify(engine, AwsContext())
    assert not other.errors, other.errors
    names = ("items_in_table", "objects_in_backup", "missing", "extra", "different", "samples")
    assert counts(other, *names) == counts(threads, *names)
    assert (other.missing, other.extra, other.different) == (1, 1, 1)
    assert not other.unfinished_units

    def snapshot(on: Any, where: str, aws: AwsContext | None) -> Any:
        job = Snapshot(
            s3,
            BotocoreObjects(s3, bucket),
            folder,
            f"s3://{bucket}/{prefix}-{where}",
            SnapshotOptions(partitions=16),
            aws=aws,
        )
        return job.run(on)

    by_threads, by_engine = snapshot(None, "t", None), snapshot(engine, "e", AwsContext())
    assert counts(by_engine, "items", "absent", "complete") == counts(
        by_threads, "items", "absent", "complete"
    )
    assert [entry["items"] for entry in by_engine.files] == [
        entry["items"] for entry in by_threads.files
    ]
    assert exported(s3, bucket, by_engine.files) == exported(s3, bucket, by_threads.files)


def exported(s3: Any, bucket: str, files: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for entry in files:
        body = s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read()
        lines.extend(gzip.decompress(body).decode().splitlines())
    return sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines)


# --- killed workers ------------------------------------------------------------------------


def kill_workers_at(target: str, number: int) -> tuple[faultproxy.Rule, dict[str, int]]:
    """A proxy rule that kills every worker process when the ``number``th ``target`` call
    goes by (it is still forwarded: the worker dies with its answer in flight)."""
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


def test_a_backfill_whose_workers_are_killed_resumes_without_losing_or_doubling(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = filled_table(dynamodb, rows=60)
    rule, seen = kill_workers_at("Scan", 5)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = make_backfill(
            dynamodb, s3, bucket, prefix, table, aws=AwsContext(), total_segments=3, page_size=5
        ).run(ProcessEngine(2))
    assert seen["killed"] >= 1 and not first.complete and first.unfinished_units
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    resumed = make_backfill(
        dynamodb,
        s3,
        bucket,
        prefix,
        table,
        aws=AwsContext(),
        total_segments=3,
        page_size=5,
        resume=True,
    ).run(ProcessEngine(2))
    assert resumed.complete and sorted(resumed.segments_done) == [0, 1, 2]
    state = folder_state(s3, bucket, f"{prefix}/{table}/")
    assert len(state) == 60  # nothing lost
    assert all(len(versions) == 1 for versions in state.values())  # nothing written twice


def test_a_restore_whose_workers_are_killed_resumes_into_the_same_table(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = backed_up(dynamodb, s3, bucket, prefix, rows=120)
    target = unique_table_name("killed")
    folder = f"{prefix}/{table}"
    rule, seen = kill_workers_at("BatchWriteItem", 3)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = restore_job(
            proxy.endpoint, s3, bucket, folder, target, aws=AwsContext(), partitions=16
        ).run(ProcessEngine(2))
    assert seen["killed"] >= 1 and first.unfinished_units and not first.complete
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    resumed = restore_job(
        dynamodb_local.endpoint,
        s3,
        bucket,
        folder,
        target,
        aws=AwsContext(),
        partitions=16,
        resume=True,
    ).run(ProcessEngine(2))
    assert resumed.complete, resumed
    assert resumed.objects == 120  # every unit's objects, the first run's done units included
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)


# --- one rate budget -------------------------------------------------------------------------


def take_tokens(unit: WorkUnit, context: UnitContext) -> UnitResult:
    """A unit that takes 150 items' worth of the budget, 10 at a time."""
    started = time.monotonic()
    for _ in range(15):
        context.limiter.acquire(10)
    result = UnitResult(unit.id)
    result.outputs = [{"started": started, "ended": time.monotonic()}]
    return result


def test_worker_processes_share_one_rate_budget() -> None:
    units = [WorkUnit("rate", str(number)) for number in range(2)]
    results = ProcessEngine(2).run(take_tokens, units, 100.0, _Ignore())
    spans = [result.outputs[0] for result in results]
    elapsed = max(span["ended"] for span in spans) - min(span["started"] for span in spans)
    # 300 items at 100/s, the first second's worth at once: 2 s together; 0.5 s each alone.
    assert elapsed >= 1.8, elapsed


class _OneSlotAtStart(SparkEngine):
    """The module's Spark (2 task slots) as a cluster that had 1 slot when the stage began
    and gained more while it ran (dynamic allocation)."""

    def __init__(self, spark: SparkEngine) -> None:
        super().__init__()
        self._session = spark.session

    @property
    def slots(self) -> int:
        return 1

    def close(self) -> None:
        pass  # the module's session


def test_spark_keeps_the_rate_budget_when_more_slots_appear_than_at_the_start(
    spark: SparkEngine,
) -> None:
    units = [WorkUnit("rate", str(number)) for number in range(4)]
    results = _OneSlotAtStart(spark).run(take_tokens, units, 100.0, _Ignore())
    spans = [result.outputs[0] for result in results]
    elapsed = max(span["ended"] for span in spans) - min(span["started"] for span in spans)
    # 600 items at 100/s with one second's worth at once: at least 5 s, whatever runs them
    # (split by the slot seen at the start, two slots would take them in 2.5 s).
    assert elapsed >= 4.5, elapsed


def test_spark_tasks_with_a_budget_are_fixed_by_the_job_not_the_executors() -> None:
    engine = SparkEngine(workers=4)
    assert engine.rate_plan(64, 100.0) == (4, 25.0)
    assert engine.rate_plan(2, 100.0) == (2, 50.0)
    assert engine.rate_plan(64, None) == (64, None)


class _Ignore:
    def advance(self, count: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def begin_units(self, total: int, done: int = 0, label: str = "units") -> None:
        pass

    def unit_done(self) -> None:
        pass
