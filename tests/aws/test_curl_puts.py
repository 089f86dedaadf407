"""Backfill's conditional puts through libcurl (``aws.curl_puts``): the request obstore
sends, signed as S3 requires, with the same conditional meaning; anything but a 200 or a 412
is put again the ordinary way, so that nothing is lost or counted twice."""

from __future__ import annotations

import base64
import hashlib
import http.client
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import CredentialRetrievalError
from click.testing import CliRunner

from dynamo_backups.aws import curl_puts, curl_reads
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.reading import iter_versions
from dynamo_backups.backup.writer import ALREADY_THERE, BackupWriter, FirstAttempt
from dynamo_backups.cli import main
from dynamo_backups.core.layout import (
    EVENT_SNAPSHOT,
    ITEM_CONTENT_TYPE,
    WRITER_BACKFILL,
    VersionMetadata,
    utc_now,
)
from tests import faultproxy, servers
from tests.helpers import FixedCredentials, create_table

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
METADATA = VersionMetadata(WRITER_BACKFILL, EVENT_SNAPSHOT, utc_now(), None, "md5")


def _objects(endpoint: str, bucket: str, credentials: Credentials = CREDENTIALS) -> FastObjects:
    s3 = servers.make_client("s3", endpoint)
    return FastObjects(s3, bucket, FixedCredentials(credentials))


def _curl(request: faultproxy.Request) -> bool:
    return "pycurl" in request.headers.get("user-agent", "")


def _name(request: faultproxy.Request) -> str:
    return request.path.split("?")[0].rsplit("/", 1)[1]


def _signed(request: faultproxy.Request) -> list[str]:
    return request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.mark.servers
def test_what_a_conditional_put_sends(seaweedfs: Any, bucket: str, prefix: str) -> None:
    """The headers obstore's conditional put sends, with the same values, each one signed;
    the payload's SHA-256 signed and sent as its checksum, the session token signed."""
    answer = faultproxy.Answer(200, {"x-amz-version-id": "v-1", "ETag": '"e"'})
    body = b'{"pk":{"S":"k"},"n":{"N":"1.50"}}'
    with faultproxy.FaultProxy(seaweedfs.endpoint, lambda request: answer) as proxy:
        with_token = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY, "the-session-token")
        writer = BackupWriter(None, bucket, objects=_objects(proxy.endpoint, bucket, with_token))
        puts = writer.item_puts(2)
        assert puts is not None
        attempts = puts.put_items_if_absent([(f"{prefix}/k", body)], METADATA)
        puts.close()
        assert attempts == [FirstAttempt(True, "v-1")]
        assert writer.put_item_if_absent(f"{prefix}/k", body, METADATA) == "v-1"
        sent, ordinary = proxy.log.requests
    assert _curl(sent) and "obstore" in ordinary.headers["user-agent"]
    assert sent.method == ordinary.method == "PUT"
    assert sent.path == ordinary.path == f"/{bucket}/{prefix}/k"
    digest = hashlib.sha256(body).digest()
    assert sent.headers["x-amz-content-sha256"] == digest.hex()
    assert sent.headers["x-amz-checksum-sha256"] == base64.b64encode(digest).decode()
    assert sent.headers["content-length"] == str(len(body))
    assert sent.headers["x-amz-security-token"] == "the-session-token"
    assert "expect" not in sent.headers
    ordinary_signed = set(_signed(ordinary))
    assert set(_signed(sent)) == ordinary_signed | {"x-amz-security-token"}
    for name in ordinary_signed - {"x-amz-date", "authorization"}:
        assert sent.headers[name] == ordinary.headers[name], name
    assert sent.headers["if-none-match"] == "*"
    assert sent.headers["content-type"] == ITEM_CONTENT_TYPE
    assert {n for n in ordinary_signed if n.startswith("x-amz-meta-")} == {
        f"x-amz-meta-{name}" for name in METADATA.to_s3()
    }
    authorization = sent.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{servers.REGION}/s3/aws4_request" in authorization


