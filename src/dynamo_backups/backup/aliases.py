"""The alias index of an adopted folder: which objects hold an item under another tool's
name (the replicator's), and the item's own name they belong to.

``adopt`` writes it, in groups by the first two hex digits of a name, so that a unit of a
restore, verify or snapshot reads only the groups of its own partition:

    <meta>/aliases/<run>/by-own-name/<xx>.json    {"aliases": {own name: [other names]}}
    <meta>/aliases/<run>/by-other-name/<xx>.json  {"owners": {other name: own name}}

``layout.json`` names the index (``adopted.aliases``) and the groups that exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.aws.s3objects import ObjectReader
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter

GROUP_WIDTH = 2
BY_OWN_NAME = "by-own-name"
BY_OTHER_NAME = "by-other-name"


@dataclass
class PartitionAliases:
    """The aliases that touch one partition of the folder."""

    by_own_name: dict[str, list[str]] = field(default_factory=dict)  # own name -> other names
    other_names: set[str] = field(default_factory=set)  # names read under their owner instead

    def names_of(self, own_name: str) -> list[str]:
        return self.by_own_name.get(own_name, [])


@dataclass(frozen=True)
class AliasIndex:
    """Where an adopted folder's aliases are, and which groups of them exist."""

    bucket: str
    root: str  # ends with "/"
    own_groups: frozenset[str]
    other_groups: frozenset[str]

    @classmethod
    def from_manifest(cls, bucket: str, manifest: Mapping[str, Any] | None) -> AliasIndex | None:
        adopted = (manifest or {}).get("adopted") or {}
        if not adopted.get("aliases"):
            return None
        return cls(
            bucket,
            adopted["aliases"],
            frozenset(adopted.get("own_groups") or ()),
            frozenset(adopted.get("other_groups") or ()),
        )

    def for_partition(self, reader: ObjectReader, partition: str) -> PartitionAliases:
        """The aliases whose own name, or other name, starts with ``partition``."""
        found = PartitionAliases()
        for group in _groups_of(partition, self.own_groups):
            document = self._read(reader, f"{self.root}{BY_OWN_NAME}/{group}.json")
            for own, others in (document.get("aliases") or {}).items():
                if own.startswith(partition):
                    found.by_own_name[own] = list(others)
        for group in _groups_of(partition, self.other_groups):
            document = self._read(reader, f"{self.root}{BY_OTHER_NAME}/{group}.json")
            for other in document.get("owners") or {}:
                if other.startswith(partition):
                    found.other_names.add(other)
        return found

    def _read(self, reader: ObjectReader, object_key: str) -> dict[str, Any]:
        body, _ = call_with_retries(
            lambda: reader.read_object(object_key, None),
            READ_POLICY,
            f"read the alias index s3://{self.bucket}/{object_key}",
        )
        return json.loads(body)  # type: ignore[no-any-return]


def _groups_of(partition: str, groups: frozenset[str]) -> list[str]:
    return sorted(group for group in groups if group.startswith(partition[:GROUP_WIDTH]))


def write_alias_index(
    writer: BackupWriter, root: str, owners: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Write the index of ``owners`` (other name -> own name) under ``root``; the groups
    written, by own name and by other name."""
    by_own: dict[str, dict[str, list[str]]] = {}
    by_other: dict[str, dict[str, str]] = {}
    for other, own in sorted(owners.items()):
        by_own.setdefault(own[:GROUP_WIDTH], {}).setdefault(own, []).append(other)
        by_other.setdefault(other[:GROUP_WIDTH], {})[other] = own
    for group, aliases in by_own.items():
        writer.put_document(f"{root}{BY_OWN_NAME}/{group}.json", {"aliases": aliases})
    for group, owned in by_other.items():
        writer.put_document(f"{root}{BY_OTHER_NAME}/{group}.json", {"owners": owned})
    return sorted(by_own), sorted(by_other)
