"""DynamoDB's JSON API requests sent by libcurl (pycurl) instead of urllib3.

A restore writes every item with BatchWriteItem, 25 at a time; through botocore's HTTP session
each call costs the client some 400-500 µs of CPU beyond its body (urllib3's connection pool,
header objects, http.client's parsing), a fifth of a journal restore's client CPU per item.
Here the request is the very one ``dynamodb.RawDynamoDB`` builds and botocore's own SigV4
signer signs (its URL, headers and body, byte for byte): only the exchange is libcurl's,
on keep-alive connections from a pool of easy handles, one request per calling thread at a
time. Failures are raised as the botocore exceptions urllib3's would have been (connection
refused or reset, timeouts, TLS), so the callers' retry policies treat them alike.

Bulk work's threads only: a call on the main thread goes through the session, which a Ctrl-C
interrupts at once (libcurl's wait goes on until its timeout). Used only where botocore's
session would send the request straight to the endpoint: no proxy
for its URL, certificates checked against the file botocore's session uses (the configured CA
bundle, else botocore's default), no client certificate; DYNAMO_BACKUPS_CURL_DYNAMODB=off
turns it off.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import HeadersDict
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path

from dynamo_backups.aws.curl_reads import available, pycurl

CURL_DYNAMODB_VARIABLE = "DYNAMO_BACKUPS_CURL_DYNAMODB"
_CONNECT_FAILURES = frozenset({6, 7})  # COULDNT_RESOLVE_HOST, COULDNT_CONNECT
_TIMED_OUT = 28  # OPERATION_TIMEDOUT
_SESSION_HEADERS = ("Accept-Encoding: identity", "Expect:", "Accept:")
_TLS_FAILURES = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91})


def enabled() -> bool:
    """False when DYNAMO_BACKUPS_CURL_DYNAMODB=off, or pycurl is not installed."""
    setting = os.environ.get(CURL_DYNAMODB_VARIABLE, "").strip().lower()
    return setting not in ("off", "0", "no") and available()


@dataclass(frozen=True)
class CurlAnswer:
    """An answer as ``RawDynamoDB`` and botocore's error parser read urllib3's."""

    status_code: int
    headers: HeadersDict
    content: bytes


class CurlPosts:
    """POST requests through libcurl, from any number of threads (an easy handle each
    while its request runs; idle handles, and their connections, are reused)."""

    def __init__(self, ca_bundle: str, connect_timeout: float, read_timeout: float) -> None:
        self._ca_bundle = ca_bundle
        self._connect_ms = max(1, int(connect_timeout * 1000))
        # botocore's read timeout bounds each wait for the next bytes, not the exchange (a
        # large page still arriving is let be): ``_Idle`` ends a request silent that long.
        self._read_timeout = read_timeout
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def post(self, url: str, headers: Mapping[str, str], body: bytes) -> CurlAnswer:
        """Send the signed request; its answer, or the botocore exception for a failure."""
        with self._lock:
            handle = self._idle.pop() if self._idle else self._easy()
        received: list[bytes] = []
        answer_headers: list[bytes] = []
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.POSTFIELDS, body)
        # The signed headers and what botocore's session adds (an answer as it is, never
        # compressed); no Expect (a 100-continue round trip) or Accept.
        sent = [f"{name}: {value}" for name, value in headers.items()]
        handle.setopt(pycurl.HTTPHEADER, [*sent, *_SESSION_HEADERS])
        handle.setopt(pycurl.WRITEFUNCTION, received.append)
        handle.setopt(pycurl.HEADERFUNCTION, answer_headers.append)
        idle = _Idle(handle, self._read_timeout)
        handle.setopt(pycurl.XFERINFOFUNCTION, idle.progress)
        try:
            handle.perform()
        except pycurl.error as error:
            failure = _botocore_error(error, url, handle, idle.timed_out)
            handle.close()  # its connection's state is unknown: never reused
            raise failure from None
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        with self._lock:
            self._idle.append(handle)
        return CurlAnswer(status, _parsed_headers(answer_headers), b"".join(received))

    def _easy(self) -> Any:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.TCP_NODELAY, 1)
        handle.setopt(pycurl.PROXY, "")  # used only where botocore would use none
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        handle.setopt(pycurl.NOPROGRESS, 0)  # calls XFERINFOFUNCTION: the read timeout
        handle.setopt(pycurl.CAINFO, self._ca_bundle)  # the file botocore's session uses
        handle.setopt(pycurl.CAPATH, "")
        return handle

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()


class _Idle:
    """libcurl's progress callback (at least once a second while a request runs): ends the
    request once nothing has been sent or received for ``read_timeout`` seconds after the
    connection was made (a connection being made is the connect timeout's)."""

    def __init__(self, handle: Any, read_timeout: float) -> None:
        self._handle = handle
        self._read_timeout = read_timeout
        self._seen = (-1, -1)
        self._since: float | None = None
        self.timed_out = False

    def progress(self, _dltotal: int, dlnow: int, _ultotal: int, ulnow: int) -> int:
        now = time.monotonic()
        if (dlnow, ulnow) != self._seen:
            self._seen, self._since = (dlnow, ulnow), now
            return 0
        if self._since is None or now - self._since < self._read_timeout:
            return 0
        if not dlnow and not ulnow and not self._handle.getinfo(pycurl.PRETRANSFER_TIME):
            self._since = now  # still connecting
            return 0
        self.timed_out = True
        return 1  # ends the request: E_ABORTED_BY_CALLBACK


def _parsed_headers(lines: list[bytes]) -> HeadersDict:
    """The last answer's headers (an interim 100 answer's are dropped)."""
    headers = HeadersDict()
    for raw in lines:
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            headers = HeadersDict()
        elif ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip()] = value.strip()
    return headers


def _botocore_error(error: Any, url: str, handle: Any, idle: bool) -> Exception:
    """The exception botocore's session raises for the same failure (``idle``: ended by
    ``_Idle``, the read timeout)."""
    code = error.args[0] if error.args else 0
    message = error.args[1] if len(error.args) > 1 else str(error)
    if idle:
        return ReadTimeoutError(endpoint_url=url, error=message)
    if code in _CONNECT_FAILURES:
        return EndpointConnectionError(endpoint_url=url, error=message)
    if code == _TIMED_OUT:  # only CONNECTTIMEOUT_MS is set
        return ConnectTimeoutError(endpoint_url=url, error=message)
    if code in _TLS_FAILURES:
        return SSLError(endpoint_url=url, error=message)
    return ConnectionClosedError(endpoint_url=url)


def curl_posts_for(client: Any, url: str) -> CurlPosts | None:
    """libcurl for ``client``'s requests to ``url`` where its HTTP session would send them
    straight there with certificates checked and no client certificate; else None."""
    if not enabled():
        return None
    session = client._endpoint.http_session  # the client's own HTTP session
    proxy_config = getattr(session, "_proxy_config", None)
    if proxy_config is None or proxy_config.proxy_url_for(url):
        return None
    verify = getattr(session, "_verify", True)
    if not verify or getattr(session, "_cert_file", None):
        return None
    config = client.meta.config
    return CurlPosts(
        get_cert_path(verify), float(config.connect_timeout), float(config.read_timeout)
    )
