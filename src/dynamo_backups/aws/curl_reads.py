"""Many GetObject requests in flight from one thread, through libcurl (pycurl's CurlMulti):
HTTP, TLS and SigV4 (``CURLOPT_AWS_SIGV4``) are libcurl's, the URL and signing region
botocore's (``endpoints.S3Target``).

A restore reads one object per item; through obstore, each read from a Python thread costs
some 130-190 µs of client CPU and several context switches (the request handed to obstore's
runtime threads and back). Driven from one thread with many requests in flight on
keep-alive connections, a GET costs libcurl under half of that (``bench/curl_get.py``).

This is only a way to read ahead: a read that does not come back whole (an error answer,
a connection failure, a body whose length is not the one listed, anything unusual) gives no
result, and the caller reads that version the ordinary way (``FastObjects.read_object``,
with its retries, errors and region redirects). So nothing here decides what a failure
means, and a bucket this path cannot address gets no read-ahead at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable
from io import BytesIO
from typing import Any

from dynamo_backups import __version__
from dynamo_backups.aws.endpoints import S3Target

logger = logging.getLogger("dynamo_backups.aws")

try:  # optional: without it, restores read through obstore only
    import pycurl
except ImportError:  # pragma: no cover - exercised only where the wheel is absent
    pycurl = None  # type: ignore[assignment]

# Keys and version ids whose URL form is themselves: what libcurl's canonical request is sure
# to spell as botocore's signer would. Others are read the ordinary way.
_PLAIN = re.compile(r"[A-Za-z0-9._~/-]+")
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
# Failures (other than a version gone) after which reading ahead stops for the run: the
# ordinary path then does every read, so a server in trouble is not sent each read twice.
FAILURES_TO_GIVE_UP = 8
_CREDENTIALS_TTL = 60.0  # seconds: boto3 renews temporary credentials; ask it again as often

Result = tuple[bytes, dict[str, str]]


def available() -> bool:
    return pycurl is not None and hasattr(pycurl, "AWS_SIGV4")


def plain(text: str) -> bool:
    """Spelled the same in a URL, and without ``.``/``..`` segments, which libcurl would
    resolve away (asking for another key)."""
    if _PLAIN.fullmatch(text) is None:
        return False
    return not any(segment in (".", "..") for segment in text.split("/"))


class CurlRequests:
    """A CurlMulti with ``in_flight`` easy handles, driven by the thread that uses it: the
    signing (libcurl's SigV4, the credentials asked of boto3 again every minute), TLS,
    timeouts and the give-up count that ``CurlGets`` and ``curl_puts.CurlPuts`` share.
    Not thread-safe: one thread uses it."""

    what = "requests"  # for the log line when it gives up

    def __init__(
        self,
        target: S3Target,
        credentials_source: Any,
        in_flight: int,
        ca_bundle: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        still_current: Callable[[], bool] = lambda: True,
    ) -> None:
        if not available():
            raise RuntimeError("pycurl with AWS SigV4 support is not installed")
        self.target = target
        self._credentials_source = credentials_source
        self._credentials_read = -_CREDENTIALS_TTL
        self._auth: tuple[str, list[str]] = ("", [])
        self._still_current = still_current
        self._secure = target.origin.startswith("https://")
        self._ca_bundle = ca_bundle
        self._connect_ms = int(connect_timeout * 1000)
        self._total_ms = int((connect_timeout + read_timeout) * 1000)
        self._multi = pycurl.CurlMulti()
        self._idle = [self._easy() for _ in range(max(1, in_flight))]
        self._running = 0
        self.failures = 0
        self.enabled = True

    def _easy(self) -> Any:
        handle = pycurl.Curl()
        handle.setopt(pycurl.AWS_SIGV4, f"aws:amz:{self.target.signing_region}:s3")
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.TCP_NODELAY, 1)
        handle.setopt(pycurl.PROXY, "")  # this path is used only without a proxy: no env proxy
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.USERAGENT, f"dynamo-backups/{__version__} pycurl")
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        handle.setopt(pycurl.TIMEOUT_MS, self._total_ms)
        if self._secure:
            for option, path in _trusted(self._ca_bundle):
                handle.setopt(option, path)
        return handle

    def _credentials(self) -> tuple[str, list[str]]:
        now = time.monotonic()
        if now - self._credentials_read >= _CREDENTIALS_TTL:
            frozen = self._credentials_source.get_frozen_credentials()
            headers = [f"x-amz-security-token: {frozen.token}"] if frozen.token else []
            self._auth = (f"{frozen.access_key}:{frozen.secret_key}", headers)
            self._credentials_read = now
        return self._auth

    def _perform(self) -> None:
        while True:
            code, _ = self._multi.perform()
            if code != pycurl.E_CALL_MULTI_PERFORM:
                return

    def _failed(self) -> None:
        self.failures += 1
        if self.failures >= FAILURES_TO_GIVE_UP and self.enabled:
            logger.info("%s stopped after %d failures", self.what, self.failures)
            self.enabled = False

    def close(self) -> None:
        for handle in self._idle:
            handle.close()
        self._idle = []
        self._multi.close()


class CurlGets(CurlRequests):
    """GETs of object versions, ``in_flight`` at a time, driven by the calling thread.

    ``start`` queues a read; ``finished`` sends what it can and returns the reads that ended,
    each with its body and user metadata (named as ``FastObjects.read_object`` names them),
    or None: read it the ordinary way. Not thread-safe: one thread uses it."""

    what = "reads ahead"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: deque[tuple[Hashable, str, str, int, str]] = deque()  # size -1: a HEAD

    def __len__(self) -> int:
        """Reads started and not yet returned by ``finished``."""
        return self._running + len(self._waiting)

    def start(
        self,
        tag: Hashable,
        key: str,
        version_id: str,
        size: int,
        head: bool = False,
        etag: str | None = None,
    ) -> bool:
        """Queue a read of ``key`` at ``version_id`` (listed with ``size`` bytes and
        ``etag``), or with ``head`` of its metadata only (HeadObject); False when it cannot be
        read ahead (read it the ordinary way)."""
        if not self.enabled or not plain(key) or not plain(version_id):
            return False
        listed = (etag or "").strip('"')
        self._waiting.append((tag, key, version_id, -1 if head else size, listed))
        return True

    def _send_waiting(self, ended: list[tuple[Hashable, Result | None]]) -> None:
        while self._waiting and self._idle:
            tag, key, version_id, size, etag = self._waiting.popleft()
            try:
                userpwd, headers = self._credentials()
            except Exception as error:  # e.g. a refresh that failed: the ordinary path retries
                logger.debug("no credentials to read ahead with: %s", error)
                self._failed()
                ended.append((tag, None))
                continue
            handle = self._idle.pop()
            read = _Read(tag, size, etag)
            handle.read = read
            handle.setopt(pycurl.URL, f"{self.target.object_url(key)}?versionId={version_id}")
            handle.setopt(pycurl.USERPWD, userpwd)
            handle.setopt(pycurl.HTTPHEADER, headers)
            if size < 0:
                handle.setopt(pycurl.NOBODY, 1)
            else:
                handle.setopt(pycurl.HTTPGET, 1)  # a GET again, after a HEAD
            handle.setopt(pycurl.WRITEFUNCTION, read.body.write)
            handle.setopt(pycurl.HEADERFUNCTION, read.header)
            self._multi.add_handle(handle)
            self._running += 1

    def finished(self, wait: float = 0.0) -> list[tuple[Hashable, Result | None]]:
        """Drive the transfers; the reads that ended, waiting up to ``wait`` seconds for one
        when none has. Once the source is no longer current (the bucket moved region) or
        too many reads failed, the queued reads come back as None and no more are taken."""
        if not self._still_current():
            self.enabled = False
        ended: list[tuple[Hashable, Result | None]] = []
        if not self.enabled:
            while self._waiting:
                ended.append((self._waiting.popleft()[0], None))
        self._send_waiting(ended)
        deadline = time.monotonic() + wait
        while self._running:
            self._perform()
            self._collect(ended)
            if ended or time.monotonic() >= deadline:
                break
            self._multi.select(max(0.0, min(0.05, deadline - time.monotonic())))
        return ended

    def _collect(self, ended: list[tuple[Hashable, Result | None]]) -> None:
        while True:
            left, done, failed = self._multi.info_read()
            for handle in done:
                ended.append(self._ended(handle, ok=True))
            for handle, _errno, _message in failed:
                ended.append(self._ended(handle, ok=False))
            if not left:
                break
        self._send_waiting(ended)

    def _ended(self, handle: Any, ok: bool) -> tuple[Hashable, Result | None]:
        self._multi.remove_handle(handle)
        self._running -= 1
        read: _Read = handle.read
        handle.read = None
        status = handle.getinfo(pycurl.RESPONSE_CODE) if ok else 0
        self._idle.append(handle)
        data = read.body.getvalue()
        if status == 200 and read.whole(data):
            return read.tag, (data, read.metadata)
        if status != 404:  # a version gone since it was listed is no sign of trouble
            self._failed()
        return read.tag, None


class _Read:
    """One read in flight: what it is for, and the answer as it comes (``size`` -1: a HEAD)."""

    __slots__ = ("body", "encrypted", "etag", "listed_etag", "metadata", "size", "tag")

    def __init__(self, tag: Hashable, size: int, listed_etag: str = "") -> None:
        self.tag = tag
        self.size = size
        self.listed_etag = listed_etag
        self.body = BytesIO()
        self.metadata: dict[str, str] = {}
        self.etag = ""
        self.encrypted = False  # SSE-KMS, DSSE-KMS or SSE-C: its ETag is no MD5 of the body

    def header(self, line: bytes) -> None:
        """libcurl's header callback: keeps the user metadata (``x-amz-meta-*``), lower-cased
        and without the prefix as boto3 and ``FastObjects`` name it, and the ETag; a new
        response (after a 100 Continue) starts over."""
        if line[:5] == b"HTTP/":
            self.metadata.clear()
            self.etag = ""
            self.encrypted = False
            return
        name, colon, value = line.partition(b":")
        if not colon:
            return
        name = name.strip().lower()
        if name[:11] == b"x-amz-meta-":
            self.metadata[name[11:].decode("latin-1")] = value.decode("utf-8").strip()
        elif name == b"etag":
            self.etag = value.decode("latin-1").strip().strip('"')
        elif name == b"x-amz-server-side-encryption":
            self.encrypted = self.encrypted or value.strip().lower().startswith(b"aws:kms")
        elif name == b"x-amz-server-side-encryption-customer-algorithm":
            self.encrypted = True

    def whole(self, data: bytes) -> bool:
        """The answer is the listed version's, as far as can be told: its ETag the one
        listed, the length listed, and the MD5 its ETag names when that ETag is an MD5 (a
        single-part upload not encrypted with SSE-KMS, DSSE-KMS or SSE-C, whose ETags are not
        "an MD5 digest of their object data", the S3 API reference says)."""
        if self.listed_etag and self.etag != self.listed_etag:
            return False
        if self.size < 0:
            return not data  # a HEAD: no body
        if len(data) != self.size:
            return False
        if _MD5_ETAG.fullmatch(self.etag) and not self.encrypted:
            return hashlib.md5(data, usedforsecurity=False).hexdigest() == self.etag.lower()
        return True


def _trusted(ca_bundle: str | None) -> list[tuple[int, str]]:
    """The certificates TLS is checked against: the bundle given (AWS_CA_BUNDLE, the config's
    ca_bundle), else the system's (OpenSSL's default file and folder, as Python's ``ssl``
    finds them), not whatever path the wheel's libcurl was built with."""
    if ca_bundle:
        return [(pycurl.CAINFO, ca_bundle), (pycurl.CAPATH, "")]
    paths = ssl.get_default_verify_paths()
    trusted = []
    if paths.cafile and os.path.isfile(paths.cafile):
        trusted.append((pycurl.CAINFO, paths.cafile))
    if paths.capath and os.path.isdir(paths.capath):
        trusted.append((pycurl.CAPATH, paths.capath))
    return trusted
