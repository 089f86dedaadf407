"""Ctrl-C on a bulk command, as a user presses it: the CLI as a real subprocess against
DynamoDB Local and SeaweedFS, SIGINT sent once work has visibly started. The command must stop
within seconds, exit 130, print the command line that resumes it, and that command must end
the job exactly: every row backed up once, the restored table equal to the backup."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.helpers import create_table, lambda_records, scan_all
from tests.pipeline.test_journal_writes import journal_manifest

pytestmark = pytest.mark.servers

ROWS = 4000
STOP_WITHIN = 15.0  # seconds from SIGINT to exit, on a busy 2-core test machine


def filled_table(dynamodb: Any, rows: int = ROWS) -> str:
    table = create_table(dynamodb, [("pk", "S")], view_type=None)
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": f"row-{index:05d}"}, "n": {"N": str(index)}}}}
        for index in range(rows)
    ]
    for start in range(0, rows, 25):
        batch = {table: requests[start : start + 25]}
        while batch:
            batch = dynamodb.batch_write_item(RequestItems=batch).get("UnprocessedItems") or {}
    return table


# SIGINT as a terminal gives it: a test runner in the background ignores it, and Python then
# leaves it ignored in the commands it starts.
WITH_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "


def cli(*arguments: str) -> list[str]:
    """The command line as a subprocess whose Ctrl-C works."""
    run = "import runpy, sys; sys.argv[0] = 'dynamo-backups'; "
    run += "runpy.run_module('dynamo_backups.console', run_name='__main__')"
    return [sys.executable, "-c", WITH_SIGINT + run, *arguments]


def environment(aws_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}


def interrupt_when(
    command: list[str], env: dict[str, str], started: Callable[[], bool]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command``, send SIGINT once ``started()`` holds; its outcome and how long it took
    to exit after the signal."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the work never started"
            time.sleep(0.2)
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), took


def resume_line(stderr: str) -> list[str]:
    """The command line the interrupted command printed, as arguments for this interpreter."""
    found = re.search(r"to continue: (dynamo-backups .*)", stderr)
    assert found, stderr
    arguments = shlex.split(found.group(1))
    assert arguments[0] == "dynamo-backups" and "--resume" in arguments
    return cli(*arguments[1:])


def versions_under(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def objects_under(s3: Any, bucket: str, prefix: str) -> int:
    return int(s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0))


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_ctrl_c_stops_a_backfill_and_resume_finishes_it_exactly(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str, engine: str
) -> None:
    table = filled_table(dynamodb)
    items = f"{prefix}/{table}/"
    command = cli(
        "backfill",
        table,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--segments",
        "2",
        "--engine",
        engine,
        "--workers",
        "2",
        "--max-items-per-second",
        "250",
    )
    env = environment(aws_env)
    stopped, took = interrupt_when(command, env, lambda: objects_under(s3, bucket, items) >= 100)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{stopped.stderr}"
    assert "Traceback" not in stopped.stderr
    assert re.search(r"\d+ of 2 units \(segment\) done and recorded", stopped.stderr)
    assert re.search(r"run \d{8}T\d{6}Z-[0-9a-f]{8} of job backfill", stopped.stderr)
    written_before = versions_under(s3, bucket, items)
    assert 0 < len(written_before) < ROWS

    resumed = subprocess.run(
        [*resume_line(stopped.stderr), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the run" in resumed.stderr  # not a fresh run from the start
    versions = versions_under(s3, bucket, items)
    assert len(versions) == ROWS and set(versions.values()) == {1}  # each row once


@pytest.fixture(scope="module")
def backed_up(
    dynamodb: Any, dynamodb_local: Any, seaweedfs: Any, moto_session: str, bucket: str
) -> tuple[str, str]:
    """A filled table and the prefix of its backup, made by the CLI once for the tests that
    interrupt a job reading them (restore, verify, snapshot): none of them changes either."""
    table = filled_table(dynamodb)
    prefix = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    endpoints = {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint,
        "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
        "AWS_ENDPOINT_URL_LAMBDA": moto_session,
    }
    backfilled = subprocess.run(
        cli("backfill", table, "--bucket", bucket, "--prefix", prefix),
        env=environment(endpoints),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backfilled.returncode == 0, backfilled.stderr
    return table, prefix


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_ctrl_c_stops_a_restore_and_resume_restores_the_whole_backup(
    aws_env: dict[str, str], dynamodb: Any, bucket: str, backed_up: tuple[str, str], engine: str
) -> None:
    source, prefix = backed_up
    env = environment(aws_env)
    target = f"{source}-restored-{engine}"
    command = cli(
        "restore",
        bucket,
        f"{prefix}/{source}",
        target,
        "--max-items-per-second",
        "400",
        "--partitions",
        "16",
        "--engine",
        engine,
        "--workers",
        "2",
    )

    def restoring() -> bool:
        try:
            return bool(dynamodb.scan(TableName=target, Limit=50, Select="COUNT")["Count"])
        except dynamodb.exceptions.ResourceNotFoundException:
            return False

    stopped, took = interrupt_when(command, env, restoring)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{stopped.stderr}"
    assert "Traceback" not in stopped.stderr
    assert re.search(r"\d+ of 16 units \(partition\) done and recorded", stopped.stderr)
    assert len(scan_all(dynamodb, target)) < ROWS

    resumed = subprocess.run(
        resume_line(stopped.stderr), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert scan_all(dynamodb, target) == scan_all(dynamodb, source)


def test_ctrl_c_stops_a_verify_and_resume_compares_the_rest(
    aws_env: dict[str, str], s3: Any, bucket: str, backed_up: tuple[str, str]
) -> None:
    table, prefix = backed_up
    env = environment(aws_env)
    jobs = f"{prefix}/.dynamo-backups/{table}/jobs/verify/"
    command = cli("verify", table, "--bucket", bucket, "--prefix", prefix, "--partitions", "256")

    def comparing() -> bool:  # a unit of the compare stage is recorded
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=jobs)
        return any("/units/compare-" in entry["Key"] for entry in listed.get("Contents", []))

    stopped, took = interrupt_when(command, env, comparing)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{stopped.stderr}"
    assert "Traceback" not in stopped.stderr
    found = re.search(r"(\d+) of 256 units \(compare\) done and recorded", stopped.stderr)
    assert found and 0 < int(found.group(1)) < 256, stopped.stderr

    resumed = subprocess.run(
        [*resume_line(stopped.stderr), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the run" in resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["items_in_table"] == ROWS and report["objects_in_backup"] == ROWS


def test_ctrl_c_stops_a_snapshot_and_resume_writes_every_item_once(
    aws_env: dict[str, str], s3: Any, bucket: str, backed_up: tuple[str, str]
) -> None:
    table, prefix = backed_up
    env = environment(aws_env)
    jobs = f"{prefix}/.dynamo-backups/{table}/jobs/snapshot-"
    destination = f"s3://{bucket}/{prefix}-snapshot"
    command = cli(
        "snapshot", bucket, f"{prefix}/{table}", "--to", destination, "--partitions", "256"
    )

    def snapshotting() -> bool:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=jobs)
        return any("/units/partition-" in entry["Key"] for entry in listed.get("Contents", []))

    stopped, took = interrupt_when(command, env, snapshotting)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{stopped.stderr}"
    assert re.search(r"\d+ of 256 units \(partition\) done and recorded", stopped.stderr)

    resumed = subprocess.run(
        [*resume_line(stopped.stderr), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["items"] == ROWS
    assert sum(entry["items"] for entry in report["files"]) == ROWS


SECOND_PRESS = """
import sys, time
from dynamo_backups.cli.interrupt import install_interrupt_handler
install_interrupt_handler()
try:
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("cleaning up", flush=True)  # a job's slow way out: a second press must not wait
    time.sleep(60)
