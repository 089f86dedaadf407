"""DynamoDB JSON: the typed wire format (``{"N": "1.5"}``), kept lossless end to end.

Numbers stay decimal strings, binary stays base64 text (or bytes where boto3 hands them
to us). Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from dynamo_backups.core.json_text import parsed_or_none

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})
SET_TYPES = frozenset({"SS", "NS", "BS"})
DOCUMENT_TYPES = frozenset({"M", "L"})
ATTRIBUTE_TYPES = SCALAR_TYPES | SET_TYPES | DOCUMENT_TYPES

# DynamoDB numbers carry up to 38 significant digits and exponents from -130 to +125;
# a context this wide normalizes every one of them without rounding.
_WIDE = Context(prec=200, Emax=999_999, Emin=-999_999)


class UnreadableNumber:
    """A bare JSON number ``Decimal`` cannot hold (an exponent past its range), kept as its
    text: reported where it stands, as any bare number is, never a crash of the reader."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"UnreadableNumber({self.text!r})"


def _bare_number(text: str) -> Decimal | UnreadableNumber:
    try:
        return Decimal(text)
    except InvalidOperation:
        return UnreadableNumber(text)


# Bare JSON numbers as Decimal, so that one is reported, never rounded (valid DynamoDB JSON
# has none). Built once: ``json.loads`` with these options builds a decoder per call, and a
# restore parses every base line and journal record.
DECIMAL_DECODER = json.JSONDecoder(parse_float=_bare_number, parse_int=_bare_number)
# Attribute values nested deeper than DynamoDB allows (32 levels) are checked by
# ``validate_item`` alone, whatever the parser that read them (``core/json_text``).
MAX_PLAIN_DEPTH = 32


class InvalidDynamoJSON(ValueError):
    """A value is not well-formed DynamoDB JSON; the message names the attribute path."""


def normalize_number(text: str) -> str:
    """Return ``text`` in the form DynamoDB stores numbers in: plain notation, no
    superfluous zeros (``"1.50"`` -> ``"1.5"``, ``"1E+3"`` -> ``"1000"``, ``"-0"`` -> ``"0"``)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidDynamoJSON(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise InvalidDynamoJSON(f"not a finite number: {text!r}")
    if value.is_zero():
        return "0"
    return format(value.normalize(_WIDE), "f")


def validate_item(item: Any, where: str = "item") -> Item:
    """Check that ``item`` is a DynamoDB JSON item (map of attribute name to typed value)."""
    if not isinstance(item, Mapping):
        raise InvalidDynamoJSON(f"{where}: expected an object of attributes, got {_kind(item)}")
    for name, value in item.items():
        validate_value(value, f"{where}.{name}")
    return dict(item)


def validate_value(value: Any, where: str) -> None:
    """Check one typed attribute value, recursing into maps and lists."""
    # Exact-type tests first: every value of every item read goes through here, and
    # isinstance against an abstract class costs more than the rest of the check.
    if (type(value) is not dict and not isinstance(value, Mapping)) or len(value) != 1:
        raise InvalidDynamoJSON(f'{where}: expected one type tag such as {{"S": ...}}')
    ((tag, inner),) = value.items()
    if tag == "S" and type(inner) is str:
        return
    checker = _CHECKERS.get(tag)
    if checker is None:
        raise InvalidDynamoJSON(f"{where}: unknown type tag {tag!r}")
    if not checker(inner):
        raise InvalidDynamoJSON(f"{where}: bad {tag} value {_kind(inner)}")
    if tag == "M":
        for name, member in inner.items():
            validate_value(member, f"{where}.{name}")
    elif tag == "L":
        for index, member in enumerate(inner):
            validate_value(member, f"{where}[{index}]")


def _is_number_text(inner: Any) -> bool:
    if not isinstance(inner, str):
        return False
    try:
        return Decimal(inner).is_finite()
    except InvalidOperation:
        return False


def _is_binary(inner: Any) -> bool:
    if isinstance(inner, bytes | bytearray):
        return True
    if not isinstance(inner, str):
        return False
    try:
        base64.b64decode(inner, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_list_of(check: Any) -> Any:
    return lambda inner: isinstance(inner, list) and all(check(member) for member in inner)


_CHECKERS = {
    "S": lambda inner: isinstance(inner, str),
    "N": _is_number_text,
    "B": _is_binary,
    "BOOL": lambda inner: isinstance(inner, bool),
    "NULL": lambda inner: inner is True,
    "SS": _is_list_of(lambda member: isinstance(member, str)),
    "NS": _is_list_of(_is_number_text),
    "BS": _is_list_of(_is_binary),
    "M": lambda inner: isinstance(inner, Mapping),
    "L": lambda inner: isinstance(inner, list),
}


def _kind(value: Any) -> str:
    return type(value).__name__


def repair_untyped_empty_maps(item: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Give back ``{"M": {}}`` to empty maps that arrive as a bare ``{}``.

    DynamoDB Local 3.x drops the type of empty maps in stream images
    (awslabs/amazon-dynamodb-local-samples#37); the DynamoDB service never sends a bare
    ``{}``, which is not DynamoDB JSON. Returns the item (the same object when nothing needed
    repair) and the number of values repaired."""
    repaired = 0

    def fix(value: Any) -> Any:
        nonlocal repaired
        if not isinstance(value, dict):
            return value
        if not value:
            repaired += 1
            return {"M": {}}
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "M" and isinstance(inner, dict):
                return {"M": {name: fix(member) for name, member in inner.items()}}
            if tag == "L" and isinstance(inner, list):
                return {"L": [fix(member) for member in inner]}
        return value

    if not _has_untyped_empty_map(item.values()):
        return dict(item), 0
    fixed = {name: fix(value) for name, value in item.items()}
    return fixed, repaired


