"""Reading ahead through libcurl (``aws.curl_reads``): the same bodies and metadata as the
ordinary read, signed as botocore signs, and any read that does not come back whole read
again the ordinary way, so that a restore through it is exact whatever goes wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

import pytest
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups.aws import curl_reads
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.reading import iter_versions
from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.helpers import FixedCredentials, create_table, scan_all

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _objects(endpoint: str, bucket: str, credentials: Credentials = CREDENTIALS) -> FastObjects:
    s3 = servers.make_client("s3", endpoint)
    return FastObjects(s3, bucket, FixedCredentials(credentials))


def _read_all(ahead: Any, wanted: list[tuple[Hashable, str, str, int]]) -> dict[Hashable, Any]:
    for tag, key, version_id, size in wanted:
        assert ahead.start(tag, key, version_id, size)
    results: dict[Hashable, Any] = {}
    while len(ahead):
        results.update(ahead.finished(1.0))
    return results


@pytest.mark.servers
def test_reads_ahead_are_the_ordinary_reads(seaweedfs: Any, bucket: str, prefix: str) -> None:
    objects = _objects(seaweedfs.endpoint, bucket)
    for index in range(6):
        for change in range(2):
            body = f'{{"pk":{{"S":"k{index}"}},"n":{{"N":"{change}.50"}}}}'.encode()
            metadata = {"writer": "stream", "sequence-number": f"{index:05d}{change}"}
            objects.put_object(f"{prefix}/k{index}", body, "application/json", metadata)
    versions = list(iter_versions(objects, f"{prefix}/"))
    assert len(versions) == 12
    gone = versions[0]
    objects.s3.delete_object(Bucket=bucket, Key=gone.key, VersionId=gone.version_id)

    ahead = objects.read_ahead(4)
    assert ahead is not None
    wanted = [(number, v.key, v.version_id, v.size) for number, v in enumerate(versions)]
    results = _read_all(ahead, wanted)

    heads = [(-n, v.key, v.version_id, v.size) for n, v in enumerate(versions) if n]
    heads.append(("gone", gone.key, gone.version_id, gone.size))
    for tag, key, version_id, _size in heads:
        assert ahead.start(tag, key, version_id, 0, head=True)
    while len(ahead):
        results.update(ahead.finished(1.0))

    assert results[0] is None and results["gone"] is None  # deleted since it was listed
    for number, version in enumerate(versions[1:], start=1):
        assert results[number] == objects.read_object(version.key, version.version_id)
        metadata = objects.head_object(version.key, version.version_id)
        assert metadata and results[-number] == (b"", metadata)
    assert ahead.failures == 0  # a version gone is no failure
    ahead.close()


@pytest.mark.servers
def test_a_body_not_as_listed_is_no_read(seaweedfs: Any, bucket: str, prefix: str) -> None:
    objects = _objects(seaweedfs.endpoint, bucket)
    objects.put_object(f"{prefix}/one", b'{"pk":{"S":"one"}}', "application/json", {})
    (version,) = iter_versions(objects, f"{prefix}/")
    ahead = objects.read_ahead(2)
    assert ahead is not None
    assert not ahead.start("odd", f"{prefix}/one two", version.version_id, version.size)
    results = _read_all(ahead, [("short", version.key, version.version_id, version.size + 1)])
    assert results == {"short": None}
    assert ahead.failures == 1


@pytest.mark.servers
def test_an_answer_whose_etag_is_not_the_listed_one_is_no_read(
    seaweedfs: Any, bucket: str, prefix: str
) -> None:
    objects = _objects(seaweedfs.endpoint, bucket)
    objects.put_object(f"{prefix}/one", b'{"pk":{"S":"one"}}', "application/json", {})
    (version,) = iter_versions(objects, f"{prefix}/")
    ahead = objects.read_ahead(2)
    assert ahead is not None
    for tag, etag in (("listed", version.etag), ("other", '"' + "0" * 32 + '"')):
        assert ahead.start(tag, version.key, version.version_id, version.size, False, etag)
    results: dict[Hashable, Any] = {}
    while len(ahead):
        results.update(ahead.finished(1.0))
    assert results["listed"] == objects.read_object(version.key, version.version_id)
    assert results["other"] is None
    ahead.close()


def test_keys_with_dot_segments_are_not_read_ahead() -> None:
    # libcurl resolves them away (another key); the ordinary path reads such keys.
    assert curl_reads.plain("prefix/table/abc.def") and curl_reads.plain("a/.b/c")
    for key in ("prefix/../table/k", "prefix/./k", "prefix/table/..", "."):
        assert not curl_reads.plain(key), key


def _name(request: faultproxy.Request) -> str:
    return request.path.split("?")[0].rsplit("/", 1)[1]


def _read_ahead(request: faultproxy.Request) -> bool:
    return "pycurl" in request.headers.get("user-agent", "")


@pytest.mark.servers
def test_a_restore_through_faults_and_damage_is_exact(
    dynamodb: Any,
    seaweedfs: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads ahead that fail (503, a reset connection) or come back damaged are read again
    the ordinary way; the restored table is the source, item for item."""
    source = create_table(dynamodb)
    for index in range(60):
        item = {"pk": {"S": f"k{index}"}, "n": {"N": f"{index}.5"}, "b": {"B": bytes([index])}}
        dynamodb.put_item(TableName=source, Item=item)
    runner = CliRunner()
    backfill = runner.invoke(main, ["backfill", source, "--bucket", bucket, "--prefix", prefix])
    assert backfill.exit_code == 0, backfill.output
    listed = iter_versions(_objects(seaweedfs.endpoint, bucket), f"{prefix}/{source}/")
    names = sorted({version.key.rsplit("/", 1)[1] for version in listed})
    assert len(names) == 60
    # Cut short (the proxy answers with the shorter length), and one digit changed (the
    # length as listed, the JSON valid: only the ETag's MD5 tells).
    damaged = {
        names[3]: lambda body: body[:-3],
        names[7]: lambda body: body.replace(b'.5"', b'.7"'),
    }
    failing = {names[11]: faultproxy.SLOW_DOWN, names[19]: faultproxy.RESET}

    def rule(request: faultproxy.Request) -> str:
        return (
            failing.get(_name(request), faultproxy.FORWARD) if _read_ahead(request) else "forward"
        )

    def damage(request: faultproxy.Request) -> Any:
        change = damaged.get(_name(request)) if _read_ahead(request) else None
        return (b"", change) if change else None

    target = source + "-restored"
    with faultproxy.FaultProxy(seaweedfs.endpoint, rule, rewrite=damage) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = runner.invoke(main, ["restore", bucket, f"{prefix}/{source}", target])
        requests = list(proxy.log.requests)
    assert result.exit_code == 0, result.output
    assert scan_all(dynamodb, target) == scan_all(dynamodb, source)
    assert {_name(r) for r in requests if _read_ahead(r)} == set(names)  # all read ahead
    ordinary = [
        _name(r)
        for r in requests
        if r.method == "GET" and "obstore" in r.headers.get("user-agent", "") and _name(r) in names
    ]
    assert sorted(ordinary) == sorted([*damaged, *failing])  # read again, those only