sys.exit(0)
"""


def test_a_second_ctrl_c_quits_at_once() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT + SECOND_PRESS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        line = process.stdout.readline().strip()
        assert line == "cleaning up", (line, process.communicate())
        process.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - signalled < 5
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Ctrl-C again to quit at once" in stderr and "quitting at once" in stderr


def test_the_resume_line_repeats_the_command_with_resume_once() -> None:
    from dynamo_backups.cli.interrupt import resume_command

    assert resume_command(["backfill", "T", "--bucket", "b c"]) == (
        "dynamo-backups backfill T --bucket 'b c' --resume"
    )
    assert resume_command(["restore", "b", "f", "t", "--resume"]).count("--resume") == 1


def test_ctrl_c_stops_a_repair_waiting_for_dynamodbs_clock(
    aws_env: dict[str, str], dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """verify --repair waits until DynamoDB's clock passes the backup's deciding change (up
    to a minute: a change can be dated that far ahead). That wait slept through Ctrl-C: the
    command went on for the rest of it before it stopped."""
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, table, "items")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}, "v": {"N": "1"}})
    (record,) = lambda_records(dynamodb, streams, table)
    record["eventSourceARN"] = record["eventSourceARN"].replace(":ddblocal:", ":us-east-1:")
    ahead = datetime.now(UTC) + timedelta(seconds=45)  # within the minute a repair waits out
    record["dynamodb"]["ApproximateCreationDateTime"] = ahead.timestamp()
    assert not BackupApplier(BackupWriter(s3, bucket), prefix).apply([record]).failures
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "x"}, "v": {"N": "2"}})  # to repair
    jobs = f"{prefix}/.dynamo-backups/{table}/jobs/verify/"
    command = cli("verify", table, "--bucket", bucket, "--prefix", prefix, "--repair")

    def waiting() -> bool:  # the other partitions' compare units are recorded
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=jobs)
        if not any("/units/compare-" in entry["Key"] for entry in listed.get("Contents", [])):
            return False
        time.sleep(1)
        return True

    stopped, took = interrupt_when(command, environment(aws_env), waiting)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop\n{stopped.stderr}"
    assert "Traceback" not in stopped.stderr
