"""Work units: the independent, resumable pieces a bulk job is split into, and their results.

A unit is one parallel-scan segment of a table, one partition of a backup folder (the objects
whose names start with some hex digits: names are uniform hashes, so partitions are even and
each is listed on its own), or one file of a DynamoDB export. A unit's result holds counts,
samples and listed outputs; results merge into what a single run reports (pure: no I/O).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.progress import NoProgress, ProgressSink

# How many partitions a folder can be split into, and the hex digits that name each
# (1: the whole folder as one unit).
PARTITION_COUNTS = {1: 0, 16: 1, 256: 2, 4096: 3}
SAMPLE_LIMIT = 20


@dataclass(frozen=True)
class WorkUnit:
    """One piece of a job. ``stage`` orders units: a stage starts once the one before ended."""

    stage: str
    name: str
    segment: int | None = None
    total_segments: int | None = None
    partition: str | None = None  # leading hex digits of the object names
    source: str | None = None  # an export data file's object key

    @property
    def id(self) -> str:
        """A name safe as an S3 key part, unique within a job."""
        if self.source is not None:
            digest = hashlib.sha256(self.source.encode()).hexdigest()[:16]
            return f"{self.stage}-{digest}"
        return f"{self.stage}-{self.name}"


def partitions(count: int) -> list[str]:
    """The hex prefixes that split a folder of hash-named objects into ``count`` parts."""
    if count not in PARTITION_COUNTS:
        choices = ", ".join(str(choice) for choice in PARTITION_COUNTS)
        raise ValueError(f"a folder splits into {choices} partitions, not {count}")
    width = PARTITION_COUNTS[count]
    return [f"{value:0{width}x}" if width else "" for value in range(count)]


def partition_units(count: int, stage: str = "partition") -> list[WorkUnit]:
    return [WorkUnit(stage, prefix or "all", partition=prefix) for prefix in partitions(count)]


def segment_units(total: int, only: int | None = None, stage: str = "segment") -> list[WorkUnit]:
    """Parallel-scan segments: all of ``total``, or just ``only`` (work spread over hosts)."""
    chosen = [only] if only is not None else list(range(total))
    return [
        WorkUnit(stage, f"{segment}-of-{total}", segment=segment, total_segments=total)
        for segment in chosen
    ]


def file_units(keys: Iterable[str], stage: str = "file") -> list[WorkUnit]:
    return [WorkUnit(stage, key.rsplit("/", 1)[-1], source=key) for key in keys]


@dataclass
class UnitResult:
    """What one unit did: counts, a few samples per kind (failures, invalid objects, ...),
    and outputs a later step needs (the data files it wrote, ...)."""

    unit: str
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True  # False: some of its work failed; a re-run does the unit again

    def add(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def sample(self, kind: str, text: str, limit: int = SAMPLE_LIMIT) -> None:
        found = self.samples.setdefault(kind, [])
        if len(found) < limit:
            found.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "counts": self.counts,
            "samples": self.samples,
            "outputs": self.outputs,
            "seconds": self.seconds,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> UnitResult:
        return cls(
            str(document["unit"]),
            {name: int(count) for name, count in (document.get("counts") or {}).items()},
            {kind: list(texts) for kind, texts in (document.get("samples") or {}).items()},
            list(document.get("outputs") or []),
            float(document.get("seconds") or 0.0),
            bool(document.get("complete", True)),
        )


@dataclass
class MergedResults:
    """Every unit's result, added up as one run would have counted."""

    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # units that did not complete
    unit_seconds: float = 0.0  # the units' own times, added: the work, whatever the engine

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)


def merge_results(results: Iterable[UnitResult], sample_limit: int = SAMPLE_LIMIT) -> MergedResults:
    """Counts added, samples kept in unit order up to ``sample_limit`` per kind, outputs
    concatenated in unit order; the same whatever order the units finished in."""
    merged = MergedResults()
    for result in sorted(results, key=lambda result: result.unit):
        merged.units.append(result.unit)
        if not result.complete:
            merged.unfinished.append(result.unit)
        for name, count in result.counts.items():
            merged.counts[name] = merged.counts.get(name, 0) + count
        for kind, texts in result.samples.items():
            kept = merged.samples.setdefault(kind, [])
            kept.extend(texts[: max(0, sample_limit - len(kept))])
        merged.outputs.extend(result.outputs)
        merged.unit_seconds += result.seconds
    return merged


class Limiter(Protocol):
    def acquire(self, count: int = 1) -> None: ...


class Unlimited:
    def acquire(self, count: int = 1) -> None:
        pass


@dataclass
class UnitContext:
    """What an engine hands a unit where it runs: the job's rate budget, progress, and the
    token that says the job is being stopped (checked between pages)."""

    limiter: Limiter = field(default_factory=Unlimited)
    progress: ProgressSink = field(default_factory=NoProgress)
    cancel: CancelToken = field(default_factory=CancelToken)


UnitTask = Callable[[WorkUnit, UnitContext], UnitResult]


def failure_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


class UnitFailed(RuntimeError):
    """A unit raised instead of returning a result; the others ran to their end."""

    def __init__(
        self, failures: list[tuple[str, str]], results: list[UnitResult] | None = None
    ) -> None:
        self.failures = failures  # (unit id, reason)
        self.results = results or []  # of the units that did return
        first = failures[0]
        more = f" (and {len(failures) - 1} more units)" if len(failures) > 1 else ""
        super().__init__(f"unit {first[0]} failed: {first[1]}{more}")


def rate_per_slot(rate: float | None, slots: int) -> float | None:
    """A job's items-per-second budget split evenly over units running at once, where the
    workers share no memory: together they never exceed it."""
    if rate is None:
        return None
    return rate / max(1, slots)
