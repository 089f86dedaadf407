"""Counting the differences between two copies of a table (pure): what verify and
diff-tables report."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = ("missing", "extra", "different")


def difference(in_source: bool, in_copy: bool, same: bool) -> str | None:
    """What a key's two sides, read again, say: None when they agree, else missing (from
    the copy), extra (in the copy only) or different."""
    if not in_source and not in_copy:
        return None
    if in_source and in_copy and same:
        return None
    return "extra" if not in_source else "missing" if not in_copy else "different"


SAMPLE_SIZE = 10


@dataclass(kw_only=True)
class Differences:
    """Items missing from the copy, extra in it, or different; a sample of keys of each."""

    missing: int = 0
    extra: int = 0
    different: int = 0
    repaired: int = 0
    samples: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.different

    def record(self, kind: str, sample: str) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if len(self.samples[kind]) < SAMPLE_SIZE:
                self.samples[kind].append(sample)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def sample_lines(self) -> list[str]:
        """The sample keys, one line each, for people."""
        return [f"  {kind}: {sample}" for kind in KINDS for sample in self.samples[kind]]

    def to_dict(self) -> dict[str, Any]:
        fields = {name: value for name, value in self.__dict__.items() if not name.startswith("_")}
        return {**fields, "differences": self.differences}
