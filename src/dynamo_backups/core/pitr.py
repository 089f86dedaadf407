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

from dynamo_backups.core.layout import VersionMetadata

DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


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
    certain_before = moment - skew
    candidates: list[_Candidate] = []
    inspected = 0
    for position, entry in enumerate(entries):
        below = entries[position + 1] if position + 1 < len(entries) else None
        if entry.last_modified <= certain_before:
            if not candidates:
                return Selection(None if _is_removal(entry) else entry, inspected)
            # A version received well before the moment competes with later-received ones
            # that also changed before it: unless they are surely later, compare in full.
            if all(c.change_time <= entry.last_modified for c in candidates):
                # A delete marker is dated by the tombstone under it, when there is one.
                dated = below if entry.is_delete_marker and below and below.is_tombstone else entry
                metadata = None if dated.is_delete_marker else inspect(dated)
                inspected += 0 if dated.is_delete_marker else 1
                candidates.append(_Candidate.of(dated, metadata, None, position))
            break
        if entry.is_delete_marker:
            # A delete marker holds no metadata: the tombstone written under it carries the
            # removal's change time, and the next step of this walk reads it. A marker with
            # no tombstone under it (not written by this tool) dates from S3's clock.
            if (below is None or not below.is_tombstone) and entry.last_modified <= moment:
                candidates.append(_Candidate.of(entry, None, below, position))
            continue
        inspected += 1
        metadata = inspect(entry)
        candidate = _Candidate.of(entry, metadata, below, position)
        if candidate.change_time <= moment:
            candidates.append(candidate)
    if not candidates:
        return Selection(None, inspected)
    chosen = max(candidates, key=_Candidate.stream_position)
    return Selection(None if chosen.removed else chosen.entry, inspected)


@dataclass(frozen=True)
class _Candidate:
    entry: ObjectVersion
    change_time: datetime
    sequence: int  # -1 when the version carries none (backfill, repair, other tools)
    removed: bool
    position: int  # in S3's order, newest first

    @classmethod
    def of(
        cls,
        entry: ObjectVersion,
        metadata: VersionMetadata | None,
        below: ObjectVersion | None,
        position: int,
    ) -> _Candidate:
        change_time = metadata.change_time if metadata else entry.last_modified
        sequence = int(metadata.sequence_number) if metadata and _is_number(metadata) else -1
        removed = (
            entry.is_delete_marker
            or entry.is_tombstone
            or (metadata is not None and metadata.is_removal)
        )
        return cls(entry, change_time, sequence, removed, position)

    def stream_position(self) -> tuple[datetime, int, int]:
        return (self.change_time, self.sequence, -self.position)


def _is_number(metadata: VersionMetadata) -> bool:
    return bool(metadata.sequence_number) and str(metadata.sequence_number).isdigit()


def _is_removal(entry: ObjectVersion) -> bool:
    return entry.is_delete_marker or entry.is_tombstone
