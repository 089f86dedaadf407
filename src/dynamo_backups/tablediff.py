"""diff-tables: compare a primary table with its replica, and optionally repair or seed it.

Each side is scanned in parallel segments; each page is looked up on the other side with
BatchGetItem (consistent reads), so memory holds one page at a time whatever the tables' size.
A difference is read again from both sides before it counts, so changes in flight while
comparing are not reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.ddbjson import canonical_item, dumps_item
from dynamo_backups.differences import Differences
from dynamo_backups.keys import canonical_key, extract_key
from dynamo_backups.progress import NoProgress, ProgressSink

Call = Callable[[str, dict[str, Any]], dict[str, Any]]  # (operation, wire request) -> answer


@dataclass(frozen=True)
class TableRef:
    """A table, optionally in another region: ``Users`` or ``eu-west-1/Users``."""

    name: str
    region: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableRef:
        region, _, name = text.rpartition("/")
        return cls(name, region or None)

    def __str__(self) -> str:
        return f"{self.region}/{self.name}" if self.region else self.name


@dataclass
class DiffReport(Differences):
    primary: str
    replica: str
    scanned_primary: int = 0
    scanned_replica: int = 0
    copied: int = 0


def batch_get(
    call: Call, table: str, keys: list[dict[str, Any]], policy: RetryPolicy
) -> Iterator[dict[str, Any]]:
    """The items of ``table`` with these keys (consistent reads); unprocessed keys are asked
    again after a jittered wait."""
    for start in range(0, len(keys), 100):
        pending = keys[start : start + 100]
        delays = policy.delays()
        while pending:
            answer = call_with_retries(
                lambda p=pending: call(
                    "BatchGetItem", {"RequestItems": {table: {"Keys": p, "ConsistentRead": True}}}
                ),
                policy,
                f"BatchGetItem from {table}",
            )
            yield from answer.get("Responses", {}).get(table, [])
            pending = (answer.get("UnprocessedKeys") or {}).get(table, {}).get("Keys", [])
            if pending:
                delay = next(delays, None)
                if delay is None:
                    raise RuntimeError(f"{table}: keys still unprocessed after every retry")
                time.sleep(delay)


def batch_write(
    call: Call, table: str, requests: list[dict[str, Any]], policy: RetryPolicy
) -> None:
    """BatchWriteItem in groups of 25 until every request is in."""
    for start in range(0, len(requests), 25):
        pending = requests[start : start + 25]
        delays = policy.delays()
        while pending:
            answer = call_with_retries(
                lambda p=pending: call("BatchWriteItem", {"RequestItems": {table: p}}),
                policy,
                f"BatchWriteItem into {table}",
            )
            pending = (answer.get("UnprocessedItems") or {}).get(table, [])
            if pending:
                delay = next(delays, None)
                if delay is None:
                    raise RuntimeError(f"{table}: items still unprocessed after every retry")
                time.sleep(delay)


class TableDiff:
    def __init__(
        self,
        primary: TableRef,
        replica: TableRef,
        primary_call: Call,
        replica_call: Call,
        key_names: list[str],
        segments: int = 8,
        segment: int | None = None,
        repair: bool = False,
        backfill: bool = False,
        progress: ProgressSink | None = None,
    ) -> None:
        self.primary, self.replica = primary, replica
        self.calls = {"primary": primary_call, "replica": replica_call}
        self.key_names = key_names
        self.segments = segments
        self.segment = segment
        self.repair = repair
        self.backfill = backfill
        self.progress = progress or NoProgress()
        self.policy = RetryPolicy(max_attempts=12, base_delay=0.05, max_delay=10)
        self.report = DiffReport(str(primary), str(replica))

    def run(self) -> DiffReport:
        started = time.monotonic()
        segments = [self.segment] if self.segment is not None else list(range(self.segments))
        sides = ["primary"] if self.backfill else ["primary", "replica"]
        for side in sides:
            with ThreadPoolExecutor(len(segments)) as pool:
                for future in [pool.submit(self._segment, side, s) for s in segments]:
                    future.result()
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _table(self, side: str) -> str:
        return self.primary.name if side == "primary" else self.replica.name

    def _segment(self, side: str, segment: int) -> None:
        request: dict[str, Any] = {
            "TableName": self._table(side),
            "Segment": segment,
            "TotalSegments": self.segments,
            "ConsistentRead": True,
            "Limit": 500,
        }
        while True:
            page = call_with_retries(
                lambda r=dict(request): self.calls[side]("Scan", r),
                self.policy,
                f"scan {self._table(side)}",
            )
            items = page.get("Items", [])
            self.report.add(f"scanned_{side}", len(items))
            if self.backfill:
                batch_write(
                    self.calls["replica"],
                    self.replica.name,
                    [{"PutRequest": {"Item": item}} for item in items],
                    self.policy,
                )
                self.report.add("copied", len(items))
            elif items:
                self._compare_page(side, items)
            self.progress.advance(len(items))
            if not page.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _compare_page(self, side: str, items: list[dict[str, Any]]) -> None:
        other = "replica" if side == "primary" else "primary"
        keys = [extract_key(item, self.key_names) for item in items]
        found = {
            canonical_key(extract_key(item, self.key_names)): item
            for item in batch_get(self.calls[other], self._table(other), keys, self.policy)
        }
        for key, item in zip(keys, items, strict=True):
            counterpart = found.get(canonical_key(key))
            if side == "replica":
                if counterpart is None:
                    self._recheck(key)
            elif counterpart is None or canonical_item(counterpart) != canonical_item(item):
                self._recheck(key)

    def _get(self, side: str, key: dict[str, Any]) -> dict[str, Any] | None:
        answer = call_with_retries(
            lambda: self.calls[side](
                "GetItem", {"TableName": self._table(side), "Key": key, "ConsistentRead": True}
            ),
            self.policy,
            f"GetItem from {self._table(side)}",
        )
        return answer.get("Item")

    def _recheck(self, key: dict[str, Any]) -> None:
        primary, replica = self._get("primary", key), self._get("replica", key)
        if primary is None and replica is None:
            return
        if (
            primary is not None
            and replica is not None
            and canonical_item(primary) == canonical_item(replica)
        ):
            return
        kind = "missing" if replica is None else "extra" if primary is None else "different"
        self.report.record(kind, dumps_item(key).decode())
        if self.repair:
            sync_item(self.calls["replica"], self.replica.name, key, primary, self.policy)
            self.report.add("repaired")


def sync_item(
    call: Call, table: str, key: dict[str, Any], item: dict[str, Any] | None, policy: RetryPolicy
) -> str:
    """Make ``table`` hold ``item`` (or nothing at ``key``); what was done."""
    if item is None:
        call_with_retries(
            lambda: call("DeleteItem", {"TableName": table, "Key": key}),
            policy,
            f"DeleteItem from {table}",
        )
        return "deleted"
    call_with_retries(
        lambda: call("PutItem", {"TableName": table, "Item": item}), policy, f"PutItem into {table}"
    )
    return "written"
