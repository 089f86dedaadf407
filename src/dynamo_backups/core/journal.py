"""The journal layout's changes: records, batch objects and their names, and how changes fold
into an item's state (pure; no I/O). The design is docs/journal.md.

A writer turns each delivered batch of one stream shard into one or more **pieces**: the
batch's records grouped by the UTC hour of their change time (a batch rarely spans an hour;
one that does, after a lag, is split), each piece one gzipped object of DynamoDB JSON lines

    <prefix>/<table>/journal/<yyyy>/<mm>/<dd>/<hh>/<MMSS>-<MMSS>-<stream>-<first>-<last>-<digest>.jsonl.gz

named from its records alone (first and last change time within the hour, a tag of the stream,
the first and last sequence number, a digest of every record's identity), so a batch delivered
again with the same boundaries makes the same names (written with ``If-None-Match: *``, the
copy is refused) and one delivered with other boundaries (Lambda's bisect) makes other names,
whose copies readers drop by identity. Because every record of a piece lies in its hour, a
reader finds every change of a span of time by listing that span's hour folders.

An item's changes are ordered as the item layout orders its versions (docs/layout.md, "The
stream's order, exactly"): the latest moment the change can have happened (change time plus
its precision), then the sequence number as an integer, so both layouts give one answer.

A **table read** (``verify --repair``; ``convert --history``) is a ``SNAPSHOT`` record: the item as
a consistent GetItem found it (its image, or none: the read found no item), dated by
DynamoDB's clock to the second (the ``Date`` of an answer received before the read was asked
for: the read happened at ``time`` or later), with sequence number ``-1`` and the
pseudo-stream ``repair`` (or ``converted``). Its
order is ``(time + 1 s, -1)``: after every change made in an earlier second (the read reflects
it), before every change made in its own second or later (at worst one that came before the
read within that second, whose own state the read saw, and which then decides), so a stream
change that happened after the read is never buried by it, and one the read reflects can only
give the same state. Table reads live in pieces of their own, named with the literal stream
tag ``repair`` (never 8 hex digits, so never a stream's batch name) and the sequence range
``0-0``. ``convert --history`` writes an item folder's versions under the tag ``converted``:
its stream changes keep their sequence numbers (``converted_record``), its reads are
``SNAPSHOT`` records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dynamo_backups.core.ddbjson import (
    InvalidDynamoJSON,
    Item,
    checked_item,
    item_to_wire,
    load_json,
)
from dynamo_backups.core.keys import DEFAULT_KEY_HASH, object_name
from dynamo_backups.core.layout import (
    EVENT_REMOVE,
    EVENT_SNAPSHOT,
    SECOND,
    STREAM_EVENTS,
    format_seconds,
    parse_seconds,
    parse_time,
)
from dynamo_backups.core.stream_records import Change, parse_change

JOURNAL_FOLDER = "journal"
RECORD_FORMAT_VERSION = 1
PIECE_SUFFIX = ".jsonl.gz"
# gzip as the object's type, not as its Content-Encoding: an HTTP client may undo a
# Content-Encoding in transit, and a writer's check of a refused put compares the bytes read.
JOURNAL_CONTENT_TYPE = "application/gzip"
# How a TTL deletion names its origin in a stream record (DynamoDB developer guide, "Time to
# Live and DynamoDB Streams"): userIdentity {"type": "Service", "principalId": this}.
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
STREAM_TAG_DIGITS = 8
DIGEST_DIGITS = 20  # 80 bits of the identities' sha256: a writer checks a refused name anyway
_HOUR = timedelta(hours=1)
# Pseudo-streams of table reads (SNAPSHOT records): their pieces' names carry the word, never
# 8 hex digits of a stream ARN's hash, so they cannot collide with a stream's batch.
REPAIR_STREAM = "repair"
CONVERTED_STREAM = "converted"
TABLE_READ_STREAMS = (REPAIR_STREAM, CONVERTED_STREAM)
TABLE_READ_SEQUENCE = "-1"  # a table read has no sequence number: before a stream change
_PIECE_NAME = re.compile(
    r"^(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/(?P<hour>\d{2})/"
    r"(?P<first>\d{4})-(?P<last>\d{4})-(?P<stream>[0-9a-f]{8}|repair|converted)-"
    r"(?P<first_seq>\d+)-(?P<last_seq>\d+)-(?P<digest>[0-9a-f]{20})\.jsonl\.gz$"
)


class JournalError(ValueError):
    """A journal record, object or name that cannot be read as the layout defines it."""


class JournalConflict(JournalError):
    """Two copies of one change (same stream, sequence number and event id) that differ:
    the journal contradicts itself, and no reader may pick one in silence."""


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalRecord:
    """One stream change as the journal keeps it."""

    stream_arn: str
    sequence_number: str
    event_name: str
    change_time: datetime
    keys: Item
    image: Item | None  # the new image; None for a removal
    precision: timedelta = SECOND  # how far the stream rounded change_time down
    event_id: str | None = None  # the stream record's eventID ("globally unique")
    user_identity: Mapping[str, str] | None = None  # present on TTL deletions
    shard: str | None = None  # when the writer knows it (the stream consumer; not Lambda)

    @property
    def is_removal(self) -> bool:
        return self.event_name == EVENT_REMOVE

    @property
    def is_table_read(self) -> bool:
        """A SNAPSHOT: the item as a read of the table found it, not a stream change."""
        return self.event_name == EVENT_SNAPSHOT

    @property
    def is_ttl_removal(self) -> bool:
        """A deletion made by DynamoDB's Time to Live, not by a user."""
        user = self.user_identity or {}
        return self.is_removal and user.get("principalId") == TTL_PRINCIPAL

    @property
    def sequence(self) -> int:
        return int(self.sequence_number)

    @property
    def identity(self) -> tuple[str, str, str]:
        """What two copies of one change share and two changes never do: the stream, the
        sequence number and the eventID. A sequence number is unique within a shard; the
        shard is not in Lambda's events, and the eventID is unique across all of them."""
        return (self.stream_arn, self.sequence_number, self.event_id or "")

    @property
    def latest_time(self) -> datetime:
        """The latest moment the change can have happened."""
        return self.change_time + self.precision

    @property
    def order(self) -> ChangeOrder:
        return ChangeOrder(self.latest_time, self.sequence, self.stream_arn, self.event_id or "")

    def name(self, key_hash: str = DEFAULT_KEY_HASH) -> str:
        """The item's object name (the item layout's), which partitions journal and bases."""
        return object_name(self.keys, key_hash)


