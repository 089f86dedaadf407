"""Review of 91ab217 (its ``call_to_wire``/``call_from_wire``, since replaced by the
model-driven ``aws.dynamodb.by_shape``; ``item_to_wire``): where the new
walk gives a different result than the parent's ``to_wire``/``from_wire`` for a request or
answer the parent converted correctly, or still misreads a key-only item.

``_walk_call`` picks item-holding fields by their *name at any depth*
(Item, Key, Keys, Items, Responses, ...). Two consequences:

* names that are not DynamoDB fields but table (or index, or attribute) names are taken for
  them: a table named ``Responses`` crashes BatchGetItem (the request's ``RequestItems`` and
  the answer's ``UnprocessedKeys``), which the parent converted correctly; tables named
  ``Key``/``Item``/``Items``/``Keys`` get the parent's whole-value walk back for their items;
* fields that hold attribute values but are not in the list (``Attributes``,
  ``ItemCollectionKey``, ``Parameters``, ``AttributeValueList``, ``Expected``/
  ``AttributeUpdates`` ``Value``) are no longer converted at all: bytes stay bytes in a
  wire answer, base64 text is handed to boto3 (which encodes it again).

The parent's module is loaded from git (55ba5d7) for the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer

from dynamo_backups.aws.dynamodb import BotocoreDynamoDB, by_shape
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.core.ddbjson import from_wire, to_wire
from dynamo_backups.jobs.table_diff import batch_get
from tests.helpers import create_table, module_at

PARENT = "55ba5d7"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parent() -> ModuleType:
    return module_at(PARENT, "ddbjson")


MODEL = botocore.session.get_session().get_service_model("dynamodb")


def call_to_wire(operation: str, side: str, value: dict[str, Any]) -> Any:
    """``value`` (a request: side "input", an answer: "output") as the wire carries it."""
    model = MODEL.operation_model(operation)
    return by_shape(getattr(model, f"{side}_shape"), value, to_wire)


def call_from_wire(operation: str, side: str, value: dict[str, Any]) -> Any:
    model = MODEL.operation_model(operation)
    return by_shape(getattr(model, f"{side}_shape"), value, from_wire)


KEY = {"pk": {"S": "a"}, "sk": {"B": b"\x05"}}
ITEM = {"pk": {"S": "a"}, "sk": {"B": b"\x05"}, "m": {"M": {"B": {"B": b"\x04"}}}}

# --- 1. a table named "Responses": BatchGetItem crashes (the parent's was right) -----------

BATCH_GET_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    # what table_diff.batch_get sends (diff-tables through the botocore transport)
    "request": ("input", {"RequestItems": {"Responses": {"Keys": [KEY], "ConsistentRead": True}}}),
    # what DynamoDB answers when keys are left over (UnprocessedKeys echoes the request)
    "answer": (
        "output",
        {
            "Responses": {"Responses": [ITEM]},
            "UnprocessedKeys": {"Responses": {"Keys": [KEY], "ConsistentRead": True}},
        },
    ),
    "request with a projection": (
        "input",
        {
            "RequestItems": {
                "Responses": {
                    "Keys": [KEY],
                    "ProjectionExpression": "#p",
                    "ExpressionAttributeNames": {"#p": "pk"},
                }
            }
        },
    ),
}


@pytest.mark.parametrize("shape", sorted(BATCH_GET_SHAPES))
def test_batch_get_item_of_a_table_named_responses(parent: ModuleType, shape: str) -> None:
    """``Responses`` is a valid table name; ``_walk_call`` takes the RequestItems' (and
    UnprocessedKeys') ``{"Responses": {"Keys": [...], "ConsistentRead": true}}`` for the
    answer's table -> items map and iterates ``True``: TypeError. The parent converted it."""
    side, boto = BATCH_GET_SHAPES[shape]
    wire = parent.to_wire(boto)
    assert parent.from_wire(wire) == boto  # the parent: right both ways
    assert call_to_wire("BatchGetItem", side, boto) == wire
    assert call_from_wire("BatchGetItem", side, wire) == boto


@pytest.mark.servers
def test_diff_tables_batch_get_from_a_table_named_responses_through_botocore(
    dynamodb: Any,
) -> None:
    """The real path: table_diff.batch_get (diff-tables) through BotocoreDynamoDB (the
    transport DYNAMO_BACKUPS_TRANSPORT=botocore, or a non-SigV4 endpoint, chooses), against
    DynamoDB Local, on a table named ``Responses``."""
    try:
        dynamodb.delete_table(TableName="Responses")
        dynamodb.get_waiter("table_not_exists").wait(TableName="Responses")
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
    table = create_table(dynamodb, key_schema=[("pk", "S")], name="Responses")
    try:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "b": {"B": b"\x01"}})
        api = BotocoreDynamoDB(dynamodb)
        items = list(batch_get(api.call, table, [{"pk": {"S": "a"}}], RetryPolicy()))
        assert items == [{"pk": {"S": "a"}, "b": {"B": "AQ=="}}]
    finally:
        dynamodb.delete_table(TableName=table)


