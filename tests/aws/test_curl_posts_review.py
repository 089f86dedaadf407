"""Review of 186d5e1 (``aws.curl_posts``: DynamoDB's JSON API calls sent by libcurl where
botocore's session sent them): reproductions where the libcurl exchange does not behave as
botocore's session did. Each passes with DYNAMO_BACKUPS_CURL_DYNAMODB=off (the session).

- libcurl's TIMEOUT_MS is one limit on the whole exchange (connect + read timeouts added),
  where botocore's read timeout is a limit on each wait for the answer's next bytes: an
  answer that keeps arriving is cut off, a silent one is waited on for longer, and the
  retry policies' timeout budget (attempts x read timeout) then allows fewer tries.
- A timeout on a reused connection is raised as ConnectTimeoutError (libcurl's CONNECT_TIME
  is 0 for a connection it did not open): "no connection within the connect timeout".
- Ctrl-C does not stop a call made on the main thread until libcurl's timeout ends.
- The request lacks the ``Accept-Encoding: identity`` header the session sends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from dynamo_backups.aws import curl_posts, curl_reads
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from tests import servers
from tests.aws.test_curl_posts import CREDENTIALS, Worker
from tests.helpers import FixedCredentials, create_table

pytestmark = pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed")

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Forward:
    """Forward the request upstream; send the answer's body in ``chunks`` pieces,
    ``gap`` seconds apart (a slow link: the bytes keep coming)."""

    chunks: int = 1
    gap: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Read the request, answer nothing for ``seconds``, then close the connection."""

    seconds: float


Behaviour = Callable[[int], "Forward | Hang"]


class Scripted:
    """A keep-alive HTTP/1.1 server on loopback doing, for its n-th request (1-based),
    what ``behave(n)`` says; it keeps each request's raw head."""

    def __init__(self, behave: Behaviour, upstream: str | None = None) -> None:
        self.behave = behave
        self.upstream = urlsplit(upstream) if upstream else None
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._closed = True
        self._socket.close()

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client gave up on the connection (its timeout)
            self._exchange(connection)

    def _exchange(self, connection: socket.socket) -> None:
        with connection:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = connection.recv(65536)
                    if not data:
                        return
                    pending += data
                head, pending = pending.split(b"\r\n\r\n", 1)
                lines = head.decode("iso-8859-1").split("\r\n")
                headers = [line.split(":", 1) for line in lines[1:]]
                length = next(
                    (int(value) for name, value in headers if name.lower() == "content-length"),
                    0,
                )
                while len(pending) < length:
                    pending += connection.recv(65536)
                body, pending = pending[:length], pending[length:]
                with self._lock:
                    self.heads.append(head)
                    number = len(self.heads)
                action = self.behave(number)
                if isinstance(action, Hang):
                    time.sleep(action.seconds)
                    return
                self._forward(connection, headers, body, action)

    def _forward(
        self, connection: socket.socket, headers: list[list[str]], body: bytes, how: Forward
    ) -> None:
        assert self.upstream is not None
        upstream = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port or 80, timeout=60
        )
        try:
            upstream.request(
                "POST", "/", body=body, headers={name: value.strip() for name, value in headers}
            )
            answer = upstream.getresponse()
            payload = answer.read()
            head = [f"HTTP/1.1 {answer.status} {answer.reason}"]
            head += [
                f"{name}: {value}"
                for name, value in answer.getheaders()
                if name.lower() not in _HOP_BY_HOP
            ]
            head.append(f"Content-Length: {len(payload)}")
            connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("iso-8859-1"))
            size = -(-len(payload) // how.chunks)
            for start in range(0, len(payload), size):
                if start:
                    time.sleep(how.gap)
                connection.sendall(payload[start : start + size])
        finally:
            upstream.close()


def api(endpoint: str, **config: Any) -> Worker:
    """Calls made on a worker thread, where bulk work makes them (libcurl's path)."""
    client = servers.make_client(
        "dynamodb", endpoint, **{"retries": {"total_max_attempts": 1}, **config}
    )
    return Worker(RawDynamoDB(client, FixedCredentials(CREDENTIALS), curl_posts.curl_posts_for))


def _fill(dynamodb: Any, count: int = 100, size: int = 4000) -> str:
    table = create_table(dynamodb, view_type=None)
    for first in range(0, count, 25):
        dynamodb.batch_write_item(
            RequestItems={
                table: [
                    {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"S": "é" * size}}}}
                    for i in range(first, min(count, first + 25))
                ]
            }
        )
    return table


@pytest.mark.servers
def test_a_scan_page_still_arriving_is_not_cut_off_by_the_read_timeout(
    dynamodb_local: Any, dynamodb: Any
) -> None:
    """A Scan page over a slow link: its bytes keep coming (a piece every 0.3 s, well within
    the 1 s read timeout) but the whole page takes ~3 s. botocore's read timeout bounds each
    wait for bytes, so the session reads it; libcurl's TIMEOUT_MS (connect + read = 2 s)
    bounds the whole exchange and cuts it off, on every retry alike: a backfill over such a
    link can never read a page."""
    table = _fill(dynamodb)
    with Scripted(lambda _: Forward(chunks=10, gap=0.3), dynamodb_local.endpoint) as server:
        calls = api(server.endpoint, connect_timeout=1, read_timeout=1)
        answer = calls.call("Scan", {"TableName": table})
    assert answer["Count"] == 100


