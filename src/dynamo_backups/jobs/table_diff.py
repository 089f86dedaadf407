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
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.conditions import Condition, NoSafeCondition, absent, unchanged
from dynamo_backups.core.ddbjson import canonical_item, dumps_item
from dynamo_backups.core.differences import Differences, difference
from dynamo_backups.core.keys import canonical_key, extract_key
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.jobs.scan_segments import run_segments, scan_pages

Call = Callable[[str, dict[str, Any]], dict[str, Any]]  # (operation, wire request) -> answer
SEED_WRITERS = 8


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
    already_there: int = 0
    deleted_since_scan: int = 0
    repair_failed: int = 0
    notes: list[str] = field(default_factory=list)

    def record_note(self, note: str) -> None:
        with self._lock:
            if len(self.notes) < 20:
                self.notes.append(note)


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
        self.cancel = CancelToken()  # set by Ctrl-C: the scans stop

    def run(self) -> DiffReport:
        started = time.monotonic()
        segments = [self.segment] if self.segment is not None else list(range(self.segments))
        sides = ["primary"] if self.backfill else ["primary", "replica"]
        for side in sides:
            run_segments(
                segments, lambda segment, side=side: self._segment(side, segment), self.cancel
            )
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _table(self, side: str) -> str:
        return self.primary.name if side == "primary" else self.replica.name

    def _segment(self, side: str, segment: int) -> None:
        scan = partial(self.calls[side], "Scan")
        for page in scan_pages(
            scan,
            self._table(side),
            segment,
            self.segments,
            self.policy,
            limit=500,
            cancel=self.cancel,
        ):
            items = page.get("Items", [])
            self.report.add(f"scanned_{side}", len(items))
            if self.backfill:
                self._seed(items)
            elif items:
                self._compare_page(side, items)
            self.progress.advance(len(items))

    def _seed(self, scanned: list[dict[str, Any]]) -> None:
        """Copy a page of primary items into the replica where it has none. The page is read
        again from the primary just before (consistently), so an item deleted since the scan
        is not revived, and the newest image is the one copied; each write is conditional on
        the replica having no such item, so a state the replicator wrote is never replaced."""
        keys = [extract_key(item, self.key_names) for item in scanned]
        items = list(batch_get(self.calls["primary"], self.primary.name, keys, self.policy))
        self.report.add("deleted_since_scan", len(scanned) - len(items))
        with ThreadPoolExecutor(SEED_WRITERS) as pool:
            outcomes = list(
                pool.map(
                    lambda item: write_if(
                        self.calls["replica"],
                        self.replica.name,
                        item,
                        absent(self.key_names),
                        self.policy,
                    ),
                    items,
                )
            )
        self.report.add("copied", outcomes.count(True))
        self.report.add("already_there", outcomes.count(False))

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
        same = (
            primary is not None
            and replica is not None
            and canonical_item(primary) == canonical_item(replica)
        )
        kind = difference(primary is not None, replica is not None, same)
        if kind is None:
            return
        self.report.record(kind, dumps_item(key).decode())
        if self.repair:
            self._repair(key, primary, replica)

    def _repair(
        self, key: dict[str, Any], primary: dict[str, Any] | None, replica: dict[str, Any] | None
    ) -> None:
        """Make the replica hold the primary's state, only over the replica state just seen."""
        try:
            seen = absent(self.key_names) if replica is None else unchanged(replica, self.key_names)
        except NoSafeCondition as error:
            self.report.add("repair_failed")
            self.report.record_note(f"{dumps_item(key).decode()}: not repaired: {error}")
            return
        done = sync_item(self.calls["replica"], self.replica.name, key, primary, self.policy, seen)
        self.report.add("repaired" if done else "repair_failed")


def write_if(
    call: Call, table: str, item: dict[str, Any], condition: Condition, policy: RetryPolicy
) -> bool:
    """PutItem under a condition; False when the condition did not hold."""
    try:
        call_with_retries(
            lambda: call("PutItem", {"TableName": table, "Item": item, **condition.arguments()}),
            policy,
            f"PutItem into {table}",
        )
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def sync_item(
    call: Call,
    table: str,
    key: dict[str, Any],
    item: dict[str, Any] | None,
    policy: RetryPolicy,
    condition: Condition | None = None,
) -> bool:
    """Make ``table`` hold ``item`` (or nothing at ``key``), under ``condition`` when given;
    False when the condition did not hold (the table changed meanwhile)."""
    extra = condition.arguments() if condition else {}
    request: dict[str, Any] = (
        {"TableName": table, "Key": key, **extra}
        if item is None
        else {"TableName": table, "Item": item, **extra}
    )
    operation = "DeleteItem" if item is None else "PutItem"
    try:
        call_with_retries(lambda: call(operation, request), policy, f"{operation} on {table}")
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return False
        raise
    return True
