"""The transport: requests addressed and signed exactly as botocore would, region redirects
followed, proxies and TLS trust honoured, a User-Agent naming us, errors classified.

Parity with botocore is checked on what actually goes over the wire: botocore's request is
captured just before it would be sent, and ours is received by a recording HTTP proxy (no
network, no AWS account) that answers in S3's or DynamoDB's place.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials
from click.testing import CliRunner

from dynamo_backups import __version__
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.dynamodb import BotocoreDynamoDB, RawDynamoDB
from dynamo_backups.aws.errors import (
    CertificateError,
    ClientError,
    HTTPClientError,
    error_code,
    http_status,
    is_transient,
)
from dynamo_backups.aws.fast_objects import FastObjects, HttpSettings
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.helpers import create_table

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


def botocore_request(client: Any, operation: str, **params: Any) -> dict[str, str]:
    """What botocore sends for ``operation``: URL, host, path and signing scope, captured
    just before sending (a fake 200 answer ends the call)."""
    seen: dict[str, str] = {}
    service = client.meta.service_model.service_id.hyphenize()

    def capture(request: Any, **_: Any) -> AWSResponse:
        authorization = request.headers["Authorization"]
        authorization = (
            authorization.decode() if isinstance(authorization, bytes) else authorization
        )
        url = request.url
        seen.update(url=url, scope="/".join(SCOPE.search(authorization).groups()))
        body = b"{}" if service == "dynamodb" else b""
        return AWSResponse(url, 200, {"x-amz-crc32": str(_crc(body))}, _Raw(body))

    client.meta.events.register(f"before-send.{service}.{operation}", capture)
    getattr(client, _snake(operation))(**params)
    return seen


def _crc(body: bytes) -> int:
    return zlib.crc32(body)


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def recorded(request: faultproxy.Request) -> dict[str, str]:
    """Our request as the recording proxy saw it (absolute form: the proxy gets the URL)."""
    authorization = request.headers["authorization"]
    return {
        "url": request.path,
        "scope": "/".join(SCOPE.search(authorization).groups()),
    }


DELETED = (
    b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult '
    b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>k</Key><DeleteMarker>true'
    b"</DeleteMarker></Deleted></DeleteResult>"
)


def answer_like_aws(request: faultproxy.Request) -> faultproxy.Answer:
    if "x-amz-target" in request.headers:
        return faultproxy.Answer(200, {"x-amz-crc32": str(_crc(b"{}"))}, b"{}")
    if request.path.endswith("?delete"):
        return faultproxy.Answer(200, {"Content-Type": "application/xml"}, DELETED)
    return faultproxy.Answer(200, {"x-amz-version-id": "v1", "ETag": '"etag"'})


@pytest.fixture
def recorder() -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.FaultProxy("http://127.0.0.1:9", answer_like_aws) as proxy:
        yield proxy


# Regions (opt-in ones among them), partitions, FIPS, dual-stack, path style, endpoints.
CONFIGURATIONS = {
    "us-east-1": ("us-east-1", {}),
    "eu-west-1": ("eu-west-1", {}),
    "opt-in me-south-1": ("me-south-1", {}),
    "opt-in af-south-1": ("af-south-1", {}),
    "opt-in il-central-1": ("il-central-1", {}),
    "GovCloud": ("us-gov-west-1", {}),
    "China": ("cn-north-1", {}),
    "FIPS": ("us-east-2", {"AWS_USE_FIPS_ENDPOINT": "true"}),
    "dual-stack": ("eu-west-1", {"AWS_USE_DUALSTACK_ENDPOINT": "true"}),
    "FIPS and dual-stack": (
        "us-west-2",
        {"AWS_USE_FIPS_ENDPOINT": "true", "AWS_USE_DUALSTACK_ENDPOINT": "true"},
    ),
    "path style in the config file": ("eu-central-1", {"config": "path"}),
    "AWS_ENDPOINT_URL_S3": ("us-east-1", {"AWS_ENDPOINT_URL_S3": "http://s3.internal:9000"}),
    "AWS_ENDPOINT_URL": ("ap-south-1", {"AWS_ENDPOINT_URL": "http://aws.internal:4566"}),
}


def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, region: str, settings: dict[str, str]
) -> None:
    for name, value in settings.items():
        if name == "config":
            config = tmp_path / "config"
            config.write_text(f"[default]\ns3 =\n    addressing_style = {value}\n")
            monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)


@pytest.mark.parametrize("bucket", ["acme-backups", "acme.dotted.backups"])
@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_object_requests_go_where_botocore_sends_them_signed_for_the_same_region(
    configuration: str,
    bucket: str,
    recorder: faultproxy.FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    region, settings = CONFIGURATIONS[configuration]
    configure(monkeypatch, tmp_path, region, settings)
    session = boto3.Session(region_name=region)
    # Plain HTTP, so that the recording proxy sees inside the request.
    client = session.client("s3", use_ssl=False)
    key = "Prod/Users/0cc175b9c0f1b6a831c399e269772661"
    objects = FastObjects(
        client, bucket, CREDENTIALS, HttpSettings(proxies={"http": recorder.endpoint})
    )

    objects.put_object(key, b"{}", "application/json", {"event-name": "INSERT"})
    assert recorded(recorder.log.requests[-1]) == botocore_request(
        client, "PutObject", Bucket=bucket, Key=key, Body=b"{}"
    )
    # obstore deletes with DeleteObjects (one key): the same host, signing and, in a
    # versioned bucket, the same delete marker.
    objects.delete_object(key)
    ours = recorded(recorder.log.requests[-1])
    theirs = botocore_request(client, "DeleteObject", Bucket=bucket, Key=key)
    assert recorder.log.requests[-1].method == "POST"
    assert ours["scope"] == theirs["scope"]
    assert ours["url"] == theirs["url"].removesuffix(key).removesuffix("/") + "?delete" or (
        ours["url"] == theirs["url"].removesuffix(key) + "?delete"
    )


@pytest.mark.parametrize(
    "configuration", ["us-east-1", "opt-in il-central-1", "FIPS", "dual-stack", "GovCloud"]
)
def test_dynamodb_calls_go_where_botocore_sends_them(
    configuration: str,
    recorder: faultproxy.FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    region, settings = CONFIGURATIONS[configuration]
    configure(monkeypatch, tmp_path, region, settings)
    client = boto3.Session(region_name=region).client(
        "dynamodb", use_ssl=False, config=Config(proxies={"http": recorder.endpoint})
    )
    RawDynamoDB(client, CREDENTIALS).call("Scan", {"TableName": "Users"})
    assert recorded(recorder.log.requests[-1]) == botocore_request(
        client, "Scan", TableName="Users"
    )


def test_dynamodb_account_based_endpoints_as_botocore(
    recorder: faultproxy.FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCOUNT_ID", "123456789012")
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "required")
    client = boto3.Session(region_name="eu-west-1").client(
        "dynamodb", use_ssl=False, config=Config(proxies={"http": recorder.endpoint})
    )
    RawDynamoDB(client, client._request_signer._credentials).call("Scan", {"TableName": "T"})
    ours = recorded(recorder.log.requests[-1])
    assert ours["url"].startswith("http://123456789012.ddb.eu-west-1.amazonaws.com/")
    assert ours == botocore_request(client, "Scan", TableName="T")


# --- region redirects ---------------------------------------------------------------------------

BUCKET_REGION = "eu-west-1"


def redirect_rule(kind: str) -> faultproxy.Rule:
    """S3's answers to a request signed for another region than the bucket's."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        scope = SCOPE.search(request.headers.get("authorization", ""))
        headers = {"x-amz-bucket-region": BUCKET_REGION, "Content-Type": "application/xml"}
        if request.method == "HEAD" and request.path.rstrip("/").count("/") == 1:
            # HeadBucket: S3 names the bucket's region in every answer (SeaweedFS does not).
            signed_right = scope is not None and scope.group(1) == BUCKET_REGION
            return faultproxy.Answer(200 if signed_right else 301, headers)
        if scope is None or scope.group(1) == BUCKET_REGION:
            return faultproxy.FORWARD
        if kind == "301":
            body = (
                b"<Error><Code>PermanentRedirect</Code><Message>use the right endpoint"
                b"</Message></Error>"
            )
            return faultproxy.Answer(301, headers, body)
        if kind == "307":
            body = b"<Error><Code>TemporaryRedirect</Code><Message>redirect</Message></Error>"
            return faultproxy.Answer(307, headers, body)
        body = (
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region "
            b"'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1"
            b"</Region></Error>"
        )
        return faultproxy.Answer(400, headers, body)

    return rule


