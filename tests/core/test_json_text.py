"""orjson on the hot paths (core/json_text.py) gives what the standard library gives: every
line, body and request, valid or not, read and written as without orjson (the Lambda
package's path), results and errors alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_backups.core import json_text
from dynamo_backups.core.base import decode_base_line
from dynamo_backups.core.ddbjson import loads_item

pytestmark = pytest.mark.skipif(json_text.orjson is None, reason="orjson is not installed")

TEXT = st.text(st.characters(codec=None), max_size=8)  # lone surrogates too
NUMBER_TEXT = st.sampled_from(["0", "-1.50", "1E+3", "12345678901234567890123456789", "x", ""])
BARE_NUMBER = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.floats(allow_infinity=True)
)
# Bare numbers as text: past orjson's range (read as a float or 0.0) and past Decimal's.
BARE_NUMBER_TEXT = st.sampled_from(
    ["1e-9999999999999999999999", "0e99999999999999999999", "1e400", "-0", "1" * 30]
)
TAG = st.sampled_from(["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L", "Q", "s"])
SCALAR = st.one_of(TEXT, NUMBER_TEXT, BARE_NUMBER, st.booleans(), st.none())


def attribute_values(children: Any) -> Any:
    """Attribute values, valid and not: a tag with any content, wrong counts of tags."""
    contents = st.one_of(SCALAR, st.lists(st.one_of(SCALAR, children), max_size=3), children)
    return st.one_of(
        st.dictionaries(TAG, contents, min_size=1, max_size=1),
        st.dictionaries(TAG, contents, max_size=3),
        SCALAR,
    )


VALUE = st.recursive(
    attribute_values(st.nothing()),
    lambda inner: st.one_of(
        attribute_values(st.dictionaries(TEXT, inner, max_size=3)),
        attribute_values(st.lists(inner, max_size=3)),
    ),
    max_leaves=12,
)
ITEM = st.one_of(st.dictionaries(TEXT, VALUE, max_size=4), VALUE)


def valid_values() -> Any:
    scalar = st.one_of(
        st.builds(lambda text: {"S": text}, st.text(max_size=6)),
        st.builds(lambda text: {"N": text}, st.sampled_from(["0", "-1.5", "1E+3", "0.000"])),
        st.builds(lambda flag: {"BOOL": flag}, st.booleans()),
        st.just({"NULL": True}),
        st.just({"B": "AAE="}),
        st.builds(lambda texts: {"SS": texts}, st.lists(st.text(max_size=4), max_size=3)),
    )
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.builds(lambda members: {"L": members}, st.lists(inner, max_size=3)),
            st.builds(lambda fields: {"M": fields}, st.dictionaries(st.text(max_size=4), inner)),
        ),
        max_leaves=10,
    )


VALID_ITEM = st.dictionaries(st.text(max_size=6), valid_values(), max_size=5)


def outcome(function: Callable[..., Any], *arguments: Any) -> tuple[Any, ...]:
    """What ``function`` answered: its value, or its exception's type and message."""
    try:
        return ("value", function(*arguments))
    except Exception as error:
        return ("error", type(error), str(error))


def without_orjson(function: Callable[..., Any], *arguments: Any) -> tuple[Any, ...]:
    saved, json_text.orjson = json_text.orjson, None
    try:
        return outcome(function, *arguments)
    finally:
        json_text.orjson = saved


def encodings(document: Any) -> list[bytes | str]:
    """The ways a stored line can carry ``document``: as written, escaped, as text, with
    what orjson refuses (a BOM, invalid UTF-8) around it."""
    try:
        text = json.dumps(document, ensure_ascii=False, allow_nan=True)
    except ValueError:
        return []
    escaped = json.dumps(document, ensure_ascii=True)
    forms: list[bytes | str] = [text, escaped.encode()]
    try:
        forms.append(text.encode("utf-8"))
    except UnicodeEncodeError:
        forms.append(text.encode("utf-8", "surrogatepass"))  # what json reads, orjson not
    forms.append(b"\xef\xbb\xbf" + escaped.encode())
    return forms


@settings(max_examples=400, deadline=None)
@given(st.one_of(ITEM, st.dictionaries(st.sampled_from(["Item", "item", "x"]), ITEM)))
def test_a_base_line_reads_as_without_orjson(document: Any) -> None:
    for line in encodings(document if isinstance(document, dict) else {"Item": document}):
        expected = without_orjson(decode_base_line, line, "s3://b/k line 1")
        assert outcome(decode_base_line, line, "s3://b/k line 1") == expected, line


