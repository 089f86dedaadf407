"""Hostile review of resume-absent: what a killed driver's worker processes do.

``--resume`` assumes the interrupted attempt is over. On ``--engine processes`` the driver is
killed (SIGKILL: the OOM killer, a lost SSH session with kill -9, a pod evicted); its spawned
workers are not its process group's leader's business once it is gone, and they go on: they
finish the unit in hand, write its kept-name chunks and record it, and take the next queued
unit. A resume started at once therefore runs the same units concurrently with them, which
``test_a_concurrent_resume_of_the_same_run_mixes_kept_name_chunks_and_deletes_backed_up_items``
(tests/jobs/test_review_resume_absent.py) shows deletes items the backup holds.
DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import faultproxy, servers
from tests.helpers import create_table, make_backfill, scan_all

pytestmark = pytest.mark.servers

ROWS = 40


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def unit_records(s3: Any, bucket: str, prefix: str, source: str, target: str) -> set[str]:
    jobs = f"{prefix}/.dynamo-backups/{source}/jobs/restore-into-{target}/"
    return {
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=jobs)
        for entry in page.get("Contents", [])
        if "/units/" in entry["Key"]
    }


def test_workers_of_a_killed_driver_go_on_writing_and_recording_units(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    source = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=source, Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}})
    assert make_backfill(dynamodb, s3, bucket, prefix, source).run().complete
    target = create_table(dynamodb, view_type=None)

    writes: list[float] = []
    lock = threading.Lock()

    def slow_writes(request: faultproxy.Request) -> str:
        if request.headers.get("x-amz-target", "").endswith("BatchWriteItem"):
            with lock:
                writes.append(time.monotonic())
            time.sleep(1.0)  # a unit's write takes a while: the kill finds units in hand
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(dynamodb_local.endpoint, slow_writes) as proxy:
        environment = {
            **os.environ,
            "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        }
        command = [
            sys.executable,
            "-m",
            "dynamo_backups.cli.entry",
            "--output",
            "json",
            "restore",
            bucket,
            f"{prefix}/{source}",
            target,
            "--into-existing",
            "--delete-absent",
            "--engine",
            "processes",
            "--workers",
            "2",
            "--write-concurrency",
            "1",
            "--unwritten-keys",
            str(tmp_path / "unwritten.jsonl"),
        ]
        driver = subprocess.Popen(command, env=environment, cwd=tmp_path)
        orphans: list[int] = []
        try:
            deadline = time.monotonic() + 90
            while len(writes) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(writes) >= 3, "the restore never wrote"
            orphans = children_of(driver.pid)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(10)
            killed_at = time.monotonic()
            records_at_kill = unit_records(s3, bucket, prefix, source, target)
            time.sleep(6)
            survivors = [pid for pid in orphans if alive(pid)]
            with lock:
                later_writes = [t for t in writes if t > killed_at + 0.5]
            later_records = unit_records(s3, bucket, prefix, source, target) - records_at_kill
        finally:
            for pid in orphans:  # only the processes this test's driver started
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert not later_writes and not later_records, (
        f"after the driver was killed, {len(survivors)} of its {len(orphans)} children were "
        f"still alive 6 s later; they sent {len(later_writes)} BatchWriteItem calls and "
        f"recorded {len(later_records)} units: "
        f"{json.dumps(sorted(k.rsplit('/', 1)[1] for k in later_records))}"
    )


WRAPPER = """
import dynamo_backups.jobs.restore_absent as restore_absent

restore_absent.CHUNK_LINES = 3  # spawned workers run this too (as __mp_main__)

if __name__ == "__main__":
    from dynamo_backups.cli.entry import main

    main()
