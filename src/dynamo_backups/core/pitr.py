"""Point-in-time selection: which version of an item was current at a moment (pure).

The *change time* of a version is the stream's ApproximateCreationDateTime recorded in its
metadata (or, for objects without our metadata, S3's LastModified). S3 lists an object's
versions in the order it received them, which is not always the order of the changes: a late
retry, a replay or a second writer can put an older change above a newer one, at any distance
in time. Selection therefore follows the changes' order (the latest moment each change can
have happened: change time plus the precision its source rounded it down by; then the stream
sequence number; then S3's order), and bounds the reads it needs with one fact: a version is
never written before its change happened, so ``change_time <= last_modified + allowance``
(the allowance covers S3's whole-second LastModified and the servers' clocks). Walking the
versions newest-received first, once the best change found is later than every version below
could be, the walk stops: with versions that arrived in order and more than the allowance
apart, that is after the one read that fetches the chosen version's body anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from dynamo_backups.core.layout import (
    MINUTE,
    SECOND,
    WRITER_REPAIR,
    WRITER_STREAM,
    VersionMetadata,
)

# How much later than S3's LastModified a change time can be: LastModified is whole seconds
# (rounded down), and DynamoDB's and S3's servers keep time by the same synchronized clocks
# (Amazon Time Sync, well under a millisecond apart); one more second covers both generously.
CLOCK_ALLOWANCE = timedelta(seconds=2)
DEFAULT_CLOCK_SKEW = CLOCK_ALLOWANCE  # the name callers pass it by
# The coarsest rounding any source applies (DynamoDB Local's minute): what a version not read
# yet is assumed to have until a stream version of the object has been read.
COARSEST_PRECISION = MINUTE
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

    "Last" is the stream's order, not S3's (see ``change_key``). Versions are read newest
    received first while one could still hold a later change than the best found: while its
    ``last_modified + skew`` (plus the precision of the stream's times) is not before it.
    ``skew`` is the clock allowance; a huge one reads every version.
    """
    if not any(not entry.is_removal for entry in entries):
        return Selection(None)  # only removals: absent whichever decides, nothing to read
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


def latest_decision(
    decisions: Sequence[Decision | None], handover: datetime | None = None
) -> Decision | None:
    """Of one item's decisions under several names (its own name first), the one that holds.

    The own name's decision holds when our stream handler (or a repair, a read of the table
    itself) wrote it: from the first change the handler recorded on (``handover``: the
    earliest change time of a stream or repair version under the own name), it records every
    change of the item, those another tool also recorded included, so nothing under other
    names is newer. Other names' changes are therefore dated no later than the handover, as
    ``history`` places them. Otherwise the latest change holds, by change time (S3's
    LastModified for other tools' versions, which carry no change time), and on a tie the own
    name's. Without ``handover``, the one the own name's walk saw is used.
    """
    own = decisions[0] if decisions else None
    if own is not None and own.writer in AUTHORITATIVE_WRITERS:
        return own
    if handover is None and own is not None:
        handover = own.handover
    chosen: Decision | None = None
    chosen_order: tuple[datetime, int] | None = None
    for place, decision in enumerate(decisions):
        if decision is None:
            continue
        order = decision.order() if place == 0 else decision.capped(handover).order()
        if chosen_order is None or order > chosen_order:
            chosen, chosen_order = decision, order
    return chosen


def handover_of(entries: Sequence[ObjectVersion], inspect: Inspector) -> datetime | None:
    """The earliest change time of a stream or repair version among one name's ``entries``
    (every version inspected): from then on the handler recorded every change of the item.
    ``history`` dates other names' versions no later than this, and so does latest_decision."""
    earliest: datetime | None = None
    for entry in entries:
        if entry.is_delete_marker:
            continue
        metadata = inspect(entry)
        if metadata is not None and metadata.writer in AUTHORITATIVE_WRITERS:
            moment = metadata.change_time
            earliest = moment if earliest is None else min(earliest, moment)
    return earliest


