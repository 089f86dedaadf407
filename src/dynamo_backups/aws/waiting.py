"""What a command is waiting for: every AWS request in flight (botocore's, and the fast
transports' own) is noted here with its service, operation, address and attempt, so that a
call that takes long can be named on stderr ("waiting for s3 ListObjectVersions on ...")
instead of a silent hang. The timeouts themselves are in ``timeouts``.

The registry is one per process, like logging: it holds no clients, only what is in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dynamo_backups.aws.timeouts import Timeouts


@dataclass
class InFlight:
    service: str
    operation: str
    where: str
    attempt: int | None
    attempts: int | None
    started: float
    noticed: float | None = None  # when a notice last named it
    retry: str | None = None  # the retry loop around it ("scan T segment 0, try 2 of 10")

    def describe(self, now: float, timeouts: Timeouts) -> str:
        parts = []
        if self.attempt is not None and self.attempts is not None:
            parts.append(f"attempt {self.attempt} of {self.attempts}")
        parts.append(f"{now - self.started:,.0f} s so far")
        parts.append(f"read timeout {timeouts.read:g} s")
        line = f"waiting for {self.service} {self.operation} on {self.where} ({', '.join(parts)})"
        if self.retry:
            line += f" [{self.retry}]"
        return line + " ..."


class CallWatch:
    """The requests in flight, one per thread (a thread sends one request at a time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: dict[int, InFlight] = {}
        self._local = threading.local()

    def begin(
        self,
        service: str,
        operation: str,
        where: str,
        attempt: int | None = None,
        attempts: int | None = None,
    ) -> None:
        call = InFlight(service, operation, where, attempt, attempts, self._clock())
        call.retry = getattr(self._local, "retry", None)
        # No lock: each thread writes only its own entry, and a dict's item assignment and
        # pop are atomic; ``overdue`` reads a copy. A lock here, taken around every request
        # by every reader thread, was contended enough to cost a restore CPU of its own.
        self._calls[threading.get_ident()] = call

    def end(self) -> None:
        self._calls.pop(threading.get_ident(), None)

    @contextmanager
    def retrying(self, what: str, attempt: int, attempts: int) -> Iterator[None]:
        """Name the tool's own retry loop in the notices of the requests made inside it."""
        self._local.retry = f"{what}, try {attempt} of {attempts}"
        try:
            yield
        finally:
            self._local.retry = None

    def overdue(self, after: float, every: float) -> list[tuple[InFlight, float]]:
        """Calls in flight for ``after`` seconds, not named in the last ``every`` seconds;
        each is marked as named now."""
        now = self._clock()
        found = []
        with self._lock:  # one caller at a time marks what it named
            for call in self._calls.copy().values():
                if now - call.started < after:
                    continue
                if call.noticed is not None and now - call.noticed < every:
                    continue
                call.noticed = now
                found.append((call, now))
        return found


WATCH = CallWatch()
LONG_POLLS = frozenset({"ReceiveMessage"})  # calls that wait on purpose (SQS long polling)


@contextmanager
def watched(service: str, operation: str, where: str) -> Iterator[None]:
    """Note one request of the fast transports while it is in flight."""
    WATCH.begin(service, operation, where)
    try:
        yield
    finally:
        WATCH.end()


def short_address(url: str) -> str:
    """A request's URL without its signature: host and path, and the listing's prefix."""
    parts = urlsplit(url)
    address = f"{parts.scheme}://{parts.netloc}{parts.path}"
    prefix = parse_qs(parts.query).get("prefix")
    return f"{address}?prefix={prefix[0]}" if prefix else address


def watch_client(client: Any, attempts: int) -> None:
    """Note every attempt of a botocore client's requests (``before-send`` starts one,
    ``response-received`` ends it, answer or error)."""
    local = threading.local()
    service = client.meta.service_model.service_id.hyphenize()

    def before_call(**_: Any) -> None:
        local.attempt = 0

    def before_send(request: Any, event_name: str = "", **_: Any) -> None:
        local.attempt = getattr(local, "attempt", 0) + 1
        operation = event_name.rsplit(".", 1)[-1]
        if operation in LONG_POLLS:
            return  # waiting is what it was asked to do
        WATCH.begin(service, operation, short_address(request.url), local.attempt, attempts)

    def response_received(**_: Any) -> None:
        WATCH.end()

    events = client.meta.events
    events.register("before-call", before_call, unique_id="dynamo-backups-watch-call")
    events.register("before-send", before_send, unique_id="dynamo-backups-watch-send")
    events.register(
        "response-received", response_received, unique_id="dynamo-backups-watch-received"
    )
