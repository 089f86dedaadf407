"""Point-in-time selection: which version of an item was current at a moment (pure).

The *change time* of a version is the stream's ApproximateCreationDateTime recorded in its
metadata (or, for objects without our metadata, S3's LastModified). S3 lists an object's
versions in the order it received them, which is not always the order of the changes: a late
retry, a replay or a second writer can put an older change above a newer one, at any distance
in time. Selection therefore follows the changes' order (change time, then stream sequence
number, then S3's order), and bounds the reads it needs with one fact: a version is never
written before its change happened, so ``change_time <= last_modified + skew``. Walking the
versions newest-received first, once the best change found is later than every version below
could be, the walk stops: with versions that arrived in order and more than ``skew`` apart,
that is after the one read that fetches the chosen version's body anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from dynamo_backups.core.layout import WRITER_REPAIR, WRITER_STREAM, VersionMetadata

DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
# Versions that record the item's state in the stream's own order (see latest_decision).
AUTHORITATIVE_WRITERS = frozenset({WRITER_STREAM, WRITER_REPAIR})


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One entry of a version listing: an object version or a delete marker."""

    key: str
    version_id: str
    last_modified: datetime
    is_delete_marker: bool
    is_latest: bool
    size: int = 0
    etag: str | None = None

    @property
    def is_tombstone(self) -> bool:
        """An empty version: a removal record (items always have key attributes)."""
        return not self.is_delete_marker and self.size == 0

    @property
    def is_removal(self) -> bool:
        """A delete marker or a tombstone: the item was removed here."""
        return self.is_delete_marker or self.is_tombstone


def newest_first(entries: Sequence[ObjectVersion]) -> list[ObjectVersion]:
    """One key's entries newest first. S3 lists them so, interleaving versions and delete
    markers, with the current one (IsLatest) first. A server that lists versions and delete
    markers apart (as moto does) is recognised by a current entry that is not first; its
    entries are put in order by time instead, the current one first."""
    if not entries or entries[0].is_latest or not any(entry.is_latest for entry in entries):
        return list(entries)
    latest = [entry for entry in entries if entry.is_latest]
    rest = sorted(
        (entry for entry in entries if not entry.is_latest),
        key=lambda entry: entry.last_modified,
        reverse=True,
    )
    return latest + rest


@dataclass(frozen=True)
class Selection:
    """The outcome for one item: the version to restore, or None when it was absent."""

    version: ObjectVersion | None
    inspected: int = 0


Inspector = Callable[[ObjectVersion], VersionMetadata | None]


