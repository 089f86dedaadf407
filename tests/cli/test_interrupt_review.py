"""Hostile review of Ctrl-C handling (branch 'interrupt'): the CLI as a real subprocess against
DynamoDB Local and SeaweedFS, SIGINT at moments the branch's own tests do not reach."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.cli.test_interrupt import (
    cli,
    environment,
    filled_table,
    interrupt_when,
)

pytestmark = pytest.mark.servers

ROWS = 2000


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def backfilled(env: dict[str, str], table: str, bucket: str, prefix: str) -> None:
    done = subprocess.run(
        cli("backfill", table, "--bucket", bucket, "--prefix", prefix),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_ctrl_c_while_a_restore_waits_for_its_rate_is_no_write_error(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The restore's write threads wait on the rate limiter, whose sleep raises ``Cancelled``
    once Ctrl-C is pressed; ``_guarded_write`` takes it for a failed write: the batch is logged
    as 'items could not be written', its keys saved as unwritten, the unit marked fatal."""
    source = filled_table(dynamodb, ROWS)
    env = environment(aws_env)
    backfilled(env, source, bucket, prefix)
    target = f"{source}-restored"

    def restoring() -> bool:
        try:
            return bool(dynamodb.scan(TableName=target, Limit=50, Select="COUNT")["Count"])
        except dynamodb.exceptions.ResourceNotFoundException:
            return False

    stopped, _ = interrupt_when(
        cli(
            "restore",
            bucket,
            f"{prefix}/{source}",
            target,
            "--max-items-per-second",
            "100",
            "--partitions",
            "16",
        ),
        env,
        restoring,
    )
    assert stopped.returncode == 130, stopped.stderr
    assert "could not be written" not in stopped.stderr, stopped.stderr
    assert "Cancelled" not in stopped.stderr, stopped.stderr


DELETED = 400  # rows the stream deleted after the scan read them


def latest_states(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """Each object's current state ("item", "tombstone" or "marker") and its number of
    versions (delete markers included)."""
    states: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
            if version["IsLatest"]:
                kind = "tombstone" if version["Size"] == 0 else "item"
                states[version["Key"]] = (kind, 0)
        for marker in page.get("DeleteMarkers", []):
            counts[marker["Key"]] = counts.get(marker["Key"], 0) + 1
            if marker["IsLatest"]:
                states[marker["Key"]] = ("marker", 0)
    return {key: (state, counts[key]) for key, (state, _) in states.items()}


def table_with_rows_the_stream_deleted(
    env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> tuple[str, set[str]]:
    """A backed-up table of ROWS rows whose first DELETED rows the stream deleted after a
    scan had read them: in the bucket, a version then a delete marker; in the table, the row
    (as the backfill's scan saw it). Returns the table and the deleted rows' object keys."""
    from dynamo_backups.core.keys import object_name

    table = filled_table(dynamodb, 0)
    backfilled(env, table, bucket, prefix)  # the folder and its manifest, table still empty
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": f"row-{index:05d}"}, "n": {"N": str(index)}}}}
        for index in range(ROWS)
    ]
    for start in range(0, ROWS, 25):
        batch = {table: requests[start : start + 25]}
        while batch:
            batch = dynamodb.batch_write_item(RequestItems=batch).get("UnprocessedItems") or {}
    deleted = set()
    for index in range(DELETED):
        key = f"{prefix}/{table}/" + object_name({"pk": {"S": f"row-{index:05d}"}})
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"pk": {"S": "x"}}')
        s3.delete_object(Bucket=bucket, Key=key)
        deleted.add(key)
    return table, deleted


def backfill_quit_in_the_removal_check(
    env: dict[str, str], s3: Any, bucket: str, prefix: str, table: str
) -> tuple[list[str], str]:
    """Backfill ``table``; Ctrl-C once 800 rows are current, again as soon as it says it
    checks its writes against deletions. Its command line and its stderr."""
    command = cli(
        "backfill",
        table,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--segments",
        "2",
        "--max-items-per-second",
        "250",
    )
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    checking = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "checking the rows written so far against deletions" in line:
                checking.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    items = f"{prefix}/{table}/"
    try:
        deadline = time.monotonic() + 120
        while sum(state == "item" for state, _ in latest_states(s3, bucket, items).values()) < 800:
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert checking.wait(60), "".join(lines)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = "".join(lines)
    assert process.returncode == 130, stderr
    assert "quitting at once" in stderr, stderr
    return command, stderr


@pytest.mark.parametrize("after", [0.15, 0.3])
def test_ctrl_c_at_start_up_is_no_traceback(after: float) -> None:
    """Ctrl-C while the command is still starting (importing boto3, building the command):
    before ``install_interrupt_handler`` runs, Python's own KeyboardInterrupt applies."""
    process = subprocess.Popen(
        cli("backfill", "Users", "--bucket", "backups"),
        env={**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 130, stderr


CTRL_C_WHILE_BUILDING = """
import importlib, sys
real = importlib.import_module
def interrupted(name, *args, **kwargs):
    if name == "dynamo_backups.cli.backfill":
        raise KeyboardInterrupt  # Ctrl-C while click imports the command's module
    return real(name, *args, **kwargs)
importlib.import_module = interrupted
from dynamo_backups.cli import main
sys.argv = ["dynamo-backups", "backfill", "Users", "--bucket", "backups"]
main()
"""


def test_ctrl_c_while_the_command_module_is_imported_exits_130() -> None:
    """Commands are imported when used (cli.COMMANDS), inside click, which turns Ctrl-C into
    its Abort: that is a Ctrl-C (exit 130, one line), not click's "Aborted!" with exit 1."""
    import sys

    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_BUILDING], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "interrupted before the command started", result.stderr
