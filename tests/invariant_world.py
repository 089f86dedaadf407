"""The world the invariant test drives: a simple model of one table and its stream, and the
real pipeline and jobs of dynamo-backups acting on it (issue 19, "the invariants, checked
across everything at once").

- The **stream** is synthesized here (``FakeStream``): records shaped as DynamoDB Streams
  returns them, with sequence numbers and ``ApproximateCreationDateTime``, so the test decides
  order, duplicates and time. The consumer and ``replay`` read it through a small in-memory
  Streams client; the Lambda path gets it as Lambda-shaped events.
- The **backup** is a real versioned bucket (SeaweedFS); the Lambda handler
  (``handler.backup``, fast transport) and the consumer (botocore) reach it through a fault
  proxy that fails the requests of chosen items on demand (a partial failure).
- **Restores** write into real DynamoDB Local tables; a restore is killed by a BatchWriteItem
  call that raises, and resumed with ``--resume``.
- The **layout** (issue 22) is the folder's: a journal world records ``"layout": "journal"``
  in ``layout.json`` first, and everything after chooses from it as the commands do (the
  handler's ``FolderAppliers``, ``appliers.folder_layout``/``applier_for`` for the consumer,
  ``jobs/layouts.layout_for(folder).restore`` for restore). A journal world also compacts
  (``jobs/compact``, killed and resumed), redelivers ranges with other boundaries and delivers
  batches late.

The model knows, for every change, whether it was *acknowledged*: the trigger moved past it
without reporting it (Lambda), the consumer's checkpoint covers it, or ``replay`` wrote it.
The checks compare the backup with the model exactly where every change that matters is
acknowledged, and otherwise only ask that the backup holds one of the states the item really
had (never an invented one).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.credentials import Credentials

from dynamo_backups import handler
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.checkpoints import CheckpointError, Lease, S3CheckpointStore
from dynamo_backups.backup.folder import open_folder_path
from dynamo_backups.backup.journal_store import read_lines
from dynamo_backups.backup.layouts import LAYOUT_ITEMS
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.base import BasePaths, decode_base_line
from dynamo_backups.core.layout import TableLayout, parse_time
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.jobs.compact import Compaction, CompactOptions
from dynamo_backups.jobs.history import HistoryEntry
from dynamo_backups.jobs.layouts import layout_for, layout_named
from dynamo_backups.jobs.replay import Replayer, parse_report
from dynamo_backups.jobs.restore import RestoreOptions
from dynamo_backups.pipeline.appliers import applier_for, folder_layout
from dynamo_backups.pipeline.consumer import StreamConsumer
from dynamo_backups.pipeline.stream_source import StreamError
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.helpers import QUICK_DRAIN, expected_name, scan_all
from tests.servers import make_client

TABLE = "Ledger"
SHARD = "shardId-00000001764000000000-0000aaaa"
STREAM_ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-01-01T00:00:00.000"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:backup"
KEYS = ("a", "b", "c", "d")  # b and d share a restore partition (object names 48.., 47..)
EXTRA_KEY = "zz"  # only ever in a target table, never in the backup
# A number no float holds, to see every path keep all its digits.
EXACT = "-1.0000000000000000000000000000000000007"

Item = dict[str, Any]
State = Item | None  # an item's state: its image, or None for absent


def key_text(key: str) -> str:
    """The canonical key text scan_all uses."""
    return json.dumps({"pk": {"S": key}}, sort_keys=True)


def image(key: str, value: int) -> Item:
    """An item image. Values come from a tiny domain, so identical images (identical bodies,
    identical ETags) recur, as they do in real tables."""
    return {"pk": {"S": key}, "v": {"N": str(value)}, "exact": {"N": EXACT}}


@dataclass(frozen=True)
class Change:
    """One stream record of the model's table."""

    index: int
    key: str
    new_image: Item | None  # None: a removal
    when: int  # ApproximateCreationDateTime, epoch seconds
    ttl: bool = False  # a removal by the TTL service

    @property
    def sequence(self) -> str:
        return f"{(self.index + 1) * 100:021d}"

    def raw(self) -> dict[str, Any]:
        """The record as GetRecords returns it (Lambda adds eventSourceARN)."""
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": self.when,
            "Keys": {"pk": {"S": self.key}},
            "SequenceNumber": self.sequence,
            "SizeBytes": 64,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if self.new_image is not None:
            body["NewImage"] = self.new_image
        record: dict[str, Any] = {
            "eventID": f"{self.index:032x}",
            "eventName": "REMOVE" if self.new_image is None else "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": body,
        }
        if self.ttl:
            record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
        return record

    def lambda_record(self) -> dict[str, Any]:
        return {**self.raw(), "eventSourceARN": STREAM_ARN}


