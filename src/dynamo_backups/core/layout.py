"""The backup layout in the bucket: where objects live and what their metadata says.

This module is the public contract of docs/layout.md. It is pure: names and parsing only.

    <prefix>/<table>/<name>                  one object per item; its versions are the history
    <prefix>/.dynamo-backups/<table>/...     everything else the tool keeps for that table
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from dynamo_backups.core.keys import DEFAULT_KEY_HASH, check_key_hash, object_name

LAYOUT_VERSION = 1
META_FOLDER = ".dynamo-backups"

# S3 user metadata names (sent as x-amz-meta-<name>; S3 returns them lowercased).
META_EVENT_NAME = "event-name"
META_SEQUENCE_NUMBER = "sequence-number"
META_CHANGE_TIME = "change-time"
META_WRITER = "writer"
META_KEY_HASH = "key-hash"
META_COPY_OF = "copy-of"  # on a copy of another version's state: that version's id
# How far the stream rounded change-time down, in seconds ("1" on AWS, "60" on DynamoDB Local).
META_CHANGE_TIME_PRECISION = "change-time-precision"

WRITER_STREAM = "stream"
WRITER_BACKFILL = "backfill"
WRITER_REPAIR = "repair"
WRITER_ADOPT = "adopt"  # history copied from another tool's object name (adopt --rewrite)

EVENT_INSERT = "INSERT"
EVENT_MODIFY = "MODIFY"
EVENT_REMOVE = "REMOVE"
EVENT_SNAPSHOT = "SNAPSHOT"  # a state read from the table (backfill, repair), not a change
STREAM_EVENTS = (EVENT_INSERT, EVENT_MODIFY, EVENT_REMOVE)

ITEM_CONTENT_TYPE = "application/json"
TOMBSTONE_CONTENT_TYPE = "application/x-dynamo-backups-tombstone"

# ApproximateCreationDateTime is "rounded down to the closest second" (DynamoDB Streams API
# reference, StreamRecord); DynamoDB Local rounds it down to the minute. Its stream ARNs (and
# records' awsRegion) name the region "ddblocal".
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
DYNAMODB_LOCAL_REGION = "ddblocal"

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")
_STREAM_ARN = re.compile(
    r"^arn:(?P<partition>[^:]+):dynamodb:(?P<region>[^:]*):(?P<account>[^:]*):"
    r"table/(?P<table>[A-Za-z0-9_.\-]{3,255})/stream/(?P<label>[^/]+)$"
)


class LayoutError(ValueError):
    """A prefix, table name or ARN that cannot be placed in the layout."""


def normalize_prefix(prefix: str | None) -> str:
    """``"Prod/"``, ``"/Prod"`` and ``"Prod"`` are one prefix; ``""`` and None mean none."""
    cleaned = (prefix or "").strip("/")
    if "//" in cleaned:
        raise LayoutError(f"prefix {prefix!r} has an empty path segment")
    return cleaned


def check_table_name(table: str) -> str:
    """Return ``table`` if it is a valid DynamoDB table name that the layout can hold."""
    if not _TABLE_NAME.match(table or ""):
        raise LayoutError(
            f"{table!r} is not a DynamoDB table name (3-255 of letters, digits, '_', '-', '.')"
        )
    if table == META_FOLDER:
        raise LayoutError(f"table name {META_FOLDER!r} is reserved for the tool's own files")
    return table


@dataclass(frozen=True)
class StreamArn:
    """The parts of a DynamoDB stream ARN."""

    arn: str
    region: str
    account: str
    table: str
    label: str


def stream_time_precision(arn: StreamArn) -> timedelta:
    """How far the stream behind ``arn`` rounds ApproximateCreationDateTime down: to the
    minute on DynamoDB Local (whose ARNs name the region ``ddblocal``), to the second on AWS."""
    return MINUTE if arn.region == DYNAMODB_LOCAL_REGION else SECOND


def parse_stream_arn(arn: Any) -> StreamArn:
    """Split ``arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL``."""
    match = _STREAM_ARN.match(arn) if isinstance(arn, str) else None
    if not match:
        raise LayoutError(
            f"malformed eventSourceARN {arn!r}: expected "
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL"
        )
    return StreamArn(arn, match["region"], match["account"], match["table"], match["label"])


@dataclass(frozen=True)
class TableLayout:
    """Where one table's backup lives in the bucket."""

    prefix: str
    table: str
    key_hash: str = DEFAULT_KEY_HASH

    @classmethod
    def of(cls, prefix: str | None, table: str, key_hash: str = DEFAULT_KEY_HASH) -> TableLayout:
        return cls(normalize_prefix(prefix), check_table_name(table), check_key_hash(key_hash))

    @classmethod
    def from_folder(cls, folder: str, key_hash: str = DEFAULT_KEY_HASH) -> TableLayout:
        """From a table folder such as ``Prod/Users`` or ``Prod/Users/`` (the restore form)."""
        cleaned = normalize_prefix(folder)
        if not cleaned:
            raise LayoutError("the source prefix must name the table's folder, e.g. Prod/Users")
        prefix, _, table = cleaned.rpartition("/")
        return cls.of(prefix, table, key_hash)

    def _join(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    @cached_property  # asked for per object by the readers: computed once
    def items_prefix(self) -> str:
        """The table's folder, with a trailing slash: item objects only."""
        return self._join(self.table) + "/"

    @property
    def meta_prefix(self) -> str:
        """The folder for the tool's own files about this table (outside the items folder)."""
        return self._join(META_FOLDER, self.table) + "/"

    def item_object_key(self, key: Mapping[str, Any]) -> str:
        """The object key of the item with this DynamoDB key."""
        return self.items_prefix + object_name(key, self.key_hash)

    def name_of(self, object_key: str) -> str:
        """The item name part of an object key in this table's folder."""
        if not object_key.startswith(self.items_prefix):
            raise LayoutError(f"{object_key!r} is not in {self.items_prefix!r}")
        return object_key[len(self.items_prefix) :]

    @property
    def table_description_key(self) -> str:
        return self.meta_prefix + "table.json"

    @property
    def manifest_key(self) -> str:
        return self.meta_prefix + "layout.json"

    def checkpoint_key(self, consumer: str) -> str:
        return self.meta_prefix + f"checkpoints/{consumer}.json"

    def manifest(
        self,
        key_schema: list[dict[str, str]] | None = None,
        key_types: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The layout manifest that records how this backup names its objects."""
        document: dict[str, Any] = {
            "format": "dynamo-backups",
            "layout_version": LAYOUT_VERSION,
            "table": self.table,
            "prefix": self.prefix,
            "key_hash": self.key_hash,
            "items_prefix": self.items_prefix,
        }
        if key_schema:
            document["key_schema"] = key_schema
        if key_types:
            document["key_types"] = key_types
        return document


# --- change times --------------------------------------------------------------------------


def epoch_to_datetime(value: Any) -> datetime:
    """A UTC datetime from epoch seconds given as int, float, Decimal or numeric text."""
    if isinstance(value, bool):
        raise ValueError(f"not epoch seconds: {value!r}")
    try:
        exact = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not epoch seconds: {value!r}") from None
    if not exact.is_finite():
        raise ValueError(f"not epoch seconds: {value!r}")
    seconds = int(exact)
    micros = int((exact - seconds) * 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def utc_now() -> datetime:
    """This host's clock, in UTC (a named function: jobs that hold it travel by pickle)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z``; milliseconds only when the time has a fraction."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time with a zone (``Z`` or an offset) or epoch seconds."""
    cleaned = text.strip()
    try:
        return epoch_to_datetime(Decimal(cleaned))
    except (InvalidOperation, ValueError):
        pass
    try:
        moment = datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use ISO-8601 with a zone, e.g. 2026-11-27T12:00:00Z, "
            "or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone: add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


# --- object metadata -----------------------------------------------------------------------


@dataclass(frozen=True)
class VersionMetadata:
    """What the tool records on every object version it writes."""

    writer: str
    event_name: str
    change_time: datetime
    sequence_number: str | None = None
    key_hash: str = DEFAULT_KEY_HASH
    # A state written again on top (replay's settle, a conditional write putting back a
    # newer write's state): the version copied. Not an original write of ``writer``.
    copy_of: str | None = None
    # How far the source rounded change_time down (stream writers record it); None: not
    # recorded (versions of earlier releases, table reads): see ``time_precision``.
    precision: timedelta | None = None

    @property
    def is_removal(self) -> bool:
        return self.event_name == EVENT_REMOVE

    @property
    def time_precision(self) -> timedelta:
        """How far change_time may lie before the change: the recorded precision, else one
        second (AWS's documented precision for stream times, the Date header's for table
        reads, and what earlier releases compared stream times by)."""
        return self.precision if self.precision is not None else SECOND

    def to_s3(self) -> dict[str, str]:
        metadata = {
            META_WRITER: self.writer,
            META_EVENT_NAME: self.event_name,
            META_CHANGE_TIME: format_time(self.change_time),
            META_KEY_HASH: self.key_hash,
        }
        if self.sequence_number is not None:
            metadata[META_SEQUENCE_NUMBER] = self.sequence_number
        if self.copy_of is not None:
            metadata[META_COPY_OF] = self.copy_of
        if self.precision is not None:
            metadata[META_CHANGE_TIME_PRECISION] = format_seconds(self.precision)
        return metadata

    @classmethod
    def from_s3(cls, metadata: Mapping[str, str]) -> VersionMetadata | None:
        """Read our metadata back; None for an object the tool did not write (or legacy)."""
        lowered = {name.lower(): value for name, value in metadata.items()}
        if META_CHANGE_TIME not in lowered or META_EVENT_NAME not in lowered:
            return None
        try:
            change_time = parse_time(lowered[META_CHANGE_TIME])
        except ValueError:
            return None
        return cls(
            writer=lowered.get(META_WRITER, WRITER_STREAM),
            event_name=lowered[META_EVENT_NAME],
            change_time=change_time,
            sequence_number=lowered.get(META_SEQUENCE_NUMBER),
            key_hash=lowered.get(META_KEY_HASH, DEFAULT_KEY_HASH),
            copy_of=lowered.get(META_COPY_OF),
            precision=parse_seconds(lowered.get(META_CHANGE_TIME_PRECISION)),
        )


def format_seconds(span: timedelta) -> str:
    """A duration as decimal seconds (``"1"``, ``"60"``, ``"0.001"``)."""
    exact = Decimal(span.days * 86400 + span.seconds) + Decimal(span.microseconds) / 1_000_000
    return format(exact.normalize(), "f")


def parse_seconds(text: str | None) -> timedelta | None:
    """Decimal seconds back to a duration; None for anything else (read as not recorded)."""
    if text is None:
        return None
    try:
        exact = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not exact.is_finite() or exact < 0 or exact > 86400:
        return None
    return timedelta(microseconds=int(exact * 1_000_000))