def _has_untyped_empty_map(values: Any) -> bool:
    for value in values:
        if not isinstance(value, dict):
            continue
        if not value:
            return True
        inner = value.get("M")
        if isinstance(inner, dict) and _has_untyped_empty_map(inner.values()):
            return True
        members = value.get("L")
        if isinstance(members, list) and _has_untyped_empty_map(members):
            return True
    return False


def canonical_item(item: Mapping[str, Any]) -> bytes:
    """Equal bytes for equal items: attributes and map keys sorted, set members sorted (sets
    are unordered, and two tables may return one set in different orders)."""

    def canonical(value: Any) -> Any:
        if isinstance(value, Mapping) and len(value) == 1:
            ((tag, inner),) = value.items()
            if tag in SET_TYPES:
                return {
                    tag: sorted(_encode_b64(member) if tag == "BS" else member for member in inner)
                }
            if tag == "B":
                return {"B": _encode_b64(inner)}
            if tag == "M":
                return {"M": {name: canonical(member) for name, member in inner.items()}}
            if tag == "L":
                return {"L": [canonical(member) for member in inner]}
        return value

    document = {name: canonical(value) for name, value in item.items()}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- boto3 <-> wire form -------------------------------------------------------------------
# boto3's low-level client gives and takes binary as bytes; the wire (and our bodies) use
# base64 text. These two walk a value and swap one for the other, touching nothing else.


def to_wire(value: Any) -> Any:
    """Convert a boto3 low-level item or value (bytes for binary) to wire JSON (base64)."""
    return _walk_binary(value, _encode_b64)