def _decide(
    entries: Sequence[ObjectVersion],
    moment: datetime,
    inspect: Inspector,
    skew: timedelta,
) -> tuple[Decision | None, int]:
    reachable = _latest_possible_changes(entries, skew)
    tombstones = _tombstones_of_markers(entries)
    best: Decision | None = None
    inspected = 0
    # The precision of versions not read yet: the stream's, once a stream version is read.
    precision: timedelta | None = None
    handover: datetime | None = None
    # Another tool's version (no metadata of ours) is dated by S3's clock, which runs after
    # the change; one that our stream handler's record was received after cannot be later
    # than that record's change: its date is capped there.
    ceiling: datetime | None = None
    for position, entry in enumerate(entries):
        if best is not None and _surely_before(reachable[position], precision, best):
            break  # nothing received this early can hold a later change than the best
        if entry.is_delete_marker:
            # A delete marker holds no metadata: the tombstone written before it (the nearest
            # below, another writer's version may have landed between) carries the removal's
            # change time, and this walk reads it. A marker with no tombstone of its own (not
            # written by this tool) dates from S3's clock.
            if position not in tombstones:
                candidate = Decision.of(entry, None, position, ceiling)
                if candidate.change_time <= moment:
                    best = _later(best, candidate)
            continue
        inspected += 1
        metadata = inspect(entry)
        candidate = Decision.of(entry, metadata, position, ceiling)
        if candidate.change_time <= moment:
            best = _later(best, candidate)
        if metadata is not None and candidate.sequence >= 0:
            seen = metadata.time_precision
            precision = seen if precision is None else max(precision, seen)
        if metadata is not None and metadata.writer in AUTHORITATIVE_WRITERS:
            ceiling = min(ceiling, metadata.change_time) if ceiling else metadata.change_time
            handover = ceiling
    if best is not None and handover is not None:
        best = replace(best, handover=handover)
    return best, inspected


def change_key(decision: Decision) -> tuple[datetime, int, int]:
    """The stream's order of an object's changes: the latest moment the change can have
    happened (its change time plus the precision its source rounded it down by: a stream
    change stamped 12:00 by DynamoDB Local, which rounds to the minute, may have happened
    until 12:00:59, after a table read at 12:00:40), then the sequence number (a stream change
    has one; at an equal time it comes after a table read, which has none), then S3's order
    (the newest received first). Every part is the version's own, so the order of two
    versions never depends on which others were read."""
    return (decision.latest_time, decision.sequence, -decision.position)


def _later(best: Decision | None, candidate: Decision) -> Decision:
    if best is None or change_key(candidate) > change_key(best):
        return candidate
    return best


def _surely_before(latest_possible: datetime, precision: timedelta | None, best: Decision) -> bool:
    """Whether every version whose change time is at most ``latest_possible`` comes before
    ``best``. Such a version happened at most its precision later: the stream's precision once
    one of the object's stream versions was read (an object's stream versions come from one
    table's stream), the coarsest any source has before; a table read's is a second."""
    rounding = max(precision if precision is not None else COARSEST_PRECISION, SECOND)
    return _plus(latest_possible, rounding) < best.latest_time


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


def marker_tombstones(entries: Sequence[ObjectVersion]) -> dict[int, int]:
    """Each delete marker's tombstone, by position (newest first): the marker stands for the
    removal its tombstone records (see ``_tombstones_of_markers``)."""
    return _tombstones_of_markers(entries)


def _tombstones_of_markers(entries: Sequence[ObjectVersion]) -> dict[int, int]:
    """Each delete marker's tombstone (positions): a REMOVE writes a tombstone, then the
    marker, so the marker's is the nearest tombstone below it, with no other marker between
    (another writer's version may have landed between the two writes). A marker directly on
    another marker repeats it (a delete sent again after its answer was lost: S3 adds a
    marker for every simple DELETE, also over a marker), so it has the same tombstone.
    Markers without one (another tool's) are not in the answer."""
    owned: dict[int, int] = {}
    open_marker: int | None = None
    for position in range(len(entries) - 1, -1, -1):  # oldest first
        entry = entries[position]
        if entry.is_tombstone:
            open_marker = position
        elif entry.is_delete_marker:
            if open_marker is not None:
                owned[position] = open_marker
            elif position + 1 in owned:  # the entry just below is a marker with a tombstone
                owned[position] = owned[position + 1]
            open_marker = None
    return owned


