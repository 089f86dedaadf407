"""Lean AWS requests for the hot paths: SigV4 signing and keep-alive connections.

botocore spends about 2 ms of CPU on every request; a backup writes one request per change,
so on a small Lambda (or a 2-core host) botocore, not S3, sets the pace. This module sends the
same requests for a tenth of that. It does not replace boto3's configuration: the endpoint,
addressing style and signing region come from a boto3 client (via a presigned URL, so every
endpoint rule botocore knows applies), and credentials from the boto3 session (refreshed as
boto3 refreshes them). Errors are raised as botocore's own ``ClientError`` and connection
exceptions, so retry policies treat both paths alike.

Standard library only (the Lambda handler uses it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.etree import ElementTree

from botocore import xform_name
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from dynamo_backups.ddbjson import from_wire, to_wire
from dynamo_backups.http11 import ClosedBeforeAnswer, Connection
from dynamo_backups.listing import ObjectPage, VersionPage, parse_object_page, parse_version_page

_UNRESERVED = "-_.~"
TIMEOUT_SECONDS = 30.0


def uri_encode(text: str, keep_slash: bool = True) -> str:
    """SigV4 URI encoding: everything but unreserved characters, '/' kept in paths."""
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(query: Mapping[str, str]) -> str:
    """A query string in SigV4's canonical form, which is also a valid one to send."""
    return "&".join(
        f"{uri_encode(name, False)}={uri_encode(value, False)}"
        for name, value in sorted(query.items())
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


def current_credentials(credentials_source: Any) -> Credentials:
    """The credentials to sign with now, from a boto3 credentials object (which refreshes
    temporary ones before they expire)."""
    frozen = credentials_source.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


class SigV4Signer:
    """Signs requests for one service and region (AWS Signature Version 4)."""

    def __init__(self, service: str, region: str) -> None:
        self.service = service
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def _signing_key(self, secret: str, date: str) -> bytes:
        with self._lock:
            key = self._keys.get((secret, date))
            if key is None:
                key = _hmac(
                    _hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), self.region), self.service),
                    "aws4_request",
                )
                self._keys = {(secret, date): key}
            return key

    def sign(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload_hash: str,
        credentials: Credentials,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Add x-amz-date, the session token and Authorization to ``headers`` (lowercase names,
        including ``host``); ``path`` is already URI-encoded, ``query`` is from
        ``canonical_query``."""
        moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        headers["x-amz-date"] = moment
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        names = sorted(headers)
        canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names)
        signed_headers = ";".join(names)
        canonical_request = "\n".join(
            [method, path, query, canonical_headers, signed_headers, payload_hash]
        )
        scope = f"{moment[:8]}/{self.region}/{self.service}/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                moment,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, moment[:8]),
            string_to_sign.encode("utf-8"),
            hashlib.sha256,
        ).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        return headers


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class ConnectionPool:
    """One keep-alive connection per thread to one host."""

    def __init__(self, scheme: str, host: str, port: int | None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self._local = threading.local()
        self._context: ssl.SSLContext | None = None
        if scheme == "https":
            self._context = ssl.create_default_context(
                cafile=os.environ.get("AWS_CA_BUNDLE") or None
            )

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")

    def _connection(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            port = self.port or (443 if self.scheme == "https" else 80)
            connection = Connection(self.host, port, TIMEOUT_SECONDS, self._context)
            self._local.connection = connection
        return connection

    def send(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one request; a connection the server closed while idle is reopened once."""
        for attempt in (1, 2):
            connection = self._connection()
            reused = connection.sock is not None
            try:
                answer = connection.exchange(method, target, headers, body)
            except ClosedBeforeAnswer as error:
                connection.close()
                if reused and attempt == 1:
                    continue  # an idle keep-alive connection the server had closed
                raise ConnectionClosedError(endpoint_url=self.endpoint) from error
            except (ConnectionRefusedError, socket.gaierror) as error:
                connection.close()
                raise EndpointConnectionError(endpoint_url=self.endpoint) from error
            except OSError as error:  # resets, timeouts, broken pipes, malformed answers
                connection.close()
                raise ConnectionClosedError(endpoint_url=self.endpoint) from error
            return Response(answer.status, answer.headers, answer.body)
        raise AssertionError("unreachable")


def client_error(operation: str, response: Response) -> ClientError:
    """botocore's ClientError for an error answer (S3's XML or DynamoDB's JSON body)."""
    code, message = str(response.status), response.body.decode("utf-8", "replace")[:500]
    if response.body.lstrip().startswith(b"<"):
        try:
            root = ElementTree.fromstring(response.body)
            code = root.findtext("Code") or code
            message = root.findtext("Message") or message
        except ElementTree.ParseError:
            pass
    elif not response.body:
        code = {304: "NotModified", 404: "NotFound", 412: "PreconditionFailed"}.get(
            response.status, code
        )
        message = http.client.responses.get(response.status, "")
    return _client_error(operation, response, code, message)


def _client_error(operation: str, response: Response, code: str, message: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "HTTPStatusCode": response.status,
                "HTTPHeaders": response.headers,
            },
        },
        operation,
    )