def local_client(service: str, endpoint: str, region: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=servers.ACCESS_KEY,
        aws_secret_access_key=servers.SECRET_KEY,
    )


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["301", "307", "400"])
def test_a_region_redirect_is_followed(
    kind: str, seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    with faultproxy.FaultProxy(seaweedfs.endpoint, redirect_rule(kind)) as proxy:
        objects = FastObjects(
            local_client("s3", proxy.endpoint, "us-east-1"),
            bucket,
            CREDENTIALS,
            client_in_region=lambda region: local_client("s3", proxy.endpoint, region),
        )
        for index in range(5):
            objects.put_object(f"{prefix}/k{index}", b"{}", "application/json", {"n": str(index)})
        assert objects.read_object(f"{prefix}/k3") == (b"{}", {"n": "3"})
        assert objects.target.signing_region == BUCKET_REGION
        regions = [SCOPE.search(r.headers["authorization"]).group(1) for r in proxy.log.requests]
    # One request signed for the client's region, then botocore's HeadBucket found the
    # bucket's (after its own redirect), and everything after went there.
    assert regions[0] == "us-east-1"
    assert regions[-6:] == [BUCKET_REGION] * 6
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/k4")["Metadata"] == {"n": "4"}


@pytest.mark.servers
def test_restore_reads_a_bucket_in_another_region_than_the_table(
    dynamodb: Any,
    seaweedfs: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = create_table(dynamodb)
    for index in range(30):
        dynamodb.put_item(TableName=source, Item={"pk": {"S": f"k{index}"}, "n": {"N": "1.50"}})
    runner = CliRunner()
    backfill = runner.invoke(main, ["backfill", source, "--bucket", bucket, "--prefix", prefix])
    assert backfill.exit_code == 0, backfill.output
    target = source + "-restored"
    with faultproxy.FaultProxy(seaweedfs.endpoint, redirect_rule("301")) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = runner.invoke(
            main, ["--region", "us-east-1", "restore", bucket, f"{prefix}/{source}", target]
        )
        redirected = [r for r in proxy.log.requests if "us-east-1/s3" in r.headers["authorization"]]
    assert result.exit_code == 0, result.output
    assert redirected  # the first requests went to the table's region, and were redirected
    assert dynamodb.scan(TableName=target, Select="COUNT")["Count"] == 30
    assert dynamodb.get_item(TableName=target, Key={"pk": {"S": "k7"}})["Item"]["n"] == {"N": "1.5"}


# --- proxies, TLS, User-Agent ------------------------------------------------------------


@pytest.mark.servers
def test_an_http_proxy_in_the_environment_carries_the_object_requests(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with faultproxy.FaultProxy(seaweedfs.endpoint) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint)
        aws = AwsContext(endpoint_url=seaweedfs.endpoint)
        objects = aws.objects(aws.client("s3"), bucket)
        assert isinstance(objects, FastObjects)
        objects.put_object(f"{prefix}/via-proxy", b"{}", "application/json", {})
        through = [r for r in proxy.log.requests if r.path.endswith(f"{prefix}/via-proxy")]
        assert through and through[0].path.startswith(seaweedfs.endpoint)  # absolute form

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        before = len(proxy.log.requests)
        aws = AwsContext(endpoint_url=seaweedfs.endpoint)
        aws.objects(aws.client("s3"), bucket).put_object(
            f"{prefix}/direct", b"{}", "application/json", {}
        )
        assert len(proxy.log.requests) == before
    assert s3.head_object(Bucket=bucket, Key=f"{prefix}/via-proxy")["ContentLength"] == 2


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    return authority, bundle


def tls_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.mark.servers
def test_tls_is_checked_against_aws_ca_bundle(
    seaweedfs: Any,
    dynamodb_local: Any,
    bucket: str,
    prefix: str,
    test_ca: tuple[trustme.CA, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    authority, bundle = test_ca
    with (
        faultproxy.FaultProxy(seaweedfs.endpoint, tls=tls_context(authority)) as s3_tls,
        faultproxy.FaultProxy(dynamodb_local.endpoint, tls=tls_context(authority)) as ddb_tls,
    ):
        monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
        aws = AwsContext(endpoint_url=s3_tls.endpoint)
        objects = aws.objects(aws.client("s3", retries=1), bucket)
        objects.put_object(f"{prefix}/tls", b"{}", "application/json", {"a": "b"})
        assert objects.read_object(f"{prefix}/tls") == (b"{}", {"a": "b"})
        ahead = objects.read_ahead(2)  # restore's reads ahead (where pycurl is installed)
        if ahead is not None:
            version = objects.s3.head_object(Bucket=bucket, Key=f"{prefix}/tls")["VersionId"]
            assert ahead.start(1, f"{prefix}/tls", version, 2)
            assert ahead.finished(5.0) == [(1, (b"{}", {"a": "b"}))]
        api = AwsContext(endpoint_url=ddb_tls.endpoint).dynamodb_api(
            AwsContext(endpoint_url=ddb_tls.endpoint).client("dynamodb")
        )
        assert "TableNames" in api.call("ListTables", {"Limit": 1})

        # A bundle without that CA: refused, loudly, on both paths; nothing falls back.
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        monkeypatch.setenv("AWS_CA_BUNDLE", str(other))
        aws = AwsContext(endpoint_url=s3_tls.endpoint)
        untrusting = aws.objects(aws.client("s3", retries=1), bucket)
        refusing = untrusting.read_ahead(1)
        if refusing is not None:  # no answer read ahead; the ordinary read then refuses
            assert refusing.start(1, f"{prefix}/tls", version, 2)
            assert refusing.finished(5.0) == [(1, None)]
        with pytest.raises(CertificateError, match=r"not trusted.*AWS_CA_BUNDLE") as refused:
            untrusting.put_object(f"{prefix}/tls-refused", b"{}", "application/json", {})
        assert not is_transient(refused.value)  # retrying would not help
        ddb = AwsContext(endpoint_url=ddb_tls.endpoint)
        with pytest.raises(Exception, match=r"(?i)ssl|certificate"):
            ddb.dynamodb_api(ddb.client("dynamodb", retries=1)).call("ListTables", {})
    assert len([r for r in s3_tls.log.requests if "tls-refused" in r.path]) == 0


@pytest.mark.servers
def test_every_request_names_dynamo_backups_and_its_version(
    dynamodb_local: Any,
    seaweedfs: Any,
    dynamodb: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb)
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    with (
        faultproxy.FaultProxy(seaweedfs.endpoint) as s3_proxy,
        faultproxy.FaultProxy(dynamodb_local.endpoint) as ddb_proxy,
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_proxy.endpoint)
        runner = CliRunner()
        for command in (
            ["backfill", table, "--bucket", bucket, "--prefix", prefix],
            ["stream", table, "--bucket", bucket, "--prefix", prefix, "--once"],
            ["restore", bucket, f"{prefix}/{table}", table + "-copy"],
            ["verify", table, "--bucket", bucket, "--prefix", prefix],
        ):
            result = runner.invoke(main, command)
            assert result.exit_code == 0, result.output
        requests = s3_proxy.log.requests + ddb_proxy.log.requests
    assert len(requests) > 100
    agents = {request.headers.get("user-agent", "") for request in requests}
    assert all(f"dynamo-backups/{__version__}" in agent for agent in agents), agents
    assert any(agent.startswith("dynamo-backups/") and "obstore/" in agent for agent in agents)


# --- FIPS ---------------------------------------------------------------------------------------


@pytest.mark.servers
def test_md5_is_only_ever_used_as_a_name_so_fips_hosts_work(
    dynamodb: Any, bucket: str, prefix: str, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_md5 = hashlib.md5

    def fips_md5(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("usedforsecurity") is not False:
            raise ValueError("[digital envelope routines] unsupported: MD5 in FIPS mode")
        return real_md5(*args, **kwargs)

    table = create_table(dynamodb)
    for index in range(10):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    monkeypatch.setattr(hashlib, "md5", fips_md5)
    monkeypatch.setattr("botocore.compat.MD5_AVAILABLE", False)  # as botocore sees FIPS hosts
    runner = CliRunner()
    for command in (
        ["stream", table, "--bucket", bucket, "--prefix", prefix, "--once"],
        ["backfill", table, "--bucket", bucket, "--prefix", prefix],
        ["verify", table, "--bucket", bucket, "--prefix", prefix],
        ["restore", bucket, f"{prefix}/{table}", table + "-fips"],
        ["snapshot", bucket, f"{prefix}/{table}", "--to", f"s3://{bucket}/{prefix}-snap"],
    ):
        result = runner.invoke(main, command)
        assert result.exit_code == 0, (command, result.output)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.servers
def test_s3_answers_become_botocores_errors(seaweedfs: Any, bucket: str, prefix: str) -> None:
    objects = FastObjects(local_client("s3", seaweedfs.endpoint, "us-east-1"), bucket, CREDENTIALS)
    objects.put_object(f"{prefix}/a", b"{}", "application/json", {})
    with pytest.raises(ClientError) as exists:
        objects.put_object(f"{prefix}/a", b"{}", "application/json", {}, if_none_match=True)
    assert (error_code(exists.value), http_status(exists.value)) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as missing:
        objects.read_object(f"{prefix}/nothing")
    assert (error_code(missing.value), http_status(missing.value)) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as no_version:
        objects.read_object(f"{prefix}/a", "0123456789abcdef0123456789abcdef")
    assert error_code(no_version.value) == "NoSuchVersion"

    wrong = FastObjects(
        local_client("s3", seaweedfs.endpoint, "us-east-1"),
        bucket,
        Credentials(servers.ACCESS_KEY, "not-the-secret"),
    )
    attempts = []

    def put() -> None:
        attempts.append(1)
        wrong.put_object(f"{prefix}/b", b"{}", "application/json", {})

    with pytest.raises(ClientError) as denied:
        call_with_retries(put, RetryPolicy(max_attempts=5, base_delay=0.01), "put")
    assert http_status(denied.value) == 403 and not is_transient(denied.value)
    assert error_code(denied.value) in ("SignatureDoesNotMatch", "AccessDenied")
    assert len(attempts) == 1  # permanent: not retried

    nowhere = FastObjects(
        local_client("s3", "http://127.0.0.1:9", "us-east-1"), bucket, CREDENTIALS
    )
    with pytest.raises(HTTPClientError) as refused:
        nowhere.put_object("k", b"", "application/json", {})
    assert is_transient(refused.value)


@pytest.mark.servers
def test_a_damaged_dynamodb_answer_is_caught_by_its_checksum(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "12"}})

    def flip_a_digit(request: faultproxy.Request) -> Any:
        return request.body, lambda answer: answer.replace(b'"12"', b'"13"')

    with faultproxy.FaultProxy(
        dynamodb_local.endpoint, rewrite=flip_a_digit, fix_checksum=False
    ) as proxy:
        api = RawDynamoDB(local_client("dynamodb", proxy.endpoint, "us-east-1"), CREDENTIALS)
        with pytest.raises(ClientError) as damaged:
            api.call("Scan", {"TableName": table})
    assert error_code(damaged.value) == "CRC32CheckFailed" and is_transient(damaged.value)

    api = RawDynamoDB(local_client("dynamodb", dynamodb_local.endpoint, "us-east-1"), CREDENTIALS)
    with pytest.raises(api.client.exceptions.ResourceNotFoundException):
        api.call("Scan", {"TableName": "no-such-table"})
    assert api.call("GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}}})["Item"] == {
        "pk": {"S": "a"},
        "n": {"N": "12"},
    }


def test_one_switch_sends_everything_through_botocore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws = AwsContext(region="eu-west-1")
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", "botocore")
    assert isinstance(aws.objects(aws.client("s3"), "acme-backups"), BotocoreObjects)
    assert isinstance(aws.dynamodb_api(aws.client("dynamodb")), BotocoreDynamoDB)
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", "fast")
    assert isinstance(aws.objects(aws.client("s3"), "acme-backups"), FastObjects)
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", "curl")
    result = CliRunner().invoke(main, ["history", "Users", '{"pk": "a"}', "--bucket", "b"])
    assert result.exit_code == 2
    assert "DYNAMO_BACKUPS_TRANSPORT must be one of fast, botocore" in result.output
    assert "Traceback" not in result.output


@pytest.mark.servers
def test_head_object_reads_a_versions_metadata_without_its_body(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """Point-in-time selection inspects versions by HEAD: both transports send a HEAD for
    the version asked for and answer its user metadata, as read_object names it."""
    key = f"{prefix}/item"
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"{}", Metadata={"change-time": "1"})
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}", Metadata={"change-time": "2"})
    with faultproxy.FaultProxy(seaweedfs.endpoint) as proxy:
        client = local_client("s3", proxy.endpoint, "us-east-1")
        for objects in (
            FastObjects(client, bucket, CREDENTIALS),
            BotocoreObjects(client, bucket),
        ):
            proxy.log.requests.clear()
            assert objects.head_object(key, first["VersionId"]) == {"change-time": "1"}
            assert objects.head_object(key) == {"change-time": "2"}
            assert objects.read_object(key, first["VersionId"])[1] == {"change-time": "1"}
            methods = [request.method for request in proxy.log.requests]
            assert methods == ["HEAD", "HEAD", "GET"], (type(objects).__name__, methods)
        with pytest.raises(ClientError) as missing:
            FastObjects(client, bucket, CREDENTIALS).head_object(f"{prefix}/nothing")
        assert error_code(missing.value) in ("NoSuchKey", "404")