@dataclass(frozen=True, order=True)
class ChangeOrder:
    """The stream's order of one item's changes (docs/layout.md): the latest moment the change
    can have happened, then the sequence number (-1 for a read of the table, which comes
    before a stream change of the same moment), then the stream and eventID (so that the
    order is total and the same on every reader; copies of one change compare equal)."""

    latest_time: datetime
    sequence: int
    stream_arn: str = ""
    event_id: str = ""


def record_of_stream(
    raw: Mapping[str, Any],
    index: int = 0,
    received: datetime | None = None,
    shard: str | None = None,
) -> JournalRecord:
    """A journal record from a raw stream record (Lambda's or GetRecords'), checked as the item
    layout's writers check it (``parse_change``): an unusable record is an error naming it."""
    change = parse_change(raw, index, received)
    return record_of_change(change, raw.get("eventID"), raw.get("userIdentity"), shard)


def record_of_change(
    change: Change,
    event_id: Any = None,
    user_identity: Any = None,
    shard: str | None = None,
) -> JournalRecord:
    return JournalRecord(
        stream_arn=change.stream_arn,
        sequence_number=_check_sequence(change.sequence_number),
        event_name=change.event_name,
        change_time=change.change_time,
        keys=item_to_wire(change.keys),
        image=item_to_wire(change.new_image) if change.new_image is not None else None,
        precision=change.time_precision,
        event_id=event_id if isinstance(event_id, str) and event_id else None,
        user_identity=_user_identity(user_identity),
        shard=shard,
    )


