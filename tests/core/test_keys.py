"""Canonical keys and object names: the layout contract of docs/layout.md."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from dynamo_backups.core.ddbjson import InvalidDynamoJSON
from dynamo_backups.core.keys import canonical_key, check_key_hash, object_name, parse_key
from tests.helpers import expected_name


def test_object_name_is_md5_of_sorted_compact_json() -> None:
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    assert canonical_key(key) == b'{"pk":{"S":"a"},"sk":{"N":"1"}}'
    assert object_name(key) == hashlib.md5(b'{"pk":{"S":"a"},"sk":{"N":"1"}}').hexdigest()


def test_name_does_not_depend_on_attribute_order() -> None:
    forward = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    backward = {"sk": {"N": "1"}, "pk": {"S": "a"}}
    assert object_name(forward) == object_name(backward) == expected_name(forward)


def test_binary_key_as_bytes_or_base64_text_names_the_same_object() -> None:
    raw = bytes(range(256))
    as_text = {"id": {"B": base64.b64encode(raw).decode()}}
    as_bytes = {"id": {"B": raw}}
    assert object_name(as_text) == object_name(as_bytes) == expected_name(as_text)


def test_non_ascii_text_is_escaped_as_json_does_by_default() -> None:
    key = {"id": {"S": "ünï 𝄞"}}
    assert canonical_key(key) == json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
    assert b"\\u00fc" in canonical_key(key)


def test_sha256_is_a_named_alternative() -> None:
    key = {"id": {"S": "a"}}
    assert object_name(key, "sha256") == hashlib.sha256(canonical_key(key)).hexdigest()
    with pytest.raises(ValueError, match="unknown key hash 'crc32'"):
        check_key_hash("crc32")


def test_parse_key_accepts_plain_json_with_types() -> None:
    types = {"pk": "S", "sk": "N"}
    assert parse_key('{"pk": "a", "sk": 1.50}', types) == {"pk": {"S": "a"}, "sk": {"N": "1.5"}}
    assert parse_key('{"sk": {"N": "1E+2"}, "pk": {"S": "a"}}') == {
        "sk": {"N": "100"},
        "pk": {"S": "a"},
    }


def test_parse_key_errors_name_the_problem() -> None:
    with pytest.raises(InvalidDynamoJSON, match="cannot tell the type of key attribute 'pk'"):
        parse_key('{"pk": "a"}')
    with pytest.raises(InvalidDynamoJSON, match="the key is pk \\(S\\), sk \\(N\\); missing sk"):
        parse_key('{"pk": "a"}', {"pk": "S", "sk": "N"})
    with pytest.raises(
        InvalidDynamoJSON, match="'PK' is not a key attribute: the key is pk \\(S\\)"
    ):
        parse_key('{"PK": "a"}', {"pk": "S"})
    with pytest.raises(InvalidDynamoJSON, match="not valid JSON"):
        parse_key("{pk: a}", {"pk": "S"})
    with pytest.raises(InvalidDynamoJSON, match="key attribute 'pk': not a number: 'a'"):
        parse_key('{"pk": "a"}', {"pk": "N"})