def test_a_silent_answer_on_a_reused_connection_is_a_read_timeout_after_the_read_timeout() -> None:
    """The second call goes on the first one's keep-alive connection and gets no answer.
    botocore's session raises ReadTimeoutError after the read timeout (1 s). Through libcurl
    it comes after connect + read (5 s), and as ConnectTimeoutError ("no connection within
    the connect timeout (set DYNAMO_BACKUPS_CONNECT_TIMEOUT ...)", and the CLI's
    EndpointConnectionError line "cannot reach ...: is the endpoint right?"): CONNECT_TIME
    is 0 for a reused connection, read as "not connected"."""
    answered = Scripted(lambda number: Hang(30) if number >= 2 else Forward())
    with socket.socket() as listener, answered:
        # The first call is answered by a minimal DynamoDB-like answer of our own.
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        answered.upstream = urlsplit(f"http://127.0.0.1:{listener.getsockname()[1]}")
        threading.Thread(target=_answer_once, args=(listener,), daemon=True).start()
        calls = api(answered.endpoint, connect_timeout=4, read_timeout=1)
        calls.call("DescribeTable", {"TableName": "t"})
        started = time.monotonic()
        with pytest.raises((ReadTimeoutError, ConnectTimeoutError)) as caught:
            calls.call("DescribeTable", {"TableName": "t"})
        waited = time.monotonic() - started
    assert type(caught.value) is ReadTimeoutError, repr(caught.value)
    assert waited < 3.0, f"waited {waited:.1f} s for a read timeout of 1 s"


def _answer_once(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        pending = b""
        while b"\r\n\r\n" not in pending:
            pending += connection.recv(65536)
        head, rest = pending.split(b"\r\n\r\n", 1)
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        while len(rest) < length:
            rest += connection.recv(65536)
        body = b'{"Table":{"TableName":"t"}}'
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )


@pytest.mark.servers
def test_a_silent_endpoint_gets_the_tries_the_timeout_budget_allows(
    monkeypatch: pytest.MonkeyPatch, dynamodb_local: Any, dynamodb: Any
) -> None:
    """The retry policy gives up on an endpoint that does not answer once its timed-out tries
    have waited attempts x read timeout x 0.9 (here 5 x 1 x 0.9 = 4.5 s). The first two
    requests get no answer, the third is answered: through the session, two 1 s timeouts
    and the third try succeeds. Through libcurl each timeout lasts connect + read (5 s), so
    the first one alone spends the budget: the call fails (RetriesExhausted) after 1 try."""
    monkeypatch.setenv("DYNAMO_BACKUPS_CONNECT_TIMEOUT", "4")
    monkeypatch.setenv("DYNAMO_BACKUPS_READ_TIMEOUT", "1")
    monkeypatch.setenv("DYNAMO_BACKUPS_MAX_ATTEMPTS", "5")
    table = create_table(dynamodb, view_type=None)
    behave: Behaviour = lambda number: Hang(30) if number <= 2 else Forward()  # noqa: E731
    with Scripted(behave, dynamodb_local.endpoint) as server:
        calls = api(server.endpoint, connect_timeout=4, read_timeout=1)
        answer = call_with_retries(
            lambda: calls.call("DescribeTable", {"TableName": table}),
            RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05),
            "DescribeTable",
        )
        tries = len(server.heads)
    assert answer["Table"]["TableName"] == table
    assert tries == 3


class Pressed(KeyboardInterrupt):
    """What the test's SIGINT handler raises (Ctrl-C), as the CLI's does."""


def test_ctrl_c_stops_a_call_waiting_for_its_answer() -> None:
    """Ctrl-C while a call made on the main thread waits for its answer: the session's
    socket read is interrupted at once (the handler runs, its exception propagates).
    libcurl's perform() goes on waiting (it retries its poll on EINTR and holds no Python
    frame), so the handler runs only when libcurl's own timeout ends: here 12 s later, by
    default (10 s connect + 60 s read) 70 s later. A second Ctrl-C (the CLI's os._exit)
    waits alike."""
    with Scripted(lambda _: Hang(60)) as server:
        calls = api(server.endpoint, connect_timeout=2, read_timeout=10).raw  # main thread

        def on_interrupt(signum: int, frame: Any) -> None:
            raise Pressed

        previous = signal.signal(signal.SIGINT, on_interrupt)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        try:
            timer.start()
            with pytest.raises(Pressed):
                calls.call("DescribeTable", {"TableName": "t"})
            stopped = time.monotonic() - started
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
    assert stopped < 3.0, f"Ctrl-C at 0.5 s stopped the call at {stopped:.1f} s"


def test_the_request_carries_the_headers_botocores_session_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same call through the session and through the configured transport: the same
    header lines (names and values; the date and signature apart). The session sends
    ``Accept-Encoding: identity``; libcurl sends no Accept-Encoding at all, which by RFC 9110
    (12.5.3) lets a server or intermediary choose any content coding (gzip), which this
    transport never decodes (no CURLOPT_ACCEPT_ENCODING): a json.loads failure, not
    transient, instead of an answer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        upstream = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Scripted(lambda _: Forward(), upstream) as server:
            threading.Thread(target=_answer_once, args=(listener,), daemon=True).start()
            api(server.endpoint).call("DescribeTable", {"TableName": "tëst"})  # as configured
            threading.Thread(target=_answer_once, args=(listener,), daemon=True).start()
            monkeypatch.setenv(curl_posts.CURL_DYNAMODB_VARIABLE, "off")
            api(server.endpoint).call("DescribeTable", {"TableName": "tëst"})  # the session
            configured, session = (_header_lines(head) for head in server.heads)
    assert configured == session


def _header_lines(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("iso-8859-1").split("\r\n")[1:]
    pairs = [
        (name.strip().lower(), value.strip())
        for name, value in (line.split(":", 1) for line in lines)
    ]
    return sorted(
        (name, value) for name, value in pairs if name not in ("x-amz-date", "authorization")
    )
