"""DynamoDB JSON helpers: numbers never through float, binary kept exact."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from dynamo_backups.core.ddbjson import (
    InvalidDynamoJSON,
    dumps_plain,
    from_wire,
    item_to_plain,
    item_to_wire,
    loads_item,
    normalize_number,
    to_wire,
    validate_item,
)


@pytest.mark.parametrize(
    ("given", "stored"),
    [  # what DynamoDB Local stores for each (observed)
        ("1.50", "1.5"),
        ("1E+10", "10000000000"),
        ("-0", "0"),
        ("0.000", "0"),
        ("1e-5", "0.00001"),
        ("00012", "12"),
        ("-1.0e2", "-100"),
        ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
        (
            "9.9999999999999999999999999999999999999E+125",
            "99999999999999999999999999999999999999" + "0" * 88,
        ),
        ("1E-130", "0." + "0" * 129 + "1"),
    ],
)
def test_numbers_normalize_as_dynamodb_stores_them(given: str, stored: str) -> None:
    assert normalize_number(given) == stored


def test_wire_conversion_round_trips_binary_everywhere() -> None:
    item = {
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"\x01"]},
        "m": {"M": {"x": {"L": [{"B": b"\x02"}]}}},
    }
    wire = to_wire(item)
    assert wire == {
        "b": {"B": "AP8="},
        "bs": {"BS": ["AQ=="]},
        "m": {"M": {"x": {"L": [{"B": "Ag=="}]}}},
    }
    assert from_wire(wire) == item


def test_plain_view_keeps_exact_numbers() -> None:
    item = {"n": {"N": "12345678901234567890123456789012345678.5"}, "ns": {"NS": ["1", "2.25"]}}
    assert dumps_plain(item_to_plain(item), indent=None) == (
        '{"n": 12345678901234567890123456789012345678.5, "ns": [1, 2.25]}'
    )


def test_stored_body_validation_names_the_object_and_path() -> None:
    with pytest.raises(InvalidDynamoJSON, match="obj-1: not valid JSON"):
        loads_item(b"{not json", "obj-1")
    with pytest.raises(InvalidDynamoJSON, match=r"obj-2\.a\.b: bad N value Decimal"):
        loads_item(b'{"a": {"M": {"b": {"N": 1.5}}}}', "obj-2")
    with pytest.raises(InvalidDynamoJSON, match="unknown type tag 'X'"):
        loads_item(b'{"a": {"X": "1"}}', "obj-3")
    assert loads_item(b'{"a": {"N": "1.5"}}', "ok") == {"a": {"N": "1.5"}}


@pytest.mark.parametrize(
    "body",
    [
        '{"s": {"S": "x"}, "n": {"N": "-1.5E+3"}, "b": {"B": "AP8="}, "t": {"BOOL": false}}',
        '{"z": {"NULL": true}, "ss": {"SS": ["a"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": []}}',
        '{"m": {"M": {"l": {"L": [{"S": "x"}, {"M": {}}, {"L": []}]}}}}',
        '{"a": {"S": 1}}',
        '{"a": {"N": "x"}}',
        '{"a": {"N": "NaN"}}',
        '{"a": {"N": 1}}',
        '{"a": {"N": 1.5}}',
        '{"a": {"B": "AA"}}',
        '{"a": {"BS": ["AAA=", 1]}}',
        '{"a": {"NULL": false}}',
        '{"a": {"BOOL": 1}}',
        '{"a": {"S": "x", "N": "1"}}',
        '{"a": {}}',
        '{"a": "x"}',
        '{"a": {"SS": ["a", 1]}}',
        '{"a": {"NS": ["1", "Infinity"]}}',
        '{"a": {"M": []}}',
        '{"a": {"L": {}}}',
        '{"a": {"M": {"b": {"L": [{"Q": 1}]}}}}',
        "[]",
        '"x"',
    ],
)
def test_item_bodies_are_accepted_and_refused_as_validate_item_does(body: str) -> None:
    # loads_item checks plain bodies without naming paths; what it refuses, validate_item
    # refuses with the same message (and what passes, passes both).
    def outcome(check: Any) -> tuple[str, Any]:
        try:
            return "item", check()
        except InvalidDynamoJSON as error:
            return "refused", str(error)

    parsed = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    assert outcome(lambda: loads_item(body, "obj")) == outcome(lambda: validate_item(parsed, "obj"))


def test_untyped_empty_maps_from_dynamodb_local_are_repaired() -> None:
    from dynamo_backups.core.ddbjson import repair_untyped_empty_maps

    image = {"m": {}, "mm": {"M": {"e": {}}}, "lm": {"L": [{}]}, "l": {"L": []}, "s": {"S": "x"}}
    fixed, repaired = repair_untyped_empty_maps(image)
    assert fixed == {
        "m": {"M": {}},
        "mm": {"M": {"e": {"M": {}}}},
        "lm": {"L": [{"M": {}}]},
        "l": {"L": []},
        "s": {"S": "x"},
    }
    assert repaired == 3
    proper = {"m": {"M": {}}, "l": {"L": [{"M": {}}]}}
    assert repair_untyped_empty_maps(proper) == (proper, 0)


def test_an_item_named_like_a_type_converts_attribute_by_attribute() -> None:
    """A key-only item of a table keyed "L" or "B" is an item, not a typed value."""
    assert item_to_wire({"L": {"S": "a"}}) == {"L": {"S": "a"}}
    assert item_to_wire({"B": {"B": b"\x01"}}) == {"B": {"B": "AQ=="}}
    assert to_wire({"L": {"S": "a"}}) == {"L": ["S"]}  # a typed value: why items need the above
