"""Many conditional PutObject requests (``If-None-Match: *``) in flight from one thread,
through libcurl (pycurl's CurlMulti): backfill's first attempt at each item's put.

Through obstore, a put from one of backfill's 32 threads costs the client some 210-260 µs of
CPU (the request handed to obstore's runtime threads and back); driven from one thread with
many requests in flight on keep-alive connections, libcurl costs a fraction of that, as it
does for restore's reads (``curl_reads``, whose signing, TLS, timeouts and give-up count
this shares).

The request is the one obstore sends for ``FastObjects.put_object(..., if_none_match=True)``:
the URL and signing region botocore's (``endpoints.S3Target``), SigV4 by libcurl
(``CURLOPT_AWS_SIGV4``), which signs every header given here (Content-Type, If-None-Match,
the user metadata, the checksum headers, the session token) besides host, x-amz-date and
x-amz-content-sha256, the payload's SHA-256 (so the body is signed, as obstore and botocore
sign it). The body's SHA-256 also goes as its checksum, with the header naming the algorithm:
an Object Lock bucket refuses a put without one.

Only the first attempt: a 200 is a written version, a 412 PreconditionFailed an object
already there; anything else (another status, a reset, a timeout, a credentials refresh that
failed, a put this path cannot spell exactly) gives no answer, and the caller puts that item
the ordinary way (``BackupWriter.put_item_if_absent``: its retries, errors and region
redirects). A put that reached S3 but whose answer was lost is then refused (412) by its own
earlier write, and counted as already backed up: the same as when obstore's own retry meets
it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from dynamo_backups.aws.curl_reads import (
    FAILURES_TO_GIVE_UP,
    CurlRequests,
    logger,
    plain,
    pycurl,
)

WRITTEN = 200
ALREADY_THERE = 412
# (status, version id): 200 and the new version's id ("" in a bucket without versioning), or
# 412 and ""; None: no answer this path can vouch for (put it the ordinary way).
PutAnswer = tuple[int, str] | None
# Header names and values libcurl sends and signs exactly as given: a value of printable
# ASCII with single inner spaces (SigV4 trims and squeezes spaces in canonical headers; a
# value that would change there, or that needs RFC 2047 encoding, goes the ordinary way).
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
_VERSION_HEADER = b"x-amz-version-id:"


# One conditional put: the object key, its body, Content-Type and user metadata.
Put = tuple[str, bytes, str, Mapping[str, str]]


class RunFailures:
    """Failed first attempts counted over every ``CurlPuts`` of one bucket's writer (each unit
    of a run has its own): past ``limit`` the path is given up for the run, so a server in
    trouble is not sent each put twice."""

    def __init__(self, limit: int = FAILURES_TO_GIVE_UP) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1

    @property
    def exhausted(self) -> bool:
        return self.count >= self.limit


class CurlPuts(CurlRequests):
    """Conditional puts, ``in_flight`` at a time, driven by the calling thread (``put_all``).
    Not thread-safe: one thread uses it."""

    what = "conditional puts through libcurl"

    def __init__(self, *args: Any, run_failures: RunFailures | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run_failures = run_failures or RunFailures()
        for handle in self._idle:
            handle.setopt(pycurl.CUSTOMREQUEST, "PUT")
            handle.setopt(pycurl.WRITEFUNCTION, _discard)  # an error's XML: not needed

    def put_all(self, puts: Sequence[Put]) -> list[PutAnswer]:
        """Send every put (those this path can spell), ``in_flight`` at a time; each one's
        answer, None where the caller must put it the ordinary way."""
        answers: list[PutAnswer] = [None] * len(puts)
        waiting = deque(number for number, put in enumerate(puts) if sendable(put))
        while waiting or self._running:
            if not self._usable():
                waiting.clear()  # left unanswered: the ordinary path puts them
            self._send(puts, waiting, answers)
            if not self._running:
                continue
            self._perform()
            self._collect(answers)
            if self._running:
                self._multi.select(0.05)
        return answers

    def _usable(self) -> bool:
        if not self._still_current():  # the bucket moved region: obstore follows it
            self.enabled = False
        if self._run_failures.exhausted and self.enabled:
            logger.info("%s stopped after %d failures", self.what, self._run_failures.count)
            self.enabled = False
        return self.enabled

    def _send(self, puts: Sequence[Put], waiting: deque[int], answers: list[PutAnswer]) -> None:
        while waiting and self._idle:
            number = waiting.popleft()
            try:
                userpwd, token = self._credentials()
            except Exception as error:  # e.g. a refresh that failed: the ordinary path retries
                logger.debug("no credentials for a conditional put: %s", error)
                self._failed()
                continue
            key, body, content_type, metadata = puts[number]
            handle = self._idle.pop()
            handle.put = _Sent(number)
            handle.setopt(pycurl.URL, self.target.object_url(key))
            handle.setopt(pycurl.USERPWD, userpwd)
            handle.setopt(pycurl.HTTPHEADER, _headers(body, content_type, metadata, token))
            handle.setopt(pycurl.POSTFIELDS, body)
            handle.setopt(pycurl.HEADERFUNCTION, handle.put.header)
            self._multi.add_handle(handle)
            self._running += 1
        if waiting and not self.enabled:
            waiting.clear()

    def _collect(self, answers: list[PutAnswer]) -> None:
        while True:
            left, done, failed = self._multi.info_read()
            for handle in done:
                self._ended(handle, answers, ok=True)
            for handle, _errno, _message in failed:
                self._ended(handle, answers, ok=False)
            if not left:
                return

    def _ended(self, handle: Any, answers: list[PutAnswer], ok: bool) -> None:
        self._multi.remove_handle(handle)
        self._running -= 1
        sent: _Sent = handle.put
        handle.put = None
        status = handle.getinfo(pycurl.RESPONSE_CODE) if ok else 0
        self._idle.append(handle)
        if status == WRITTEN:
            answers[sent.number] = (WRITTEN, sent.version_id)
        elif status == ALREADY_THERE:
            answers[sent.number] = (ALREADY_THERE, "")
        else:  # 409 (a concurrent put on the key), 5xx, a reset, a timeout: not settled here
            logger.debug("a conditional put through libcurl ended with %s", status or "no answer")
            self._failed()

    def _failed(self) -> None:
        self._run_failures.add()
        super()._failed()


class _Sent:
    """One put in flight: its place in the batch, and the version id its answer names."""

    __slots__ = ("number", "version_id")

    def __init__(self, number: int) -> None:
        self.number = number
        self.version_id = ""

    def header(self, line: bytes) -> None:
        """libcurl's header callback: keeps x-amz-version-id; a new response (after a 100
        Continue) starts over."""
        if line[:5] == b"HTTP/":
            self.version_id = ""
        elif line[:17].lower() == _VERSION_HEADER:
            self.version_id = line[17:].decode("latin-1").strip()


def _discard(_data: bytes) -> None:
    return None


def sendable(put: Put) -> bool:
    """A put this path spells exactly as obstore would: a key that is its own URL form, and
    header names and values libcurl sends and signs unchanged."""
    key, _body, content_type, metadata = put
    if not plain(key) or _VALUE.fullmatch(content_type) is None:
        return False
    return all(
        _NAME.fullmatch(name) is not None and _VALUE.fullmatch(value) is not None
        for name, value in metadata.items()
    )


def _headers(
    body: bytes, content_type: str, metadata: Mapping[str, str], token: list[str]
) -> list[str]:
    """Every header libcurl is to send and sign besides host, x-amz-date and the ones it
    adds unsigned (User-Agent, Accept, Content-Length); ``Expect:`` keeps libcurl from
    waiting for a 100 Continue (neither obstore nor the Node client does)."""
    digest = hashlib.sha256(body).digest()
    return [
        f"Content-Type: {content_type}",
        "If-None-Match: *",
        f"x-amz-content-sha256: {digest.hex()}",
        f"x-amz-checksum-sha256: {base64.b64encode(digest).decode()}",
        "x-amz-sdk-checksum-algorithm: SHA256",
        *(f"x-amz-meta-{name}: {value}" for name, value in metadata.items()),
        *token,
        "Expect:",
    ]