def with_duplicates(document: Any, hidden: str) -> list[str]:
    """``document``'s text with one of its objects given, first, a duplicate of its first
    key holding ``hidden``: json keeps the last of duplicate keys, so the real value hides
    it. One text for each of the first six objects."""

    def encode(value: Any, chosen: int, seen: list[int]) -> str:
        if isinstance(value, dict):
            number = len(seen)
            seen.append(number)
            pairs = [f"{json.dumps(k)}: {encode(v, chosen, seen)}" for k, v in value.items()]
            if number == chosen and value:
                pairs.insert(0, f"{json.dumps(next(iter(value)))}: {hidden}")
            return "{" + ", ".join(pairs) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(encode(member, chosen, seen) for member in value) + "]"
        return json.dumps(value)

    return [encode(document, chosen, []) for chosen in range(6)]


@settings(max_examples=300, deadline=None)
@given(st.one_of(ITEM, VALID_ITEM), st.one_of(BARE_NUMBER_TEXT, st.just("[" * 40 + "]" * 40)))
def test_a_duplicate_key_hides_the_same_values_from_both_readers(
    document: Any, hidden: str
) -> None:
    """What the last of duplicate keys hides (a number Decimal cannot hold, one orjson reads
    as 0.0 or a float) is hidden from both readers alike."""
    for body in with_duplicates({"Item": document}, hidden):
        expected = without_orjson(decode_base_line, body, "w")
        assert outcome(decode_base_line, body, "w") == expected, body
    for body in with_duplicates(document, hidden):
        assert outcome(loads_item, body, "w") == without_orjson(loads_item, body, "w"), body


@settings(max_examples=400, deadline=None)
@given(ITEM)
def test_an_item_body_reads_as_without_orjson(document: Any) -> None:
    for body in encodings(document):
        assert outcome(loads_item, body, "s3://b/k") == without_orjson(loads_item, body, "s3://b/k")


@settings(max_examples=200, deadline=None)
@given(VALID_ITEM)
def test_a_valid_item_is_read_by_orjson_itself(item: Any) -> None:
    """The fast path is the path: a valid item is not read twice (once by each parser)."""
    line = json.dumps({"Item": item}, ensure_ascii=False).encode("utf-8")
    assert json_text.parsed_or_none(line) == {"Item": item}
    assert decode_base_line(line, "w") == item
    assert loads_item(json.dumps(item).encode(), "w") == item


REQUEST_VALUE = st.recursive(
    st.one_of(
        TEXT, st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.floats(), BARE_NUMBER
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(TEXT, st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(REQUEST_VALUE)
def test_a_request_is_the_json_the_standard_library_writes(value: Any) -> None:
    """The JSON the standard library writes (byte for byte but for a float's notation:
    1e-05 or 0.00001), or its error where it cannot."""
    expected, written = without_orjson(json_text.compact, value), outcome(json_text.compact, value)
    if written != expected:
        assert written[0] == expected[0] == "value", (written, expected)
        assert json.loads(written[1]) == json.loads(expected[1]), (written, expected)


def test_what_orjson_refuses_goes_to_the_standard_library() -> None:
    big = {"N": 2**70}  # orjson reads it as a float, and will not write it
    assert json_text.parsed_or_none(json.dumps(big)) == {"N": 2**70 * 1.0}
    with pytest.raises(ValueError, match=r"bad N value Decimal"):  # read again by json
        loads_item(json.dumps({"n": big}), "w")
    assert json_text.compact(big) == json.dumps(big, separators=(",", ":")).encode()
    assert json_text.parsed_or_none('"\\ud800"') is None
    assert json_text.parsed_or_none(b"\xef\xbb\xbf{}") is None
    assert json_text.compact({1: "a"}) == b'{"1":"a"}'


def test_nesting_deeper_than_dynamodb_allows_is_checked_by_the_standard_library() -> None:
    """DynamoDB stores 32 levels: deeper values are left to ``validate_item`` (whose depth
    limit is the interpreter's), and whatever it says, both readers say it."""
    for depth in (31, 32, 33, 200, 400):
        value: Any = {"S": "x"}
        for _ in range(depth):
            value = {"L": [value]}
        body = json.dumps({"a": value})
        assert outcome(loads_item, body, "w") == without_orjson(loads_item, body, "w"), depth
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ValueError, match="nested too deep"):
        loads_item(deep, "w")


def test_a_number_decimal_cannot_hold_is_reported_not_raised() -> None:
    """``Decimal`` refuses an exponent past ~10^18: the reader reported InvalidOperation,
    which no caller caught (one such object ended a restore)."""
    with pytest.raises(ValueError, match="bad S value UnreadableNumber"):
        loads_item('{"a": {"S": 1e-9999999999999999999999}}', "w")
    assert loads_item('{"a": {"S": 1e-9999999999999999999999, "S": "x"}}', "w") == {"a": {"S": "x"}}


def test_nan_and_infinity_are_written_as_json_writes_them() -> None:
    """orjson writes NaN as null: a request is written by json.dumps where orjson's has one."""
    for value in ({"x": float("nan")}, {"x": [float("inf"), float("-inf")]}, {"x": None}):
        assert json_text.compact(value) == json.dumps(value, separators=(",", ":")).encode()
