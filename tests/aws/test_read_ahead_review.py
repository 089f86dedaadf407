"""Review probes of restore's reads ahead (aws.curl_reads)."""

from __future__ import annotations

import hashlib
import sys
import threading
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import CredentialRetrievalError
from click.testing import CliRunner

from dynamo_backups.aws import curl_reads
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.reading import iter_versions
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from tests import faultproxy, servers
from tests.aws.test_read_ahead import _objects, _read_ahead, _read_all
from tests.helpers import create_table

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")


def _as_sse_kms(s3: Any, bucket: str) -> faultproxy.Rule:
    """Answers the reads ahead as S3 answers a GET of an SSE-KMS object: the version's body
    and metadata, its ETag 32 hex digits that are not the body's MD5."""

    def rule(request: faultproxy.Request) -> Any:
        if not _read_ahead(request) or request.method != "GET":
            return faultproxy.FORWARD
        path, _, query = request.path.partition("?")
        key = path.split("/", 2)[2]
        version_id = query.split("versionId=", 1)[1]
        answer = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)
        body = answer["Body"].read()
        headers = {f"x-amz-meta-{name}": value for name, value in answer["Metadata"].items()}
        headers["ETag"] = '"' + hashlib.md5(b"ciphertext" + body).hexdigest() + '"'
        headers["x-amz-server-side-encryption"] = "aws:kms"
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = "arn:aws:kms:us-east-1:1:key/k"
        headers["x-amz-version-id"] = version_id
        return faultproxy.Answer(200, headers, body)

    return rule


@pytest.mark.servers
def test_reads_ahead_of_an_sse_kms_bucket_are_used(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    objects = _objects(seaweedfs.endpoint, bucket)
    for index in range(3):
        body = f'{{"pk":{{"S":"k{index}"}}}}'.encode()
        objects.put_object(f"{prefix}/k{index}", body, "application/json", {"writer": "stream"})
    versions = list(iter_versions(objects, f"{prefix}/"))
    with faultproxy.FaultProxy(seaweedfs.endpoint, _as_sse_kms(s3, bucket)) as proxy:
        ahead = _objects(proxy.endpoint, bucket).read_ahead(4)
        assert ahead is not None
        wanted = [(n, v.key, v.version_id, v.size) for n, v in enumerate(versions)]
        results = _read_all(ahead, wanted)
    for number, version in enumerate(versions):
        assert results[number] == objects.read_object(version.key, version.version_id)
    assert ahead.failures == 0
    ahead.close()


class _FlakyCredentials:
    """A credential source whose refresh fails once (STS throttled, IMDS slow to answer),
    as botocore's RefreshableCredentials raises within its mandatory refresh window."""

    def __init__(self) -> None:
        self.calls = 0

    def get_frozen_credentials(self) -> Credentials:
        self.calls += 1
        if self.calls == 1:
            raise CredentialRetrievalError(provider="assume-role", error_msg="Throttling")
        return Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


@pytest.mark.servers
def test_a_failed_credentials_refresh_is_a_read_not_read_ahead(
    seaweedfs: Any, bucket: str, prefix: str
) -> None:
    objects = _objects(seaweedfs.endpoint, bucket)
    objects.put_object(f"{prefix}/k", b'{"pk":{"S":"k"}}', "application/json", {"a": "b"})
    (version,) = iter_versions(objects, f"{prefix}/")
    source = _FlakyCredentials()
    ahead = FastObjects(objects.s3, bucket, source).read_ahead(2)
    assert ahead is not None
    assert ahead.start(1, version.key, version.version_id, version.size)
    results = {}
    while len(ahead):
        results.update(ahead.finished(1.0))
    assert results[1] in (None, (b'{"pk":{"S":"k"}}', {"a": "b"}))
    assert results[1] is None or source.calls == 2
    ahead.close()


class _FlakyForReadsAhead:
    """Credentials whose refresh fails once, the first time the reads ahead ask for them;
    every other ask (the listing's, obstore's) is answered."""

    def __init__(self) -> None:
        self.failed = False

    def get_frozen_credentials(self) -> Credentials:
        asker = sys._getframe(1).f_code.co_filename
        if not self.failed and asker.endswith("curl_reads.py"):
            self.failed = True
            raise CredentialRetrievalError(provider="assume-role", error_msg="Throttling")
        return Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


@pytest.mark.servers
def test_a_selection_outlives_one_failed_credentials_refresh(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, aws_env: Any
) -> None:
    source = create_table(dynamodb)
    for index in range(20):
        dynamodb.put_item(TableName=source, Item={"pk": {"S": f"k{index}"}})
    runner = CliRunner()
    backfill = runner.invoke(main, ["backfill", source, "--bucket", bucket, "--prefix", prefix])
    assert backfill.exit_code == 0, backfill.output
    credentials = _FlakyForReadsAhead()
    reader = FastObjects(s3, bucket, credentials)
    found: list[Any] = []
    lock = threading.Lock()

    def consume(selected: Any) -> None:
        with lock:
            found.append(selected.item)

    items = BackupItems(reader, bucket, TableLayout.of(prefix, source), ["pk"])
    items.for_each(consume)
    assert credentials.failed  # the reads ahead asked, and were refused once
    assert sorted(item["pk"]["S"] for item in found) == sorted(f"k{n}" for n in range(20))
