"""Object names other tools give an item (pure; no I/O).

The checklist's original Lambda (a fork of mapbox/dynamodb-replicator) names each object
``md5(JSON.stringify(record.dynamodb.Keys))``: the key attributes in the order the stream
record lists them (which need not be the table's, nor sorted), and non-ASCII characters as raw
UTF-8 (JavaScript's ``JSON.stringify`` escapes only quotes, backslashes and control
characters). Its backfill names objects the same way with the key schema's order (hash key
first). So one item can sit under our name and under one name per order of its key
attributes; for an ASCII single-attribute key all of them are the same name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import permutations
from typing import Any

from dynamo_backups.core.ddbjson import item_to_wire
from dynamo_backups.core.keys import object_name

OURS = "ours"
REPLICATOR = "replicator"
BOTH = "both"  # our name and the replicator's are the same name
UNKNOWN = "unknown"


def replicator_name(ordered_key: Mapping[str, Any]) -> str:
    """The replicator's name for a key whose attributes are in this order (DynamoDB JSON)."""
    text = json.dumps(item_to_wire(ordered_key), ensure_ascii=False, separators=(",", ":"))
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def replicator_names(key: Mapping[str, Any]) -> list[str]:
    """The replicator's names for ``key``, one per order of its attributes (deduplicated)."""
    names: list[str] = []
    for order in permutations(key):
        name = replicator_name({attribute: key[attribute] for attribute in order})
        if name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class ItemNames:
    """Every name one item may be under, computed once: ours, and the replicator's."""

    own: str
    replicator: tuple[str, ...]

    @classmethod
    def of(cls, key: Mapping[str, Any], key_hash: str) -> ItemNames:
        return cls(object_name(key, key_hash), tuple(replicator_names(key)))

    @property
    def candidates(self) -> list[str]:
        """Ours first, then the replicator's that differ from it."""
        return [self.own, *(name for name in self.replicator if name != self.own)]

    def naming(self, name: str) -> str:
        """Which tool's naming ``name`` follows for this item."""
        ours, theirs = name == self.own, name in self.replicator
        if ours and theirs:
            return BOTH
        if ours:
            return OURS
        return REPLICATOR if theirs else UNKNOWN


def candidate_names(key: Mapping[str, Any], key_hash: str) -> list[str]:
    """Every name the item may be under: ours first, then the replicator's."""
    return ItemNames.of(key, key_hash).candidates


def naming_of(name: str, key: Mapping[str, Any], key_hash: str) -> str:
    """Which tool's naming ``name`` follows for the item with ``key``."""
    return ItemNames.of(key, key_hash).naming(name)
