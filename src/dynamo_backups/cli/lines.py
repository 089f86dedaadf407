"""Lines on stderr: text for people, or with -v one JSON object per line, as the log lines
are, so that every stderr line of a -v run can be read by a program (progress, notes,
warnings, waits, interruptions and the final ``error:`` line alike).

A text line's leading ``error:``, ``warning:`` or ``note:`` becomes the object's level; the
rest of the text is its message. ``fields`` add members of their own (progress counts).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import click

_LEVELS = {"error": "error", "warning": "warning", "note": "info"}
_mode = {"json": False}


def use_json_lines(on: bool) -> None:
    """Every line from here on as a JSON object (-v) or as text."""
    _mode["json"] = on


def json_lines() -> bool:
    return _mode["json"]


def as_json(text: str, source: str = "cli", fields: dict[str, Any] | None = None) -> str:
    """``text`` as one JSON object: time, level (from its ``error:``/``warning:``/``note:``
    prefix, else info), logger, message, and ``fields``."""
    level, message = "info", text.strip()
    word, colon, rest = message.partition(": ")
    if colon and word in _LEVELS:
        level, message = _LEVELS[word], rest
    line: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": f"dynamo_backups.{source}",
        "message": message,
    }
    line.update(fields or {})
    return json.dumps(line, default=str, ensure_ascii=False)


def say(
    text: str,
    source: str = "cli",
    fields: dict[str, Any] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Write ``text`` on stderr (or ``stream``): each of its lines as text, or with -v as a
    JSON object of its own."""
    if json_lines():
        rendered = "\n".join(
            as_json(line, source, fields) for line in text.splitlines() if line.strip()
        )
        if not rendered:
            return
    else:
        rendered = text
    if stream is None:
        click.echo(rendered, err=True)
    else:
        print(rendered, file=stream, flush=True)


def raw_say(text: str) -> None:
    """``say`` for a signal handler: straight to sys.stderr, no click."""
    sys.stderr.write((as_json(text, "interrupt") if json_lines() else text.rstrip("\n")) + "\n")
    sys.stderr.flush()