@dataclass(frozen=True)
class Decision:
    """A change of one object: the version (or delete marker) and when it happened."""

    entry: ObjectVersion
    change_time: datetime
    sequence: int  # -1 when the version carries none (backfill, repair, other tools)
    removed: bool
    position: int  # in S3's order, newest first
    metadata: VersionMetadata | None = None  # what we recorded on it, if anything
    precision: timedelta = SECOND  # how far change_time may lie before the change
    # The earliest stream or repair change its walk saw under the same name (latest_decision).
    handover: datetime | None = None

    @property
    def writer(self) -> str | None:
        return self.metadata.writer if self.metadata else None

    @property
    def latest_time(self) -> datetime:
        """The latest moment the change can have happened."""
        return self.change_time + self.precision

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
            precision = metadata.time_precision
        else:  # S3's LastModified, after the change, itself whole seconds (rounded down)
            change_time = min(entry.last_modified, ceiling) if ceiling else entry.last_modified
            precision = SECOND
        sequence = _sequence_of(metadata)
        removed = entry.is_removal or (metadata is not None and metadata.is_removal)
        return cls(entry, change_time, sequence, removed, position, metadata, precision)

    def dated_like(self, other: Decision) -> Decision:
        """This delete marker, dated as the removal its tombstone ``other`` records."""
        return replace(
            self,
            change_time=other.change_time,
            sequence=other.sequence,
            precision=other.precision,
        )

    def capped(self, handover: datetime | None) -> Decision:
        """Dated no later than ``handover`` (another name's change, see latest_decision)."""
        if handover is None or self.change_time <= handover:
            return self
        return replace(self, change_time=handover)

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
    newest change first by the rule point-in-time selection follows (``change_key``). A
    delete marker is dated by its tombstone and placed just above it. Each version says
    whether it repeats a change S3 already held (a retried, replayed or second writer's copy),
    and whether it came in late, after a version recording a later change (selection never
    takes it for a moment after that change)."""
    decisions: list[Decision] = []
    ceiling: datetime | None = None
    for position, entry in enumerate(entries):
        found = None if entry.is_delete_marker else metadata.get(entry.version_id)
        decisions.append(Decision.of(entry, found, position, ceiling))
        if found is not None and found.writer in AUTHORITATIVE_WRITERS:
            ceiling = min(ceiling, found.change_time) if ceiling else found.change_time
    owned = _tombstones_of_markers(entries)
    for marker, tombstone in owned.items():
        decisions[marker] = decisions[marker].dated_like(decisions[tombstone])
    placed = _mark_copies(decisions, owned)
    return sorted(placed, key=lambda one: change_key(one.decision), reverse=True)


def _mark_copies(decisions: Sequence[Decision], owned: Mapping[int, int]) -> list[PlacedVersion]:
    """Walks S3's order oldest first: a version repeats the first one S3 got of the same
    change (same change time, event and sequence number; without a sequence number, the same
    writer and body), and is late when a version received before it records a later change.
    A delete marker repeats the first marker of the same removal: the marker directly under
    it (a delete sent again), or the first marker on a tombstone of the same change (a
    removal delivered again) (``owned``: each marker's tombstone, by position)."""
    first_of: dict[tuple[object, ...], ObjectVersion] = {}
    original_of: dict[int, ObjectVersion] = {}  # position -> the first copy of its change
    first_marker_of: dict[str, ObjectVersion] = {}  # original tombstone -> its first marker
    latest_before: tuple[datetime, int] | None = None
    placed: list[PlacedVersion] = []
    for decision in reversed(decisions):
        entry = decision.entry
        if entry.is_delete_marker:
            original = _first_marker(decision.position, entry, owned, original_of, first_marker_of)
            original_of[decision.position] = original or entry
            placed.append(PlacedVersion(decision, original))
            continue
        identity = _change_identity(decision)
        original = first_of.get(identity) if identity else None
        if identity and original is None:
            first_of[identity] = entry
        original_of[decision.position] = original or entry
        change = (decision.latest_time, decision.sequence)
        late = latest_before is not None and latest_before > change
        placed.append(PlacedVersion(decision, original, late))
        if latest_before is None or change > latest_before:
            latest_before = change
    return placed[::-1]


def _first_marker(
    position: int,
    marker: ObjectVersion,
    owned: Mapping[int, int],
    original_of: Mapping[int, ObjectVersion],
    first_marker_of: dict[str, ObjectVersion],
) -> ObjectVersion | None:
    """The marker that ``marker`` repeats (None: it is the first of its removal)."""
    below = original_of.get(position + 1)
    if below is not None and below.is_delete_marker:
        return below  # directly on another marker: the same removal again
    tombstone = owned.get(position)
    if tombstone is None or tombstone not in original_of:
        return None
    removal = original_of[tombstone].version_id
    if removal in first_marker_of:
        return first_marker_of[removal]
    first_marker_of[removal] = marker
    return None


def _change_identity(decision: Decision) -> tuple[object, ...] | None:
    metadata = decision.metadata
    if metadata is None or not (metadata.sequence_number or decision.entry.etag):
        return None  # nothing to tell this change from another at the same time
    if metadata.sequence_number:
        return (metadata.change_time, metadata.event_name, "sequence", metadata.sequence_number)
    return (metadata.change_time, metadata.event_name, metadata.writer, decision.entry.etag)


def _sequence_of(metadata: VersionMetadata | None) -> int:
    """The stream sequence number as a number; -1 for none, or for one that is not plain
    decimal digits (garbled metadata is dated by its change time alone, never a crash:
    ``str.isdigit`` accepts characters such as superscripts that ``int`` refuses)."""
    text = metadata.sequence_number if metadata is not None else None
    if not text or not (text.isascii() and text.isdigit()):
        return -1
    return int(text)