def snapshot_record(
    keys: Item, image: Item | None, read_at: datetime, stream: str = REPAIR_STREAM
) -> JournalRecord:
    """A table read as a journal record (see the module's docstring): ``image`` as a
    consistent read at ``read_at`` (DynamoDB's clock, to the second) found it, None when it
    found no item. Its event id is a digest of the key, the moment and the image, so that
    the same read written twice is one change and two reads are two."""
    if stream not in TABLE_READ_STREAMS:
        raise JournalError(f"{stream!r} is not a pseudo-stream of table reads")
    read_at = read_at.astimezone(UTC).replace(microsecond=0)
    keys, image = item_to_wire(keys), item_to_wire(image) if image is not None else None
    what = json.dumps([keys, image, format_change_time(read_at)], sort_keys=True)
    return JournalRecord(
        stream_arn=stream,
        sequence_number=TABLE_READ_SEQUENCE,
        event_name=EVENT_SNAPSHOT,
        change_time=read_at,
        keys=keys,
        image=image,
        precision=SECOND,
        event_id=hashlib.sha256(what.encode("utf-8")).hexdigest()[:32],
    )


def converted_record(
    keys: Item,
    image: Item | None,
    event_name: str,
    change_time: datetime,
    precision: timedelta,
    sequence_number: str | None,
    tie_rank: int = 0,
) -> JournalRecord:
    """An item-layout version as a journal record of the pseudo-stream ``converted`` (``convert
    --history``): a stream change keeps its event, change time and precision, sequence number,
    keys and image; a version without a sequence number (a backfill's or repair's read,
    another tool's version, a removal with no stream record) is a ``SNAPSHOT`` at its change
    time (an image, or none for a removal), placed as the item layout places it. Its event id
    is a digest of everything it holds, so that a conversion run again writes the same
    record, and two versions are two records, led by ``tie_rank``: the version's place in
    S3's order (oldest received 0) among the object's versions of the same moment and
    sequence number. The item layout gives such a tie to the version S3 received last; the
    journal orders a tie by event id, which then does the same."""
    keys, image = item_to_wire(keys), item_to_wire(image) if image is not None else None
    if sequence_number is None:
        event_name, sequence_number = EVENT_SNAPSHOT, TABLE_READ_SEQUENCE
    elif event_name == EVENT_REMOVE:
        image = None
    elif image is None:
        raise JournalError(f"a converted {event_name} needs the item's image")
    what = json.dumps(
        [keys, image, event_name, format_change_time(change_time), format_seconds(precision),
         sequence_number],
        sort_keys=True,
    )  # fmt: skip
    return JournalRecord(
        stream_arn=CONVERTED_STREAM,
        sequence_number=_check_sequence(sequence_number)
        if sequence_number != TABLE_READ_SEQUENCE
        else sequence_number,
        event_name=event_name,
        change_time=change_time.astimezone(UTC),
        keys=keys,
        image=image,
        precision=precision,
        event_id=f"{tie_rank:04d}" + hashlib.sha256(what.encode("utf-8")).hexdigest()[:28],
    )


def _user_identity(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(name): str(member) for name, member in value.items()}


def _check_sequence(text: Any) -> str:
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()):
        raise JournalError(f"sequence number {text!r} is not decimal digits")
    return text


