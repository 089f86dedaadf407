"""A journal folder's bases: the state of every item as of a moment, in files ImportTable
loads as they are, and what a reader needs to add the journal after it (pure; no I/O). The
design is docs/journal.md.

    <prefix>/<table>/bases/<yyyymmddThhmmssZ>/data/<part>-<nnnnn>.json.gz   {"Item": ...} lines
    <prefix>/<table>/bases/<yyyymmddThhmmssZ>/index/<part>.jsonl.gz         the deciding changes
    <prefix>/<table>/bases/<yyyymmddThhmmssZ>/manifest.json                 written last

A base with moment M and cutoff C holds, for every item, the last change in the stream's order
among the journal's changes made at or before M that were in objects S3 received before C
(``LastModified < C``), on top of the base it was folded from. A reader at a moment T >= M adds
every change made in (M, T], and every change made at or before M in an object received at or
after C (a *late* one: a retry after an outage, a replay), which it places against the base's
index. Every change made at or before T is then in exactly one of the three sets, and a change
counted twice (a duplicate) changes nothing: the fold keeps the latest in the stream's order.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.core.ddbjson import (
    InvalidDynamoJSON,
    Item,
    checked_item,
    load_json,
    plainly_valid_item,
    validate_item,
)
from dynamo_backups.core.journal import (
    CONVERTED_STREAM,
    ChangeOrder,
    ItemState,
    JournalError,
    JournalRecord,
    PieceName,
    format_change_time,
)
from dynamo_backups.core.json_text import parsed_or_none
from dynamo_backups.core.keys import DEFAULT_KEY_HASH, check_key_hash
from dynamo_backups.core.layout import EVENT_REMOVE, EVENT_SNAPSHOT, STREAM_EVENTS, parse_time

BASES_FOLDER = "bases"
BASE_FORMAT = "dynamo-backups-base"
BASE_FORMAT_VERSION = 1
DATA_FOLDER = "data/"
INDEX_FOLDER = "index/"
MANIFEST_NAME = "manifest.json"
CUTOFF_NAME = "cutoff.json"  # written first: its LastModified, S3's clock, is the cutoff
PARTITION_DIGITS = (0, 1, 2, 3)  # 1, 16, 256 or 4096 partitions, as the item layout's units
_BASE_ID = re.compile(r"^\d{8}T\d{6}Z$")


class BaseError(JournalError):
    """A base, its name, manifest or lines that cannot be read as the layout defines them."""


class LateChangeError(BaseError):
    """A change older than the base's late horizon reached the journal after the base was
    made: the base cannot place it (its index no longer holds the removals that old)."""


# --- names ---------------------------------------------------------------------------------


def base_id(moment: datetime) -> str:
    """A base's folder name: its moment, to the second, so names sort by moment."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        raise BaseError(f"a base's moment is a whole second, not {format_change_time(moment)}")
    return moment.strftime("%Y%m%dT%H%M%SZ")


def parse_base_id(text: str) -> datetime:
    if not _BASE_ID.match(text):
        raise BaseError(f"{text!r} is not a base's name (yyyymmddThhmmssZ)")
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BaseError(f"{text!r} names no real moment") from None


@dataclass(frozen=True)
class BasePaths:
    """Where one base's files are, under the table's folder (``items_prefix``)."""

    table_folder: str  # "<prefix>/<table>/"
    moment: datetime

    @property
    def prefix(self) -> str:
        return f"{self.table_folder}{BASES_FOLDER}/{base_id(self.moment)}/"

    @property
    def data_prefix(self) -> str:
        """ImportTable's S3KeyPrefix: nothing but data files lives under it."""
        return self.prefix + DATA_FOLDER

    @property
    def index_prefix(self) -> str:
        return self.prefix + INDEX_FOLDER

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    @property
    def cutoff_key(self) -> str:
        return self.prefix + CUTOFF_NAME

    def data_key(self, partition: str, number: int) -> str:
        return f"{self.data_prefix}{partition_label(partition)}-{number:05d}.json.gz"

    def index_key(self, partition: str) -> str:
        return f"{self.index_prefix}{partition_label(partition)}.jsonl.gz"


def partition_label(partition: str) -> str:
    """A partition as it appears in file names: its hex digits, ``all`` for the whole folder."""
    return partition or "all"


def partition_of(name: str, digits: int) -> str:
    """The partition of an item's object name: its leading hex digits."""
    if digits not in PARTITION_DIGITS:
        raise BaseError(f"a base has 1, 16, 256 or 4096 partitions, not {16**digits}")
    return name[:digits]