@pytest.mark.servers
def test_what_a_read_ahead_sends(seaweedfs: Any, bucket: str, prefix: str) -> None:
    """Signed as botocore signs a GET of a version over HTTP (payload hash of the empty body,
    the session token signed), addressed as botocore addresses it."""
    answer = faultproxy.Answer(200, {"ETag": '"x"'}, b"{}")
    with faultproxy.FaultProxy(seaweedfs.endpoint, lambda request: answer) as proxy:
        with_token = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY, "the-session-token")
        objects = _objects(proxy.endpoint, bucket, with_token)
        ahead = objects.read_ahead(1)
        assert ahead is not None
        assert _read_all(ahead, [(1, f"{prefix}/k", "v1.a_b-c~", 2)]) == {1: (b"{}", {})}
        (sent,) = [r for r in proxy.log.requests if "pycurl" in r.headers.get("user-agent", "")]
        objects.s3.get_object(Bucket=bucket, Key=f"{prefix}/k", VersionId="v1.a_b-c~")
        botocore = proxy.log.requests[-1]
    assert sent.method == "GET"
    assert sent.path == botocore.path == f"/{bucket}/{prefix}/k?versionId=v1.a_b-c~"
    assert sent.headers["host"] == botocore.headers["host"]
    assert sent.headers["x-amz-security-token"] == "the-session-token"
    assert sent.headers["x-amz-content-sha256"] == EMPTY_SHA256
    assert botocore.headers["x-amz-content-sha256"] == EMPTY_SHA256
    authorization = sent.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{servers.REGION}/s3/aws4_request" in authorization
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"} <= set(signed)