"""


def test_workers_killed_after_writing_some_chunks_resume_to_the_uninterrupted_table(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Control (expected to pass): workers SIGKILLed after some of their units' kept-name
    chunks are written and before those units are recorded; the resume rewrites them from
    chunk 0 and its record lists only its own. One unit (--partitions 1) of 40 names in
    chunks of 3 (patched in the workers
    through the main script): the kill lands after its 5th chunk of 14."""
    source = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=source, Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}})
    assert make_backfill(dynamodb, s3, bucket, prefix, source).run().complete
    from tests.jobs.test_restore_resume import copy_table

    target = copy_table(dynamodb, source)
    for index in range(3):
        dynamodb.put_item(TableName=target, Item={"pk": {"S": f"x{index}"}, "v": {"N": "0"}})
    script = tmp_path / "wrapped.py"
    script.write_text(WRAPPER)
    state = {"chunks": 0, "killed": 0}
    driver: dict[str, Any] = {}

    def kill_at_fifth_chunk(request: faultproxy.Request) -> str:
        if request.method == "PUT" and "/scratch/kept-names/" in request.path:
            state["chunks"] += 1
            if state["chunks"] == 5 and "pid" in driver:
                for pid in children_of(driver["pid"]):
                    os.kill(pid, signal.SIGKILL)
                    state["killed"] += 1
        return faultproxy.FORWARD

    command = [sys.executable, str(script), "--output", "json", "restore", bucket]
    command += [f"{prefix}/{source}", target, "--into-existing", "--delete-absent"]
    command += ["--engine", "processes", "--workers", "2", "--partitions", "1"]
    command += ["--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with faultproxy.FaultProxy(seaweedfs.endpoint, kill_at_fifth_chunk) as proxy:
        first = subprocess.Popen(
            command,
            env={**environment, "AWS_ENDPOINT_URL_S3": proxy.endpoint},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        driver["pid"] = first.pid
        _, err = first.communicate(timeout=180)
    assert first.returncode == 1 and state["killed"] >= 1, (state, err[-2000:])
    assert len(scan_all(dynamodb, target)) == ROWS + 3  # no delete pass after a failure
    resumed = subprocess.run(
        [*command, "--resume"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["deleted_absent"] == 3
    assert scan_all(dynamodb, target) == scan_all(dynamodb, source)


def test_a_driver_killed_during_the_delete_pass_resumes_to_the_uninterrupted_table(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Control (expected to pass): the driver is SIGKILLed as its delete pass sends its
    first deletes; the resume runs no unit, reads every unit's kept names and deletes the
    rest, no more."""
    from tests.jobs.test_restore_resume import copy_table

    source = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=source, Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}})
    assert make_backfill(dynamodb, s3, bucket, prefix, source).run().complete
    target = copy_table(dynamodb, source)
    for index in range(60):
        dynamodb.put_item(TableName=target, Item={"pk": {"S": f"x{index}"}, "v": {"N": "0"}})
    driver: dict[str, Any] = {}
    state = {"deletes": 0}

    def kill_at_first_delete(request: faultproxy.Request) -> str:
        batch = request.headers.get("x-amz-target", "").endswith("BatchWriteItem")
        if batch and b"DeleteRequest" in request.body and "pid" in driver:
            state["deletes"] += 1
            if state["deletes"] == 1:
                os.kill(driver["pid"], signal.SIGKILL)
        return faultproxy.FORWARD

    command = [sys.executable, "-m", "dynamo_backups.cli.entry", "--output", "json", "restore"]
    command += [bucket, f"{prefix}/{source}", target, "--into-existing", "--delete-absent"]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with faultproxy.FaultProxy(dynamodb_local.endpoint, kill_at_first_delete) as proxy:
        first = subprocess.Popen(
            command,
            env={**environment, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        driver["pid"] = first.pid
        first.wait(180)
    assert first.returncode == -signal.SIGKILL and state["deletes"] >= 1
    assert len(scan_all(dynamodb, target)) > ROWS  # killed before its deletes were done
    resumed = subprocess.run(
        [*command, "--resume"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert scan_all(dynamodb, target) == scan_all(dynamodb, source)
