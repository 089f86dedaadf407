"""Ctrl-C on a restore whose every BatchWriteItem is throttled: its write threads sit in
backoff waits (up to 20 s each, 15 tries), which must end at once on the cancel token, so the
command stops within seconds, and ``--resume`` then restores the table exactly."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest

from tests.cli.test_interrupt import (
    STOP_WITHIN,
    cli,
    environment,
    filled_table,
    interrupt_when,
    resume_line,
)
from tests.faultproxy import FORWARD, THROTTLE, FaultProxy, Request
from tests.helpers import make_backfill, scan_all

pytestmark = pytest.mark.servers

ROWS = 1000
THROTTLED_FOR = 5.0  # seconds of throttling before Ctrl-C: the backoffs have grown by then


def test_ctrl_c_ends_a_throttled_restores_backoff_at_once_and_resume_is_exact(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    source = filled_table(dynamodb, ROWS)
    assert make_backfill(dynamodb, s3, bucket, prefix, source, total_segments=2).run().complete
    target = f"{source}-restored"
    throttled_since: list[float] = []
    throttling = threading.Event()

    def rule(request: Request) -> str:
        batch = "BatchWriteItem" in request.headers.get("x-amz-target", "")
        return THROTTLE if batch and throttling.is_set() else FORWARD

    def throttled_a_while() -> bool:
        if not throttling.is_set():
            try:
                count = dynamodb.scan(TableName=target, Limit=5, Select="COUNT")["Count"]
            except dynamodb.exceptions.ResourceNotFoundException:
                return False
            if count:
                throttling.set()
                throttled_since.append(time.monotonic())
            return False
        return time.monotonic() - throttled_since[0] >= THROTTLED_FOR

    command = cli(
        "restore",
        bucket,
        f"{prefix}/{source}",
        target,
        "--partitions",
        "16",
        "--workers",
        "2",
        "--max-items-per-second",
        "100",
    )
    env = environment(aws_env)
    with FaultProxy(aws_env["AWS_ENDPOINT_URL_DYNAMODB"], rule) as proxy:
        proxied = {**env, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint}
        stopped, took = interrupt_when(command, proxied, throttled_a_while)
    assert stopped.returncode == 130, stopped.stderr
    assert took < STOP_WITHIN, f"took {took:.1f} s to stop after Ctrl-C\n{stopped.stderr}"
    assert "Traceback" not in stopped.stderr and "could not be written" not in stopped.stderr
    assert len(scan_all(dynamodb, target)) < ROWS  # stopped midway

    resumed = subprocess.run(
        resume_line(stopped.stderr), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert scan_all(dynamodb, target) == scan_all(dynamodb, source)