@pytest.mark.servers
def test_conditional_puts_write_what_obstore_writes(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A new key is written, its version as the obstore path writes it (body, content type,
    metadata, checksum); a key that has a current object is refused and left as it was."""
    writer = BackupWriter(s3, bucket, objects=_objects(seaweedfs.endpoint, bucket))
    body = b'{"pk":{"S":"k"},"b":{"B":"AAE="}}'
    assert writer.put_item_if_absent(f"{prefix}/there", b'{"pk":{"S":"old"}}', METADATA)
    puts = writer.item_puts(4)
    assert puts is not None
    attempts = puts.put_items_if_absent(
        [(f"{prefix}/curl", body), (f"{prefix}/there", body)], METADATA
    )
    assert attempts[1] == ALREADY_THERE
    assert attempts[0].settled and attempts[0].version
    assert puts.put_items_if_absent([(f"{prefix}/curl", body)], METADATA) == [ALREADY_THERE]
    puts.close()
    assert writer.put_item_if_absent(f"{prefix}/obstore", body, METADATA)

    versions = {(v.key, v.version_id) for v in iter_versions(writer.objects, f"{prefix}/")}
    assert len(versions) == 3  # one each: nothing written over the refused keys
    assert (f"{prefix}/curl", attempts[0].version) in versions
    there = s3.get_object(Bucket=bucket, Key=f"{prefix}/there")
    assert there["Body"].read() == b'{"pk":{"S":"old"}}'
    heads = []
    for name in ("curl", "obstore"):
        head = s3.head_object(Bucket=bucket, Key=f"{prefix}/{name}", ChecksumMode="ENABLED")
        got = s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}")
        assert got["Body"].read() == body
        heads.append(
            {
                field: head.get(field)
                for field in ("ContentType", "Metadata", "ContentLength", "ETag", "ChecksumSHA256")
            }
        )
    assert heads[0] == heads[1]
    assert heads[0]["ContentType"] == ITEM_CONTENT_TYPE
    assert heads[0]["Metadata"] == METADATA.to_s3()


def test_puts_this_path_cannot_spell_are_left_to_the_ordinary_path() -> None:
    def put(key: str, value: str = "1") -> curl_puts.Put:
        return (key, b"{}", ITEM_CONTENT_TYPE, {"writer": value})

    assert curl_puts.sendable(put("prefix/table/0123abcd"))
    for odd in (
        put("pre fix/table/k"),
        put("prefix+x/table/k"),
        put("prefix/../table/k"),
        put("prefix/table/k", "two  spaces"),
        put("prefix/table/k", " leading"),
        put("prefix/table/k", "naïve"),
        ("prefix/table/k", b"{}", ITEM_CONTENT_TYPE, {"Upper": "1"}),
    ):
        assert not curl_puts.sendable(odd), odd


def _send_upstream(upstream: str, request: faultproxy.Request) -> None:
    """The request as the proxy would have forwarded it (its answer then lost)."""
    address = urlsplit(upstream)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(request.method, request.path, request.body, request.headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


@pytest.mark.servers
def test_a_backfill_through_failed_puts_loses_nothing(
    dynamodb: Any,
    seaweedfs: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Puts through libcurl that fail (reset, 500, 503) or whose answer is lost after S3
    wrote them are put again through obstore: every item written once, each counted once
    (the lost answer's item as already backed up: its retry meets its own write)."""
    table = create_table(dynamodb)
    for index in range(40):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "n": {"N": "1"}})
    faults: dict[int, str] = {3: faultproxy.RESET, 8: faultproxy.INTERNAL_ERROR}
    faults[13] = faultproxy.SLOW_DOWN
    lost = 21
    seen: list[str] = []  # each item once, in the order its first libcurl attempt came

    def rule(request: faultproxy.Request) -> str:
        if request.method != "PUT" or not _curl(request) or "/.dynamo-backups/" in request.path:
            return faultproxy.FORWARD
        name = _name(request)
        first = name not in seen
        if first:
            seen.append(name)
        # By item, not by request: libcurl itself sends a request again once when a reused
        # connection dies before any answer, and that copy must meet the same fault.
        number = seen.index(name) + 1
        if number == lost:
            if first:
                _send_upstream(seaweedfs.endpoint, request)
            return faultproxy.RESET
        return faults.get(number, faultproxy.FORWARD)

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = CliRunner().invoke(
            main, ["backfill", table, "--bucket", bucket, "--prefix", prefix]
        )
        requests = list(proxy.log.requests)
    assert result.exit_code == 0, result.output
    assert len(seen) == 40  # every item's first attempt went through libcurl
    failed = {seen[number - 1] for number in (*faults, lost)}
    ordinary = [
        _name(r)
        for r in requests
        if r.method == "PUT" and "obstore" in r.headers.get("user-agent", "")
    ]
    assert sorted(ordinary) == sorted(failed)  # put again, those only
    versions = list(iter_versions(_objects(seaweedfs.endpoint, bucket), f"{prefix}/{table}/"))
    assert len(versions) == 40 == len({v.key for v in versions})  # each once
    assert "40 rows read, 39 written, 1 already in the backup, 0 deletions kept, 0 failed" in (
        result.output
    )


