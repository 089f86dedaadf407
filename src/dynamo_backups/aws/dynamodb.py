"""DynamoDB's JSON API for bulk work, with items in their wire form.

Scan, BatchWriteItem, GetItem and BatchGetItem carry items exactly as the backup bodies hold
them (numbers as text, binary as base64 text). ``RawDynamoDB`` sends those calls through
botocore's own SigV4 signer and the client's own HTTP session (its proxies, CA bundle,
timeouts and connection pool), to the endpoint botocore resolved, and skips only the
parameter validation and the model-driven (de)serialization that would cost more CPU than
the request itself on every page of 1,000 items. Where that session would send straight to
the endpoint, the signed request goes through libcurl instead (``curl_posts``: a fraction of
urllib3's CPU per request). ``BotocoreDynamoDB`` makes the same calls
through a plain boto3 client (binary converted between base64 text and bytes both ways).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from botocore import xform_name
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from dynamo_backups.aws.endpoints import SIGV4, UnsupportedTarget, prepared_request
from dynamo_backups.aws.errors import client_error, modeled_error
from dynamo_backups.aws.waiting import watched
from dynamo_backups.core.ddbjson import from_wire, to_wire
from dynamo_backups.core.json_text import compact

TARGET_PREFIX = "DynamoDB_20120810"
_MAIN_THREAD = threading.main_thread()


class Poster(Protocol):
    """Sends a signed request, answering as botocore's session does (``curl_posts``)."""

    def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Any: ...


class RawDynamoDB:
    """``call(operation, wire_request) -> wire_answer`` through botocore's signer and HTTP
    session, without its serializers."""

    def __init__(
        self,
        dynamodb_client: Any,
        credentials_source: Any,
        curl_for: Callable[[Any, str], Poster | None] | None = None,
    ) -> None:
        self.client = dynamodb_client
        prepared = prepared_request(dynamodb_client, "Scan", TableName="dynamo-backups-probe")
        if prepared.algorithm != SIGV4:
            raise UnsupportedTarget(f"DynamoDB is signed with {prepared.algorithm}")
        self.url = prepared.url
        self.user_agent = prepared.user_agent
        self._signing = (prepared.signing_name, prepared.signing_region)
        self._credentials_source = credentials_source
        self._http = dynamodb_client._endpoint.http_session  # the client's own HTTP session
        # libcurl for bulk work's threads, where it applies (``curl_posts``); None: the session
        self._curl = curl_for(dynamodb_client, self.url) if curl_for is not None else None

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Call ``operation`` with a wire-form request; the parsed wire-form answer."""
        body = compact(request)
        http_request = AWSRequest(
            "POST",
            self.url,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"{TARGET_PREFIX}.{operation}",
                "User-Agent": self.user_agent,
            },
            data=body,
        )
        name, region = self._signing
        SigV4Auth(self._credentials_source.get_frozen_credentials(), name, region).add_auth(
            http_request
        )
        prepared = http_request.prepare()
        with watched("dynamodb", operation, self.url):
            # Not on the main thread: libcurl's wait is not cut short by a signal, and a
            # Ctrl-C must stop the main thread's call at once, as it stops the session's.
            if self._curl is not None and threading.current_thread() is not _MAIN_THREAD:
                response = self._curl.post(prepared.url, prepared.headers, prepared.body)
            else:
                response = self._http.send(prepared)
        content = response.content
        expected_crc = response.headers.get("x-amz-crc32")
        if expected_crc is not None and zlib.crc32(content) != int(expected_crc):
            # botocore retries such an answer; so do our retry policies (the code is transient).
            raise client_error(operation, "CRC32CheckFailed", "the answer was damaged", 200)
        if response.status_code >= 300:
            raise modeled_error(self.client, "json", operation, response)
        answer = json.loads(content)
        # As botocore gives it: the answer's headers (its Date is DynamoDB's clock).
        answer["ResponseMetadata"] = {"HTTPHeaders": {"date": response.headers.get("Date", "")}}
        return answer


class BotocoreDynamoDB:
    """The same ``call`` as ``RawDynamoDB``, through a boto3 client."""

    def __init__(self, dynamodb_client: Any) -> None:
        self.client = dynamodb_client

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        method = getattr(self.client, xform_name(operation))
        model = self.client.meta.service_model.operation_model(operation)
        answer = method(**by_shape(model.input_shape, dict(request), from_wire))
        metadata = answer.pop("ResponseMetadata", {})
        wire = by_shape(model.output_shape, answer, to_wire)
        wire["ResponseMetadata"] = {
            "HTTPHeaders": {"date": metadata.get("HTTPHeaders", {}).get("date", "")}
        }
        return wire


def by_shape(shape: Any, value: Any, convert: Callable[[Any], Any]) -> Any:
    """``value``, of botocore's ``shape`` (an operation's input or output), with ``convert``
    (``to_wire`` or ``from_wire``) applied to every attribute value in it, found by the
    model, not by field names: a table named "Responses" or "Items", an item of one
    attribute named "L", are what they are."""
    if shape is None:
        return value
    if shape.name == "AttributeValue":
        return convert(value)  # one typed value: no item to mistake it for
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        members = shape.members
        return {
            name: by_shape(members.get(name), member, convert) for name, member in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [by_shape(shape.member, member, convert) for member in value]
    if kind == "map" and isinstance(value, Mapping):
        return {name: by_shape(shape.value, member, convert) for name, member in value.items()}
    return value


def answer_time(answer: Mapping[str, Any]) -> datetime | None:
    """When DynamoDB answered, by its own clock (the answer's Date header, to the second)."""
    text = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None
