"""The lean HTTP/1.1 connection against a scripted loopback server: every way an answer can be
framed, answers delivered a byte at a time, and the failures it must report rather than hide."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trustme
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

from dynamo_backups.http11 import (
    ClosedBeforeAnswer,
    Connection,
    ProtocolError,
    _header_fields,
    _status_line,
)
from dynamo_backups.wire import ConnectionPool
from tests import servers

# A script answers one connection: it gets the socket and the requests read so far.
Script = Callable[[socket.socket, "RequestReader"], None]


class RequestReader:
    """Reads whole requests (head and Content-Length body) from a server-side socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.requests: list[bytes] = []

    def next(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        request = head + b"\r\n\r\n" + rest[:length]
        self.requests.append(request)
        return request


@contextmanager
def scripted_server(*scripts: Script) -> Iterator[tuple[int, list[RequestReader]]]:
    """A server that runs one script per accepted connection, in order."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    readers: list[RequestReader] = []

    def serve() -> None:
        for script in scripts:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            reader = RequestReader(connection)
            readers.append(reader)
            try:
                script(connection, reader)
            finally:
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], readers
    finally:
        listener.close()
        thread.join(timeout=5)


def answers(*payloads: bytes, byte_by_byte: bool = False) -> Script:
    """Answer each request on the connection with the next payload, then close."""

    def script(sock: socket.socket, reader: RequestReader) -> None:
        for payload in payloads:
            if reader.next() is None:
                return
            if byte_by_byte:
                for index in range(len(payload)):
                    sock.sendall(payload[index : index + 1])
                    time.sleep(0.0005)
            else:
                sock.sendall(payload)

    return script


def drop(sock: socket.socket, reader: RequestReader) -> None:
    """Read the request and close without answering (FIN, not a reset)."""
    reader.next()


def connect(port: int, timeout: float = 5.0) -> Connection:
    return Connection("127.0.0.1", port, timeout)


HEADERS = {"host": "127.0.0.1"}


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_content_length_answers_on_one_keep_alive_connection(byte_by_byte: bool) -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Amz-Meta-A: 1\r\n\r\nhello"
    second = b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nnot"
    with scripted_server(answers(first, second, byte_by_byte=byte_by_byte)) as (port, readers):
        connection = connect(port)
        one = connection.exchange("GET", "/a", HEADERS)
        two = connection.exchange("PUT", "/b", {**HEADERS, "content-length": "4"}, b"body")
    assert (one.status, one.reason, one.body, one.keep_alive) == (200, "OK", b"hello", True)
    assert one.headers == {"content-length": "5", "x-amz-meta-a": "1"}
    assert (two.status, two.body) == (404, b"not")
    (reader,) = readers
    assert reader.requests[0].startswith(b"GET /a HTTP/1.1\r\nhost: 127.0.0.1\r\n")
    assert reader.requests[1].endswith(b"content-length: 4\r\n\r\nbody")


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_chunked_answer_with_extensions_and_trailers(byte_by_byte: bool) -> None:
    payload = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    # The 204 comes early, right behind the first answer: it must be kept for the next request.
    with scripted_server(answers(payload, b"", byte_by_byte=byte_by_byte)) as (port, _):
        connection = connect(port)
        answer = connection.exchange("GET", "/", HEADERS)
        assert answer.body == b"hello world"
        assert connection.exchange("DELETE", "/", HEADERS).status == 204


def test_answer_without_length_is_read_until_the_server_closes() -> None:
    payload = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"
    with scripted_server(answers(payload)) as (port, _):
        connection = connect(port)
        answer = connection.exchange("GET", "/", HEADERS)
    assert answer.body == b"to the end" and not answer.keep_alive
    assert connection.sock is None  # not reused


def test_connection_close_header_closes_after_the_answer() -> None:
    payload = b"HTTP/1.1 503 Slow Down\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
    with scripted_server(answers(payload)) as (port, _):
        connection = connect(port)
        answer = connection.exchange("GET", "/", HEADERS)
    assert (answer.status, answer.body, answer.keep_alive) == (503, b"no", False)
    assert connection.sock is None


def test_head_and_not_modified_have_no_body_and_interim_answers_are_skipped() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
    with scripted_server(answers(head, interim)) as (port, _):
        connection = connect(port)
        assert connection.exchange("HEAD", "/", HEADERS).body == b""
        answer = connection.exchange("GET", "/", HEADERS)
    assert (answer.status, answer.body, answer.headers) == (304, b"", {"etag": "x"})


def test_repeated_headers_are_joined() -> None:
    assert _header_fields(["A: 1", "a:2", "B:  x y  "]) == {"a": "1, 2", "b": "x y"}


@pytest.mark.parametrize(
    "line", ["SSH-2.0-OpenSSH", "HTTP/1.1 2000 OK", "HTTP/1.1 abc OK", "", "200 OK"]
)
def test_a_line_that_is_not_a_status_line_is_refused(line: str) -> None:
    with pytest.raises(ProtocolError):
        _status_line(line)


@pytest.mark.parametrize(
    "payload",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # body cut off
        b"HTTP/1.1 200 OK\r\nContent-Len",  # head cut off
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabcdefgh",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
def test_malformed_or_truncated_answers_are_errors(payload: bytes) -> None:
    with scripted_server(answers(payload)) as (port, _):
        connection = connect(port)
        with pytest.raises(ProtocolError):
            connection.exchange("GET", "/", HEADERS)


def test_a_server_that_closes_without_answering() -> None:
    with scripted_server(drop) as (port, _):
        connection = connect(port)
        with pytest.raises(ClosedBeforeAnswer):
            connection.exchange("GET", "/", HEADERS)


def test_a_silent_server_times_out() -> None:
    def silent(sock: socket.socket, reader: RequestReader) -> None:
        reader.next()
        time.sleep(1.0)

    with scripted_server(silent) as (port, _):
        connection = connect(port, timeout=0.2)
        with pytest.raises(TimeoutError):
            connection.exchange("GET", "/", HEADERS)


def test_pool_reopens_an_idle_connection_the_server_closed_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def answer_then_drop_next(sock: socket.socket, reader: RequestReader) -> None:
        answers(ok)(sock, reader)
        reader.next()  # the second request arrives; the server closes without answering

    with scripted_server(answer_then_drop_next, answers(ok)) as (port, readers):
        pool = ConnectionPool("http", "127.0.0.1", port)
        assert pool.send("GET", "/1", HEADERS, b"").body == b"ok"
        assert pool.send("GET", "/2", HEADERS, b"").body == b"ok"
    assert [len(reader.requests) for reader in readers] == [2, 1]


def test_pool_does_not_resend_on_a_fresh_connection_and_maps_errors() -> None:
    with scripted_server(drop) as (port, _):
        pool = ConnectionPool("http", "127.0.0.1", port)
        with pytest.raises(ConnectionClosedError):
            pool.send("GET", "/", HEADERS, b"")
    with scripted_server(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")) as (
        port,
        _,
    ):
        pool = ConnectionPool("http", "127.0.0.1", port)
        with pytest.raises(ConnectionClosedError):
            pool.send("GET", "/", HEADERS, b"")
    pool = ConnectionPool("http", "127.0.0.1", servers.free_port())
    with pytest.raises(EndpointConnectionError):
        pool.send("GET", "/", HEADERS, b"")


def test_large_bodies_cross_many_receives() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    payload = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with scripted_server(answers(payload)) as (port, _):
        assert connect(port).exchange("GET", "/", HEADERS).body == body


def test_tls_with_the_ca_bundle_from_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS endpoints are HTTPS: the certificate is checked against AWS_CA_BUNDLE, as botocore
    does, and a certificate for another name is refused."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))

    def tls(script: Script) -> Script:
        def wrapped(sock: socket.socket, reader: RequestReader) -> None:
            try:
                secure = server_context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused the handshake
            script(secure, RequestReader(secure))

        return wrapped

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"
    with scripted_server(tls(answers(ok, ok)), tls(answers(ok))) as (port, _):
        pool = ConnectionPool("https", "localhost", port)
        assert pool.send("GET", "/", {"host": f"localhost:{port}"}, b"").body == b"secret"
        assert pool.send("GET", "/", {"host": f"localhost:{port}"}, b"").body == b"secret"
        wrong_name = ConnectionPool("https", "127.0.0.1", port)
        with pytest.raises(ConnectionClosedError) as refused:
            wrong_name.send("GET", "/", {"host": f"127.0.0.1:{port}"}, b"")
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
