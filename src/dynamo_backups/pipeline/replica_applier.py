"""Apply a batch of stream records to a replica table.

Only the last change of each item in a batch needs writing: INSERT and MODIFY put its new
image, REMOVE deletes its key. Writes go in BatchWriteItem groups of 25 (no key twice in a
group), in parallel; unprocessed items and throttling are retried with backoff and jitter.
When an item cannot be written, the result names the earliest record of that item in the
batch, so that a retry from there re-applies it; nothing is lost, and since each retried write
carries a final state of the batch, nothing is applied out of order either.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from dynamo_backups.aws.batch_write import write_all
from dynamo_backups.aws.retry import RetryPolicy, deadline_clock
from dynamo_backups.core.keys import canonical_key
from dynamo_backups.core.parallel import WorkerPool
from dynamo_backups.core.stream_records import BatchResult, Change, RecordFailure, parse_batch

GROUP_SIZE = 25
DEFAULT_WRITERS = 4

BatchWrite = Callable[[dict[str, Any]], dict[str, Any]]


def write_request(change: Change) -> dict[str, Any]:
    """The BatchWriteItem request that brings the replica to this change's state."""
    if change.is_removal:
        return {"DeleteRequest": {"Key": change.keys}}
    return {"PutRequest": {"Item": change.new_image}}


class ReplicaApplier:
    """Writes stream changes into one replica table."""

    def __init__(
        self,
        batch_write: BatchWrite,
        table: str,
        policy: RetryPolicy | None = None,
        writers: int = DEFAULT_WRITERS,
        clock: Callable[[], float] = deadline_clock,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.batch_write = batch_write  # one BatchWriteItem call, wire form in and out
        self.table = table
        self.policy = policy or RetryPolicy(max_attempts=12, base_delay=0.05, max_delay=10)
        self.writers = max(1, writers)
        self.clock = clock
        self.sleep = sleep
        self._workers = WorkerPool(self.writers, "replica-writer")

    def apply(self, records: Sequence[Any], deadline: float | None = None) -> BatchResult:
        parsed = parse_batch(records)
        result = BatchResult(record_count=len(records))
        result.note_changes(parsed.changes)
        if parsed.invalid is not None:
            result.failures.append(RecordFailure.invalid(parsed.invalid))
        chains: dict[bytes, list[Change]] = {}
        for change in parsed.changes:
            chains.setdefault(canonical_key(change.keys), []).append(change)
        groups = _groups(list(chains.values()), GROUP_SIZE)
        lock = threading.Lock()

        def run(group: list[list[Change]]) -> None:
            failed = self._write_group(group, deadline)
            with lock:
                for chain in group:
                    if id(chain[-1]) in failed:
                        first = chain[0]
                        result.failures.append(
                            RecordFailure(
                                first.index,
                                first.sequence_number,
                                failed[id(chain[-1])],
                                retryable=True,
                            )
                        )
                    else:
                        result.applied.update(Counter(change.event_name for change in chain))
                        result.tables.add(chain[-1].table)

        self._workers.run_all([lambda group=group: run(group) for group in groups])
        return result

    def _write_group(self, group: list[list[Change]], deadline: float | None) -> dict[int, str]:
        """Write the last change of each chain; the reasons of those that could not be, by id."""
        last = {canonical_key(chain[-1].keys): chain[-1] for chain in group}
        outcome = write_all(
            self.batch_write,
            self.table,
            [write_request(change) for change in last.values()],
            self.policy,
            self.sleep,
            deadline=deadline,
            clock=self.clock,
        )
        key_names = list(next(iter(last.values())).keys)
        return {
            id(last[_request_key(request, key_names)]): outcome.reason or "not written"
            for request in outcome.not_written
        }

    def close(self) -> None:
        self._workers.close()


def _request_key(request: dict[str, Any], key_names: list[str]) -> bytes:
    if "DeleteRequest" in request:
        return canonical_key(request["DeleteRequest"]["Key"])
    item = request["PutRequest"]["Item"]
    return canonical_key({name: item[name] for name in key_names})


def _groups(chains: list[list[Change]], size: int) -> list[list[list[Change]]]:
    return [chains[start : start + size] for start in range(0, len(chains), size)]