class LeanS3Bucket:
    """PutObject, DeleteObject and GetObject on one bucket, configured from a boto3 client."""

    def __init__(self, s3_client: Any, bucket: str, credentials_source: Any) -> None:
        probe = urlsplit(
            s3_client.generate_presigned_url(
                "put_object", Params={"Bucket": bucket, "Key": "probe"}, ExpiresIn=60
            )
        )
        if not probe.path.endswith("/probe"):
            raise ValueError(f"cannot tell how to address objects in bucket {bucket}")
        self.bucket = bucket
        self._base_path = probe.path[: -len("probe")]
        # A SigV4 presigned URL names the signing region; a legacy (SigV2) one does not, and
        # then the client's own region is the one botocore would sign with.
        credential = parse_qs(probe.query).get("X-Amz-Credential", [""])[0].split("/")
        region = credential[2] if len(credential) == 5 else s3_client.meta.region_name
        self.signer = SigV4Signer("s3", region or "us-east-1")
        self._host_header = probe.netloc
        self._pool = ConnectionPool(probe.scheme, probe.hostname or "", probe.port)
        self._credentials_source = credentials_source

    def _request(
        self,
        operation: str,
        method: str,
        key: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Response:
        path = uri_encode(self._base_path + key)
        payload_hash = hashlib.sha256(body).hexdigest()
        all_headers = {
            "host": self._host_header,
            "x-amz-content-sha256": payload_hash,
            **(headers or {}),
        }
        query_string = canonical_query(query or {})
        self.signer.sign(
            method,
            path,
            query_string,
            all_headers,
            payload_hash,
            current_credentials(self._credentials_source),
        )
        if body or method == "PUT":
            all_headers["content-length"] = str(len(body))
        target = f"{path}?{query_string}" if query_string else path
        response = self._pool.send(method, target, all_headers, body)
        if response.status >= 300:
            raise client_error(operation, response)
        return response

    def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
    ) -> str | None:
        """Write an object; the answer's version id. S3 checks the Content-MD5 sent."""
        headers = {
            "content-type": content_type,
            "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode("ascii"),
            **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
        }
        if if_none_match:
            headers["if-none-match"] = "*"
        response = self._request("PutObject", "PUT", key, body, headers)
        return response.headers.get("x-amz-version-id")

    def delete_object(self, key: str) -> None:
        self._request("DeleteObject", "DELETE", key)

    def get_object(self, key: str, version_id: str | None = None) -> Response:
        query = {"versionId": version_id} if version_id else None
        return self._request("GetObject", "GET", key, query=query)

    def read_object(self, key: str, version_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and user metadata of a version (the current one without ``version_id``)."""
        response = self.get_object(key, version_id)
        return response.body, object_metadata(response.headers)

    def list_versions_page(
        self, prefix: str, key_marker: str | None = None, version_marker: str | None = None
    ) -> VersionPage:
        query = {"versions": "", "prefix": prefix, "encoding-type": "url"}
        if key_marker is not None:
            query.update({"key-marker": key_marker, "version-id-marker": version_marker or ""})
        return parse_version_page(self._request("ListObjectVersions", "GET", "", query=query).body)

    def list_objects_page(self, prefix: str, token: str | None = None) -> ObjectPage:
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        return parse_object_page(self._request("ListObjectsV2", "GET", "", query=query).body)


def object_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The user metadata (x-amz-meta-*) of a response, as boto3 reports it."""
    return {
        name[len("x-amz-meta-") :]: value
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }


class LeanDynamoDB:
    """DynamoDB's JSON API without botocore's per-call work: items travel as the wire form
    (numbers as text, binary as base64 text), exactly what the backup bodies hold."""

    def __init__(self, dynamodb_client: Any, credentials_source: Any) -> None:
        endpoint = urlsplit(dynamodb_client.meta.endpoint_url)
        self.signer = SigV4Signer("dynamodb", dynamodb_client.meta.region_name or "us-east-1")
        self._host_header = endpoint.netloc
        self._pool = ConnectionPool(endpoint.scheme, endpoint.hostname or "", endpoint.port)
        self._credentials_source = credentials_source

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Call ``operation`` with a wire-form request; the parsed wire-form answer."""
        body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {
            "host": self._host_header,
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": f"DynamoDB_20120810.{operation}",
        }
        self.signer.sign(
            "POST", "/", "", headers, payload_hash, current_credentials(self._credentials_source)
        )
        headers["content-length"] = str(len(body))
        response = self._pool.send("POST", "/", headers, body)
        if response.status >= 300:
            raise dynamodb_error(operation, response)
        return json.loads(response.body)


def dynamodb_error(operation: str, response: Response) -> ClientError:
    """botocore's ClientError for a DynamoDB JSON error answer."""
    try:
        document = json.loads(response.body)
    except ValueError:
        document = {}
    code = str(document.get("__type", response.status)).rpartition("#")[2]
    message = document.get("message") or document.get("Message") or ""
    return _client_error(operation, response, code, message)


class BotocoreDynamoDB:
    """The same ``call`` as ``LeanDynamoDB``, through a boto3 client (binary converted
    between base64 text and bytes both ways). For hosts where the lean path does not fit,
    such as behind an HTTP proxy."""

    def __init__(self, dynamodb_client: Any) -> None:
        self.client = dynamodb_client

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        method = getattr(self.client, xform_name(operation))
        answer = method(**from_wire(dict(request)))
        answer.pop("ResponseMetadata", None)
        return to_wire(answer)


PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def lean_path_usable(environ: Mapping[str, str] | None = None) -> bool:
    """The lean path speaks to endpoints directly: not when a proxy is configured, nor when
    DYNAMO_BACKUPS_CLIENT=boto3 asks for botocore everywhere."""
    environ = os.environ if environ is None else environ
    if environ.get("DYNAMO_BACKUPS_CLIENT", "").strip().lower() == "boto3":
        return False
    return not any(environ.get(name) for name in PROXY_VARIABLES)
