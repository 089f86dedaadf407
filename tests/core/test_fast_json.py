"""The decoder and encoder built once (``ddbjson.load_json``, ``keys.canonical_key``) give
exactly what ``json.loads`` and ``json.dumps`` with the same options give: an object's name is
its key's identity, and a base line or record read differently would restore other data."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_backups.core.ddbjson import item_to_wire, load_json
from dynamo_backups.core.keys import canonical_key

TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
KEY_VALUES = st.one_of(
    st.builds(lambda text: {"S": text}, TEXT),
    st.builds(
        lambda number: {"N": str(number)}, st.decimals(allow_nan=False, allow_infinity=False)
    ),
    st.builds(lambda data: {"B": data}, st.binary(max_size=20)),
)
NAMES = st.one_of(TEXT, st.sampled_from(["L", "BS", "B", "S", "N", "M", "pk", "sk"]))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(NAMES, KEY_VALUES, min_size=1, max_size=2))
def test_a_key_is_named_from_the_bytes_json_dumps_gives(key: dict[str, Any]) -> None:
    expected = json.dumps(item_to_wire(key), sort_keys=True, separators=(",", ":")).encode()
    assert canonical_key(key) == expected


ANY_TEXT = st.text(st.characters(codec=None), max_size=12)  # lone surrogates among them
ODD_VALUES = st.one_of(  # shapes a valid key never has: named as they always were
    KEY_VALUES,
    st.builds(lambda text: {"N": text}, ANY_TEXT),
    st.builds(lambda number: {"S": number}, st.integers()),
    st.builds(lambda a, b: {"S": a, "N": b}, ANY_TEXT, ANY_TEXT),
    st.just({}),
    st.builds(lambda text: {"SS": [text]}, ANY_TEXT),
)


def old_canonical_key(key: dict[str, Any]) -> bytes:
    """``canonical_key`` before its text-key path: every key through the encoder."""
    plain = all({"S", "N"}.issuperset(value) for value in key.values())
    wire = key if plain else item_to_wire(key)
    return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode("utf-8")


def naming(function: Any, key: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "bytes", function(key)
    except Exception as error:  # the same failure either way
        return "error", type(error).__name__


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.one_of(ANY_TEXT, NAMES), ODD_VALUES, min_size=1, max_size=3))
def test_a_text_key_is_named_as_the_encoder_names_it(key: dict[str, Any]) -> None:
    """The S/N text path (``_text_key_json``) gives the encoder's bytes, names with quotes,
    backslashes, control characters, non-ASCII text and lone surrogates included; every
    other shape goes the encoder's way, failures alike."""
    assert naming(canonical_key, key) == naming(old_canonical_key, key)


class Tag(str):
    """A type tag whose text is not what it formats to."""

    def __str__(self) -> str:
        return "Z"

    def __format__(self, spec: str) -> str:
        return "Z"


class Unordered(str):
    __hash__ = str.__hash__

    def __lt__(self, other: object) -> bool:
        raise ValueError("not to be sorted")


@pytest.mark.parametrize(
    "key",
    [
        {"pk": {Tag("S"): "a"}},
        {"pk": {Tag("N"): "1"}, "sk": {"S": "b"}},
        {1: {"B": -1}, "a": {"S": "x"}},
        {1: {"M": 5}, "a": {"S": "x"}},
        {Unordered("a"): {"S": "x"}, "b": {"S": "y"}},
    ],
    ids=["tag-subclass", "tag-subclass-two", "int-name-bad-B", "int-name-bad-M", "str-subclass"],
)
def test_odd_keys_fail_or_are_named_as_before(key: dict[Any, Any]) -> None:
    """What the review of the text-key path found (str subclasses as tags written by their
    format, names sorted before their shapes were checked): now as the encoder does."""
    assert naming(canonical_key, key) == naming(old_canonical_key, key)


def outcome(load: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "value", load(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return "error", type(error).__name__


def reference(data: bytes | str) -> Any:
    return json.loads(data, parse_float=Decimal, parse_int=Decimal)


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
).map(lambda value: json.dumps(value, ensure_ascii=False))
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-32"])


@settings(max_examples=500, deadline=None)
@given(JSON_TEXT, ENCODINGS)
def test_a_line_reads_as_json_loads_reads_it_in_any_encoding(text: str, encoding: str) -> None:
    data = text.encode(encoding, "surrogatepass")
    assert outcome(load_json, data) == outcome(reference, data)
    assert outcome(load_json, text) == outcome(reference, text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12).map(lambda tail: b"{" + tail) | st.binary(max_size=12))
def test_bytes_that_are_not_json_fail_as_json_loads_fails(data: bytes) -> None:
    assert outcome(load_json, data) == outcome(reference, data)


def test_a_bom_is_refused_in_text_and_read_past_in_bytes() -> None:
    assert outcome(load_json, '\ufeff{"a":1}') == outcome(reference, '\ufeff{"a":1}')
    assert load_json('{"a":1}'.encode("utf-8-sig")) == {"a": Decimal(1)}