def choose_base(ids: Iterable[str], moment: datetime) -> str | None:
    """The newest complete base at or before ``moment`` (``ids``: bases with a manifest)."""
    eligible = [base for base in ids if parse_base_id(base) <= moment]
    return max(eligible, default=None)


# --- lines -------------------------------------------------------------------------------


def encode_base_line(item: Mapping[str, Any]) -> bytes:
    """One data line as ImportTable (DynamoDB JSON) and DynamoDB's exports have it."""
    return json.dumps({"Item": item}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_base_line(line: bytes | str, where: str) -> Item:
    fast = parsed_or_none(line)  # a valid line holds no bare number: orjson's reading is json's
    if type(fast) is dict and len(fast) == 1 and plainly_valid_item(fast.get("Item")):
        return fast["Item"]  # type: ignore[no-any-return]
    document = _load(line, where)
    if set(document) != {"Item"}:
        raise BaseError(f'{where}: a data line is {{"Item": ...}} alone')
    try:
        return checked_item(document["Item"], f"{where}.Item")
    except InvalidDynamoJSON as error:
        raise BaseError(str(error)) from None


def encode_index_line(state: ItemState) -> bytes:
    """An index line: the item's key and the change that decided its state (a removal too,
    so that a late, older change cannot bring the item back)."""
    if state.order is None or state.change_time is None or state.event_name is None:
        raise BaseError("an index line needs the deciding change's order and time")
    # The effect is what the data files must agree with: a table read that found no item
    # (a SNAPSHOT without image) is indexed as a removal, at the read's order.
    event = state.event_name if state.present else EVENT_REMOVE
    document: dict[str, Any] = {
        "keys": state.keys,
        "event": event,
        "time": format_change_time(state.change_time),
        "latest": format_change_time(state.order.latest_time),
        "seq": str(state.order.sequence),
    }
    if state.order.stream_arn:
        document["stream"] = state.order.stream_arn
    if state.order.event_id:
        document["id"] = state.order.event_id
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_index_line(line: bytes | str, where: str) -> ItemState:
    """An index line as a state without its image (the data files hold it; a removal has
    none): what a late change is placed against."""
    document = _load(line, where)
    event = document.get("event")
    if event not in (*STREAM_EVENTS, EVENT_SNAPSHOT):
        raise BaseError(f"{where}: unknown event {event!r}")
    try:
        keys = validate_item(document.get("keys"), f"{where}.keys")
        change_time = parse_time(str(document.get("time")))
        latest = parse_time(str(document.get("latest")))
    except (InvalidDynamoJSON, ValueError) as error:
        raise BaseError(f"{where}: {error}") from None
    sequence = document.get("seq")
    if not isinstance(sequence, str) or not re.fullmatch(r"-1|\d+", sequence):
        raise BaseError(f"{where}: bad sequence number {sequence!r}")
    order = ChangeOrder(
        latest, int(sequence), str(document.get("stream", "")), str(document.get("id", ""))
    )
    return ItemState(keys, None, order, change_time, event)


def _load(line: bytes | str, where: str) -> dict[str, Any]:
    try:
        document = load_json(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaseError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise BaseError(f"{where}: not a JSON object")
    return document


def with_images(index: Mapping[str, ItemState], images: Mapping[str, Item]) -> dict[str, ItemState]:
    """A partition's index joined with its data (by object name): the base's states, ready
    for ``journal.fold``. An index entry of a present item must have its image, and the
    reverse: a base whose two halves disagree is refused."""
    states: dict[str, ItemState] = {}
    for name, state in index.items():
        removed = state.event_name == EVENT_REMOVE
        image = images.get(name)
        if removed == (image is not None):
            raise BaseError(f"item {name}: the base's index and data disagree")
        states[name] = ItemState(
            state.keys, image, state.order, state.change_time, state.event_name
        )
    missing = set(images) - set(index)
    if missing:
        raise BaseError(f"items in the base's data but not its index: {sorted(missing)[:3]}")
    return states


# --- the manifest, and what a reader takes from the journal ------------------------------


@dataclass(frozen=True)
class BaseManifest:
    """What a base is: written last, so a base without one is not a base (yet)."""

    table: str
    moment: datetime  # the state of every change made at or before this
    cutoff: datetime | None  # journal objects with LastModified before this are in it
    late_horizon: datetime  # the index holds every removal made since this
    reflects_before: datetime | None = None  # a table scan began here (backfill's base)
    # Whether ``reflects_before`` is a table scan's start, whose reads hold every change made
    # before it (a late one is skipped), or a converted item folder's journal start: the item
    # folder may lack a change both writers missed, so a late one is placed (index).
    reflects_reads: bool = True
    previous: str | None = None  # the base it was folded from
    key_hash: str = DEFAULT_KEY_HASH
    partition_digits: int = 2
    item_count: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    # Per stream: the highest sequence number and latest change time folded in (a record of
    # what the base saw, for people and checks; the cut itself is by change time, above).
    streams: dict[str, dict[str, str]] = field(default_factory=dict)
    # The retention class its objects are tagged with (core/retention); None: untagged.
    retention: str | None = None
    # A conversion with --history: the journal's ``converted`` pieces copy the item folder's
    # versions up to the moment, which this base holds (it is the item layout's selection
    # at its moment); its readers skip them. Never inherited: a later base's cutoff is after
    # them (not late to it).
    converted_history: bool = False

    def __post_init__(self) -> None:
        check_key_hash(self.key_hash)
        if self.partition_digits not in PARTITION_DIGITS:
            raise BaseError(f"bad partition digits {self.partition_digits}")
        if self.late_horizon > self.moment:
            raise BaseError("a base's late horizon is at or before its moment")

    @property
    def id(self) -> str:
        return base_id(self.moment)

    def to_dict(self) -> dict[str, Any]:
        def time(value: datetime | None) -> str | None:
            return format_change_time(value) if value is not None else None

        document = {
            "format": BASE_FORMAT,
            "version": BASE_FORMAT_VERSION,
            "table": self.table,
            "moment": time(self.moment),
            "cutoff": time(self.cutoff),
            "late_horizon": time(self.late_horizon),
            "reflects_before": time(self.reflects_before),
            "previous": self.previous,
            "key_hash": self.key_hash,
            "partition_digits": self.partition_digits,
            "item_count": self.item_count,
            "files": self.files,
            "streams": self.streams,
        }
        if self.retention is not None:
            document["retention"] = self.retention
        if not self.reflects_reads:
            document["reflects_reads"] = False
        if self.converted_history:
            document["converted_history"] = True
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], where: str = "manifest") -> BaseManifest:
        if document.get("format") != BASE_FORMAT or document.get("version") != BASE_FORMAT_VERSION:
            raise BaseError(f"{where}: not a version {BASE_FORMAT_VERSION} base manifest")

        def time(name: str, required: bool = True) -> datetime | None:
            value = document.get(name)
            if value is None and not required:
                return None
            try:
                return parse_time(str(value))
            except ValueError as error:
                raise BaseError(f"{where}: {name}: {error}") from None

        moment, horizon = time("moment"), time("late_horizon")
        assert moment is not None and horizon is not None
        try:
            return cls(
                table=str(document["table"]),
                moment=moment,
                cutoff=time("cutoff", required=False),
                late_horizon=horizon,
                reflects_before=time("reflects_before", required=False),
                previous=document.get("previous"),
                key_hash=str(document.get("key_hash", DEFAULT_KEY_HASH)),
                partition_digits=int(document.get("partition_digits", 2)),
                item_count=int(document.get("item_count", 0)),
                files=list(document.get("files", [])),
                streams=dict(document.get("streams", {})),
                retention=document.get("retention"),
                reflects_reads=document.get("reflects_reads", True) is not False,
                converted_history=document.get("converted_history", False) is True,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BaseError(f"{where}: {error}") from None

    def is_late(self, last_modified: datetime) -> bool:
        """Whether a journal object S3 dated ``last_modified`` came after the base was made
        (every object is on exactly one side: the compaction read only the others)."""
        return self.cutoff is None or last_modified >= self.cutoff

    def journal_span(self, at: datetime) -> tuple[datetime, datetime]:
        """The change times whose hour folders a reader at ``at`` lists: late changes back to
        the late horizon, and everything after the moment up to ``at``."""
        return self.late_horizon, max(at, self.moment)

    def holds_piece(self, piece: PieceName) -> bool:
        """Whether the base holds every change of this piece by its vouching alone: a
        ``converted`` piece of the conversion that wrote it (``converted_history``). The
        piece's name is trusted only because the base says so."""
        return self.converted_history and piece.stream_tag == CONVERTED_STREAM

    def needs_piece(self, piece: PieceName, last_modified: datetime, at: datetime) -> bool:
        """Whether a reader at ``at`` must read this journal object (from its listing entry)."""
        if self.holds_piece(piece):
            return False
        if piece.may_hold(self.moment, at):
            return True
        return (
            self.is_late(last_modified)
            and piece.first_time <= min(self.moment, at)
            and piece.last_time >= self.late_horizon
        )

    def skips_before(self, latest_time: datetime) -> bool:
        """Whether a late change whose latest moment is ``latest_time`` is one the base's
        table reads hold (made before the scan began), not one to place against its index."""
        return (
            self.reflects_reads
            and self.reflects_before is not None
            and latest_time <= self.reflects_before
        )

    def use_of(self, record: JournalRecord, object_late: bool, at: datetime) -> RecordUse:
        """What a reader at ``at`` does with one record of the journal."""
        if at < self.moment:
            raise BaseError(f"base {self.id} is after the moment {format_change_time(at)}")
        if record.change_time > at:
            return RecordUse.SKIP  # not made yet at the moment asked for
        if record.change_time > self.moment:
            return RecordUse.APPLY  # after every state of the base
        if self.converted_history and record.stream_arn == CONVERTED_STREAM:
            return RecordUse.SKIP  # a converted version: the base is that selection
        if not object_late:
            return RecordUse.SKIP  # the base has it
        if self.skips_before(record.latest_time):
            return RecordUse.SKIP  # made before the scan the base began from began
        if record.change_time < self.late_horizon:
            raise LateChangeError(
                f"a change of {format_change_time(record.change_time)} (sequence number "
                f"{record.sequence_number}) reached the journal after base {self.id} was made, "
                f"and is older than its late horizon {format_change_time(self.late_horizon)}"
            )
        return RecordUse.PLACE


class RecordUse(enum.Enum):
    SKIP = "skip"
    APPLY = "apply"  # after the base's moment: applied on top of the base's state
    PLACE = "place"  # a late change: weighed against the base's deciding change (its index)


def watermarks(records: Iterable[JournalRecord]) -> dict[str, dict[str, str]]:
    """Per stream, the highest sequence number and the latest change time among ``records``."""
    marks: dict[str, tuple[int, datetime]] = {}
    for record in records:
        sequence, moment = marks.get(record.stream_arn, (-1, record.change_time))
        marks[record.stream_arn] = (max(sequence, record.sequence), max(moment, record.change_time))
    return {
        stream: {"last_sequence": str(sequence), "last_change_time": format_change_time(moment)}
        for stream, (sequence, moment) in sorted(marks.items())
    }


@dataclass(frozen=True)
class Selected:
    """The journal records a fold takes, and the items whose base state must come with its
    deciding change (read from the base's index) because a late change weighs against it."""

    records: list[JournalRecord]
    placed: set[str]


def select_records(
    manifest: BaseManifest | None,
    objects: Iterable[tuple[datetime, Iterable[JournalRecord]]],
    at: datetime,
    received_before: datetime | None = None,
    key_hash: str = DEFAULT_KEY_HASH,
) -> Selected:
    """What to fold on top of the base ``manifest`` (None: no base, the journal from its
    beginning) for the state at ``at``, from journal objects given as (LastModified, records).

    A restore passes every object its listing found; a compaction making the next base with
    cutoff C passes ``received_before=C``, so that it reads exactly the objects its own
    manifest will say it read (the rest are late for the new base, and its readers take them).
    """
    chosen: list[JournalRecord] = []
    placed: set[str] = set()
    for last_modified, records in objects:
        if received_before is not None and last_modified >= received_before:
            continue
        late = manifest.is_late(last_modified) if manifest is not None else True
        for record in records:
            if manifest is None:
                use = RecordUse.APPLY if record.change_time <= at else RecordUse.SKIP
            else:
                use = manifest.use_of(record, late, at)
            if use is RecordUse.SKIP:
                continue
            chosen.append(record)
            if use is RecordUse.PLACE:
                placed.add(record.name(key_hash))
    return Selected(chosen, placed)


def prune_removals(states: Mapping[str, ItemState], horizon: datetime) -> dict[str, ItemState]:
    """A new base's states for its index: every present item, and the removals made at or
    after ``horizon`` (its late horizon); older removals are dropped, which is why a late
    change older than the horizon is refused rather than placed."""
    return {
        name: state
        for name, state in states.items()
        if state.present or (state.change_time is not None and state.change_time >= horizon)
    }
