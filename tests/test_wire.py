"""The lean request path: signatures identical to botocore's, and real requests to SeaweedFS
(which checks SigV4)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError, EndpointConnectionError

from dynamo_backups.wire import (
    Credentials,
    LeanS3Bucket,
    SigV4Signer,
    canonical_query,
    object_metadata,
    uri_encode,
)
from tests import servers
from tests.servers import make_client

MOMENT = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class StaticCredentials:
    def __init__(self, access: str, secret: str, token: str | None = None) -> None:
        self.frozen = ReadOnlyCredentials(access, secret, token)

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return self.frozen


@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
@pytest.mark.parametrize("key", ["Prod/Users/0123abcd", "odd key/ü+%=&?*~.json"])
def test_signature_matches_botocore(
    key: str, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b'{"pk":{"S":"a"}}'
    payload_hash = hashlib.sha256(body).hexdigest()
    path = uri_encode(f"/bucket/{key}")
    headers = {
        "host": "127.0.0.1:9000",
        "content-type": "application/json",
        "x-amz-meta-change-time": "2026-11-27T12:00:00Z",
        "x-amz-content-sha256": payload_hash,
    }
    ours = SigV4Signer("s3", "eu-west-1").sign(
        "PUT",
        path,
        canonical_query({"versionId": "v 1"}),
        dict(headers),
        payload_hash,
        Credentials("AKID", "SECRET", token),
        MOMENT,
    )

    request = AWSRequest(
        method="PUT",
        url=f"http://127.0.0.1:9000{path}?versionId=v%201",
        data=body,
        headers={k: v for k, v in headers.items() if k != "host"},
    )
    monkeypatch.setattr("botocore.auth.datetime.datetime", _FrozenDatetime)
    S3SigV4Auth(BotoCredentials("AKID", "SECRET", token), "s3", "eu-west-1").add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]


class _FrozenDatetime(datetime):
    @classmethod
    def utcnow(cls) -> datetime:  # type: ignore[override]
        return MOMENT.replace(tzinfo=None)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return MOMENT if tz else MOMENT.replace(tzinfo=None)


def lean_bucket(endpoint: str, bucket: str, secret: str = servers.SECRET_KEY) -> LeanS3Bucket:
    return LeanS3Bucket(
        make_client("s3", endpoint), bucket, StaticCredentials(servers.ACCESS_KEY, secret)
    )


@pytest.mark.servers
def test_put_get_delete_against_a_sigv4_checking_server(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    lean = lean_bucket(seaweedfs.endpoint, bucket)
    key = f"{prefix}/odd key ü+%=&.json"
    first = lean.put_object(key, b'{"a":{"N":"1"}}', "application/json", {"change-time": "x"})
    second = lean.put_object(key, b'{"a":{"N":"2"}}', "application/json", {"change-time": "y"})
    assert first and second and first != second
    fetched = lean.get_object(key, first)
    assert fetched.body == b'{"a":{"N":"1"}}'
    assert object_metadata(fetched.headers) == {"change-time": "x"}
    via_boto3 = s3.get_object(Bucket=bucket, Key=key)
    assert via_boto3["Body"].read() == b'{"a":{"N":"2"}}'
    assert via_boto3["Metadata"] == {"change-time": "y"}
    assert via_boto3["ContentType"] == "application/json"

    with pytest.raises(ClientError) as refused:
        lean.put_object(key, b"{}", "application/json", {}, if_none_match=True)
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"

    lean.delete_object(key)
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    assert len(listed["Versions"]) == 2 and len(listed["DeleteMarkers"]) == 1


@pytest.mark.servers
def test_errors_are_botocore_errors(seaweedfs: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as denied:
        lean_bucket(seaweedfs.endpoint, bucket, secret="wrong").put_object("k", b"{}", "a/b", {})
    assert denied.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as missing:
        lean_bucket(seaweedfs.endpoint, bucket).get_object("no/such/key")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(EndpointConnectionError):
        lean_bucket(f"http://127.0.0.1:{servers.free_port()}", bucket).put_object(
            "k", b"{}", "a/b", {}
        )