# --- 2. attribute values outside the listed fields: no longer converted --------------------

OUTSIDE_THE_LIST: dict[str, tuple[str, str, dict[str, Any]]] = {
    # PutItem/UpdateItem/DeleteItem with ReturnValues: the item is under "Attributes"
    "write answer Attributes": ("PutItem", "output", {"Attributes": ITEM}),
    # BatchWriteItem/PutItem with ReturnItemCollectionMetrics=SIZE (a table with an LSI)
    "ItemCollectionKey": (
        "BatchWriteItem",
        "output",
        {
            "UnprocessedItems": {},
            "ItemCollectionMetrics": {
                "t": [{"ItemCollectionKey": {"pk": {"B": b"\x07"}}, "SizeEstimateRangeGB": [0.0]}]
            },
        },
    ),
    # PartiQL
    "ExecuteStatement Parameters": (
        "ExecuteStatement",
        "input",
        {"Statement": "SELECT * FROM t WHERE b=?", "Parameters": [{"B": b"\x01"}]},
    ),
    # legacy conditional parameters
    "Query KeyConditions": (
        "Query",
        "input",
        {
            "TableName": "t",
            "KeyConditions": {
                "sk": {"AttributeValueList": [{"B": b"\x01"}], "ComparisonOperator": "EQ"}
            },
        },
    ),
    "UpdateItem Expected/AttributeUpdates": (
        "UpdateItem",
        "input",
        {
            "TableName": "t",
            "Key": KEY,
            "AttributeUpdates": {"x": {"Value": {"B": b"\x01"}, "Action": "PUT"}},
            "Expected": {"y": {"Value": {"B": b"\x02"}, "Exists": True}},
        },
    ),
}


@pytest.mark.parametrize("shape", sorted(OUTSIDE_THE_LIST))
def test_binary_values_outside_the_listed_fields_are_converted_as_before(
    parent: ModuleType, shape: str
) -> None:
    """The parent converted every ``{"B": ...}`` of a call; the new walk only those under
    Item/Key/Keys/Items/Responses/...: here bytes stay bytes in the wire answer (not JSON),
    and a request's base64 text reaches boto3, which base64-encodes it again (another value
    written, compared, or looked up)."""
    operation, side, boto = OUTSIDE_THE_LIST[shape]
    wire = parent.to_wire(boto)
    assert parent.from_wire(wire) == boto
    assert call_to_wire(operation, side, boto) == wire
    assert call_from_wire(operation, side, wire) == boto


# --- 3. tables named like an item field: the fixed bug is back for their items -------------


def _serialized(operation: str, request: dict[str, Any]) -> dict[str, Any]:
    """What botocore puts on the wire for a boto3-form request (no network)."""
    model = botocore.session.get_session().get_service_model("dynamodb")
    body = create_serializer("json").serialize_to_request(
        request, model.operation_model(operation)
    )["body"]
    return json.loads(body)


def test_batch_write_into_a_table_named_items_keeps_a_key_only_items_binary() -> None:
    """A table named ``Items`` keyed ``S`` (type B): its ``RequestItems`` entry is taken for
    a Scan's ``Items`` list and each write request walked as one value, so the key-only item
    ``{"S": {"B": "AQ=="}}`` is read as a typed S value and left as text: botocore encodes
    that text again and the restore writes key bytes b"AQ==" instead of b"\\x01" (silently).
    A table named ``t`` gets it right since 91ab217."""
    for table in ("t", "Items", "Keys"):
        wire = {"RequestItems": {table: [{"PutRequest": {"Item": {"S": {"B": "AQ=="}}}}]}}
        sent = _serialized("BatchWriteItem", call_from_wire("BatchWriteItem", "input", wire))
        assert sent == wire, table


@pytest.mark.parametrize("table", ["t", "Key", "Item", "ExclusiveStartKey"])
def test_batch_get_from_a_table_named_key_keeps_a_key_named_l(table: str) -> None:
    """A table named ``Key`` (or ``Item``, ...) keyed ``L``: its RequestItems entry is taken
    for an item and its ``Keys`` walked as one value each: ``{"L": {"S": "a"}}`` becomes
    ``{"L": ["S"]}`` (the bug 91ab217 fixes, back for these tables)."""
    wire = {"RequestItems": {table: {"Keys": [{"L": {"S": "a"}}], "ConsistentRead": True}}}
    assert call_from_wire("BatchGetItem", "input", wire) == wire
    assert call_to_wire("BatchGetItem", "input", wire) == wire