def format_change_time(moment: datetime) -> str:
    """ISO-8601 UTC with every digit the source gave (microseconds when there are any)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def encode_record(record: JournalRecord) -> bytes:
    """One line (without its newline): compact UTF-8 JSON, DynamoDB JSON for keys and image
    (numbers as their text, binary as base64), fields in a fixed order."""
    document: dict[str, Any] = {
        "v": RECORD_FORMAT_VERSION,
        "stream": record.stream_arn,
        "seq": record.sequence_number,
    }
    if record.event_id is not None:
        document["id"] = record.event_id
    document["event"] = record.event_name
    document["time"] = format_change_time(record.change_time)
    document["precision"] = format_seconds(record.precision)
    document["keys"] = record.keys
    if record.image is not None:
        document["image"] = record.image
    if record.user_identity is not None:
        document["user"] = dict(record.user_identity)
    if record.shard is not None:
        document["shard"] = record.shard
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# A record's format version is a bare JSON integer; any other bare number is a Decimal.
_RECORD_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=int)


def decode_record(line: bytes | str, where: str = "journal record") -> JournalRecord:
    """A line back into a record, checked field by field; any bare JSON number is parsed as
    Decimal so that it is reported, never rounded."""
    try:
        document = load_json(line, _RECORD_DECODER)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JournalError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise JournalError(f"{where}: not a JSON object")
    if document.get("v") != RECORD_FORMAT_VERSION:
        raise JournalError(f"{where}: record format {document.get('v')!r} is not known here")
    try:
        return _record_from_document(document, where)
    except InvalidDynamoJSON as error:
        raise JournalError(str(error)) from None


def _record_from_document(document: Mapping[str, Any], where: str) -> JournalRecord:
    def text(field: str, required: bool = True) -> str | None:
        value = document.get(field)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise JournalError(f"{where}: field {field!r} must be a non-empty string")
        return value

    event_name = text("event")
    if event_name not in (*STREAM_EVENTS, EVENT_SNAPSHOT):
        raise JournalError(f"{where}: unknown event {event_name!r}")
    stream = text("stream") or ""
    sequence = document.get("seq")
    if event_name == EVENT_SNAPSHOT:  # a table read: its own pseudo-stream, no sequence
        if stream not in TABLE_READ_STREAMS or sequence != TABLE_READ_SEQUENCE:
            raise JournalError(
                f"{where}: a SNAPSHOT has stream {' or '.join(TABLE_READ_STREAMS)} and seq "
                f"{TABLE_READ_SEQUENCE}, not {stream!r} and {sequence!r}"
            )
    else:
        # A converted item folder's stream change keeps its sequence number (convert
        # --history); a repair piece holds table reads alone.
        if stream == REPAIR_STREAM:
            raise JournalError(f"{where}: a {event_name} of the table-read stream {stream!r}")
        sequence = _check_sequence(sequence)
    try:
        change_time = parse_time(text("time") or "")
    except ValueError as error:
        raise JournalError(f"{where}: {error}") from None
    precision = parse_seconds(text("precision"))
    if precision is None:
        raise JournalError(f"{where}: bad precision {document.get('precision')!r}")
    keys = checked_item(document.get("keys"), f"{where}.keys")  # fresh from json.loads
    if not keys:
        raise JournalError(f"{where}: no key attributes")
    image = document.get("image")
    if event_name != EVENT_SNAPSHOT and (image is None) != (event_name == EVENT_REMOVE):
        raise JournalError(
            f"{where}: a {event_name} must {'' if image is None else 'not '}have an image"
        )
    user = document.get("user")
    if user is not None and not isinstance(user, dict):
        raise JournalError(f"{where}: field 'user' must be an object")
    return JournalRecord(
        stream_arn=stream,
        sequence_number=sequence,
        event_name=event_name,
        change_time=change_time,
        keys=keys,
        image=checked_item(image, f"{where}.image") if image is not None else None,
        precision=precision,
        event_id=text("id", required=False),
        user_identity=_user_identity(user),
        shard=text("shard", required=False),
    )


# --- gzip framing (on bytes) -------------------------------------------------------------


def gzip_lines(lines: Iterable[bytes]) -> bytes:
    """Lines joined by newlines (each line ends with one) and gzipped with no timestamp in
    the header, so equal lines give equal bytes (and equal ETags) on every writer."""
    body = b"".join(line + b"\n" for line in lines)
    return gzip.compress(body, compresslevel=6, mtime=0)


def gunzip_lines(data: bytes, where: str) -> list[bytes]:
    """The lines of a gzipped body (members concatenated are read whole, as gzip reads them);
    a body that is not gzip, or is cut short, is an error naming ``where``."""
    try:
        body = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise JournalError(f"{where}: not a whole gzip body ({error})") from None
    if body and not body.endswith(b"\n"):
        raise JournalError(f"{where}: the last line has no newline (the object is cut short)")
    return body.split(b"\n")[:-1] if body else []


def encode_piece(records: Sequence[JournalRecord]) -> bytes:
    return gzip_lines(encode_record(record) for record in records)


def decode_piece(data: bytes, where: str) -> list[JournalRecord]:
    return [
        decode_record(line, f"{where} line {number}")
        for number, line in enumerate(gunzip_lines(data, where), start=1)
    ]


# --- pieces and their names --------------------------------------------------------------


def journal_prefix(items_prefix: str) -> str:
    """The journal's folder inside a table's folder (``<prefix>/<table>/``)."""
    return f"{items_prefix}{JOURNAL_FOLDER}/"


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a change time falls in: the folder its piece lives in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def stream_tag(stream_arn: str) -> str:
    """8 hex digits of the stream ARN's sha256; a table read's pseudo-stream, as its word."""
    if stream_arn in TABLE_READ_STREAMS:
        return stream_arn
    return hashlib.sha256(stream_arn.encode("utf-8")).hexdigest()[:STREAM_TAG_DIGITS]


def split_batch(records: Sequence[JournalRecord]) -> list[list[JournalRecord]]:
    """A delivered batch as pieces: its records grouped by stream and by the hour of their
    change time, each piece in the batch's order, pieces in order of their first record."""
    pieces: dict[tuple[str, datetime], list[JournalRecord]] = {}
    for record in records:
        pieces.setdefault((record.stream_arn, hour_of(record.change_time)), []).append(record)
    return list(pieces.values())


