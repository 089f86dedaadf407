"""The stream consumer, end to end on DynamoDB Local and SeaweedFS, and its shard ordering
on a scripted Streams API (DynamoDB Local keeps one shard, so it cannot show a split)."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.checkpoints import FileCheckpointStore
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.draining import DrainRule
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.stream_records import BatchResult, RecordFailure
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.consumer import StreamConsumer
from dynamo_backups.pipeline.stream_source import StreamError
from tests.helpers import QUICK_DRAIN, bodies, consumer_for, create_table, history, object_key


def write_changes(dynamodb: Any, table: str, start: int, count: int) -> None:
    """Put items k<start>..; update every third one, then delete every fifth one."""
    for index in range(start, start + count):
        key = {"pk": {"S": f"k{index}"}}
        dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
        if index % 3 == 0:
            dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})
        if index % 5 == 0:
            dynamodb.delete_item(TableName=table, Key=key)


def change_count(start: int, count: int) -> int:
    return sum(1 + (index % 3 == 0) + (index % 5 == 0) for index in range(start, start + count))


def expected_history(index: int) -> list[Any]:
    states: list[Any] = [{"pk": {"S": f"k{index}"}, "v": {"N": "1"}}]
    if index % 3 == 0:
        states.append({"pk": {"S": f"k{index}"}, "v": {"N": "2"}})
    if index % 5 == 0:
        states += [None, "DM"]
    return list(reversed(states))


@pytest.mark.servers
def test_consumer_backs_up_everything_and_restarts_from_its_checkpoint(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    write_changes(dynamodb, table, 0, 40)
    first = consumer_for(dynamodb, streams, s3, bucket, prefix, table, batch_size=7).run(once=True)
    assert first.records == change_count(0, 40) == 40 + 14 + 8
    assert first.applied == {"INSERT": 40, "MODIFY": 14, "REMOVE": 8}

    checkpoint = read_document(s3, bucket, TableLayout.of(prefix, table).checkpoint_key("test"))
    assert checkpoint["stream_arn"] == first.stream_arn
    write_changes(dynamodb, table, 40, 20)
    second = consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    assert second.records == change_count(40, 20)  # only what came after the checkpoint

    for index in range(60):
        entries = history(s3, bucket, object_key(prefix, table, {"pk": {"S": f"k{index}"}}))
        assert bodies(entries) == expected_history(index), f"item k{index}"

    third = consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    assert third.records == 0


@pytest.mark.servers
def test_crash_after_writing_before_checkpoint_loses_nothing(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    write_changes(dynamodb, table, 0, 30)
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    batches = []

    def crashing(records: Any, **options: Any) -> BatchResult:
        result = applier.apply(records, **options)  # written to S3 ...
        batches.append(len(records))
        if len(batches) == 3:
            raise RuntimeError("host died")  # ... but the checkpoint never moves
        return result

    with pytest.raises(RuntimeError, match="host died"):
        consumer_for(dynamodb, streams, s3, bucket, prefix, table, crashing, batch_size=10).run(
            once=True
        )
    rerun = consumer_for(dynamodb, streams, s3, bucket, prefix, table, batch_size=10).run(once=True)
    assert rerun.records == change_count(0, 30) - 20  # checkpointed batches are not read again

    replayed = 0
    for index in range(30):
        actual = bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": f"k{index}"}})))
        expected = expected_history(index)
        extra = len(actual) - len(expected)
        # Each record writes one version that is not a delete marker (a removal: its tombstone).
        replayed += (len(actual) - actual.count("DM")) - (len(expected) - expected.count("DM"))
        # Oldest first, the history is the item's changes with one run of them written again
        # (the in-flight batch): changes[:j] + changes[i:] where j - i == extra.
        oldest, changes = actual[::-1], expected[::-1]
        assert any(
            oldest == changes[: start + extra] + changes[start:]
            for start in range(len(changes) - extra + 1)
        ), f"item k{index}: {actual}"
        assert actual[0] == expected[0]  # the same final state
    assert 0 < replayed <= 10  # at least once: only the in-flight batch is written twice


@pytest.mark.servers
def test_stop_request_finishes_the_batch_and_checkpoints(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    table = create_table(dynamodb)
    write_changes(dynamodb, table, 0, 20)
    stop = threading.Event()
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)

    def stop_after_first(records: Any) -> BatchResult:
        stop.set()  # Ctrl-C while this batch is being written
        return applier.apply(records)

    store = FileCheckpointStore(tmp_path / "checkpoint.json")
    first = StreamConsumer(
        dynamodb, streams, table, stop_after_first, store, batch_size=5, stop=stop
    ).run(once=False)
    assert first.records == 5
    assert store.load()["shards"]
    rest = StreamConsumer(dynamodb, streams, table, applier.apply, store).run(once=True)
    assert rest.records == change_count(0, 20) - 5


@pytest.mark.servers
def test_follow_mode_picks_up_new_changes(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    stop = threading.Event()
    consumer = consumer_for(
        dynamodb, streams, s3, bucket, prefix, table, stop=stop, poll_interval=0.05
    )
    reports = []
    thread = threading.Thread(target=lambda: reports.append(consumer.run(once=False)))
    thread.start()
    try:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "live"}})
        key = object_key(prefix, table, {"pk": {"S": "live"}})
        from tests.helpers import wait_until

        wait_until(lambda: len(history(s3, bucket, key)) == 1, timeout=15)
    finally:
        stop.set()
        thread.join(10)
    assert reports[0].records == 1


@pytest.mark.servers
def test_stream_turned_off_and_on_is_reported_as_a_gap(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    dynamodb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "unseen"}})
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    report = consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    assert report.records == 1
    assert len(report.gaps) == 1 and "run a backfill" in report.gaps[0]


@pytest.mark.servers
@pytest.mark.parametrize(
    ("view_type", "message"),
    [
        (None, "has no stream"),
        ("KEYS_ONLY", "view type KEYS_ONLY"),
        ("OLD_IMAGE", "must use NEW_IMAGE or NEW_AND_OLD_IMAGES"),
    ],
)
def test_tables_that_cannot_be_backed_up_are_refused(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    view_type: str | None,
    message: str,
) -> None:
    table = create_table(dynamodb, view_type=view_type)
    with pytest.raises(StreamError, match=message):
        consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)


@pytest.mark.servers
def test_missing_table_is_refused(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    with pytest.raises(StreamError, match="table nope-nope does not exist"):
        consumer_for(dynamodb, streams, s3, bucket, prefix, "nope-nope").run(once=True)


# --- shard ordering on a scripted Streams API ---------------------------------------------------


ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Tree/stream/2026-01-01T00:00:00.000"


class ScriptedStreams:
    """A Streams API over a fixed shard tree; pages of two records; one shard per listing page."""

    class _Events:
        def register(self, *args: Any, **kwargs: Any) -> None:
            pass

    def __init__(
        self, shards: dict[str, tuple[str | None, list[int], bool]], page: int = 2
    ) -> None:
        self.shards = shards  # id -> (parent, sequence numbers, closed)
        self.page = page
        self.meta = type("Meta", (), {"events": self._Events()})()

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str | None = None) -> Any:
        ids = list(self.shards)
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        shard_id = ids[start]
        parent, numbers, closed = self.shards[shard_id]
        entry: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": {}}
        if parent:
            entry["ParentShardId"] = parent
        if closed:
            entry["SequenceNumberRange"]["EndingSequenceNumber"] = str(numbers[-1])
        description: dict[str, Any] = {"Shards": [entry]}
        if start + 1 < len(ids):
            description["LastEvaluatedShardId"] = shard_id
        return {"StreamDescription": description}

    def get_shard_iterator(
        self,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> Any:
        numbers = self.shards[ShardId][1]
        position = 0 if SequenceNumber is None else numbers.index(int(SequenceNumber)) + 1
        return {"ShardIterator": f"{ShardId}|{position}"}

    def get_records(self, ShardIterator: str, Limit: int) -> Any:
        shard_id, position_text = ShardIterator.split("|")
        position = int(position_text)
        _, numbers, closed = self.shards[shard_id]
        page = numbers[position : position + self.page]
        records = [
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": str(number)}} for number in page
        ]
        following = position + len(page)
        ended = closed and following >= len(numbers)
        return {
            "RawRecords": records,
            "NextShardIterator": None if ended else f"{shard_id}|{following}",
        }


class ScriptedTable:
    def describe_table(self, TableName: str) -> Any:
        return {
            "Table": {
                "LatestStreamArn": ARN,
                "StreamSpecification": {
                    "StreamEnabled": True,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        }


class MemoryStore:
    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        return self.document

    def save(self, document: dict[str, Any]) -> None:
        self.document = document

    def describe(self) -> str:
        return "memory"

    def heartbeat(self) -> None:
        pass

    def write_deadline(self) -> float | None:
        return None

    def settle_seconds(self) -> float:
        return 0.0

    def release(self) -> None:
        pass


def recording_processor(seen: list[int]) -> Any:
    def process(records: Any) -> BatchResult:
        seen.extend(int(record["dynamodb"]["SequenceNumber"]) for record in records)
        result = BatchResult(len(records))
        result.applied["INSERT"] += len(records)
        return result

    return process


def test_children_are_read_only_after_their_parent_is_finished() -> None:
    # Listed child-first on purpose: the order of the listing must not matter.
    tree = {
        "child-b": ("parent", [20, 21, 22], False),
        "grandchild": ("child-a", [30, 31], False),
        "child-a": ("parent", [10, 11, 12, 13], True),
        "parent": ("root", [1, 2, 3, 4, 5], True),  # root itself was trimmed long ago
    }
    seen: list[int] = []
    store = MemoryStore()
    report = StreamConsumer(
        ScriptedTable(),
        ScriptedStreams(tree),
        "Tree",
        recording_processor(seen),
        store,
        batch_size=3,
        drain=QUICK_DRAIN,
    ).run(once=True)
    position = {number: index for index, number in enumerate(seen)}
    assert sorted(seen) == [1, 2, 3, 4, 5, 10, 11, 12, 13, 20, 21, 22, 30, 31]
    assert max(position[n] for n in (1, 2, 3, 4, 5)) < min(position[n] for n in (10, 20, 21))
    assert max(position[n] for n in (10, 11, 12, 13)) < min(position[n] for n in (30, 31))
    assert seen[:5] == [1, 2, 3, 4, 5]
    assert report.shards_finished == 2
    assert store.document["shards"]["child-b"] == {"sequence_number": "22", "finished": False}

    # A restart resumes open shards after their checkpoint and never rereads finished ones.
    tree["child-b"] = ("parent", [20, 21, 22, 23], False)
    again: list[int] = []
    StreamConsumer(
        ScriptedTable(),
        ScriptedStreams(tree),
        "Tree",
        recording_processor(again),
        store,
        drain=QUICK_DRAIN,
    ).run(once=True)
    assert again == [23]


def test_failed_records_are_retried_from_the_earliest_and_checkpointed_after() -> None:
    tree = {"only": (None, [1, 2, 3, 4], False)}
    calls: list[list[int]] = []

    def flaky(records: Any) -> BatchResult:
        numbers = [int(record["dynamodb"]["SequenceNumber"]) for record in records]
        calls.append(numbers)
        result = BatchResult(len(records))
        if len(calls) == 1:  # the third record fails once
            result.applied["INSERT"] += 2
            result.failures.append(RecordFailure(2, "3", "SlowDown", retryable=True))
        else:
            result.applied["INSERT"] += len(records)
        return result

    store = MemoryStore()
    report = StreamConsumer(
        ScriptedTable(),
        ScriptedStreams(tree, page=4),
        "Tree",
        flaky,
        store,
        sleep=lambda _: None,
        drain=QUICK_DRAIN,
    ).run(once=True)
    assert calls == [[1, 2, 3, 4], [3, 4]]
    assert report.records == 4
    assert store.document["shards"]["only"]["sequence_number"] == "4"


def test_a_record_that_can_never_be_applied_stops_the_consumer() -> None:
    tree = {"only": (None, [1, 2], False)}

    def poison(records: Any) -> BatchResult:
        result = BatchResult(len(records))
        result.failures.append(RecordFailure(0, "1", "record 0: has no dynamodb.Keys", False))
        return result

    with pytest.raises(StreamError, match=r"has no dynamodb\.Keys"):
        StreamConsumer(ScriptedTable(), ScriptedStreams(tree), "Tree", poison, MemoryStore()).run(
            once=True
        )


def test_retryable_failure_that_persists_gives_up_with_the_reason() -> None:
    tree = {"only": (None, [1], False)}

    def down(records: Any) -> BatchResult:
        result = BatchResult(len(records))
        result.failures.append(RecordFailure(0, "1", "InternalError", True))
        return result

    consumer = StreamConsumer(
        ScriptedTable(),
        ScriptedStreams(tree),
        "Tree",
        down,
        MemoryStore(),
        retry_policy=RetryPolicy(max_attempts=3),
        sleep=lambda _: None,
    )
    with pytest.raises(StreamError, match="still failing after 3 attempts: InternalError"):
        consumer.run(once=True)


class LapsedLeaseStore(MemoryStore):
    """A leased store whose lease lapsed, renewed at the third try."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0
        self.deadline = -math.inf

    def heartbeat(self) -> None:
        self.renewals += 1
        if self.renewals == 3:
            self.deadline = time.monotonic() + 60

    def write_deadline(self) -> float | None:
        return self.deadline


