"""Where a stream consumer remembers how far it got: per shard, the last sequence number
whose batch was written, and whether the shard is finished (closed and read to its end).

A checkpoint belongs to exactly one destination: its identity (the source table's ARN, the
bucket and prefix, the replica target, the consumer's name) names its file or object and is
checked when it is read, so two destinations never share a position.

Only one consumer may advance a checkpoint at a time. In S3 it is leased: every save is a
conditional write (If-Match the version this consumer read or last wrote) carrying the
consumer's lease, which lasts ``LEASE_SECONDS`` after S3 stored it, judged by S3's clock or by
the version seen unchanged that long, never by comparing two hosts' clocks. A lease whose
process is gone from this host is taken over at once; after any takeover of an unreleased
lease the taker waits out the previous holder's writes in flight (``write_time_limit``) before
its own. The holder renews it from within its retries, starts no request once it could have
lapsed, and its write clients time out within the write time limit; a consumer whose
conditional write fails stops. The argument is in docs/layout.md ("One consumer at a
time"). A local file is locked (``flock``) for as long as its consumer runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from dynamo_backups.aws.errors import (
    CONDITIONAL_CONFLICT_CODES,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    ClientError,
    error_code,
    is_conditional_conflict,
    is_transient,
)
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries, deadline_clock
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout, format_time

LEASE_SECONDS = 120.0
# A holder renews its lease once this share of it has passed since the last renewal ...
RENEW_SHARE = 0.25
# ... and starts no write once only this share may be left (see write_deadline).
MARGIN_SHARE = 1 / 3
# S3's Date and LastModified are whole seconds: an age read from them may be 1 s short.
_SERVER_TIME_PRECISION = 1.0
# The longest an item write of a lease holder may be in flight: half the margin (20 s of a
# 120 s lease). Its clients' timeouts are capped to it (``write_timeouts``), so a write sent
# before the deadline is done (or given up) before the lease can lapse; and a consumer that
# takes a lease over waits this long before its first write, for the writes its predecessor
# may still have had in flight (it may have died with one on its way).
WRITE_TIME_SHARE = MARGIN_SHARE / 2


def write_time_limit(lease_seconds: float) -> float:
    """How long an item write of a holder of a ``lease_seconds`` lease may be in flight."""
    return lease_seconds * WRITE_TIME_SHARE


def write_timeouts(lease_seconds: float, connect: float, read: float) -> tuple[float, float]:
    """The connect and read timeouts of a lease holder's write clients: the given ones,
    capped so that together they stay within ``write_time_limit``."""
    limit = write_time_limit(lease_seconds)
    return min(connect, limit / 4), min(read, limit * 3 / 4)


logger = logging.getLogger("dynamo_backups.checkpoints")

CHECKPOINT_FORMAT = "dynamo-backups-checkpoint"


@dataclass
class ShardPosition:
    sequence_number: str | None = None
    finished: bool = False


@dataclass
class StreamCheckpoint:
    """A consumer's position in one table's stream."""

    table: str
    stream_arn: str
    shards: dict[str, ShardPosition] = field(default_factory=dict)

    def position(self, shard_id: str) -> ShardPosition:
        return self.shards.setdefault(shard_id, ShardPosition())

    def is_finished(self, shard_id: str) -> bool:
        return shard_id in self.shards and self.shards[shard_id].finished

    def advance(self, shard_id: str, sequence_number: str) -> None:
        self.position(shard_id).sequence_number = sequence_number

    def finish(self, shard_id: str) -> None:
        self.position(shard_id).finished = True

    def forget_finished_except(self, live_shard_ids: set[str]) -> None:
        """Drop finished shards the stream no longer lists (trimmed after 24 hours)."""
        self.shards = {
            shard_id: position
            for shard_id, position in self.shards.items()
            if shard_id in live_shard_ids or not position.finished
        }

    def to_document(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "table": self.table,
            "stream_arn": self.stream_arn,
            "updated_at": format_time(datetime.now(UTC)),
            "shards": {
                shard_id: {
                    "sequence_number": position.sequence_number,
                    "finished": position.finished,
                }
                for shard_id, position in sorted(self.shards.items())
            },
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> StreamCheckpoint:
        if document.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a dynamo-backups checkpoint document")
        return cls(
            table=document["table"],
            stream_arn=document["stream_arn"],
            shards={
                shard_id: ShardPosition(entry.get("sequence_number"), bool(entry.get("finished")))
                for shard_id, entry in document.get("shards", {}).items()
            },
        )


class CheckpointError(RuntimeError):
    """A checkpoint that belongs to another destination, or another consumer holds."""


class LeaseHeld(CheckpointError):
    """Another consumer holds the checkpoint's lease, as far as this one can prove."""

    def __init__(
        self, message: str, *, expires_in: float, running_here: bool, renewed: bool
    ) -> None:
        super().__init__(message)
        self.expires_in = expires_in  # at the earliest, unless renewed
        self.running_here = running_here  # its process was seen running on this host
        self.renewed = renewed  # renewed while this store watched: its holder runs