@pytest.mark.servers
def test_a_prefix_outside_plain_characters_backfills_through_obstore(
    dynamodb: Any, seaweedfs: Any, bucket: str, prefix: str, aws_env: Any, monkeypatch: Any
) -> None:
    table = create_table(dynamodb)
    for index in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    odd = f"{prefix}+odd"
    with faultproxy.FaultProxy(seaweedfs.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = CliRunner().invoke(main, ["backfill", table, "--bucket", bucket, "--prefix", odd])
        requests = list(proxy.log.requests)
    assert result.exit_code == 0, result.output
    assert not [r for r in requests if _curl(r)]
    versions = list(iter_versions(_objects(seaweedfs.endpoint, bucket), f"{odd}/{table}/"))
    assert len(versions) == 5


@pytest.mark.servers
def test_puts_through_libcurl_are_given_up_after_failures(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """After a few failed first attempts (over every unit of the run), no more are sent:
    a server in trouble is not sent each put twice."""
    with faultproxy.FaultProxy(seaweedfs.endpoint, lambda r: faultproxy.SLOW_DOWN) as proxy:
        writer = BackupWriter(s3, bucket, objects=_objects(proxy.endpoint, bucket))
        puts = writer.item_puts(2)
        assert puts is not None
        items = [(f"{prefix}/k{index}", b"{}") for index in range(30)]
        assert puts.put_items_if_absent(items, METADATA) == [FirstAttempt(False)] * 30
        puts.close()
        sent = len(proxy.log.requests)
        assert writer.item_puts(2) is None  # given up for the run
    assert curl_reads.FAILURES_TO_GIVE_UP <= sent < curl_reads.FAILURES_TO_GIVE_UP + 2


@pytest.mark.servers
def test_conditional_puts_into_an_object_lock_bucket(moto_session: str) -> None:
    """An Object Lock bucket with a default retention accepts them (it refuses a put
    without a checksum), and holds each under that retention."""
    s3 = servers.make_client("s3", moto_session)
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    writer = BackupWriter(s3, bucket, objects=_objects(moto_session, bucket))
    puts = writer.item_puts(2)
    assert puts is not None
    attempts = puts.put_items_if_absent([("p/a", b'{"a":1}'), ("p/b", b'{"b":2}')], METADATA)
    puts.close()
    assert all(attempt.settled and attempt.version for attempt in attempts), attempts
    for key, attempt in zip(("p/a", "p/b"), attempts, strict=True):
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=attempt.version)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["Metadata"] == METADATA.to_s3()


class _FlakyForCurl:
    """Credentials whose refresh fails once, the first time libcurl's path asks for them."""

    def __init__(self) -> None:
        self.failed = False

    def get_frozen_credentials(self) -> Credentials:
        asker = sys._getframe(1).f_code.co_filename
        if not self.failed and asker.endswith("curl_reads.py"):
            self.failed = True
            raise CredentialRetrievalError(provider="assume-role", error_msg="Throttling")
        return CREDENTIALS


@pytest.mark.servers
def test_a_failed_credentials_refresh_leaves_the_put_to_the_ordinary_path(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = _FlakyForCurl()
    writer = BackupWriter(s3, bucket, objects=FastObjects(s3, bucket, credentials))
    puts = writer.item_puts(1)
    assert puts is not None
    attempts = puts.put_items_if_absent([(f"{prefix}/a", b"{}"), (f"{prefix}/b", b"{}")], METADATA)
    puts.close()
    assert credentials.failed
    assert attempts[0] == FirstAttempt(False) and attempts[1].settled and attempts[1].version
    monkeypatch.setenv("DYNAMO_BACKUPS_CURL_PUTS", "off")
    assert writer.item_puts(1) is None  # the documented switch
