"""Where a request goes and how it is signed, exactly as botocore decides.

The fast transports do not guess endpoints. They ask a botocore client to prepare a real
request (endpoint rules, region, FIPS, dual-stack, account-based endpoints, addressing style,
``--endpoint-url`` and the per-service endpoint variables all apply) and take the URL, the
signing region and service, and the User-Agent from it. The request is stopped just before
it would be sent, so this needs no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore import xform_name

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")
SIGV4 = "AWS4-HMAC-SHA256"


class _Prepared(Exception):
    """Carries the prepared request out of botocore's send path."""

    def __init__(self, request: Any) -> None:
        super().__init__("request prepared, not sent")
        self.request = request


@dataclass(frozen=True)
class PreparedRequest:
    """What botocore would send: the URL, how it is signed, and the User-Agent."""

    url: str
    algorithm: str  # "AWS4-HMAC-SHA256" for SigV4
    signing_region: str
    signing_name: str
    user_agent: str

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def origin(self) -> str:
        """scheme://host[:port]"""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


def prepared_request(client: Any, operation: str, **params: Any) -> PreparedRequest:
    """The request ``client`` would send for ``operation``, signed, but not sent."""
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    unique = f"dynamo-backups-prepare-{id(client)}"

    def stop(request: Any, **_: Any) -> None:
        raise _Prepared(request)

    client.meta.events.register_first(event, stop, unique_id=unique)
    try:
        getattr(client, xform_name(operation))(**params)
    except _Prepared as prepared:
        return _describe(prepared.request)
    finally:
        client.meta.events.unregister(event, unique_id=unique)
    raise RuntimeError(f"botocore sent {operation} instead of preparing it")


def _describe(request: Any) -> PreparedRequest:
    headers = {name.lower(): _text(value) for name, value in request.headers.items()}
    authorization = headers.get("authorization", "")
    algorithm = authorization.split(" ", 1)[0]
    scope = _SCOPE.search(authorization)
    return PreparedRequest(
        url=request.url,
        algorithm=algorithm,
        signing_region=scope["region"] if scope else headers.get("x-amz-region-set", ""),
        signing_name=scope["service"] if scope else "",
        user_agent=headers.get("user-agent", ""),
    )


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class S3Target:
    """How object requests for one bucket are addressed and signed."""

    bucket: str
    origin: str  # scheme://host[:port]; for virtual-hosted style the host names the bucket
    path_style: bool
    signing_region: str
    user_agent: str

    def object_url(self, key_path: str) -> str:
        """The URL of an object, given its already percent-encoded key."""
        base = f"{self.origin}/{self.bucket}" if self.path_style else self.origin
        return f"{base}/{key_path}"


class UnsupportedTarget(ValueError):
    """A bucket that botocore addresses in a way the fast transport cannot (an access point,
    Outposts, S3 Express, SigV4a): use botocore for it."""


PROBE_KEY = "dynamo-backups-probe"


def s3_target(s3_client: Any, bucket: str) -> S3Target:
    """The addressing and signing botocore uses for objects of ``bucket``."""
    prepared = prepared_request(s3_client, "PutObject", Bucket=bucket, Key=PROBE_KEY, Body=b"")
    if prepared.algorithm != SIGV4 or prepared.signing_name != "s3":
        raise UnsupportedTarget(
            f"bucket {bucket} is signed with {prepared.algorithm or 'no signature'} for "
            f"{prepared.signing_name or 'an unknown service'}"
        )
    if prepared.path == f"/{PROBE_KEY}":
        path_style = False
    elif prepared.path == f"/{bucket}/{PROBE_KEY}":
        path_style = True
    else:
        raise UnsupportedTarget(f"bucket {bucket} is addressed as {prepared.url}")
    return S3Target(
        bucket, prepared.origin, path_style, prepared.signing_region, prepared.user_agent
    )
