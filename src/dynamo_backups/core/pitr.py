"""Point-in-time selection: which version of an item was current at a moment (pure).

The *change time* of a version is the stream's ApproximateCreationDateTime recorded in its
metadata (or, for objects without our metadata, S3's LastModified). A version is never
written before its change happened, so ``change_time <= last_modified + skew``: a version
S3 received well before the moment needs no metadata read, while versions received after
it (late deliveries) are inspected, newest first, until one whose change came before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    """The version of one item current at ``moment``.

    ``entries`` are the item's versions and delete markers, newest first. ``inspect``
    reads a version's metadata (the caller does the I/O, and may keep the body it got).
    The last change at or before ``moment`` decides: a tombstone or delete marker means the
    item was absent; no such change means the item did not exist yet.

    "Last" is the stream's order, not S3's: among the versions whose change came before the
    moment, the one with the latest change time wins, then the highest sequence number, then
    the newest in S3. With one writer the two orders agree and the newest such version in S3
    wins; where a late retry or a second writer put an older change above a newer one, the
    stream's order still decides. Versions S3 received well before the moment (``skew``)
    need no metadata read unless a later-received version competes with them.
    """
    decision, inspected = _decide(entries, moment, inspect, skew, exact=False)
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
    change time read even where ``select_at`` would not need it: what comparing one item's
    changes under several object names takes. None: no change at or before ``moment``."""
    return _decide(entries, moment, inspect, skew, exact=True)[0]


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
    exact: bool,
) -> tuple[Decision | None, int]:
    certain_before = moment - skew
    candidates: list[Decision] = []
    inspected = 0
    # Another tool's version (no metadata of ours) is dated by S3's clock, which runs after
    # the change; one that our stream handler's record was received after cannot be later
    # than that record's change: its date is capped there.
    ceiling: datetime | None = None
    for position, entry in enumerate(entries):
        below = entries[position + 1] if position + 1 < len(entries) else None
        if entry.last_modified <= certain_before:
            if not candidates and not exact:
                return Decision.of(entry, None, below, position), inspected
            # A version received well before the moment competes with later-received ones
            # that also changed before it: unless they are surely later, compare in full.
            if all(c.change_time <= entry.last_modified for c in candidates):
                # A delete marker is dated by the tombstone under it, when there is one.
                dated = below if entry.is_delete_marker and below and below.is_tombstone else entry
                metadata = None if dated.is_delete_marker else inspect(dated)
                inspected += 0 if dated.is_delete_marker else 1
                candidates.append(Decision.of(dated, metadata, None, position, ceiling))
            break
        if entry.is_delete_marker:
            # A delete marker holds no metadata: the tombstone written under it carries the
            # removal's change time, and the next step of this walk reads it. A marker with
            # no tombstone under it (not written by this tool) dates from S3's clock.
            if (below is None or not below.is_tombstone) and entry.last_modified <= moment:
                candidates.append(Decision.of(entry, None, below, position, ceiling))
            continue
        inspected += 1
        metadata = inspect(entry)
        candidate = Decision.of(entry, metadata, below, position, ceiling)
        if candidate.change_time <= moment:
            candidates.append(candidate)
        if metadata is not None and metadata.writer in AUTHORITATIVE_WRITERS:
            ceiling = min(ceiling, metadata.change_time) if ceiling else metadata.change_time
    if not candidates:
        return None, inspected
    return max(candidates, key=Decision.stream_position), inspected


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
        below: ObjectVersion | None,
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

    def stream_position(self) -> tuple[datetime, int, int]:
        return (self.change_time, self.sequence, -self.position)

    def order(self) -> tuple[datetime, int]:
        """Across object names: S3's positions are not comparable, sequence numbers are."""
        return (self.change_time, self.sequence)


def _is_number(metadata: VersionMetadata) -> bool:
    return bool(metadata.sequence_number) and str(metadata.sequence_number).isdigit()
