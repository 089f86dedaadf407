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
    st.one_of(TEXT, st.integers(-(2**70), 2**70), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(TEXT, st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(REQUEST_VALUE)
def test_a_request_is_the_json_the_standard_library_writes(value: Any) -> None:
    """Byte for byte where the standard library can write it; its error where it cannot."""
    expected = without_orjson(json_text.compact, value)
    assert outcome(json_text.compact, value) == expected


def test_what_orjson_refuses_goes_to_the_standard_library() -> None:
    big = {"N": 2**70}  # orjson reads it as a float, and will not write it
    assert json_text.parsed_or_none(json.dumps(big)) == {"N": 2**70 * 1.0}
    with pytest.raises(ValueError, match=r"bad N value Decimal"):  # read again by json
        loads_item(json.dumps({"n": big}), "w")
    assert json_text.compact(big) == json.dumps(big, separators=(",", ":")).encode()
    assert json_text.parsed_or_none('"\\ud800"') is None
    assert json_text.parsed_or_none(b"\xef\xbb\xbf{}") is None
    assert json_text.compact({1: "a"}) == b'{"1":"a"}'
