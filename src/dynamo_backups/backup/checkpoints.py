"""Where a stream consumer remembers how far it got: per shard, the last sequence number
whose batch was written, and whether the shard is finished (closed and read to its end).

A checkpoint belongs to exactly one destination: its identity (the source table's ARN, the
bucket and prefix, the replica target, the consumer's name) names its file or object and is
checked when it is read, so two destinations never share a position.

Only one consumer may advance a checkpoint at a time. In S3 it is leased: every save is a
conditional write (If-Match the version this consumer last wrote) carrying the consumer's
lease, which lasts ``LEASE_SECONDS`` after S3 stored it; another consumer is refused while the
lease runs, and a consumer whose conditional write fails stops. A local file is locked
(``flock``) for as long as its consumer runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from dynamo_backups.aws.errors import PRECONDITION_CODES, ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout, format_time

LEASE_SECONDS = 120.0

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

    def heartbeat(self) -> None: ...

    def release(self) -> None: ...

    def describe(self) -> str: ...


@dataclass
class Lease:
    """Who holds a checkpoint: a random owner id, and the host and process it runs in."""

    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


class S3CheckpointStore:
    """A checkpoint kept in the backup bucket, beside (not inside) the items folder; leased."""

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
    ) -> None:
        self.writer = writer
        self.object_key = object_key
        self.identity = identity
        self.legacy_key = legacy_key
        self.policy = policy or RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5)
        self.lease = lease or Lease()
        self.lease_seconds = lease_seconds
        self.wall_clock = wall_clock
        self._etag: str | None = None
        self._document: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"s3://{self.writer.bucket}/{self.object_key}"

    def load(self) -> dict[str, Any] | None:
        found = self._read()
        if found is None:
            self._etag = None
            return self._adopt_legacy()
        document, etag, stored_at = found
        if self.identity is not None:
            self.identity.check(document, self.describe())
        self._refuse_if_held(document, stored_at)
        self._etag, self._document = etag, document
        return document

    def _read(self) -> tuple[dict[str, Any], str, datetime] | None:
        s3, bucket = self.writer.s3, self.writer.bucket

        def read() -> tuple[dict[str, Any], str, datetime] | None:
            try:
                answer = s3.get_object(Bucket=bucket, Key=self.object_key)
            except ClientError as error:
                if error_code(error) in ("NoSuchKey", "404"):
                    return None
                raise
            body = answer["Body"].read()
            return json.loads(body), answer["ETag"], answer["LastModified"]

        return call_with_retries(read, self.policy, f"read {self.describe()}")

    def _refuse_if_held(self, document: dict[str, Any], stored_at: datetime) -> None:
        lease = document.get("lease") or {}
        if not lease or lease.get("owner") == self.lease.owner:
            return
        until = stored_at + timedelta(seconds=float(lease.get("seconds", LEASE_SECONDS)))
        if until > self.wall_clock():
            raise CheckpointError(
                f"{self.describe()} is held by another consumer (host {lease.get('host')}, "
                f"pid {lease.get('pid')}) until {format_time(until)}: two consumers writing "
                "one folder would interleave versions; stop the other one, or give this one "
                "another --consumer-name and another destination"
            )

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
        token = uuid.uuid4().hex
        body = self._body(
            document, {**asdict(self.lease), "seconds": self.lease_seconds, "token": token}
        )
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            self._etag = call_with_retries(
                lambda: self._put(body, condition), self.policy, f"save {self.describe()}"
            )
        except ClientError as error:
            if error_code(error) not in PRECONDITION_CODES:
                raise
            self._etag = self._after_conflict(token)
        self._document = document

    def _after_conflict(self, token: str) -> str:
        """A conditional save refused: ours after all (a retry of a save that had landed),
        or another consumer's write, which stops this one."""
        found = self._read()
        if found is not None and (found[0].get("lease") or {}).get("token") == token:
            return found[1]
        holder = (found[0].get("lease") or {}) if found else {}
        raise CheckpointError(
            f"{self.describe()} was written by another consumer (host {holder.get('host')}, "
            f"pid {holder.get('pid')}): stopping, since two consumers would interleave "
            "versions"
        )

    def heartbeat(self) -> None:
        """Renew the lease (a save of what is there) when no batch has saved for a while."""
        if self._document is not None:
            self.save(self._document)

    def release(self) -> None:
        """End the lease, so another consumer may start at once."""
        if self._document is None or self._etag is None:
            return
        # Refused only when another consumer already took over: its lease stands.
        with contextlib.suppress(ClientError):
            self._put(self._body(self._document, None), {"IfMatch": self._etag})


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

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