def test_nothing_is_written_while_the_lease_may_have_lapsed() -> None:
    tree = {"only": (None, [1, 2], False)}
    store = LapsedLeaseStore()
    deadlines: list[float] = []

    def apply(records: Any, deadline: float) -> BatchResult:
        assert store.renewals >= 3  # never called before the lease was renewed
        deadlines.append(deadline)
        result = BatchResult(len(records))
        result.applied["INSERT"] += len(records)
        return result

    report = StreamConsumer(
        ScriptedTable(),
        ScriptedStreams(tree, page=2),
        "Tree",
        apply,
        store,
        sleep=lambda _: None,
        drain=QUICK_DRAIN,
    ).run(once=True)
    assert report.records == 2 and report.batches == 1
    assert deadlines == [store.deadline]  # the lease's deadline bounds the writes
    assert store.document["shards"]["only"]["sequence_number"] == "2"


# --- draining open shards (empty pages) on a scripted Streams API ------------------------------


class PagedStreams(ScriptedStreams):
    """Shards as scripted pages: ``[]`` is an empty page, as DynamoDB Streams answers for a
    portion of a shard without records. An open shard answers empty pages after its script."""

    def __init__(self, shards: dict[str, tuple[str | None, list[list[int]], bool]]) -> None:
        flat = {
            shard: (parent, [n for page in pages for n in page], closed)
            for shard, (parent, pages, closed) in shards.items()
        }
        super().__init__(flat)
        self.pages = {shard: pages for shard, (_, pages, _) in shards.items()}
        self.iterators_opened: list[str] = []
        self.expire_next: set[str] = set()

    def get_shard_iterator(
        self,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> Any:
        self.iterators_opened.append(ShardId)
        if SequenceNumber is None:
            return {"ShardIterator": f"{ShardId}|0|0"}
        for number, page in enumerate(self.pages[ShardId]):
            if int(SequenceNumber) in page:
                offset = page.index(int(SequenceNumber)) + 1
                if offset == len(page):
                    return {"ShardIterator": f"{ShardId}|{number + 1}|0"}
                return {"ShardIterator": f"{ShardId}|{number}|{offset}"}
        raise AssertionError(f"no record {SequenceNumber} in {ShardId}")

    def get_records(self, ShardIterator: str, Limit: int) -> Any:
        from botocore.exceptions import ClientError

        shard_id, page_text, offset_text = ShardIterator.split("|")
        if shard_id in self.expire_next:
            self.expire_next.discard(shard_id)
            raise ClientError(
                {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}},
                "GetRecords",
            )
        page, offset = int(page_text), int(offset_text)
        pages = self.pages[shard_id]
        closed = self.shards[shard_id][2]
        numbers = pages[page][offset:] if page < len(pages) else []
        records = [
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": str(number)}}
            for number in numbers
        ]
        following = page + 1
        if closed and following >= len(pages):
            return {"RawRecords": records, "NextShardIterator": None}
        return {"RawRecords": records, "NextShardIterator": f"{shard_id}|{following}|0"}


