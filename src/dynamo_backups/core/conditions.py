"""Condition expressions that make a write land only on the state it was decided on (pure).

A table repair reads both sides, decides, then writes; meanwhile the replicator may have
written a newer state. These conditions make such a write fail instead of undoing that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# DynamoDB limits a condition expression to 4 KB; beyond that, no safe condition exists.
EXPRESSION_LIMIT = 4096


@dataclass
class Condition:
    expression: str
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {"ConditionExpression": self.expression}
        if self.names:
            arguments["ExpressionAttributeNames"] = self.names
        if self.values:
            arguments["ExpressionAttributeValues"] = self.values
        return arguments


class NoSafeCondition(ValueError):
    """The observed state is too large to compare in a condition expression."""


def absent(key_names: list[str]) -> Condition:
    """The item does not exist."""
    return Condition("attribute_not_exists(#k0)", {"#k0": key_names[0]})


def unchanged(item: dict[str, Any], key_names: list[str]) -> Condition:
    """The item still holds every attribute value it was seen with (wire-form item)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses: list[str] = []
    for number, (name, value) in enumerate(sorted(item.items())):
        names[f"#a{number}"] = name
        if name in key_names:
            clauses.append(f"attribute_exists(#a{number})")
            continue
        values[f":v{number}"] = value
        clauses.append(f"#a{number} = :v{number}")
    expression = " AND ".join(clauses)
    if len(expression) > EXPRESSION_LIMIT:
        raise NoSafeCondition(f"{len(item)} attributes are too many to compare in a condition")
    return Condition(expression, names, values)
