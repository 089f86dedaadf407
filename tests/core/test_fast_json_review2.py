"""Review of 8a039ed (``ddbjson.load_json``): its docstring and the commit promise
``json.loads``'s result and errors for any input ``json.loads`` takes. A ``bytearray`` is one
(``json.loads`` decodes it as it decodes bytes); ``load_json`` treats it as text and fails
with a ``TypeError``, which none of its callers catch (they catch ``UnicodeDecodeError`` and
``JSONDecodeError`` only): a traceback where the parent parsed the line. Latent: every caller
found at 8a039ed hands it ``bytes`` or ``str`` (gzip lines, object bodies, listed keys).

The second test passes at the parent (``git archive 8a039ed^ src``) and fails at 8a039ed."""

from __future__ import annotations

import json
from decimal import Decimal

from dynamo_backups.core.base import decode_base_line
from dynamo_backups.core.ddbjson import loads_item


def test_a_bytearray_reads_as_json_loads_reads_it() -> None:
    from dynamo_backups.core.ddbjson import load_json  # new in 8a039ed

    line = bytearray(b'{"pk":{"S":"a"},"n":1}')
    assert json.loads(line, parse_float=Decimal, parse_int=Decimal) == {
        "pk": {"S": "a"},
        "n": Decimal(1),
    }
    assert load_json(line) == {"pk": {"S": "a"}, "n": Decimal(1)}


def test_a_bytearray_base_line_and_body_are_read_as_before() -> None:
    body = bytearray(b'{"pk":{"S":"a"},"v":{"N":"1.50"}}')
    assert loads_item(body, "a body") == {"pk": {"S": "a"}, "v": {"N": "1.50"}}
    line = bytearray(b'{"Item":' + bytes(body) + b"}")
    assert decode_base_line(line, "a base line") == {"pk": {"S": "a"}, "v": {"N": "1.50"}}
