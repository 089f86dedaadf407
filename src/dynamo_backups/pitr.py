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

from dynamo_backups.layout import VersionMetadata

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
    The newest version, in S3's order, whose change time is at or before ``moment`` decides:
    a tombstone or delete marker means the item was absent; no such version means the item
    did not exist yet.
    """
    certain_before = moment - skew
    inspected = 0
    for position, entry in enumerate(entries):
        if entry.last_modified <= certain_before:
            return Selection(None if _is_removal(entry) else entry, inspected)
        if entry.is_delete_marker:
            # A delete marker holds no metadata: the tombstone written under it carries the
            # removal's change time, and the next step of this walk reads it. A marker with
            # no tombstone under it (not written by this tool) dates from S3's clock.
            below = entries[position + 1] if position + 1 < len(entries) else None
            if (below is None or not below.is_tombstone) and entry.last_modified <= moment:
                return Selection(None, inspected)
            continue
        inspected += 1
        metadata = inspect(entry)
        change_time = metadata.change_time if metadata else entry.last_modified
        if change_time <= moment:
            removed = entry.is_tombstone or (metadata is not None and metadata.is_removal)
            return Selection(None if removed else entry, inspected)
    return Selection(None, inspected)


def _is_removal(entry: ObjectVersion) -> bool:
    return entry.is_delete_marker or entry.is_tombstone