def item_to_wire(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item (or key) of boto3's form in wire form, attribute by attribute: an item of one
    attribute named like a type tag ("L", "B", "BS") is still an item, not a typed value,
    which ``to_wire`` on the item would take it for."""
    return _item_walk(item, _encode_b64)


def _item_walk(item: Mapping[str, Any], convert: Any) -> dict[str, Any]:
    return {name: _walk_binary(value, convert) for name, value in item.items()}


def from_wire(value: Any) -> Any:
    """Convert a wire JSON item or value (base64 binary) to what boto3's client accepts."""
    return _walk_binary(value, _decode_b64)


def _encode_b64(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return base64.b64encode(bytes(raw)).decode("ascii")


def _decode_b64(text: Any) -> bytes:
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    return base64.b64decode(text, validate=True)


def _walk_binary(value: Any, convert: Any) -> Any:
    if isinstance(value, list):  # e.g. the Items of a Scan answer
        return [_walk_binary(member, convert) for member in value]
    if not isinstance(value, Mapping):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "B":
            return {"B": convert(inner)}
        if tag == "BS":
            return {"BS": [convert(member) for member in inner]}
        if tag == "M":
            return {"M": {name: _walk_binary(member, convert) for name, member in inner.items()}}
        if tag == "L":
            return {"L": [_walk_binary(member, convert) for member in inner]}
        if tag in ATTRIBUTE_TYPES:
            return dict(value)
    return {name: _walk_binary(member, convert) for name, member in value.items()}


# --- plain (untyped) JSON, for people ------------------------------------------------------


class _RawNumber(str):
    """A number kept as its exact decimal text when rendered to plain JSON."""


def to_plain(value: AttributeValue) -> Any:
    """Untyped view of one attribute value: numbers exact, binary as base64, sets as lists."""
    ((tag, inner),) = value.items()
    if tag == "N":
        return _RawNumber(inner)
    if tag == "NS":
        return [_RawNumber(member) for member in inner]
    if tag in ("B",):
        return _encode_b64(inner)
    if tag == "BS":
        return [_encode_b64(member) for member in inner]
    if tag == "NULL":
        return None
    if tag == "M":
        return {name: to_plain(member) for name, member in inner.items()}
    if tag == "L":
        return [to_plain(member) for member in inner]
    return inner


def item_to_plain(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """Untyped view of a whole item."""
    return {name: to_plain(value) for name, value in item.items()}


def dumps_plain(value: Any, indent: int | None = 2) -> str:
    """JSON text of an untyped view, writing numbers exactly as DynamoDB holds them;
    ``indent=None`` gives one line."""
    return "".join(_render(value, indent, 0))


def _render(value: Any, indent: int | None, depth: int) -> Any:
    if isinstance(value, _RawNumber):
        yield str(value)
        return
    if isinstance(value, dict | list) and value:
        is_map = isinstance(value, dict)
        members = sorted(value.items()) if is_map else list(enumerate(value))
        if indent is None:
            separator, pad, inner_pad = ", ", "", ""
        else:
            separator, pad = ",", "\n" + " " * indent * depth
            inner_pad = "\n" + " " * indent * (depth + 1)
        yield "{" if is_map else "["
        for position, (name, member) in enumerate(members):
            yield (separator if position else "") + inner_pad
            if is_map:
                yield json.dumps(name, ensure_ascii=False) + ": "
            yield from _render(member, indent, depth + 1)
        yield pad + ("}" if is_map else "]")
        return
    yield json.dumps(value, ensure_ascii=False)


def value_from_plain(value: Any, attribute_type: str) -> AttributeValue:
    """Typed key value from an untyped one, given the key attribute's type (S, N or B)."""
    if attribute_type == "S":
        if not isinstance(value, str):
            raise InvalidDynamoJSON(f"expected a string, got {json.dumps(value)}")
        return {"S": value}
    if attribute_type == "N":
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str | float):
            raise InvalidDynamoJSON(f"expected a number, got {json.dumps(value, default=str)}")
        return {"N": normalize_number(str(value))}
    if attribute_type == "B":
        if not isinstance(value, str) or not _is_binary(value):
            raise InvalidDynamoJSON("expected base64 text for a binary key attribute")
        return {"B": value}
    raise InvalidDynamoJSON(f"key attributes are S, N or B, not {attribute_type!r}")


def load_json(data: bytes | bytearray | str, decoder: json.JSONDecoder = DECIMAL_DECODER) -> Any:
    """``json.loads(data)`` with ``decoder``'s options, and the same errors
    (``UnicodeDecodeError``, ``json.JSONDecodeError``; also for nesting too deep to read)."""
    if isinstance(data, (bytes, bytearray)):
        # "{" then a byte that is not NUL: ``json.detect_encoding`` would say UTF-8.
        utf8 = len(data) > 1 and data[0] == 0x7B and data[1] != 0
        data = data.decode("utf-8" if utf8 else json.detect_encoding(data), "surrogatepass")
    elif data.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
    try:
        return decoder.decode(data)
    except RecursionError:  # a document nested deeper than the interpreter's stack allows
        raise json.JSONDecodeError("nested too deep to read", data, 0) from None


def dumps_item(item: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a wire-form item, attribute order kept as given."""
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads_item(body: bytes | str, where: str) -> Item:
    """Parse and validate a stored item body; numbers can only be strings in valid input,
    and any bare JSON number is parsed as Decimal so it is reported, never rounded."""
    fast = parsed_or_none(body)  # a valid item holds no bare number: orjson's reading is json's
    if plainly_valid_item(fast):
        return fast  # type: ignore[no-any-return]
    try:
        parsed = load_json(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidDynamoJSON(f"{where}: not valid JSON ({error})") from None
    return checked_item(parsed, where)


def checked_item(parsed: Any, where: str) -> Item:
    """``validate_item`` of an item ``json.loads`` just built (a fresh dict, which is
    returned as it is): the common case checked without naming paths, the rest by
    ``validate_item``, whose error names the attribute."""
    if plainly_valid_item(parsed):
        return parsed  # type: ignore[no-any-return]  # a fresh dict, as validate_item's copy
    try:
        return validate_item(parsed, where)  # the error, with the attribute's path
    except RecursionError:
        raise InvalidDynamoJSON(f"{where}: nested too deep to check") from None


def plainly_valid_item(parsed: Any) -> bool:
    """Whether ``validate_item`` would pass ``parsed`` (a fresh parse) as it is, checked
    without naming paths; False also for what it would correct or refuse."""
    return type(parsed) is dict and all(map(_plainly_valid, parsed.values()))


def _plainly_valid(value: Any, depth: int = 1) -> bool:
    """``validate_value`` for what ``json.loads`` builds, without naming paths (a restore
    checks every attribute of every item): True only where that would pass. Anything else
    (False) goes to ``validate_value``, which says what is wrong and where; so does a value
    nested past ``MAX_PLAIN_DEPTH``."""
    if type(value) is not dict or len(value) != 1:
        return False
    for tag, inner in value.items():
        if tag == "S":
            return type(inner) is str
        if tag == "N":
            return _is_number_text(inner)
        if tag == "M":
            return (
                type(inner) is dict
                and depth < MAX_PLAIN_DEPTH
                and all(_plainly_valid(member, depth + 1) for member in inner.values())
            )
        if tag == "L":
            return (
                type(inner) is list
                and depth < MAX_PLAIN_DEPTH
                and all(_plainly_valid(member, depth + 1) for member in inner)
            )
        if tag == "BOOL":
            return type(inner) is bool
        if tag == "NULL":
            return inner is True
        if tag == "SS":
            return type(inner) is list and all(type(member) is str for member in inner)
        if tag == "NS":
            return type(inner) is list and all(map(_is_number_text, inner))
        if tag == "B":
            return _is_binary(inner)
        if tag == "BS":
            return type(inner) is list and all(map(_is_binary, inner))
    return False
