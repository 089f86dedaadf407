"""A lean HTTP/1.1 client connection for the hot request paths.

``http.client`` parses every response's headers with the ``email`` package, which costs more
CPU than signing and sending the request together; on two cores shared with the servers, that
is a visible share of a restore. This connection reads the status line and headers itself and
the body by ``Content-Length``, chunked transfer coding, or until the server closes. It sends
one request at a time on a keep-alive socket (no pipelining).

Standard library only (the Lambda handler uses it through ``dynamo_backups.wire``).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
_RECEIVE_BYTES = 256 * 1024


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as this client reads it."""


class ClosedBeforeAnswer(ConnectionError):
    """The server closed the connection before sending any byte of an answer (as a server
    does with an idle keep-alive connection)."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # names in lowercase; repeated headers joined with ", "
    body: bytes
    keep_alive: bool


class Connection:
    """One keep-alive connection to ``host:port`` (TLS when ``context`` is given)."""

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.sock: socket.socket | None = None
        self._buffer = bytearray()

    def open(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock
        self._buffer.clear()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self._buffer.clear()

    def exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Answer:
        """Send one request and read its whole answer. ``headers`` must hold ``host`` and,
        when there is a body, ``content-length``."""
        if self.sock is None:
            self.open()
        head = "".join(
            [f"{method} {target} HTTP/1.1\r\n", *(f"{n}: {v}\r\n" for n, v in headers.items())]
        )
        message = head.encode("latin-1") + b"\r\n" + body
        assert self.sock is not None
        self.sock.sendall(message)
        while True:
            answer = self._read_answer(method)
            if not 100 <= answer.status < 200:  # an interim answer (100 Continue) is skipped
                break
        if not answer.keep_alive:
            self.close()
        return answer

    # --- reading -------------------------------------------------------------------------------

    def _receive(self) -> bool:
        assert self.sock is not None
        chunk = self.sock.recv(_RECEIVE_BYTES)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def _read_answer(self, method: str) -> Answer:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"answer head from {self.host} longer than {MAX_HEAD_BYTES}")
            seen = len(buffer)
            if not self._receive():
                if seen == 0:
                    raise ClosedBeforeAnswer(f"{self.host}:{self.port} closed the connection")
                raise ProtocolError(f"{self.host} closed the connection inside an answer head")
            end = buffer.find(b"\r\n\r\n", max(0, seen - 3))
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        status, reason, version = _status_line(lines[0])
        headers = _header_fields(lines[1:])
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Answer(status, reason, headers, b"", keep_alive)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return Answer(status, reason, headers, self._read_chunked(), keep_alive)
        length = headers.get("content-length")
        if length is None:
            return Answer(status, reason, headers, self._read_until_closed(), False)
        size = int(length) if length.isascii() and length.isdigit() else -1
        if size < 0:
            raise ProtocolError(f"bad Content-Length from {self.host}: {length!r}")
        return Answer(status, reason, headers, self._read_exactly(size), keep_alive)

    def _read_exactly(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            if not self._receive():
                raise ProtocolError(
                    f"{self.host} closed the connection after {len(buffer)} of {size} body bytes"
                )
        body = bytes(buffer[:size])
        del buffer[:size]
        return body

    def _read_line(self) -> bytes:
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES or not self._receive():
                raise ProtocolError(f"bad chunked body from {self.host}")
            end = buffer.find(b"\r\n")
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size from {self.host}: {size_text!r}") from None
            if size == 0:
                while self._read_line():  # trailer fields, then the empty line
                    pass
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            if self._read_line():
                raise ProtocolError(f"chunk from {self.host} not followed by CRLF")

    def _read_until_closed(self) -> bytes:
        while self._receive():
            pass
        body = bytes(self._buffer)
        self._buffer.clear()
        return body


def _status_line(line: str) -> tuple[int, str, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP status line: {line[:100]!r}")
    return int(code), reason, version


def _header_fields(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"not an HTTP header line: {line[:100]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