def identity_digest(records: Sequence[JournalRecord]) -> str:
    """A digest of the records' identities, in the piece's order."""
    text = "\n".join(" ".join(record.identity) for record in records)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_DIGITS]


def piece_name(records: Sequence[JournalRecord]) -> str:
    """The name of a piece under ``journal/`` (see the module's docstring)."""
    if not records:
        raise JournalError("a piece holds at least one record")
    hours = {hour_of(record.change_time) for record in records}
    streams = {record.stream_arn for record in records}
    if len(hours) != 1 or len(streams) != 1:
        raise JournalError("a piece holds the changes of one stream within one hour")
    (hour,) = hours
    times = [record.change_time for record in records]
    first = _seconds_into(min(times), hour, round_up=False)
    last = _seconds_into(max(times), hour, round_up=True)
    # A table read has no sequence number (-1): its pieces' range is 0-0.
    sequences = [max(record.sequence, 0) for record in records]
    return (
        f"{hour:%Y/%m/%d/%H}/{_mmss(first)}-{_mmss(last)}-{stream_tag(next(iter(streams)))}-"
        f"{min(sequences)}-{max(sequences)}-{identity_digest(records)}{PIECE_SUFFIX}"
    )


def _seconds_into(moment: datetime, hour: datetime, round_up: bool) -> int:
    span = moment - hour
    whole = span.seconds
    return whole + 1 if round_up and span.microseconds else whole


def _mmss(seconds: int) -> str:
    return f"{seconds // 60:02d}{seconds % 60:02d}"


@dataclass(frozen=True)
class PieceName:
    """What a piece's name tells without reading it."""

    name: str  # relative to journal/
    hour: datetime
    first_time: datetime  # no record of the piece changed before this
    last_time: datetime  # nor after this
    stream_tag: str
    first_sequence: int
    last_sequence: int
    digest: str

    def may_hold(self, after: datetime | None, until: datetime) -> bool:
        """Whether a record of the piece can have a change time in ``(after, until]``."""
        return self.first_time <= until and (after is None or self.last_time > after)


