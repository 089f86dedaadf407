"""JSON text on the hot paths (base lines, item bodies, DynamoDB's requests), through orjson
where it is installed and gives what the standard library would.

A restore parses every base line and encodes every BatchWriteItem request: the standard
library's ``json`` costs ~12 µs a line and ~10 µs an item there, orjson a third and a tenth.
orjson is a dependency of the command-line tool, not of the Lambda package (which carries
no compiled code but obstore): without it both functions are the standard library's.

Where the two could differ, the standard library decides:

- ``parsed_or_none`` answers None for what orjson refuses (invalid UTF-8, lone surrogates,
  integers past 64 bits, NaN, nesting past 1,024): the caller then parses with ``json``,
  whose result or error stands. orjson reads an integer past 64 bits as a float, and callers
  may need Decimal (``ddbjson.DECIMAL_DECODER``): so it is only for documents whose valid
  form holds no bare number (DynamoDB JSON items), checked after, and re-parsed by the
  standard library when the check refuses them.
- ``compact`` falls back to ``json.dumps`` for what orjson refuses to encode (integers past
  64 bits, non-string keys, surrogates, subclasses of the JSON types, datetimes,
  dataclasses, unknown types), so it raises what that raises, and for any output with a
  ``null`` (orjson writes NaN and infinities as null). Two types json.dumps refuses are
  written by orjson all the same: Enum members and UUIDs. Wire-form requests hold neither.
- One difference is left, in reading: a document nested past ~1,000 levels, where a later
  duplicate key hides the deep value, is read by orjson as the later key says; the standard
  library's reader fails on the depth first (where exactly depends on the stack in use).
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # the Lambda package, or an install without it
    orjson = None  # type: ignore[assignment]

_REFUSED = object()
# Subclasses of str, int, dict and list (whose own methods json.dumps calls), datetimes and
# dataclasses: refused by orjson with these options, so that json.dumps writes or refuses them.
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    if orjson is not None
    else 0
)


def _parse(data: bytes | str) -> Any:
    """orjson's reading of ``data``, or ``_REFUSED``."""
    if orjson is None:
        return _REFUSED
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _REFUSED


def parsed_or_none(data: bytes | str) -> Any:
    """The JSON value ``data`` holds, as ``json.loads`` gives it, read by orjson; None where
    orjson is absent or refuses it, or the value is null (the caller then reads ``data`` with
    the standard library, whose answer or error stands)."""
    value = _parse(data)
    return None if value is _REFUSED else value


def compact(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` in UTF-8, written by
    orjson where it writes the same (see the module's note)."""
    if orjson is not None:
        try:
            text = orjson.dumps(value, option=_PASSTHROUGH)
        except TypeError:  # orjson.JSONEncodeError: what json.dumps must say, or write
            pass
        else:
            if b"null" not in text:  # NaN and infinities are null to orjson, not to json
                return text
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