E: list[int] = []  # an empty page


def test_once_walks_past_empty_pages_and_writes_every_record() -> None:
    shards = {
        # Empty pages at the start, in the middle and before the end of open shards: runs
        # of up to five, shorter than the rule's six.
        "open-a": (None, [E, E, E, [1, 2], E, E, E, E, E, [3], E, [4, 5], E, E, E, E, [6]], False),
        "closed": (None, [E, E, [10], E, E, E, E, E, E, E, E, [11], E, E], True),
        "open-b": (None, [E, E, E, E, E, [20]], False),
    }
    seen: list[int] = []
    report = StreamConsumer(
        ScriptedTable(),
        PagedStreams(shards),
        "Tree",
        recording_processor(seen),
        MemoryStore(),
        drain=QUICK_DRAIN,
    ).run(once=True)
    assert sorted(seen) == [1, 2, 3, 4, 5, 6, 10, 11, 20]
    assert report.shard_ends["closed"] == "closed: read to its end"
    for shard in ("open-a", "open-b"):
        assert report.shard_ends[shard].startswith("open: no records after 6 empty pages in ")


def test_a_drain_rule_shorter_than_an_empty_stretch_says_where_it_stopped() -> None:
    shards = {"open": (None, [[1], E, E, E, E, [2]], False)}
    seen: list[int] = []
    report = StreamConsumer(
        ScriptedTable(),
        PagedStreams(shards),
        "Tree",
        recording_processor(seen),
        MemoryStore(),
        drain=DrainRule(empty_pages=3, seconds=0.0, page_interval=0.001),
    ).run(once=True)
    assert seen == [1]  # record 2 lies beyond a stretch longer than the rule allows ...
    assert report.shard_ends["open"].startswith("open: no records after 3 empty pages")  # ... said