def parse_piece_name(name: str) -> PieceName:
    """A piece's name (relative to ``journal/``) back into its parts."""
    match = _PIECE_NAME.match(name)
    if not match:
        raise JournalError(f"{name!r} is not a journal piece's name")
    try:
        hour = datetime(
            int(match["year"]), int(match["month"]), int(match["day"]), int(match["hour"]),
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        raise JournalError(f"{name!r} names no real hour") from None
    first, last = _parse_mmss(match["first"], name), _parse_mmss(match["last"], name)
    if first > last:
        raise JournalError(f"{name!r}: its first time is after its last")
    return PieceName(
        name=name,
        hour=hour,
        first_time=hour + timedelta(seconds=first),
        last_time=hour + timedelta(seconds=last),
        stream_tag=match["stream"],
        first_sequence=int(match["first_seq"]),
        last_sequence=int(match["last_seq"]),
        digest=match["digest"],
    )


def _parse_mmss(text: str, name: str) -> int:
    minutes, seconds = int(text[:2]), int(text[2:])
    if seconds > 59 or minutes * 60 + seconds > 3600:
        raise JournalError(f"{name!r}: {text} is not a time within the hour")
    return minutes * 60 + seconds


def check_piece(name: str, records: Sequence[JournalRecord]) -> None:
    """Raise unless ``records`` are exactly what an object of this name holds: what a writer
    checks when its ``If-None-Match`` put is refused (the copy there must be the same batch)."""
    if piece_name(records) != name:
        raise JournalConflict(f"journal object {name!r} does not hold the records it is named for")


def listing_prefixes(start: datetime, end: datetime) -> list[str]:
    """The folders under ``journal/`` (``yyyy/mm/dd/`` or ``yyyy/mm/dd/hh/``) that together hold
    every piece with a change time from ``start`` to ``end``, in time order: whole days where a
    day is covered, hours at the ends, so that a span of weeks is a few dozen listings."""
    if end < start:
        return []
    hour, last = hour_of(start), hour_of(end)
    prefixes: list[str] = []
    while hour <= last:
        day_end = hour.replace(hour=23)
        if hour.hour == 0 and day_end <= last:
            prefixes.append(f"{hour:%Y/%m/%d}/")
            hour = day_end + _HOUR
        else:
            prefixes.append(f"{hour:%Y/%m/%d/%H}/")
            hour += _HOUR
    return prefixes


# --- duplicates, order, fold -------------------------------------------------------------


@dataclass(frozen=True)
class Deduplicated:
    records: list[JournalRecord]
    duplicates: int


def drop_duplicates(records: Iterable[JournalRecord]) -> Deduplicated:
    """Each change once (the first copy met), however many batches delivered it; two copies
    that differ are a JournalConflict."""
    seen: dict[tuple[str, str, str], JournalRecord] = {}
    kept: list[JournalRecord] = []
    duplicates = 0
    for record in records:
        first = seen.get(record.identity)
        if first is None:
            seen[record.identity] = record
            kept.append(record)
            continue
        if _content(first) != _content(record):
            raise JournalConflict(
                f"two different copies of sequence number {record.sequence_number} "
                f"(event {record.event_id}) of {record.stream_arn}"
            )
        duplicates += 1
    return Deduplicated(kept, duplicates)


def _content(record: JournalRecord) -> tuple[Any, ...]:
    # The shard is what a writer knew, not part of the change.
    return (
        record.event_name,
        record.change_time,
        record.precision,
        json.dumps(record.keys, sort_keys=True),
        json.dumps(record.image, sort_keys=True),
        json.dumps(record.user_identity, sort_keys=True),
    )


def by_item(
    records: Iterable[JournalRecord], key_hash: str = DEFAULT_KEY_HASH
) -> dict[str, list[JournalRecord]]:
    """Records grouped by item (object name), duplicates dropped, each item's changes in
    the stream's order, oldest first. Batches may come in any order and overlap."""
    grouped: dict[str, list[JournalRecord]] = {}
    for record in drop_duplicates(records).records:
        grouped.setdefault(record.name(key_hash), []).append(record)
    for changes in grouped.values():
        changes.sort(key=lambda record: record.order)
    return grouped


@dataclass(frozen=True)
class ItemState:
    """One item's state after a change: its image, or None when absent (a removal), and the
    change that decided it. ``order`` is None for a base's state whose deciding change was not
    read (its index): every journal change after the base's moment comes after it."""

    keys: Item
    image: Item | None
    order: ChangeOrder | None
    change_time: datetime | None = None
    event_name: str | None = None

    @property
    def present(self) -> bool:
        return self.image is not None

    @classmethod
    def of(cls, record: JournalRecord) -> ItemState:
        return cls(record.keys, record.image, record.order, record.change_time, record.event_name)

    @classmethod
    def snapshot(cls, keys: Item, image: Item, read_at: datetime) -> ItemState:
        """An item as read from the table at ``read_at`` (DynamoDB's clock, to the second):
        placed as the item layout places a backfill read (no sequence number)."""
        order = ChangeOrder(read_at + SECOND, -1)
        return cls(keys, image, order, read_at, EVENT_SNAPSHOT)


class UnplacedChange(JournalError):
    """A change at or before a base's moment met a base state whose order is unknown: the
    caller must read the base's index for that item (docs/journal.md, "late changes")."""


def fold(
    base: Mapping[str, ItemState],
    records: Iterable[JournalRecord],
    moment: datetime,
    base_moment: datetime | None = None,
    key_hash: str = DEFAULT_KEY_HASH,
) -> dict[str, ItemState]:
    """Every item's state at ``moment``: for each item the latest in the stream's order of its
    base state (as of ``base_moment``) and its changes made at or before ``moment`` (a change
    time after ``moment`` is later than the moment even when its batch is not). Duplicates
    count once; batches may come in any order. The answer holds absent items too (image None),
    so that a later fold, or a base's index, knows what removed them."""
    states = dict(base)
    for name, changes in by_item(records, key_hash).items():
        for record in changes:
            if record.change_time > moment:
                break  # the rest of the item's changes are later still
            states[name] = _later(states.get(name), record, base_moment)
    return states


def _later(
    state: ItemState | None, record: JournalRecord, base_moment: datetime | None
) -> ItemState:
    if state is None:
        return ItemState.of(record)
    if state.order is None:
        if base_moment is None or record.change_time <= base_moment:
            raise UnplacedChange(
                f"a change of {record.change_time:%Y-%m-%dT%H:%M:%SZ} (sequence number "
                f"{record.sequence_number}) meets a base state whose deciding change is unknown"
            )
        return ItemState.of(record)  # after the base's moment: after its every state
    if record.order == state.order and not record.is_table_read:
        _check_same_state(state, record)  # a late copy of the change the base's index names
        return state
    return ItemState.of(record) if record.order > state.order else state


def _check_same_state(state: ItemState, record: JournalRecord) -> None:
    """A copy of a base's deciding change must hold the state the base has (its event's
    effect and image); two copies that differ are never a choice, in a base or not."""
    removed = state.event_name == EVENT_REMOVE or state.image is None
    same = removed == record.is_removal and json.dumps(state.image, sort_keys=True) == json.dumps(
        record.image, sort_keys=True
    )
    if not same:
        raise JournalConflict(
            f"two different copies of sequence number {record.sequence_number} "
            f"(event {record.event_id}) of {record.stream_arn}: one in a base, one in the journal"
        )


def present_items(states: Mapping[str, ItemState]) -> dict[str, Item]:
    """The items that exist in a fold's answer (the removed left out), by object name."""
    return {name: state.image for name, state in states.items() if state.image is not None}


# --- one item's history ------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One change of an item, and how many copies of it the journal holds beyond the first."""

    record: JournalRecord
    copies: int = 0


def item_history(
    records: Iterable[JournalRecord],
    name: str,
    key_hash: str = DEFAULT_KEY_HASH,
    until: datetime | None = None,
) -> list[HistoryEntry]:
    """The changes of the item named ``name``, newest first in the stream's order, each once
    (with its count of extra copies), optionally only those at or before ``until``."""
    mine = [record for record in records if record.name(key_hash) == name]
    counts: dict[tuple[str, str, str], int] = {}
    for record in mine:
        counts[record.identity] = counts.get(record.identity, 0) + 1
    unique = drop_duplicates(mine).records
    if until is not None:
        unique = [record for record in unique if record.change_time <= until]
    unique.sort(key=lambda record: record.order, reverse=True)
    return [HistoryEntry(record, counts[record.identity] - 1) for record in unique]
