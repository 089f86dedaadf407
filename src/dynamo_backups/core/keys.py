"""Canonical item keys and the object names derived from them (pure; no I/O).

An item's object name is the lowercase hex digest of its *canonical key*: the UTF-8 bytes of
``json.dumps(key, sort_keys=True, separators=(",", ":"))`` (``ensure_ascii`` left on, so
non-ASCII text appears as ``\\uXXXX`` escapes), where ``key`` holds only the table's key
attributes in DynamoDB JSON with binary values as base64 text. Every code path that names
an object (stream, backfill, history, verify) goes through :func:`object_name`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from dynamo_backups.core.ddbjson import (
    ATTRIBUTE_TYPES,
    AttributeValue,
    InvalidDynamoJSON,
    item_to_wire,
    normalize_number,
    validate_value,
    value_from_plain,
)

DEFAULT_KEY_HASH = "md5"


def _md5(data: bytes) -> Any:
    # A name, not a security measure: FIPS-mode hosts allow MD5 only when told so.
    return hashlib.md5(data, usedforsecurity=False)


# Named so that a layout can say which one it uses; adding one is adding a line here.
KEY_HASHES: dict[str, Callable[[bytes], Any]] = {
    "md5": _md5,
    "sha256": hashlib.sha256,
}


def check_key_hash(name: str) -> str:
    """Return ``name`` if it is a known key hash, else raise a ValueError naming the choices."""
    if name not in KEY_HASHES:
        choices = ", ".join(sorted(KEY_HASHES))
        raise ValueError(f"unknown key hash {name!r}; choose one of: {choices}")
    return name


_TEXT_TYPED = frozenset({"S", "N"})  # key attribute types held as text in both forms
# ``json.dumps(..., sort_keys=True, separators=(",", ":"))``, built once: every item a job
# reads is named, and ``dumps`` with options builds an encoder per call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


# The C function the encoder above quotes and escapes each string with (ensure_ascii).
_QUOTED = json.encoder.encode_basestring_ascii


def _text_key_json(key: dict[str, Any]) -> str | None:
    """What ``_CANONICAL_JSON`` makes of a key whose every attribute is one S or N tag with
    text (most keys), in a fifth of its time (its encoder is built anew on every call);
    None for any other key."""
    attributes = []
    for name, value in key.items():  # every shape checked before any is sorted or written
        if type(name) is not str or type(value) is not dict or len(value) != 1:
            return None
        ((tag, inner),) = value.items()
        if type(tag) is not str or tag not in _TEXT_TYPED or type(inner) is not str:
            return None
        attributes.append((name, tag, inner))
    attributes.sort()  # by name: each is there once
    return "{" + ",".join(f'{_QUOTED(n)}:{{"{t}":{_QUOTED(i)}}}' for n, t, i in attributes) + "}"


def canonical_key(key: Mapping[str, AttributeValue]) -> bytes:
    """The canonical bytes of a key: sorted, compact JSON, binary as base64 text."""
    if not key:
        raise InvalidDynamoJSON("an item key needs at least one attribute")
    if type(key) is dict:
        text = _text_key_json(key)
        if text is not None:
            return text.encode("ascii")  # escaped as ensure_ascii does: ASCII alone
    # A key of strings and numbers (most keys) is its own wire form: no copy to make. Wire
    # form attribute by attribute: a one-attribute key named "L", "BS" or "B" was once read
    # as a typed value (every item of such a table one name; docs/layout.md, "Key names").
    plain = type(key) is dict and all(_TEXT_TYPED.issuperset(value) for value in key.values())
    wire = key if plain else item_to_wire(key)
    return _CANONICAL_JSON.encode(wire).encode("utf-8")


def object_name(key: Mapping[str, AttributeValue], key_hash: str = DEFAULT_KEY_HASH) -> str:
    """The object name of the item with this key under the named hash algorithm."""
    digest = KEY_HASHES[check_key_hash(key_hash)]
    return digest(canonical_key(key)).hexdigest()


def key_attribute_names(key_schema: Iterable[Mapping[str, str]]) -> list[str]:
    """Attribute names from a DynamoDB KeySchema, hash key first."""
    ordered = sorted(key_schema, key=lambda element: element["KeyType"] != "HASH")
    return [element["AttributeName"] for element in ordered]


def extract_key(item: Mapping[str, AttributeValue], names: Iterable[str]) -> dict:
    """The key attributes of ``item``; a missing one is an error naming it."""
    key = {}
    for name in names:
        if name not in item:
            raise InvalidDynamoJSON(f"item has no key attribute {name!r}")
        key[name] = item[name]
    return key


def parse_key(
    text_or_value: str | Mapping[str, Any],
    key_types: Mapping[str, str] | None = None,
) -> dict[str, AttributeValue]:
    """A typed key from user input: DynamoDB JSON (``{"id": {"S": "a"}}``) or plain JSON
    (``{"id": "a"}``), the latter typed with ``key_types`` (attribute name -> S, N or B).
    Numbers are normalized the way DynamoDB stores them, so ``1.0`` finds ``1``."""
    raw = _load_json(text_or_value) if isinstance(text_or_value, str) else dict(text_or_value)
    if not isinstance(raw, dict) or not raw:
        raise InvalidDynamoJSON('a key is a JSON object of key attributes, e.g. {"id": "abc"}')
    key: dict[str, AttributeValue] = {}
    for name, value in raw.items():
        if _looks_typed(value):
            validate_value(value, f"key.{name}")
            ((tag, inner),) = value.items()
            if tag not in ("S", "N", "B"):
                raise InvalidDynamoJSON(
                    f"key attribute {name!r} has type {tag}; keys are S, N or B"
                )
            key[name] = {"N": normalize_number(inner)} if tag == "N" else {tag: inner}
            continue
        if key_types is not None and name not in key_types:
            raise InvalidDynamoJSON(
                f"{name!r} is not a key attribute: the key is "
                f"{', '.join(f'{n} ({t})' for n, t in key_types.items())}"
            )
        if key_types is None:
            raise InvalidDynamoJSON(
                f"cannot tell the type of key attribute {name!r}: give it in DynamoDB JSON "
                f'(e.g. {{"{name}": {{"S": "..."}}}}) or back up the table description first'
            )
        try:
            key[name] = value_from_plain(value, key_types[name])
        except InvalidDynamoJSON as error:
            raise InvalidDynamoJSON(f"key attribute {name!r}: {error}") from None
    if key_types is not None:
        missing = sorted(set(key_types) - set(key))
        extra = sorted(set(key) - set(key_types))
        if missing or extra:
            wrong = [f"missing {', '.join(missing)}"] if missing else []
            wrong += [f"not key attributes: {', '.join(extra)}"] if extra else []
            raise InvalidDynamoJSON(
                f"the key is {', '.join(f'{n} ({t})' for n, t in key_types.items())}; "
                + "; ".join(wrong)
            )
    return key


def _looks_typed(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in ATTRIBUTE_TYPES


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise InvalidDynamoJSON(f"key is not valid JSON: {error}") from None
