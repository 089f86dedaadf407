"""DynamoDB's JSON API calls through libcurl (``aws.curl_posts``): the request botocore's
signer signed, sent as botocore's session sends it; failures raised as botocore's session
raises them (so the retry policies treat them alike); the session kept where it would use a
proxy, skip certificate checks or send a client certificate. DynamoDB Local, through a
fault proxy."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from dynamo_backups.aws import curl_posts, curl_reads
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.errors import error_code, http_status, is_transient
from tests import faultproxy, servers
from tests.helpers import FixedCredentials, create_table, scan_all
from tests.jobs.test_journal_compact_restore import History, restore, restored_state
from tests.jobs.test_journal_restore_ahead import backed_up_journal  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


class Worker:
    """A RawDynamoDB whose calls are made on a worker thread, as bulk work makes them (the
    main thread's go through botocore's session, which a Ctrl-C interrupts)."""

    def __init__(self, raw: RawDynamoDB) -> None:
        self.raw = raw
        self._curl = raw._curl

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(self.raw.call, operation, request).result()


class NoSession:
    """An HTTP session that must not be used (the call went through libcurl)."""

    def send(self, request: Any) -> Any:
        raise AssertionError(f"sent through botocore's session: {request.url}")


def api(endpoint: str, **config: Any) -> Worker:
    client = servers.make_client("dynamodb", endpoint, **config)
    return Worker(RawDynamoDB(client, FixedCredentials(CREDENTIALS), curl_posts.curl_posts_for))


def put_batch(table: str, first: int, count: int = 25) -> dict[str, Any]:
    items = [
        {"PutRequest": {"Item": {"pk": {"S": f"k{index}"}, "n": {"N": "0.1000000000000000055"}}}}
        for index in range(first, first + count)
    ]
    return {"RequestItems": {table: items}}


def _signed(request: faultproxy.Request) -> list[str]:
    return request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.mark.servers
def test_a_call_sends_what_botocores_session_sends(
    monkeypatch: pytest.MonkeyPatch, dynamodb_local: Any, dynamodb: Any
) -> None:
    table = create_table(dynamodb, view_type=None)
    bodies: list[bytes] = []

    def keep_body(request: faultproxy.Request) -> tuple[bytes, Any]:
        bodies.append(request.body)
        return request.body, lambda answer: answer

    with faultproxy.FaultProxy(dynamodb_local.endpoint, rewrite=keep_body) as proxy:
        monkeypatch.setenv(curl_posts.CURL_DYNAMODB_VARIABLE, "off")
        session = api(proxy.endpoint)
        monkeypatch.delenv(curl_posts.CURL_DYNAMODB_VARIABLE)
        curl = api(proxy.endpoint)
        assert session._curl is None and curl._curl is not None
        curl.raw._http = NoSession()
        session.call("BatchWriteItem", put_batch(table, 0))
        answer = curl.call("BatchWriteItem", put_batch(table, 0))
        assert answer["UnprocessedItems"] == {}
        assert answer["ResponseMetadata"]["HTTPHeaders"]["date"]
        by_session, by_curl = proxy.log.requests
    assert bodies[0] == bodies[1]  # the same body, byte for byte
    assert (by_curl.method, by_curl.path) == (by_session.method, by_session.path) == ("POST", "/")
    assert _signed(by_curl) == _signed(by_session)
    for name in _signed(by_session):
        if name not in ("x-amz-date",):
            assert by_curl.headers[name] == by_session.headers[name], name
    assert by_curl.headers["content-length"] == by_session.headers["content-length"]
    assert "expect" not in by_curl.headers
    assert by_curl.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{servers.REGION}/dynamodb/aws4_request" in by_curl.headers["authorization"]
    # The numbers went as text, digit for digit.
    stored = scan_all(dynamodb, table)
    assert {item["n"]["N"] for item in stored.values()} == {"0.1000000000000000055"}


@pytest.mark.servers
def test_failures_are_raised_as_botocores_session_raises_them(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    table = create_table(dynamodb, view_type=None)
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}"
    with pytest.raises(EndpointConnectionError) as caught:
        api(refused).call("BatchWriteItem", put_batch(table, 0))
    assert is_transient(caught.value)

    def failure(rule: faultproxy.Rule, operation: str, request: dict[str, Any]) -> Exception:
        with faultproxy.FaultProxy(dynamodb_local.endpoint, rule, delay=0.0) as proxy:
            try:
                api(proxy.endpoint, read_timeout=1, connect_timeout=1).call(operation, request)
            except Exception as error:
                return error
        raise AssertionError("no failure")

    reset = failure(lambda _: faultproxy.RESET, "BatchWriteItem", put_batch(table, 0))
    assert isinstance(reset, ConnectionClosedError) and is_transient(reset)

    throttled = failure(lambda _: faultproxy.THROTTLE, "BatchWriteItem", put_batch(table, 0))
    assert (error_code(throttled), http_status(throttled)) == ("ThrottlingException", 400)
    assert isinstance(throttled, ClientError) and is_transient(throttled)

    def slow(_: faultproxy.Request) -> str:
        time.sleep(3)
        return faultproxy.FORWARD

    timed_out = failure(slow, "DescribeTable", {"TableName": table})
    assert isinstance(timed_out, ReadTimeoutError) and is_transient(timed_out)

    damaged = faultproxy.Answer(
        200, {"x-amz-crc32": "12345", "Content-Type": "application/x-amz-json-1.0"}, b"{}"
    )
    crc = failure(lambda _: damaged, "DescribeTable", {"TableName": table})
    assert error_code(crc) == "CRC32CheckFailed" and is_transient(crc)
    assert scan_all(dynamodb, table) == {}


@pytest.mark.servers
def test_a_handle_whose_request_failed_is_not_reused(dynamodb_local: Any, dynamodb: Any) -> None:
    table = create_table(dynamodb, view_type=None)
    numbers = iter(range(1, 100))

    def second_reset(request: faultproxy.Request) -> str:
        # libcurl sends a request again, once, when a reused connection dies unanswered.
        return faultproxy.RESET if next(numbers) in (2, 3) else faultproxy.FORWARD

    with faultproxy.FaultProxy(dynamodb_local.endpoint, second_reset) as proxy:
        calls = api(proxy.endpoint)
        calls.call("BatchWriteItem", put_batch(table, 0))
        with pytest.raises(ConnectionClosedError):
            calls.call("BatchWriteItem", put_batch(table, 25))
        calls.call("BatchWriteItem", put_batch(table, 25))
    assert len(scan_all(dynamodb, table)) == 50


def test_the_session_sends_where_it_would_use_a_proxy_or_skip_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = "https://dynamodb.us-east-1.amazonaws.com"
    assert api(endpoint)._curl is not None
    assert api(endpoint, proxies={"https": "http://proxy.example:3128"})._curl is None
    client = servers.make_client("dynamodb", endpoint)
    client._endpoint.http_session._verify = False  # verify=False given to boto3
    assert (
        RawDynamoDB(client, FixedCredentials(CREDENTIALS), curl_posts.curl_posts_for)._curl is None
    )
    monkeypatch.setenv(curl_posts.CURL_DYNAMODB_VARIABLE, "off")
    assert api(endpoint)._curl is None


@pytest.mark.servers
def test_a_call_on_the_main_thread_goes_through_the_session(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    """libcurl's wait is not cut short by a signal: the main thread's calls keep to the
    session, which a Ctrl-C interrupts (``test_curl_posts_review``), bulk work's threads
    go through libcurl."""
    table = create_table(dynamodb, view_type=None)
    calls = api(dynamodb_local.endpoint)
    calls.raw._http = NoSession()
    calls.call("DescribeTable", {"TableName": table})  # a worker thread: libcurl
    with pytest.raises(AssertionError, match="botocore's session"):
        calls.raw.call("DescribeTable", {"TableName": table})


@pytest.mark.servers
def test_a_journal_restore_through_resets_and_throttling_writes_every_item(
    dynamodb: Any,
    dynamodb_local: Any,
    s3: Any,
    bucket: str,
    backed_up_journal: tuple[str, str, History],  # noqa: F811
) -> None:
    """Every 4th DynamoDB request reset, every 7th throttled: the restored table is the
    table, nothing lost or doubled."""
    table, folder, history = backed_up_journal
    lock, count = threading.Lock(), [0]

    def rule(request: faultproxy.Request) -> str:
        with lock:
            count[0] += 1
            number = count[0]
        if "BatchWriteItem" not in request.headers.get("x-amz-target", ""):
            return faultproxy.FORWARD
        if number % 4 == 0:
            return faultproxy.RESET
        return faultproxy.THROTTLE if number % 7 == 0 else faultproxy.FORWARD

    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:

        class Through:
            endpoint = proxy.endpoint

        target, report = restore(Through(), s3, bucket, folder, None)
        faults = len(proxy.log.faults)
    assert faults >= 3
    assert restored_state(dynamodb, target) == restored_state(dynamodb, table)
    assert report.written == len(history.state_at(None))
