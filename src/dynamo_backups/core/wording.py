"""Counts in messages, in the right number: "1 attempt", "3 attempts" (pure)."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` and the noun that goes with it: ``counted(1, "attempt")`` is "1 attempt",
    ``counted(2, "entry", "entries")`` is "2 entries"."""
    noun = singular if count == 1 else (plural or f"{singular}s")
    return f"{count:,} {noun}"
