"""Synthetic version listings for the point-in-time tests: one key's versions and delete
markers at seconds after noon, and the metadata the tool recorded on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dynamo_backups.core.layout import VersionMetadata
from dynamo_backups.core.pitr import ObjectVersion

LATEST = datetime(9999, 1, 1, tzinfo=UTC)
NOON = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def sec(seconds: float) -> datetime:
    return NOON + timedelta(seconds=seconds)


def version(vid: str, received: float, size: int = 10, latest: bool = False) -> ObjectVersion:
    return ObjectVersion("k", vid, sec(received), False, latest, size)


def marker(vid: str, received: float, latest: bool = False) -> ObjectVersion:
    return ObjectVersion("k", vid, sec(received), True, latest)


class Recorded:
    """version id -> what the tool recorded on it; records the reads."""

    def __init__(self, recorded: dict[str, VersionMetadata | None]) -> None:
        self.recorded = recorded
        self.read: list[str] = []

    def __call__(self, entry: ObjectVersion) -> VersionMetadata | None:
        self.read.append(entry.version_id)
        return self.recorded.get(entry.version_id)
