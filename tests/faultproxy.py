"""A loopback HTTP proxy that injects faults in front of a real server.

Requests are forwarded unchanged (Host header included, so SigV4 still verifies). A rule
decides per request whether to forward it or to answer with a fault: S3 503 SlowDown or 500
InternalError, a DynamoDB ThrottlingException, a reset connection, or an ``Answer`` of its
own (a region redirect, say). Every request is recorded (method, target, headers). With
``tls`` the proxy speaks HTTPS (a test CA's certificate); requests in absolute form (as sent
to an HTTP forward proxy) are forwarded to the upstream all the same.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FORWARD = "forward"
SLOW_DOWN = "slowdown"
INTERNAL_ERROR = "internal"
THROTTLE = "throttle"
RESET = "reset"

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lowercase
    body: bytes
    number: int  # 1-based count of requests the proxy has seen


@dataclass(frozen=True)
class Answer:
    """An answer the proxy gives itself instead of forwarding."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Rule = Callable[[Request], "str | Answer"]
# Changes a request's body before it is forwarded and the answer's body before it is returned.
Rewrite = Callable[[Request], "tuple[bytes, Callable[[bytes], bytes]] | None"]


@dataclass
class FaultLog:
    faults: list[tuple[str, str, str]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)  # bodies left out
    forwarded: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer is written (a timeout, a Ctrl-C) is no error
    of the proxy's: socketserver would print its traceback to stderr, where a test capturing
    a command's output (CliRunner) would read it as the command's."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    """``with FaultProxy(upstream, rule) as proxy: ... proxy.endpoint``"""

    def __init__(
        self,
        upstream: str,
        rule: Rule | None = None,
        delay: float = 0.0,
        rewrite: Rewrite | None = None,
        tls: ssl.SSLContext | None = None,
        fix_checksum: bool = True,
    ) -> None:
        self.delay = delay
        self.rewrite = rewrite
        self.fix_checksum = fix_checksum
        self.tls = tls
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rule: Rule = rule or (lambda request: FORWARD)
        self.log = FaultLog()
        self._count = 0
        self._count_lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_number(self) -> int:
        with self._count_lock:
            self._count += 1
            return self._count

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                body = self._read_body()
                headers = dict(self.headers.items())
                request = Request(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in headers.items()},
                    body,
                    proxy._next_number(),
                )
                with proxy.log.lock:
                    proxy.log.requests.append(
                        Request(request.method, request.path, request.headers, b"", request.number)
                    )
                action = proxy.rule(request)
                if isinstance(action, Answer):
                    self._answer(action)
                    return
                if action != FORWARD:
                    with proxy.log.lock:
                        proxy.log.faults.append((action, self.command, self.path))
                    self._fault(action)
                    return
                with proxy.log.lock:
                    proxy.log.forwarded += 1
                    proxy.log.in_flight += 1
                    proxy.log.max_in_flight = max(proxy.log.max_in_flight, proxy.log.in_flight)
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    if proxy.delay:
                        time.sleep(proxy.delay)
                    finish: Callable[[bytes], bytes] = _unchanged
                    if proxy.rewrite is not None:
                        rewritten = proxy.rewrite(request)
                        if rewritten is not None:
                            body, finish = rewritten
                            # DynamoDB Local does not check signatures, so the signed
                            # request can be changed.
                            headers = {
                                name: value
                                for name, value in headers.items()
                                if name.lower() != "content-length"
                            }
                            headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    original = response.read()
                    payload = finish(original)
                    self.send_response_only(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            rewritten = payload != original and proxy.fix_checksum
                            # A rewritten DynamoDB answer carries its own checksum, as a
                            # server that answered so would.
                            fixed = str(zlib.crc32(payload)) if rewritten else value
                            self.send_header(
                                name, fixed if name.lower() == "x-amz-crc32" else value
                            )
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()
                    with proxy.log.lock:
                        proxy.log.in_flight -= 1

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            def _fault(self, action: str) -> None:
                if action == RESET:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                status, content_type, payload = _FAULT_ANSWERS[action]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if action == THROTTLE:
                    self.send_header("x-amzn-ErrorType", "ThrottlingException")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


_FAULT_ANSWERS = {
    SLOW_DOWN: (
        503,
        "application/xml",
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
        b"<Message>Please reduce your request rate.</Message></Error>",
    ),
    INTERNAL_ERROR: (
        500,
        "application/xml",
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
        b"<Message>We encountered an internal error.</Message></Error>",
    ),
    THROTTLE: (
        400,
        "application/x-amz-json-1.0",
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
        b'"message":"Rate of requests exceeds the allowed throughput."}',
    ),
}


def every_nth(n: int, fault: str, method: str | None = None) -> Rule:
    """Fault every n-th request (optionally only of one HTTP method)."""

    def rule(request: Request) -> str:
        if method and request.method != method:
            return FORWARD
        return fault if request.number % n == 0 else FORWARD

    return rule


def _unchanged(payload: bytes) -> bytes:
    return payload


class BeforeForwarding:
    """A rule that runs ``action`` once, just before forwarding the first request that
    ``matches`` (then forwards it): a concurrent write injected at an exact point of a
    writer's work, between its look at an object and its write. ``fired`` tells whether it
    ran."""

    def __init__(self, matches: Callable[[Request], bool], action: Callable[[], None]) -> None:
        self.matches = matches
        self.action = action
        self.fired = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str:
        with self._lock:
            if not self.fired.is_set() and self.matches(request):
                self.fired.set()
                self.action()
        return FORWARD


def put_of(name: str, header: str, value: str | None = None) -> Callable[[Request], bool]:
    """Matches a PUT of the object whose key ends with ``name`` that carries ``header``
    (lowercase; with ``value``, that value)."""

    def matches(request: Request) -> bool:
        path = request.path.split("?", 1)[0]
        if request.method != "PUT" or not path.endswith(name) or header not in request.headers:
            return False
        return value is None or request.headers[header] == value

    return matches