class LeaseLost(CheckpointError):
    """Another consumer wrote the checkpoint: this one holds it no more."""


@dataclass(frozen=True)
class CheckpointIdentity:
    """Everything that makes a consumer's destination distinct."""

    source: str  # the table's ARN: region, account and name
    consumer: str
    bucket: str | None = None
    prefix: str = ""
    replica: str | None = None  # "REGION/TABLE" (or "TABLE") of a replica target

    @property
    def table(self) -> str:
        return self.source.rsplit("/", 1)[-1]

    def document(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        text = json.dumps(self.document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def file_name(self) -> str:
        """Readable and unambiguous: the table and consumer, then the identity's hash."""
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.table}.{self.consumer}")
        return f"{readable}.{self.digest}.json"

    def object_key(self, layout: TableLayout) -> str:
        return layout.checkpoint_key(f"{self.consumer}.{self.digest}")

    def owns(self, stream_arn: str) -> bool:
        """A stream of this identity's source table."""
        return stream_arn.startswith(self.source + "/stream/")

    def check(self, document: dict[str, Any], where: str) -> None:
        found = document.get("identity")
        if found is not None and found != self.document():
            raise CheckpointError(
                f"{where} is the checkpoint of another destination ({found}), not of "
                f"{self.document()}"
            )


class CheckpointStore(Protocol):
    """Loads and saves one consumer's checkpoint document, holding it while it runs."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, document: dict[str, Any]) -> None: ...

    def heartbeat(self) -> None:
        """Renew the hold when it is due (a save of what was last saved)."""

    def write_deadline(self) -> float | None:
        """The ``deadline_clock()`` value after which no write may start, since the hold
        could have lapsed by then; None when the hold cannot lapse while this process runs."""

    def settle_seconds(self) -> float:
        """Seconds to wait after taking the hold over before the first write."""

    def release(self) -> None: ...

    def describe(self) -> str: ...


_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_clock() -> float:
    """Seconds since boot, suspended time included (``CLOCK_BOOTTIME``) where the system has
    it: a host that slept past its lease must know it when it wakes, which
    ``time.monotonic()`` (stopped while suspended, on Linux) would not tell."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_start(pid: int) -> str | None:
    """When a process started (``starttime`` of ``/proc/<pid>/stat``, in clock ticks since
    boot); None when there is no such process (or no /proc). With the boot it tells a
    process from a later one given the same pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_runs(pid: int, started: str | None) -> bool:
    """Whether the process that took a lease on this host may still run. False only when
    this host proves it gone: no process has the pid (ESRCH), or the one that has it started
    at another time. A process of another user whose /proc entry is hidden (hidepid) or
    unreadable cannot be told apart: it may be the holder, so it counts as running."""
    if pid <= 0:
        return True  # no pid recorded: nothing to look up
    try:
        os.kill(pid, 0)  # not affected by hidepid: EPERM still says the pid exists
    except ProcessLookupError:
        return False
    except OSError:
        pass  # EPERM: someone else's process has that pid
    if started is None:
        return True
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # hidden or unreadable: cannot tell (the pid exists, kill said so)
    fields = text[text.rindex(")") + 2 :].split()
    return len(fields) <= 19 or fields[19] == started


@dataclass(frozen=True)
class Lease:
    """Who holds a checkpoint: a random owner id, the host, its boot and pid namespace, and
    the process (pid and start time) it runs in."""

    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    boot_id: str | None = field(default_factory=lambda: _read_text(_BOOT_ID))
    pid_namespace: str | None = field(default_factory=_pid_namespace)
    pid: int = field(default_factory=os.getpid)
    started: str | None = field(default_factory=lambda: process_start(os.getpid()))

    def on_this_machine(self, other: dict[str, Any]) -> bool:
        """Whether another lease was taken on this host since its last boot and in this pid
        namespace: only then does its pid name a process this one can look up. (A host name
        alone is not enough: containers can share one.)"""
        return (
            self.boot_id is not None
            and self.pid_namespace is not None
            and other.get("host") == self.host
            and other.get("boot_id") == self.boot_id
            and other.get("pid_namespace") == self.pid_namespace
        )


@dataclass(frozen=True)
class _Observed:
    """The checkpoint object as read."""

    document: dict[str, Any]
    etag: str
    age: float | None  # since it was written, by S3's clock (its Date less its LastModified)
    at: float  # this store's clock when the answer arrived


def server_age(answer: dict[str, Any]) -> float | None:
    """How old the object is by the server's own clock: its answer's Date header less the
    object's LastModified (both S3's; no clock of ours is involved)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    modified = answer.get("LastModified")
    if not date or modified is None:
        return None
    try:
        return (parsedate_to_datetime(date) - modified).total_seconds()
    except (TypeError, ValueError):
        return None


