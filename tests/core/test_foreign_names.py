"""The replicator's object names, checked against Node computing them as the original Lambda
does (JSON.stringify of the stream record's Keys, md5 of its UTF-8)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from dynamo_backups.core.foreign_names import (
    BOTH,
    OURS,
    REPLICATOR,
    UNKNOWN,
    candidate_names,
    naming_of,
    replicator_name,
    replicator_names,
)
from dynamo_backups.core.keys import object_name

SCRIPT = Path(__file__).parent.parent / "fixtures" / "replicator_names.mjs"

KEYS: list[dict[str, Any]] = [
    {"id": {"S": "abc"}},
    {"id": {"S": "ä-ü ✓ 日本"}},
    {"id": {"S": "emoji 😀 outside the BMP"}},
    {"id": {"S": 'quote " backslash \\ slash / tab \t newline \n bell \x07 del \x7f'}},
    {"id": {"S": "line separator \u2028 and \u2029"}},
    {"pk": {"S": "keep"}, "sk": {"N": "3"}},
    {"sk": {"N": "3"}, "pk": {"S": "keep"}},
    {"sk": {"N": "-1.5E+10"}, "pk": {"S": "Ünïcödé"}},
    {"pk": {"B": "AAEC/w=="}, "sk": {"S": "x"}},
    {"Ä": {"S": "attribute names too"}},
]


def test_names_are_those_node_computes_for_the_same_keys() -> None:
    lines = "\n".join(json.dumps(key, ensure_ascii=True) for key in KEYS) + "\n"
    answer = subprocess.run(
        ["node", str(SCRIPT)], input=lines, capture_output=True, text=True, check=True
    )
    assert answer.stdout.split() == [replicator_name(key) for key in KEYS]


def test_an_ascii_single_attribute_key_has_one_name_for_both_tools() -> None:
    key = {"id": {"S": "abc"}}
    assert replicator_names(key) == [object_name(key)]
    assert candidate_names(key, "md5") == [object_name(key)]
    assert naming_of(object_name(key), key, "md5") == BOTH


def test_a_composite_key_has_a_name_per_order_and_non_ascii_differs_from_ours() -> None:
    key = {"pk": {"S": "日本"}, "sk": {"N": "4"}}
    names = replicator_names(key)
    assert len(names) == 2 and object_name(key) not in names
    assert candidate_names(key, "md5") == [object_name(key), *names]
    assert all(naming_of(name, key, "md5") == REPLICATOR for name in names)
    assert naming_of(object_name(key), key, "md5") == OURS
    assert naming_of("0" * 32, key, "md5") == UNKNOWN


def test_sha256_folders_name_ours_apart_from_the_replicators() -> None:
    key = {"id": {"S": "abc"}}
    assert naming_of(object_name(key, "sha256"), key, "sha256") == OURS
    assert naming_of(object_name(key), key, "sha256") == REPLICATOR