# Short leases: a consumer taking over a crashed one's lease waits out the old holder's write
# time limit (a sixth of its lease) before writing; at the default 120 s that is 20 s a crash.
LEASE_SECONDS = 6.0


class Model:
    """The table as a list of changes in stream order, and which of them are acknowledged."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.clock = start
        self.changes: list[Change] = []
        self.acked: set[int] = set()

    def add(self, key: str, value: int | None, gap: int, ttl: bool = False) -> Change:
        self.clock += gap
        previous = self.state(key)
        if value is None and previous is None:
            value = 0  # no removal of an absent item: an insert instead
        change = Change(
            len(self.changes),
            key,
            None if value is None else image(key, value),
            self.clock,
            ttl and value is None,
        )
        self.changes.append(change)
        return change

    def state(self, key: str, moment: int | None = None, upto: int | None = None) -> State:
        """The item at ``moment`` (default: now), over the first ``upto`` changes."""
        found: State = None
        for change in self.changes[:upto]:
            if moment is not None and change.when > moment:
                break  # change times never decrease along the stream
            if change.key == key:
                found = change.new_image
        return found

    def table(self, moment: int | None = None) -> dict[str, Item]:
        return {
            key_text(key): state for key in KEYS if (state := self.state(key, moment)) is not None
        }

    def settled(
        self, key: str, moment: int | None = None, acked: Iterable[int] | None = None
    ) -> bool:
        """Every change of ``key`` at or before ``moment`` is acknowledged (in ``acked``,
        default: now): the backup must then show exactly the model's state."""
        acked = self.acked if acked is None else acked
        return all(
            change.index in acked
            for change in self.changes
            if change.key == key and (moment is None or change.when <= moment)
        )

    def possible_states(self, key: str) -> list[State]:
        """Every state the item had along the stream (absent first)."""
        return [None] + [c.new_image for c in self.changes if c.key == key]

    def keys_of(self, indices: Iterable[int]) -> set[str]:
        return {self.changes[index].key for index in indices}


# --- the stream, as the Streams API serves it -------------------------------------------------


class _Events:
    def register(self, *_: Any, **__: Any) -> None:
        """The real client's hook adds RawRecords; this client returns them itself."""


class _Meta:
    events = _Events()


