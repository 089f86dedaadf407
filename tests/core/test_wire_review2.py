"""Second review of 91ab217/67e62c5 (``aws.dynamodb.by_shape``): the botocore transport's
conversion checked against botocore itself, for every DynamoDB operation in its model.

A wire-form request, converted by ``by_shape`` and serialized by botocore's own JSON
serializer, must be the same request; a wire-form answer, parsed by botocore's own parser and
converted back by ``by_shape``, must be the same answer. Requests and answers are generated
from the model's shapes, with table, index, attribute and map-member names (and string
values) drawn from DynamoDB's type tags and API field names ("B", "L", "Items", "Responses",
...), so that a conversion that went by names rather than by the model would be caught. No
difference was found (see the review's report); this guards the model-driven walk.
"""

from __future__ import annotations

import base64
import json
import random
import zlib
from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from dynamo_backups.aws.dynamodb import by_shape
from dynamo_backups.core.ddbjson import from_wire, to_wire

MODEL = botocore.session.get_session().get_service_model("dynamodb")
NAMES = [
    *("S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L"),
    *("Item", "Items", "Key", "Keys", "Responses", "UnprocessedItems", "UnprocessedKeys"),
    *("LastEvaluatedKey", "ExclusiveStartKey", "Attributes", "RequestItems", "PutRequest"),
]
TYPES = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L"]


class Generator:
    """Wire-form values of a botocore shape, attribute values typed and tag-named."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.attribute_values = 0

    def binary(self) -> str:
        data = bytes(self.random.randrange(256) for _ in range(self.random.randrange(0, 5)))
        return base64.b64encode(data).decode()

    def attribute(self, depth: int = 0) -> dict[str, Any]:
        self.attribute_values += 1
        tag = self.random.choice(TYPES if depth < 4 else ["S", "N", "B", "BS"])
        name = self.random.choice
        simple = {
            "S": lambda: name(NAMES),
            "N": lambda: name(["1", "-0.5", "1E+10", "12345678901234567890123456789012345678"]),
            "B": self.binary,
            "BOOL": lambda: self.random.random() < 0.5,
            "NULL": lambda: True,
            "SS": lambda: [name(NAMES)],
            "NS": lambda: ["1", "2"],
            "BS": lambda: [self.binary(), self.binary()],
            "M": lambda: {
                name(NAMES): self.attribute(depth + 1) for _ in range(self.random.randrange(3))
            },
            "L": lambda: [self.attribute(depth + 1) for _ in range(self.random.randrange(3))],
        }
        return {tag: simple[tag]()}

    def value(self, shape: Any, depth: int = 0) -> Any:
        if shape.name == "AttributeValue":
            return self.attribute()
        kind = shape.type_name
        if kind == "structure":
            members = shape.members.items() if depth <= 6 else []
            chosen = {
                name: self.value(member, depth + 1)
                for name, member in members
                if self.random.random() < 0.6
            }
            return {name: value for name, value in chosen.items() if value is not None}
        if kind == "list":
            values = [
                self.value(shape.member, depth + 1) for _ in range(self.random.randrange(1, 3))
            ]
            return [value for value in values if value is not None] if depth <= 6 else []
        if kind == "map":
            values = [
                self.value(shape.value, depth + 1) for _ in range(self.random.randrange(1, 3))
            ]
            pairs = {self.random.choice(NAMES): value for value in values if value is not None}
            return pairs if depth <= 6 else {}
        if kind == "string":
            return self.random.choice(shape.enum) if shape.enum else self.random.choice(NAMES)
        if kind in ("integer", "long"):
            return self.random.randrange(1, 5)
        if kind == "boolean":
            return self.random.random() < 0.5
        if kind == "double":
            return 1.5
        return None  # a blob or timestamp outside an attribute value: left out


SERIALIZER = create_serializer("json", include_validation=False)
PARSER = create_parser("json")


@pytest.mark.parametrize("operation", MODEL.operation_names)
def test_by_shape_agrees_with_botocore_for_every_operation(operation: str) -> None:
    model = MODEL.operation_model(operation)
    generator = Generator(zlib.crc32(operation.encode()))
    for _ in range(30):
        if model.input_shape is not None:
            wire = generator.value(model.input_shape)
            boto = by_shape(model.input_shape, json.loads(json.dumps(wire)), from_wire)
            body = SERIALIZER.serialize_to_request(boto, model)["body"]
            assert (json.loads(body) if body else {}) == wire
        if model.output_shape is not None:
            wire = generator.value(model.output_shape)
            answer = {"status_code": 200, "headers": {}, "body": json.dumps(wire).encode()}
            parsed = PARSER.parse(answer, model.output_shape)
            parsed.pop("ResponseMetadata", None)
            assert by_shape(model.output_shape, parsed, to_wire) == wire


def test_the_generated_calls_hold_tag_named_attribute_values() -> None:
    """The check above is only as good as what it generates: the item-carrying calls get
    many attribute values."""
    for operation in ("BatchWriteItem", "BatchGetItem", "Scan", "TransactWriteItems"):
        generator = Generator(1)
        model = MODEL.operation_model(operation)
        for _ in range(30):
            generator.value(model.input_shape)
            generator.value(model.output_shape)
        assert generator.attribute_values > 50, operation
