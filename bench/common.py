"""Shared pieces of the benchmarks: local servers, clients, and the servers' own ceiling."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import servers

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CEILING = REPO.parent / "shared" / "bench" / "ceiling"
SERVER_PIDS: dict[str, int] = {}
"""Process ids of the servers ``local_servers`` started, by service, to read their CPU use."""


@contextmanager
def local_servers(dynamodb: bool = True, s3: bool = True) -> Iterator[dict[str, str]]:
    """Start the test servers and yield their endpoints; stopped on exit."""
    started = []
    try:
        endpoints = {}
        if s3:
            started.append(servers.start_seaweedfs())
            endpoints["s3"] = started[-1].endpoint
            SERVER_PIDS["seaweedfs"] = started[-1].process.pid
        if dynamodb:
            started.append(servers.start_dynamodb_local())
            endpoints["dynamodb"] = started[-1].endpoint
            SERVER_PIDS["dynamodb_local"] = started[-1].process.pid
        yield endpoints
    finally:
        for server in started:
            server.stop()
        SERVER_PIDS.clear()


def client(service: str, endpoint: str, pool: int = 64, attempts: int = 3) -> Any:
    return servers.make_client(
        service,
        endpoint,
        max_pool_connections=pool,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process (all its threads) has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_node(command: list[str], endpoints: dict[str, str], **extra: str) -> dict[str, Any]:
    """Run a Node measuring program against the servers; its last line of output, as JSON."""
    environment = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
        AWS_REGION=servers.REGION,
        **extra,
    )
    if "s3" in endpoints:
        environment["AWS_ENDPOINT_URL_S3"] = endpoints["s3"]
    if "dynamodb" in endpoints:
        environment["AWS_ENDPOINT_URL_DYNAMODB"] = endpoints["dynamodb"]
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=900, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_ceiling(endpoints: dict[str, str], only: str, *extra: str) -> dict[str, Any] | None:
    """Run ../shared/bench/ceiling (a lean Node client) against the same servers, or return
    None with a note when it is not there."""
    script = Path(os.environ.get("DYNAMO_BACKUPS_CEILING", DEFAULT_CEILING))
    if not script.exists():
        print(f"note: no ceiling script at {script}; set DYNAMO_BACKUPS_CEILING")
        return None
    return _run_node([str(script), "--only", only, *extra], endpoints)


def ratio(part: float, whole: float | None) -> float | None:
    return round(part / whole, 2) if whole else None


def _run_node_reference(
    program: str, endpoints: dict[str, str], *arguments: str
) -> dict[str, Any] | None:
    """Run one of bench/'s Node reference programs with the ceiling's SDK cache."""
    cache = Path(os.environ.get("CEILING_CACHE", Path.home() / ".cache" / "s3-ddb-ceiling"))
    if not (cache / "node_modules" / "aws-sdk").exists():
        print("note: the ceiling's Node SDK is not cached yet; run the ceiling first")
        return None
    return _run_node(
        ["node", str(REPO / "bench" / program), *arguments],
        endpoints,
        NODE_PATH=str(cache / "node_modules"),
    )


def measure_conditional_ceiling(endpoints: dict[str, str]) -> dict[str, Any] | None:
    """Plain and conditional (If-None-Match) put rates of the S3 server, in a versioned bucket,
    with the same lean Node client as the ceiling script (bench/conditional_put.mjs)."""
    return _run_node_reference("conditional_put.mjs", {"s3": endpoints["s3"]})


def measure_restore_reference(
    endpoints: dict[str, str], bucket: str, folder: str, table: str, key: str
) -> dict[str, Any] | None:
    """The same restore (latest) done by the ceiling's lean Node client, without checks
    (bench/restore_reference.mjs): what the servers allow for this workload on this machine."""
    return _run_node_reference(
        "restore_reference.mjs",
        endpoints,
        *("--bucket", bucket, "--prefix", f"{folder}/", "--table", table, "--key", key),
    )