class FakeStream:
    """One open shard holding the model's changes; a Streams client and the DescribeTable
    answer the consumer asks for."""

    meta = _Meta()

    def __init__(self, model: Model) -> None:
        self.model = model

    # DynamoDB
    def describe_table(self, TableName: str) -> dict[str, Any]:
        assert TableName == TABLE
        return {
            "Table": {
                "TableName": TABLE,
                "LatestStreamArn": STREAM_ARN,
                "StreamSpecification": {
                    "StreamEnabled": True,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        }

    # DynamoDB Streams
    def describe_stream(self, StreamArn: str, **_: Any) -> dict[str, Any]:
        assert StreamArn == STREAM_ARN
        shard = {"ShardId": SHARD, "SequenceNumberRange": {"StartingSequenceNumber": "100"}}
        return {"StreamDescription": {"StreamArn": STREAM_ARN, "Shards": [shard]}}

    def get_shard_iterator(self, **request: Any) -> dict[str, str]:
        assert request["StreamArn"] == STREAM_ARN and request["ShardId"] == SHARD
        kind = request["ShardIteratorType"]
        numbers = [int(change.sequence) for change in self.model.changes]
        if kind == "TRIM_HORIZON":
            position = 0
        else:
            wanted = int(request["SequenceNumber"])
            after = kind == "AFTER_SEQUENCE_NUMBER"
            position = next(
                (i for i, n in enumerate(numbers) if n > wanted or (n == wanted and not after)),
                len(numbers),
            )
        return {"ShardIterator": f"iterator-{position}"}

    def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:
        position = int(ShardIterator.rsplit("-", 1)[1])
        page = [change.raw() for change in self.model.changes[position : position + Limit]]
        return {
            "Records": page,
            "RawRecords": page,
            "NextShardIterator": f"iterator-{position + len(page)}",
        }


# --- faults ----------------------------------------------------------------------------------


@dataclass
class Faults:
    """Which items' S3 requests the proxy fails now (503-free: 500 InternalError)."""

    names: set[str] = field(default_factory=set)
    only_deletes: bool = False
    keys: set[str] = field(default_factory=set)  # the same items, for journal pieces
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rule(self, request: faultproxy.Request) -> str:
        if request.method == "PUT" and "/journal/" in request.path:
            # A journal piece is named by time and stream, not by item: it fails when it
            # holds a change of a failing item (the batch's write of that item fails).
            with self.lock:
                keys = set(self.keys)
            if keys and _piece_holds(request.body, keys):
                return faultproxy.INTERNAL_ERROR
            return faultproxy.FORWARD
        # The fast transport deletes with DeleteObjects (POST ?delete, the key in the body).
        bulk_delete = request.method == "POST" and request.path.endswith("?delete")
        with self.lock:
            hit = any(
                name in request.path or (bulk_delete and name.encode() in request.body)
                for name in self.names
            )
            deleting = request.method == "DELETE" or bulk_delete
            if hit and (deleting or not self.only_deletes):
                return faultproxy.INTERNAL_ERROR
        return faultproxy.FORWARD

    def fail(self, keys: Iterable[str], only_deletes: bool = False) -> None:
        with self.lock:
            self.keys = set(keys)
            self.names = {expected_name({"pk": {"S": key}}) for key in self.keys}
            self.only_deletes = only_deletes

    def clear(self) -> None:
        with self.lock:
            self.names = set()
            self.keys = set()


def _piece_holds(body: bytes, keys: set[str]) -> bool:
    """Whether a journal piece's body holds a change of one of ``keys`` (a body this cannot
    read counts as holding one: the write fails, which the model reads from the answer)."""
    try:
        text = gzip.decompress(body).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return True
    return any(f'"keys":{{"pk":{{"S":"{key}"}}}}' in text for key in keys)


class ConsumerKilled(Exception):
    """The consumer process died in the middle of a batch."""


class RestoreKilled(RuntimeError):
    """A restore worker died (the injected BatchWriteItem failure)."""


class _LambdaContext:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def dead_pid() -> int:
    """The pid of a process that has exited (a crashed consumer's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@dataclass
class KilledRestore:
    """A restore that died; what resuming it must know."""

    target: str
    options: RestoreOptions
    moment: int | None  # None: latest
    before: dict[str, Item]  # the target table before the first run
    changes_then: int  # len(model.changes) when it ran
    acked_then: frozenset[int]  # what was acknowledged when it ran


class CompactionKilled(RuntimeError):
    """A compaction worker died (injected after some of its partition units)."""


@dataclass
class KilledCompaction:
    """A compaction that died; resumed with ``--resume`` (the same options)."""

    options: CompactOptions
    acked_then: frozenset[int]


class _KillableCompaction(Compaction):
    """A compaction whose partition units die from the ``kill_after``-th on (in this process:
    the run ends incomplete, its finished units recorded, as after a worker's death)."""

    kill_after: int | None = None
    started = 0

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        if unit.stage == "partition" and self.kill_after is not None:
            self.started += 1
            if self.started > self.kill_after:
                raise CompactionKilled("injected: the compaction worker died")
        return super().run_unit(unit, context)


@dataclass
class World:
    """The servers, the model, and the real code acting on them, for one example."""

    s3: Any
    bucket: str
    dynamodb: Any
    dynamodb_endpoint: str
    proxy_endpoint: str
    faults: Faults
    features: frozenset[str]
    prefix: str = field(default_factory=lambda: f"inv-{uuid.uuid4().hex[:10]}")
    model: Model = field(default_factory=lambda: Model(int(datetime.now(UTC).timestamp()) - 3600))
    # Lambda trigger: the next record it delivers, the last batch, ranges given up on
    position: int = 0
    last_batch: tuple[int, int] | None = None
    reports: list[tuple[int, int]] = field(default_factory=list)
    killed: KilledRestore | None = None
    crashed_lease_pid: int | None = None
    touched: set[str] = field(default_factory=set)
    targets: list[str] = field(default_factory=list)
    nothing_then: bool = False  # the last restore found no item at its --at (see check_restored)
    folder_layout: str = LAYOUT_ITEMS  # the layout layout.json records (items: none written)
    # Journal: ranges held back (delivered late), bases made (moment -> acked then), a
    # compaction that died.
    held: list[tuple[int, int]] = field(default_factory=list)
    bases: dict[int, frozenset[int]] = field(default_factory=dict)
    killed_compaction: KilledCompaction | None = None

    def __post_init__(self) -> None:
        self.stream = FakeStream(self.model)
        self.layout = TableLayout.of(self.prefix, TABLE)
        if self.folder_layout != LAYOUT_ITEMS:  # what deploy --layout journal records first
            ensure_manifest(
                BackupWriter(self.s3, self.bucket),
                self.layout,
                [{"AttributeName": "pk", "KeyType": "HASH"}],
                {"pk": "S"},
                self.folder_layout,
            )
        self.reader = BotocoreObjects(self.s3, self.bucket)
        self._proxied_s3 = make_client(
            "s3", self.proxy_endpoint, retries={"total_max_attempts": 1}, max_pool_connections=16
        )
        api = RawDynamoDB(
            make_client("dynamodb", self.dynamodb_endpoint),
            Credentials(servers.ACCESS_KEY, servers.SECRET_KEY),
        )
        self._call = api.call

    # --- changes ---------------------------------------------------------------------------

    def change(self, key: str, value: int | None, gap: int, ttl: bool = False) -> Change:
        return self.model.add(key, value, gap, ttl)

    # --- the Lambda trigger ------------------------------------------------------------------

    def invoke(self, indices: list[int]) -> int:
        """handler.backup on these changes, as one Lambda event; how many of them (from the
        first) the answer acknowledges."""
        records = [self.model.changes[i].lambda_record() for i in indices]
        answer = handler.backup({"Records": records}, _LambdaContext())
        failed = [entry["itemIdentifier"] for entry in answer["batchItemFailures"]]
        self.touched |= self.model.keys_of(indices)
        if not failed:
            return len(indices)
        sequences = [record["dynamodb"]["SequenceNumber"] for record in records]
        assert len(failed) == 1 and failed[0] in sequences, answer
        return sequences.index(failed[0])

    def deliver(self, count: int, failing: str | None = None, only_deletes: bool = False) -> None:
        """The trigger's next batch; with ``failing``, that item's writes fail meanwhile."""
        indices = list(range(self.position, min(self.position + count, len(self.model.changes))))
        if not indices:
            return
        if failing is not None:
            self.faults.fail([failing], only_deletes)
        try:
            done = self.invoke(indices)
        finally:
            self.faults.clear()
        self.model.acked.update(indices[:done])
        self.last_batch = (indices[0], indices[-1] + 1)
        self.position = indices[0] + done

    def redeliver_last_batch(self) -> None:
        """At least once: Lambda invokes the function again with a batch it already gave
        it (an invocation that timed out after writing, say)."""
        assert self.last_batch is not None
        start, end = self.last_batch
        indices = list(range(start, end))
        done = self.invoke(indices)
        self.model.acked.update(indices[:done])
        self.position = max(self.position, start + done)

    def give_up(self, count: int, only_deletes: bool = False) -> None:
        """The trigger's retries run out on the next records (their first item's writes keep
        failing; with ``only_deletes``, a removal's delete marker, its tombstone written):
        Lambda reports the range to the failure destination and goes on."""
        indices = list(range(self.position, min(self.position + count, len(self.model.changes))))
        if not indices:
            return
        first = self.model.changes[indices[0]]
        self.faults.fail([first.key], only_deletes and first.new_image is None)
        try:
            done = self.invoke(indices)
        finally:
            self.faults.clear()
        assert done == 0
        self.reports.append((indices[0], indices[-1] + 1))
        self.position = indices[-1] + 1
        self.last_batch = None

    def report_document(self, start: int, end: int) -> str:
        first, last = self.model.changes[start], self.model.changes[end - 1]
        return json.dumps(
            {
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": FUNCTION_ARN,
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "version": "1.0",
                "timestamp": datetime.now(UTC).isoformat(),
                "DDBStreamBatchInfo": {
                    "shardId": SHARD,
                    "startSequenceNumber": first.sequence,
                    "endSequenceNumber": last.sequence,
                    "approximateArrivalOfFirstRecord": datetime.fromtimestamp(
                        first.when, UTC
                    ).isoformat(),
                    "approximateArrivalOfLastRecord": datetime.fromtimestamp(
                        last.when, UTC
                    ).isoformat(),
                    "batchSize": end - start,
                    "streamArn": STREAM_ARN,
                },
            }
        )

    def replay(
        self, which: int, racing: int = 0, meanwhile: tuple[int | None] | None = None
    ) -> None:
        """``replay`` of one report. With ``racing``, the live trigger delivers that many
        further records while replay writes the range (issue 19 item 3); with ``meanwhile``
        (a value, None: a removal), an item of the range changes first, preferably one with
        a newer state than the range's (the one replay notes and puts back on top)."""
        start, end = self.reports.pop(which)
        writer = BackupWriter(self.s3, self.bucket)
        world = self

        def live_change() -> None:
            if meanwhile is None:
                return
            in_range = [world.model.changes[i].key for i in range(start, end)]
            newer = [c.key for c in world.model.changes[end:] if c.key in in_range]
            world.change((newer or in_range)[0], meanwhile[0], 0)

        class Raced:
            """The folder's applier (``applier_for``, as ``replay`` chooses it), with the live
            trigger writing after each batch it applies."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def apply(self, records: Any, deadline: float | None = None) -> Any:
                result = self.inner.apply(records, deadline)
                live_change()
                if meanwhile is not None:  # the trigger catches up, the new change included
                    world.deliver(len(world.model.changes) - world.position)
                elif racing:
                    world.deliver(racing)
                return result

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        chosen = folder_layout(writer, self.layout, None)  # as ``replay`` opens the folder
        applier = Raced(applier_for(chosen, writer, self.prefix, self.layout.key_hash, 4))
        try:
            outcome = Replayer(
                self.stream, layout_named(chosen).replay(applier), sleep=lambda _: None
            ).replay(parse_report(self.report_document(start, end)))
        finally:
            with contextlib.suppress(AttributeError):  # the journal's applier holds no pool
                applier.close()
        assert outcome.written, outcome.problem
        assert outcome.records == end - start
        self.model.acked.update(range(start, end))
        self.touched |= self.model.keys_of(range(start, end))

    def redeliver_old(self, index: int) -> None:
        """A late, older copy of an acknowledged change arrives alone (a second writer, a
        retry from far back): issue 19 item 4."""
        self.invoke([index])

    # --- the stream consumer ---------------------------------------------------------------

    def checkpoint_position(self) -> int:
        """How many changes the consumer's checkpoint covers."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._checkpoint_key())["Body"]
        except self.s3.exceptions.NoSuchKey:
            return 0
        document = json.loads(body.read())
        number = (document.get("shards", {}).get(SHARD) or {}).get("sequence_number")
        if not number:
            return 0
        return sum(1 for change in self.model.changes if int(change.sequence) <= int(number))

    def _checkpoint_key(self) -> str:
        return self.layout.checkpoint_key("invariants")

    def consume(
        self,
        failing: str | None = None,
        attempts_failing: int = 0,
        crash_after: int | None = None,
    ) -> None:
        """``stream --once``: the consumer reads the stream from its checkpoint. ``failing``
        items' writes fail for ``attempts_failing`` batches; ``crash_after``: the process
        dies after writing that many records of its first batch."""
        writer = BackupWriter(self._proxied_s3, self.bucket, RetryPolicy(max_attempts=1))
        chosen = folder_layout(writer, self.layout, None)  # as ``stream`` opens the folder
        applier = applier_for(chosen, writer, self.prefix, self.layout.key_hash, 4)
        store = S3CheckpointStore(writer, self._checkpoint_key(), lease_seconds=LEASE_SECONDS)
        attempts = {"left": attempts_failing}

        def processor(records: Any, deadline: float | None = None) -> Any:
            self.touched |= {r["dynamodb"]["Keys"]["pk"]["S"] for r in records}
            if crash_after is not None:
                applier.apply(records[:crash_after], deadline=deadline)
                raise ConsumerKilled(f"killed after {crash_after} records")
            if failing is not None and attempts["left"] > 0:
                attempts["left"] -= 1
                self.faults.fail([failing])
            try:
                return applier.apply(records, deadline=deadline)
            finally:
                self.faults.clear()

        if crash_after is not None and "crash_keeps_lease" in self.features:
            # A real crash: the lease stays, held by a process that no longer exists.
            store.release = lambda: None  # type: ignore[method-assign]
            store.lease = Lease(pid=dead_pid(), started=None)
        consumer = StreamConsumer(
            self.stream,
            self.stream,
            TABLE,
            processor,
            store,
            retry_policy=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
            sleep=lambda _: None,
            drain=QUICK_DRAIN,
        )
        try:
            consumer.run(once=True)
        except ConsumerKilled:
            pass
        except StreamError as error:  # a write that kept failing: the consumer stops
            if "still failing" not in str(error):
                raise
        except CheckpointError as error:
            raise AssertionError(f"a restarted consumer could not go on: {error}") from None
        finally:
            close = getattr(applier, "close", None)  # the journal's holds no pool
            if close is not None:
                close()
        self.model.acked.update(range(self.checkpoint_position()))

    # --- the journal layout: other boundaries, late batches, compaction ---------------------

    def redeliver_range(self, back: int, count: int) -> None:
        """Lambda's bisect-on-error (or a retry after a partial write): a range starting
        ``back`` records before the trigger's position is delivered again, with boundaries
        no earlier batch had; what it acknowledges counts, as for any batch."""
        start = max(0, self.position - back)
        indices = list(range(start, min(start + count, len(self.model.changes))))
        if not indices:
            return
        done = self.invoke(indices)
        self.model.acked.update(indices[:done])
        self.position = max(self.position, start + done)

    def hold_back(self, count: int) -> None:
        """The next records' batch is written late (an invocation that stalls and completes
        after later batches did): the trigger moves past them, not yet acknowledged."""
        indices = range(self.position, min(self.position + count, len(self.model.changes)))
        if indices:
            self.held.append((indices[0], indices[-1] + 1))
            self.position = indices[-1] + 1
            self.last_batch = None

    def deliver_held(self, which: int) -> None:
        """A held-back batch arrives now, after the batches that came after it."""
        start, end = self.held.pop(which)
        indices = list(range(start, end))
        done = self.invoke(indices)
        self.model.acked.update(indices[:done])
        if done < len(indices):  # the rest is still to come
            self.held.append((start + done, end))

    def compact(
        self,
        moment: int | None,
        kill_after: int | None = None,
        resume: bool = False,
        next_second: bool = True,
    ) -> bool:
        """``compact --at moment`` (None: now) on 16 partitions; with ``kill_after``, its
        partition units die after that many. Whether it completed (a complete base is then
        checked against the model). S3 dates objects to the second, and a piece received in
        the cutoff's own second is late for the base (its readers place it): with
        ``next_second`` the compaction starts in the second after the last write, and the
        base must hold every change acknowledged before; without, a base may leave out the
        changes of that second (only the restores then check them)."""
        at = datetime.fromtimestamp(moment, UTC) if moment is not None else None
        options = CompactOptions(at=at, partitions=16, resume=resume, settle_seconds=1.0)
        acked_then = frozenset(self.model.acked) if next_second else frozenset()
        if next_second:
            time.sleep(1.1)
        job = _KillableCompaction(
            self.s3, self.reader, self.bucket, f"{self.prefix}/{TABLE}", options
        )
        job.kill_after = kill_after
        report = job.run(ThreadEngine(2))
        if not report.complete:
            assert kill_after is not None, report.errors
            assert all("injected" in error for error in report.errors), report.errors
            self.killed_compaction = KilledCompaction(options, acked_then)
            return False
        assert report.moment is not None
        made = int(parse_time(report.moment).timestamp())
        if self.killed_compaction is not None and self.killed_compaction.options.at == at:
            acked_then = self.killed_compaction.acked_then & acked_then  # its first units
            self.killed_compaction = None
        if not report.existed:
            self.bases.setdefault(made, acked_then)
        self.check_base(made, self.bases.get(made, acked_then))
        return True

    def resume_compaction(self) -> None:
        killed = self.killed_compaction
        assert killed is not None
        at = killed.options.at
        assert self.compact(int(at.timestamp()) if at else None, resume=True)
        self.killed_compaction = None

    def base_items(self, moment: int) -> dict[str, Item]:
        """A base's data files as ImportTable reads them: every line of every file."""
        paths = BasePaths(self.layout.items_prefix, datetime.fromtimestamp(moment, UTC))
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=paths.data_prefix)
        items = [
            decode_base_line(line, entry["Key"])
            for entry in listed.get("Contents", [])
            for line in read_lines(self.reader, entry["Key"])
        ]
        texts = [key_text(item["pk"]["S"]) for item in items]
        assert len(texts) == len(set(texts)), f"a base holds an item twice: {sorted(texts)}"
        return dict(zip(texts, items, strict=True))

    def check_base(self, moment: int, acked_then: frozenset[int]) -> None:
        """A base of ``moment``: exactly the model's state then for every item whose changes
        up to then were all acknowledged before the compaction ran (received before its
        cutoff); any other item in a state it really had."""
        held = self.base_items(moment)
        for key in KEYS:
            got = held.get(key_text(key))
            if self.model.settled(key, moment, acked_then):
                want = self.model.state(key, moment)
                assert got == want, f"{key}: the base of {moment} holds {got}, the model {want}"
            else:
                assert got in self.model.possible_states(key), f"{key}: base holds {got}"

    # --- restore -----------------------------------------------------------------------------

    def make_target(self, contents: dict[str, int]) -> tuple[str, dict[str, Item]]:
        """A live table holding ``contents`` (key -> value), for --into-existing."""
        name = unique_table_name("inv")
        self.dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.targets.append(name)
        for key, value in contents.items():
            self.dynamodb.put_item(
                TableName=name, Item={"pk": {"S": key}, "live": {"N": str(value)}}
            )
        return name, scan_all(self.dynamodb, name)

    def restore(
        self,
        target: str,
        options: RestoreOptions,
        kill_at: int | None = None,
    ) -> bool:
        """Run one restore; with ``kill_at``, its ``kill_at``-th BatchWriteItem call dies.
        Whether it completed."""
        calls = {"count": 0}
        api = RawDynamoDB(
            make_client("dynamodb", self.dynamodb_endpoint),
            Credentials(servers.ACCESS_KEY, servers.SECRET_KEY),
        )

        def batch_write(request: dict[str, Any]) -> dict[str, Any]:
            calls["count"] += 1
            if calls["count"] == kill_at:
                raise RestoreKilled("injected: the restore worker died")
            return api.call("BatchWriteItem", request)

        folder = open_folder_path(self.s3, self.bucket, f"{self.prefix}/{TABLE}")
        chosen = layout_for(folder)  # as the restore command chooses its job
        job = chosen.restore(
            self.s3,
            self.reader,
            self.dynamodb,
            batch_write,
            self.bucket,
            f"{self.prefix}/{TABLE}",
            target,
            options,
            retry_policy=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05),
            call=self._call,
        )
        if target not in self.targets:
            self.targets.append(target)
        self.nothing_then = False
        try:
            report = job.run(ThreadEngine(1))
        except RestoreKilled:
            return False
        self.nothing_then = report.nothing_at_moment
        return report.complete

    def restore_options(self, moment: int | None, **options: Any) -> RestoreOptions:
        at = datetime.fromtimestamp(moment, UTC) if moment is not None else None
        return RestoreOptions(
            at=at,
            key_schema="pk:S",
            read_concurrency=2,
            write_concurrency=1,
            unwritten_keys_file=os.devnull,
            **options,
        )

    def check_restored(
        self,
        target: str,
        moment: int | None,
        before: dict[str, Item],
        into_existing: bool,
        delete_absent: bool,
        complete: bool,
        acked_then: frozenset[int] | None = None,
    ) -> None:
        """The target after a restore against the model at ``moment``: exact for settled
        items once complete; after a killed run, nothing the backup holds was deleted."""
        after = scan_all(self.dynamodb, target)
        expected_now = self.model.table(moment)
        if complete and self.nothing_then:
            # The backup held no item then (before its first change, or every item deleted):
            # --delete-absent deletes nothing rather than empty the table (README, --at).
            # Only an item whose every change up to then was acknowledged must be in the
            # backup: one whose change was given up (or not yet acked) may be absent there.
            known = [
                key
                for key in KEYS
                if key_text(key) in expected_now
                and self.model.settled(key, moment)
                and (acked_then is None or self.model.settled(key, moment, acked_then))
            ]
            assert not known, f"the restore found nothing where the backup has {known}"
            delete_absent = False
        for key in KEYS:
            text = key_text(key)
            want = expected_now.get(text)
            settled = self.model.settled(key, moment)
            if acked_then is not None:  # resumed: its first run's units saw the backup then
                settled = settled and self.model.settled(key, moment, acked_then)
            if settled and want is not None and text in before:
                assert text in after, (
                    f"{key}: present in the backup at the moment and in the live table "
                    "before the restore, deleted by the restore"
                )
            if not complete:
                continue
            got = after.get(text)
            if settled:
                if want is not None:
                    assert got == want, f"{key}: restored {got}, the model had {want}"
                elif delete_absent:
                    assert got is None, f"{key}: absent at the moment, left in the table: {got}"
                else:
                    assert got == before.get(text), f"{key}: absent at the moment, changed: {got}"
            else:
                possible = self.model.possible_states(key)
                assert got in possible or got == before.get(text), (
                    f"{key}: restored {got}, a state it never had"
                )
        if complete and into_existing:
            extra = key_text(EXTRA_KEY)
            if delete_absent:
                assert extra not in after, "an item the backup never held was left in place"
            else:
                assert after.get(extra) == before.get(extra)
        if complete and not into_existing:
            assert set(after) <= {key_text(key) for key in KEYS}

    # --- history -----------------------------------------------------------------------------

    def history(self, key: str) -> list[HistoryEntry]:
        """The item's history as the ``history`` command reads it: through the reader of the
        layout the folder's ``layout.json`` records (``jobs/layouts``), newest first."""
        folder = open_folder_path(self.s3, self.bucket, f"{self.prefix}/{TABLE}")
        read_history = layout_for(folder).history
        return read_history(self.s3, self.reader, folder, {"pk": {"S": key}})[1]

    def check_history(self, keys: Iterable[str], strict_order: bool) -> None:
        """Each item's history: every acknowledged change is there, with its image; nothing
        that is not a change of the item; with ``strict_order``, each change once and in
        stream order. A change is known by its sequence number as the stream gives it, or as
        a number (a journal base's index records it without the leading zeros)."""
        for key in sorted(keys):
            entries = self.history(key)
            ours = {int(c.sequence): c for c in self.model.changes if c.key == key}
            listed = [e for e in reversed(entries) if e.event != "delete-marker"]
            for entry in listed:
                number = entry.sequence_number
                change = ours.get(int(number)) if number and number.isdigit() else None
                assert change is not None, f"{key}: history lists a change it never had: {entry}"
                assert number in (change.sequence, str(int(change.sequence))), entry
                assert entry.item == change.new_image, f"{key}: {entry.item} != {change.new_image}"
                assert entry.change_time == datetime.fromtimestamp(change.when, UTC)
            seen = {int(entry.sequence_number or "") for entry in listed}
            lost = [
                change.sequence
                for number, change in ours.items()
                if change.index in self.model.acked and number not in seen
            ]
            assert not lost, f"{key}: acknowledged changes missing from the backup: {lost}"
            if strict_order:
                # A copy of a change S3 already held is listed marked as such (duplicate_of):
                # each change is listed once as a change.
                order = [
                    int(entry.sequence_number or "")
                    for entry in listed
                    if entry.duplicate_of is None
                ]
                assert order == sorted(set(order)), (
                    f"{key}: history does not list each change once in stream order: {order}"
                )

    def check_latest(self, keys: Iterable[str]) -> None:
        """Each item's latest state: its history's newest change (the layout's history
        reader), and on the item layout also as restore selects it (``BackupItems``, one key
        at a time): the model's, where every change of the item is acknowledged."""
        select = LATEST_SELECTORS.get(self.folder_layout)
        for key in sorted(keys):
            entries = self.history(key)
            found = {"history": entries[0].item if entries else None}
            if select is not None:
                found["restore's selection"] = select(self, key)
            for reader, got in found.items():
                if self.model.settled(key):
                    want = self.model.state(key)
                    assert got == want, f"{key}: {reader}: the latest is {got}, the model's {want}"
                else:
                    assert got in self.model.possible_states(key), f"{key}: never had {got}"

    def cleanup(self) -> None:
        for name in self.targets:
            with contextlib.suppress(Exception):  # a leftover table harms nothing
                self.dynamodb.delete_table(TableName=name)


def _item_selected_latest(world: World, key: str) -> State:
    """An item folder's latest state of ``key`` as restore selects it (the reader restore
    uses, one key at a time)."""
    items = BackupItems(world.reader, world.bucket, world.layout, ["pk"])
    return items.select_key({"pk": {"S": key}}).item


# Each layout's own latest-state reader, one key at a time, beside the history (the journal
# restore reads whole partitions: its latest state is checked by the restores).
LATEST_SELECTORS: dict[str, Callable[[World, str], State]] = {
    LAYOUT_ITEMS: _item_selected_latest,
}


def close_handler_appliers(prefixes: Callable[[str], bool]) -> None:
    """Close the handler's cached appliers of finished examples (their thread pools)."""
    for config in [c for c in handler._appliers if prefixes(c.prefix)]:
        handler._appliers.pop(config).close()
