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
from itertools import permutations
from typing import Any

from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.core.keys import object_name

OURS = "ours"
REPLICATOR = "replicator"
BOTH = "both"  # our name and the replicator's are the same name
UNKNOWN = "unknown"


def replicator_name(ordered_key: Mapping[str, Any]) -> str:
    """The replicator's name for a key whose attributes are in this order (DynamoDB JSON)."""
    text = json.dumps(to_wire(dict(ordered_key)), ensure_ascii=False, separators=(",", ":"))
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def replicator_names(key: Mapping[str, Any]) -> list[str]:
    """The replicator's names for ``key``, one per order of its attributes (deduplicated)."""
    names: list[str] = []
    for order in permutations(key):
        name = replicator_name({attribute: key[attribute] for attribute in order})
        if name not in names:
            names.append(name)
    return names


def candidate_names(key: Mapping[str, Any], key_hash: str) -> list[str]:
    """Every name the item may be under: ours first, then the replicator's."""
    ours = object_name(key, key_hash)
    return [ours, *(name for name in replicator_names(key) if name != ours)]


def naming_of(name: str, key: Mapping[str, Any], key_hash: str) -> str:
    """Which tool's naming ``name`` follows for the item with ``key``."""
    ours = name == object_name(key, key_hash)
    theirs = name in replicator_names(key)
    if ours and theirs:
        return BOTH
    if ours:
        return OURS
    return REPLICATOR if theirs else UNKNOWN