def test_a_drain_run_must_also_last_the_rules_seconds() -> None:
    shards = {"open": (None, [E, E, [1]], False)}
    seen: list[int] = []
    clock = iter(range(1_000_000))  # each reading of the clock is one second later
    report = StreamConsumer(
        ScriptedTable(),
        PagedStreams(shards),
        "Tree",
        recording_processor(seen),
        MemoryStore(),
        drain=DrainRule(empty_pages=1, seconds=30.0, page_interval=0.0),
        clock=lambda: float(next(clock)),
    ).run(once=True)
    assert seen == [1]
    assert "in 3" in report.shard_ends["open"]  # tens of seconds of empty pages, not one


def test_follow_mode_keeps_each_shards_iterator_across_empty_polls() -> None:
    streams = PagedStreams({"open": (None, [[1], E, E, E, [2], E, E], False)})
    seen: list[int] = []
    stop = threading.Event()
    polls = [0]
    original = streams.get_records

    def counting(ShardIterator: str, Limit: int) -> Any:
        polls[0] += 1
        if polls[0] == 12:
            stop.set()
        return original(ShardIterator, Limit)

    streams.get_records = counting  # type: ignore[method-assign]
    StreamConsumer(
        ScriptedTable(),
        streams,
        "Tree",
        recording_processor(seen),
        MemoryStore(),
        poll_interval=0.001,
        stop=stop,
    ).run(once=False)
    assert seen == [1, 2]
    assert streams.iterators_opened == ["open"]  # one iterator, held through empty polls


def test_an_expired_iterator_is_renewed_from_the_checkpoint() -> None:
    streams = PagedStreams({"open": (None, [[1, 2], E, [3], E], False)})
    streams.expire_next.add("open")
    seen: list[int] = []
    StreamConsumer(
        ScriptedTable(),
        streams,
        "Tree",
        recording_processor(seen),
        MemoryStore(),
        drain=QUICK_DRAIN,
    ).run(once=True)
    assert seen == [1, 2, 3]
    assert streams.iterators_opened == ["open", "open"]


@pytest.mark.servers
def test_a_replaced_stream_is_read_to_its_end_before_the_new_one(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "after-checkpoint"}})
    dynamodb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    report = consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    # The old stream's last change was still readable: it is in the backup, not in a gap.
    key = object_key(prefix, table, {"pk": {"S": "after-checkpoint"}})
    assert bodies(history(s3, bucket, key)) == [{"pk": {"S": "after-checkpoint"}}]
    assert report.records == 2
    assert len(report.gaps) == 1 and "while no stream was on" in report.gaps[0]
