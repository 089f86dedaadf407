"""Fixtures: real local servers for the whole session, fresh tables and folders per test."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import servers
from tests.moto_stack import moto_server
from tests.servers import make_client

_names = itertools.count()

# The modules whose tests take longest (tens of seconds to minutes each, mostly waiting on
# clocks: DynamoDB Local's minute, S3's second, leases), run first: the xdist workers share
# them out at the start (scripts/test hands tests out two at a time, --maxschedchunk 2)
# instead of one worker finishing the run alone with the last of them.
SLOW_FIRST = [
    "tests/jobs/test_pitr_property.py",
    "tests/test_invariants.py",
    "tests/jobs/test_journal_replay_verify.py",
    "tests/backup/test_lease_review.py",
    "tests/test_bench_journal.py",
    "tests/jobs/test_journal_compact_restore.py",
    "tests/cli/test_interrupt.py",
    "tests/backup/test_leases.py",
    "tests/jobs/test_journal_readers.py",
    "tests/jobs/test_journal_restore_options.py",
    "tests/installer/test_artifacts.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow modules first, in SLOW_FIRST's order; every other test in its usual order."""
    rank = {path: index for index, path in enumerate(SLOW_FIRST)}

    def module_rank(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(SLOW_FIRST))

    items.sort(key=module_rank)  # stable: the order within a module is kept


@pytest.fixture(scope="session", autouse=True)
def _test_credentials() -> Iterator[None]:
    """The tests' AWS settings; nothing here may reach a real AWS account."""
    saved = {name: os.environ.get(name) for name in _AWS_VARIABLES}
    for name in _AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
        AWS_DEFAULT_REGION=servers.REGION,
        AWS_REGION=servers.REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        DYNAMO_BACKUPS_WHEEL_CACHE=str(servers.cache_dir() / "wheels"),
    )
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


_AWS_VARIABLES = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "AWS_ENDPOINT_URL_DYNAMODBSTREAMS",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_CA_BUNDLE",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "DYNAMO_BACKUPS_TRANSPORT",
    "DYNAMO_BACKUPS_WHEEL_CACHE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
]


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[servers.Server]:
    server = servers.start_dynamodb_local()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[servers.Server]:
    server = servers.start_seaweedfs()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dynamodb(dynamodb_local: servers.Server) -> Any:
    return make_client("dynamodb", dynamodb_local.endpoint)


@pytest.fixture(scope="session")
def streams(dynamodb_local: servers.Server) -> Any:
    return make_client("dynamodbstreams", dynamodb_local.endpoint)


@pytest.fixture(scope="session")
def s3(seaweedfs: servers.Server) -> Any:
    return make_client("s3", seaweedfs.endpoint, max_pool_connections=64)


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    """One versioned bucket for the session; each test works under its own prefix."""
    name = "dynamo-backups-tests"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=name, Key="warm-up", Body=b"x")  # the first write can stall
    return name


@pytest.fixture
def prefix() -> str:
    return f"t{next(_names)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def journal_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: Any, bucket: str, prefix: str) -> str:
    """The Lambda handler's environment for a function installed with --layout journal."""
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    return prefix


@pytest.fixture(scope="session")
def moto_session() -> Iterator[str]:
    """moto for the services the local servers do not serve (Lambda, SQS, CloudWatch), kept
    for the session; tests that need it empty start their own."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(
    dynamodb_local: servers.Server,
    seaweedfs: servers.Server,
    moto_session: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Endpoint variables pointing the CLI at the local servers (and moto for Lambda, which
    stream asks for triggers that already back a table up)."""
    variables = {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint,
        "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
        "AWS_ENDPOINT_URL_LAMBDA": moto_session,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def unique_table_name(stem: str = "table") -> str:
    return f"{stem}-{next(_names)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def moto() -> Iterator[str]:
    """A fresh, empty moto server for one test (the installer's own account)."""
    with moto_server() as endpoint:
        yield endpoint