class S3CheckpointStore:
    """A checkpoint kept in the backup bucket, beside (not inside) the items folder; leased.

    A lease lapses ``lease_seconds`` after it was last written, judged without comparing
    clocks (see docs/layout.md, "One consumer at a time"): by S3's clock (the Date of its
    answer less the object's LastModified), or by this store's monotonic clock (the same
    version seen unchanged that long). The holder renews it every quarter of that and
    starts no write once a third of it may be left since its last renewal was sent."""

    def __init__(
        self,
        writer: BackupWriter,
        object_key: str,
        identity: CheckpointIdentity | None = None,
        legacy_key: str | None = None,
        policy: RetryPolicy | None = None,
        *,
        lease: Lease | None = None,
        lease_seconds: float = LEASE_SECONDS,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.writer = writer
        self.object_key = object_key
        self.identity = identity
        self.legacy_key = legacy_key
        self.policy = policy or RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5)
        self.lease = lease or Lease()
        self.lease_seconds = lease_seconds
        self.wall_clock = wall_clock  # for messages only: never to judge a lease
        self.clock = clock or (boot_clock if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic)
        self._etag: str | None = None
        self._document: dict[str, Any] | None = None
        self._generation = 0
        self._renewed_at: float | None = None  # clock() when the last renewal was sent
        self._watched: tuple[str, float] | None = None  # another's lease: (ETag, first seen)
        # Tokens of our saves whose outcome is unknown (no answer): one may have landed.
        self._unanswered: set[str] = set()
        self._settle = 0.0  # seconds to wait after a takeover before the first write

    def describe(self) -> str:
        return f"s3://{self.writer.bucket}/{self.object_key}"

    def load(self) -> dict[str, Any] | None:
        """The checkpoint, once this consumer may take it: raises LeaseHeld while another
        consumer's lease stands. The lease itself is taken by the next ``save``."""
        found = self._read()
        if found is None:
            self._etag, self._generation = None, 1
            return self._adopt_legacy()
        document = found.document
        if self.identity is not None:
            self.identity.check(document, self.describe())
        lease = document.get("lease") or {}
        ours = lease.get("owner") == self.lease.owner
        if lease and not ours:
            self._refuse_if_held(lease, found)
            # Taken over from a holder that did not release it: its writes may be in flight.
            self._settle = write_time_limit(float(lease.get("seconds") or LEASE_SECONDS))
        self._etag, self._document = found.etag, document
        generation = int(document.get("lease_generation") or 0)
        self._generation = generation if ours else generation + 1
        return document

    def _read(self) -> _Observed | None:
        s3, bucket = self.writer.s3, self.writer.bucket

        def read() -> _Observed | None:
            try:
                answer = s3.get_object(Bucket=bucket, Key=self.object_key)
            except ClientError as error:
                if error_code(error) in NOT_FOUND_CODES:
                    return None
                raise
            at = self.clock()
            body = answer["Body"].read()
            return _Observed(json.loads(body), answer["ETag"], server_age(answer), at)

        return call_with_retries(read, self.policy, f"read {self.describe()}")

    def _refuse_if_held(self, lease: dict[str, Any], found: _Observed) -> None:
        """Raise LeaseHeld unless another consumer's lease has lapsed, or its process is
        gone from this host. (A lapsed lease is taken even from a process that still runs:
        a hung one, say. Its own deadline has stopped its writes, and its saves will fail.)"""
        holder = f"host {lease.get('host')}, pid {lease.get('pid')}"
        running_here = self.lease.on_this_machine(lease)
        if running_here and not process_runs(int(lease.get("pid") or 0), lease.get("started")):
            logger.warning(
                "%s: its holder (%s) no longer runs: taking it over", self.describe(), holder
            )
            return
        left, renewed = self._lease_left(float(lease.get("seconds", LEASE_SECONDS)), found)
        if left <= 0:
            logger.warning(
                "%s: the lease of %s lapsed unrenewed: taking it over", self.describe(), holder
            )
            return
        about = format_time(self.wall_clock() + timedelta(seconds=left))
        raise LeaseHeld(
            f"{self.describe()} is held by another consumer ({holder})"
            + (", which is running on this host" if running_here else "")
            + ("; renewed while this one watched, it" if renewed else "; unless renewed, it")
            + f" lapses in {left:.0f} s at the earliest (about {about} by this host's clock)",
            expires_in=left,
            running_here=running_here,
            renewed=renewed,
        )

    def _lease_left(self, seconds: float, found: _Observed) -> tuple[float, bool]:
        """Seconds until another's lease lapses, and whether it was renewed since this store
        first saw it. The lesser of two clock-free measures: S3's own clock, and how long
        this store has seen the same version unchanged (monotonic)."""
        renewed = self._watched is not None and self._watched[0] != found.etag
        if self._watched is None or renewed:
            self._watched = (found.etag, found.at)
        left = seconds - (found.at - self._watched[1])
        if found.age is not None:  # both S3 times are whole seconds: the age may be 1 s more
            left = min(left, seconds - (found.age - _SERVER_TIME_PRECISION))
        return left, renewed

    def _adopt_legacy(self) -> dict[str, Any] | None:
        """A checkpoint of an older release, named by consumer only: taken over when it is
        of this source table's stream."""
        if self.legacy_key is None or self.identity is None:
            return None
        legacy = read_document(self.writer.s3, self.writer.bucket, self.legacy_key, self.policy)
        if legacy is None or not self.identity.owns(str(legacy.get("stream_arn", ""))):
            return None
        return {key: value for key, value in legacy.items() if key != "lease"}

    def _body(self, document: dict[str, Any], lease: dict[str, Any] | None) -> bytes:
        stored = {
            **document,
            "identity": self.identity.document() if self.identity else None,
            "lease": lease,
            "lease_generation": self._generation,
        }
        return json.dumps(stored, indent=2, sort_keys=True, default=str).encode("utf-8")

    def _put(self, body: bytes, condition: dict[str, str]) -> str:
        """One conditional write; the new ETag."""
        return self.writer.s3.put_object(
            Bucket=self.writer.bucket,
            Key=self.object_key,
            Body=body,
            ContentType="application/json",
            **condition,
        )["ETag"]

    def save(self, document: dict[str, Any]) -> None:
        """Write the checkpoint with this consumer's lease, only over the version it read or
        last wrote: takes the lease, renews it, and fences out a holder that lost it."""
        token = uuid.uuid4().hex
        lease = {**asdict(self.lease), "seconds": self.lease_seconds, "token": token}
        body = self._body(document, lease)
        sent = self.clock()  # before the first attempt: S3 cannot have stored it earlier
        self._etag = self._conditional_save(body, token)
        self._unanswered.clear()  # what we saved is now the current version
        self._renewed_at, self._document, self._watched = sent, document, None

    def _conditional_save(self, body: bytes, token: str) -> str:
        """Put ``body`` over the version this store read or last wrote; the new ETag. When
        refused, the object is read back: ours after all (this save, or an earlier one that
        landed unanswered: then the lease is still ours and the save is made over it), or
        another consumer's write, which stops this one (LeaseLost)."""
        backoff = self.policy.delays()
        for _ in range(self.policy.max_attempts):
            condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
            try:
                return call_with_retries(
                    lambda condition=condition: self._put(body, condition),
                    self.policy,
                    f"save {self.describe()}",
                )
            except ClientError as error:
                if error_code(error) not in PRECONDITION_CODES | CONDITIONAL_CONFLICT_CODES:
                    raise
                refused = error_code(error)
            except Exception:
                self._unanswered.add(token)  # it may have landed all the same
                raise
            found = self._read()
            found_token = (found.document.get("lease") or {}).get("token") if found else None
            if found is not None and found_token == token:
                return found.etag  # a retry of this save, whose first attempt had landed
            if found is not None and found_token in self._unanswered:
                self._etag = found.etag  # an earlier save of ours landed: the lease is ours
                continue
            unchanged = (found.etag if found else None) == condition.get("IfMatch")
            if refused in CONDITIONAL_CONFLICT_CODES and unchanged:
                # 409: a concurrent write that did not land; ours is still current. Sent
                # again after a backoff, so that the other request has ended.
                time.sleep(next(backoff, self.policy.max_delay))
                continue
            self._renewed_at = None
            holder = (found.document.get("lease") or {}) if found else {}
            raise LeaseLost(
                f"{self.describe()} was written by another consumer (host "
                f"{holder.get('host')}, pid {holder.get('pid')}): stopping, since two "
                "consumers would interleave versions"
            )
        raise LeaseLost(f"{self.describe()}: the save kept conflicting: stopping")

    def heartbeat(self) -> None:
        """Renew the lease (a save of what was last saved) once a quarter of it has passed
        since the last renewal was sent."""
        if self._renewed_at is None or self._document is None:
            return
        if self.clock() - self._renewed_at >= self.lease_seconds * RENEW_SHARE:
            self.save(self._document)

    def write_deadline(self) -> float | None:
        """No write may start after this ``deadline_clock()`` value: the last renewal's
        sending plus the lease less a third of it, the margin that covers a write already on
        its way and any difference in the rates of this clock and S3's. Minus infinity when
        not held. (Measured on this store's clock, and given on the clock that the write path
        compares with; both count suspended time.)"""
        if self._renewed_at is None:
            return -math.inf
        left = self._renewed_at + self.lease_seconds * (1 - MARGIN_SHARE) - self.clock()
        return deadline_clock() + left

    def settle_seconds(self) -> float:
        """How long to wait, after taking the lease over, before the first write: the
        previous holder's longest write time, for the writes it may still have in flight
        (0 when the lease was released or never held)."""
        return self._settle

    def release(self) -> None:
        """End the lease, so another consumer may start at once. Retried; a release that
        cannot be made is logged (the lease then lapses on its own), never raised."""
        if self._document is None or self._etag is None or self._renewed_at is None:
            return
        self._renewed_at = None
        body, condition = self._body(self._document, None), {"IfMatch": self._etag}
        try:
            call_with_retries(
                lambda: self._put(body, condition),
                self.policy,
                f"release {self.describe()}",
                retryable=lambda error: is_transient(error) or is_conditional_conflict(error),
            )
        except ClientError as error:
            if error_code(error) in PRECONDITION_CODES - CONDITIONAL_CONFLICT_CODES:
                return  # another consumer took over (or a retry of a landed release)
            self._release_failed(error)
        except Exception as error:
            self._release_failed(error)

    def _release_failed(self, error: BaseException) -> None:
        logger.warning(
            "%s: could not release the lease (%s): another consumer can take it once it "
            "lapses, %.0f s after its last renewal",
            self.describe(),
            error,
            self.lease_seconds,
        )


class FileCheckpointStore:
    """A checkpoint in a local file, replaced atomically on every save; locked while used."""

    def __init__(self, path: Path, identity: CheckpointIdentity | None = None) -> None:
        self.path = path
        self.identity = identity
        self._lock: Any = None

    def describe(self) -> str:
        return str(self.path)

    def load(self) -> dict[str, Any] | None:
        self._hold()
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        if self.identity is not None:
            self.identity.check(document, self.describe())
        return document

    def _hold(self) -> None:
        if self._lock is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_name(self.path.name + ".lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise CheckpointError(
                f"{self.describe()} is in use by another consumer on this host: two consumers "
                "writing one destination would interleave versions"
            ) from None
        self._lock = handle

    def save(self, document: dict[str, Any]) -> None:
        self._hold()
        stored = {**document, "identity": self.identity.document() if self.identity else None}
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def heartbeat(self) -> None:
        pass

    def write_deadline(self) -> float | None:
        return None  # the lock lasts as long as this process

    def settle_seconds(self) -> float:
        return 0.0  # the lock is released only when its process ends, writes and all

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
