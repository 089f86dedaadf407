"""Where a stream consumer remembers how far it got: per shard, the last sequence number
whose batch was written, and whether the shard is finished (closed and read to its end)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dynamo_backups.layout import format_time
from dynamo_backups.s3store import BackupWriter, read_document

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


class CheckpointStore(Protocol):
    """Loads and saves one consumer's checkpoint document."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, document: dict[str, Any]) -> None: ...

    def describe(self) -> str: ...


class S3CheckpointStore:
    """A checkpoint kept in the backup bucket, beside (not inside) the items folder."""

    def __init__(self, writer: BackupWriter, object_key: str) -> None:
        self.writer = writer
        self.object_key = object_key

    def load(self) -> dict[str, Any] | None:
        return read_document(self.writer.s3, self.writer.bucket, self.object_key)

    def save(self, document: dict[str, Any]) -> None:
        self.writer.put_document(self.object_key, document)

    def describe(self) -> str:
        return f"s3://{self.writer.bucket}/{self.object_key}"


class FileCheckpointStore:
    """A checkpoint in a local file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None

    def save(self, document: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def describe(self) -> str:
        return str(self.path)