def select_at(
    entries: Sequence[ObjectVersion],
    moment: datetime,
    inspect: Inspector,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Selection:
    """The version of one item current at ``moment`` (a far future moment: the latest).

    ``entries`` are the item's versions and delete markers, newest first. ``inspect``
    reads a version's metadata (the caller does the I/O, and may keep the body it got).
    The last change at or before ``moment`` decides: a tombstone or delete marker means the
    item was absent; no such change means the item did not exist yet.

    "Last" is the stream's order, not S3's: among the versions whose change came at or before
    the moment, the one with the latest change time wins, then the highest sequence number,
    then the newest in S3. Every version received after ``moment - skew`` is read (a late
    delivery may hold an earlier change); below them, versions are read only while one could
    still hold a later change than the best found (``last_modified + skew`` at or after it).
    """
    decision, inspected = _decide(entries, moment, inspect, skew)
    if decision is None or decision.removed:
        return Selection(None, inspected)
    return Selection(decision.entry, inspected)


def decide_at(
    entries: Sequence[ObjectVersion],
    moment: datetime,
    inspect: Inspector,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Decision | None:
    """The change that decides one object's state at ``moment`` (as ``select_at``), with its
    change time: what comparing one item's changes under several object names takes. None:
    no change at or before ``moment``."""
    return _decide(entries, moment, inspect, skew)[0]


def newest_change(entries: Sequence[ObjectVersion], inspect: Inspector) -> Decision | None:
    """The object's newest change in the stream's order, every version weighed (none taken
    as surely earlier by when S3 received it): what a latest restore decides, at full cost."""
    return _decide(entries, datetime.max.replace(tzinfo=UTC), inspect, timedelta.max)[0]


def latest_decision(decisions: Sequence[Decision | None]) -> Decision | None:
    """Of one item's decisions under several names (its own name first), the one that holds.

    The own name's decision holds when our stream handler (or a repair, a read of the table
    itself) wrote it: from the first change the handler recorded on, it records every change
    of the item, those another tool also recorded included, so nothing under other names is
    newer. Otherwise the latest change holds, by change time (S3's LastModified for other
    tools' versions, which carry no change time), and on a tie the own name's.
    """
    own = decisions[0] if decisions else None
    if own is not None and own.writer in AUTHORITATIVE_WRITERS:
        return own
    chosen: Decision | None = None
    for decision in decisions:
        if decision is not None and (chosen is None or decision.order() > chosen.order()):
            chosen = decision
    return chosen


def _decide(
    entries: Sequence[ObjectVersion],
    moment: datetime,
    inspect: Inspector,
    skew: timedelta,
) -> tuple[Decision | None, int]:
    reachable = _latest_possible_changes(entries, skew)
    order = StreamOrder()
    candidates: list[Decision] = []  # the changes at or before the moment
    best: Decision | None = None
    inspected = 0
    # Another tool's version (no metadata of ours) is dated by S3's clock, which runs after
    # the change; one that our stream handler's record was received after cannot be later
    # than that record's change: its date is capped there.
    ceiling: datetime | None = None
    for position, entry in enumerate(entries):
        if best is not None and order.surely_before(reachable[position], best):
            break  # nothing received this early can hold a later change than the best
        if entry.is_delete_marker:
            # A delete marker holds no metadata: the tombstone written under it carries the
            # removal's change time, and the next step of this walk reads it. A marker with
            # no tombstone under it (not written by this tool) dates from S3's clock.
            if _tombstone_under(entries, position) is None:
                candidate = Decision.of(entry, None, position, ceiling)
                if candidate.change_time <= moment:
                    candidates.append(candidate)
                    best = order.later(best, candidate)
            continue
        inspected += 1
        metadata = inspect(entry)
        candidate = Decision.of(entry, metadata, position, ceiling)
        if order.learn(candidate) and candidates:
            best = max(candidates, key=order.key)  # the precision changed: compare again
        if candidate.change_time <= moment:
            candidates.append(candidate)
            best = order.later(best, candidate)
        if metadata is not None and metadata.writer in AUTHORITATIVE_WRITERS:
            ceiling = min(ceiling, metadata.change_time) if ceiling else metadata.change_time
    return best, inspected


class StreamOrder:
    """The order of an object's changes: change time, then sequence number (stream changes
    only), then S3's order (the newest received first).

    A stream change time is the stream's ApproximateCreationDateTime, rounded down: to the
    second on AWS, to the minute on DynamoDB Local. While every stream change seen is on a
    whole minute, the precision is taken to be a minute; one stream change off the minute
    shows it is finer (a second). A change dated ``t`` happened before ``t`` plus that
    precision, and a read of the table (backfill, repair: no sequence number; dated by
    DynamoDB's answer, to the second) that is not later than that may have come before the
    stream change. So a stream change ranks at the end of its precision window, and a read
    is placed after it only when dated later by more than the precision: otherwise the
    stream's change stands (the sequence number puts it last, as an equal time does).
    """

    def __init__(self) -> None:
        self.to_the_minute = False
        self._finer = False

    def learn(self, decision: Decision) -> bool:
        """Take in a version's precision; True when the comparison changed."""
        if decision.sequence < 0 or self._finer:
            return False
        whole_minute = decision.change_time == _minute_of(decision.change_time)
        before = self.to_the_minute
        self._finer = not whole_minute
        self.to_the_minute = whole_minute
        return before != self.to_the_minute

    @property
    def precision(self) -> timedelta:
        return MINUTE if self.to_the_minute else SECOND

    def key(self, decision: Decision) -> tuple[datetime, int, int]:
        return (*self.change_of(decision), -decision.position)

    def change_of(self, decision: Decision) -> tuple[datetime, int]:
        """Which change a version records, as far as the order can tell changes apart."""
        if decision.sequence < 0:
            return (decision.change_time, decision.sequence)
        return (_plus(self._time(decision.change_time), self.precision), decision.sequence)

    def later(self, best: Decision | None, candidate: Decision) -> Decision:
        if best is None or self.key(candidate) > self.key(best):
            return candidate
        return best

    def surely_before(self, latest_possible: datetime, best: Decision) -> bool:
        """Whether a change no later than ``latest_possible`` comes before ``best``. Until a
        stream change off the minute is seen, the precision may yet turn out a minute."""
        widest = SECOND if self._finer else MINUTE
        return _plus(latest_possible, widest) < self.change_of(best)[0]

    def _time(self, moment: datetime) -> datetime:
        return _minute_of(moment) if self.to_the_minute else moment


SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def _minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _latest_possible_changes(entries: Sequence[ObjectVersion], skew: timedelta) -> list[datetime]:
    """For each position, the latest change time any entry at or below it can hold: a version
    is never written before its change (``change_time <= last_modified + skew``). The maximum
    is taken over everything below, so that a listing out of time order cannot hide one."""
    reachable: list[datetime] = []
    latest: datetime | None = None
    for entry in reversed(entries):
        latest = entry.last_modified if latest is None else max(latest, entry.last_modified)
        reachable.append(_plus(latest, skew))
    return reachable[::-1]


def _plus(moment: datetime, span: timedelta) -> datetime:
    try:
        return moment + span
    except OverflowError:  # a skew meant as "no bound"
        return datetime.max.replace(tzinfo=moment.tzinfo)


def _tombstone_under(entries: Sequence[ObjectVersion], position: int) -> ObjectVersion | None:
    """The tombstone a delete marker was written over (a REMOVE's two writes), if any."""
    below = entries[position + 1] if position + 1 < len(entries) else None
    return below if below is not None and below.is_tombstone else None


@dataclass(frozen=True)
class Decision:
    """A change of one object: the version (or delete marker) and when it happened."""

    entry: ObjectVersion
    change_time: datetime
    sequence: int  # -1 when the version carries none (backfill, repair, other tools)
    removed: bool
    position: int  # in S3's order, newest first
    metadata: VersionMetadata | None = None  # what we recorded on it, if anything

    @property
    def writer(self) -> str | None:
        return self.metadata.writer if self.metadata else None

    @classmethod
    def of(
        cls,
        entry: ObjectVersion,
        metadata: VersionMetadata | None,
        position: int,
        ceiling: datetime | None = None,
    ) -> Decision:
        if metadata is not None:
            change_time = metadata.change_time
        else:
            change_time = min(entry.last_modified, ceiling) if ceiling else entry.last_modified
        sequence = int(metadata.sequence_number) if metadata and _is_number(metadata) else -1
        removed = entry.is_removal or (metadata is not None and metadata.is_removal)
        return cls(entry, change_time, sequence, removed, position, metadata)

    def order(self) -> tuple[datetime, int]:
        """Across object names: S3's positions are not comparable, sequence numbers are."""
        return (self.change_time, self.sequence)


# --- an object's whole history, in the changes' order --------------------------------------


@dataclass(frozen=True)
class PlacedVersion:
    """One entry of an object's history, dated and placed in the stream's order."""

    decision: Decision
    duplicate_of: ObjectVersion | None = None  # the first version S3 got of the same change
    late: bool = False  # S3 received it after a version that records a later change

    @property
    def entry(self) -> ObjectVersion:
        return self.decision.entry


def stream_order(
    entries: Sequence[ObjectVersion], metadata: Mapping[str, VersionMetadata | None]
) -> list[PlacedVersion]:
    """Every entry of one object (newest first in S3's order, ``metadata`` by version id),
    newest change first by the rule point-in-time selection follows: change time, then
    sequence number, then S3's order. A delete marker is dated by the tombstone under it and
    placed just above it. Each version says whether it repeats a change S3 already held (a
    retried, replayed or second writer's copy), and whether it came in late, after a version
    recording a later change (selection never takes it for a moment after that change)."""
    decisions: list[Decision] = []
    ceiling: datetime | None = None
    for position, entry in enumerate(entries):
        found = None if entry.is_delete_marker else metadata.get(entry.version_id)
        decisions.append(Decision.of(entry, found, position, ceiling))
        if found is not None and found.writer in AUTHORITATIVE_WRITERS:
            ceiling = min(ceiling, found.change_time) if ceiling else found.change_time
    for position, entry in enumerate(entries):
        tombstone = _tombstone_under(entries, position) if entry.is_delete_marker else None
        if tombstone is not None:
            dated = decisions[position + 1]
            decisions[position] = replace(
                decisions[position], change_time=dated.change_time, sequence=dated.sequence
            )
    order = StreamOrder()
    for decision in decisions:
        order.learn(decision)
    placed = _mark_copies(decisions, order)
    return sorted(placed, key=lambda one: order.key(one.decision), reverse=True)


def _mark_copies(decisions: Sequence[Decision], order: StreamOrder) -> list[PlacedVersion]:
    """Walks S3's order oldest first: a version repeats the first one S3 got of the same
    change (same change time, event and sequence number; without a sequence number, the same
    writer and body), and is late when a version received before it records a later change."""
    first_of: dict[tuple[object, ...], ObjectVersion] = {}
    latest_before: tuple[datetime, int] | None = None
    placed: list[PlacedVersion] = []
    for decision in reversed(decisions):
        entry = decision.entry
        if entry.is_delete_marker:
            placed.append(PlacedVersion(decision))
            continue
        identity = _change_identity(decision)
        original = first_of.get(identity) if identity else None
        if identity and original is None:
            first_of[identity] = entry
        change = order.change_of(decision)
        late = latest_before is not None and latest_before > change
        placed.append(PlacedVersion(decision, original, late))
        if latest_before is None or change > latest_before:
            latest_before = change
    return placed[::-1]


def _change_identity(decision: Decision) -> tuple[object, ...] | None:
    metadata = decision.metadata
    if metadata is None or not (metadata.sequence_number or decision.entry.etag):
        return None  # nothing to tell this change from another at the same time
    if metadata.sequence_number:
        return (metadata.change_time, metadata.event_name, "sequence", metadata.sequence_number)
    return (metadata.change_time, metadata.event_name, metadata.writer, decision.entry.etag)


def _is_number(metadata: VersionMetadata) -> bool:
    return bool(metadata.sequence_number) and str(metadata.sequence_number).isdigit()
