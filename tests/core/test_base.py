"""Bases of the journal layout: names, ImportTable lines, the index, the manifest, and the
rule that base + journal after it gives exactly the state at a moment (pure; no servers)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.core.base import (
    BaseError,
    BaseManifest,
    BasePaths,
    LateChangeError,
    RecordUse,
    base_id,
    choose_base,
    decode_base_line,
    decode_index_line,
    encode_base_line,
    encode_index_line,
    parse_base_id,
    partition_of,
    prune_removals,
    select_records,
    watermarks,
    with_images,
)
from dynamo_backups.core.journal import (
    CONVERTED_STREAM,
    ItemState,
    JournalError,
    JournalRecord,
    converted_record,
    decode_record,
    encode_record,
    fold,
    parse_piece_name,
    piece_name,
    present_items,
    record_of_stream,
    split_batch,
)
from dynamo_backups.core.keys import object_name
from dynamo_backups.core.layout import EVENT_SNAPSHOT, SECOND

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/Users/stream/2026-01-01T00:00:00.000"
# Just before an hour ends, so that batches straddle an hour folder too.
T0 = datetime(2026, 11, 27, 12, 58, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def change(sequence: int, seconds: float, key: str = "a", event: str = "MODIFY", value: str = "1"):
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": at(seconds).timestamp(),
        "Keys": {"id": {"S": key}},
        "SequenceNumber": str(sequence),
    }
    if event != "REMOVE":
        body["NewImage"] = {"id": {"S": key}, "v": {"S": value}}
    return record_of_stream(
        {"eventID": f"e{sequence}", "eventName": event, "eventSourceARN": ARN, "dynamodb": body}
    )


def name(key: str) -> str:
    return object_name({"id": {"S": key}})


def manifest(moment: float, cutoff: float | None, horizon: float = -3600, **extra: Any):
    return BaseManifest(
        table="Users",
        moment=at(moment),
        cutoff=at(cutoff) if cutoff is not None else None,
        late_horizon=at(horizon),
        **extra,
    )


# --- names and lines ---------------------------------------------------------------------


def test_base_names_sort_by_moment_and_are_whole_seconds() -> None:
    assert base_id(at(2)) == "20261127T125802Z"
    assert parse_base_id("20261127T125802Z") == at(2)
    with pytest.raises(BaseError, match="whole second"):
        base_id(at(2.5))
    for bad in ("20261127T125802", "20261327T125802Z"):
        with pytest.raises(BaseError):
            parse_base_id(bad)
    ids = [base_id(at(s)) for s in (0, 3600, 86400)]
    assert choose_base(ids, at(3599)) == ids[0]
    assert choose_base(ids, at(3600)) == ids[1]
    assert choose_base(ids, at(-1)) is None


def test_a_bases_files_keep_data_alone_under_its_import_prefix() -> None:
    paths = BasePaths("Prod/Users/", at(2))
    assert paths.data_prefix == "Prod/Users/bases/20261127T125802Z/data/"
    assert paths.data_key("3f", 1) == "Prod/Users/bases/20261127T125802Z/data/3f-00001.json.gz"
    assert paths.data_key("", 0).endswith("/data/all-00000.json.gz")
    for other in (paths.index_key("3f"), paths.manifest_key, paths.cutoff_key):
        assert not other.startswith(paths.data_prefix)
    assert partition_of("3fab", 2) == "3f" and partition_of("3fab", 0) == ""
    with pytest.raises(BaseError):
        partition_of("3fab", 5)


def test_a_data_line_is_what_importtable_reads() -> None:
    item = {"id": {"S": "a"}, "n": {"N": "1.50"}, "b": {"B": "AAE="}}
    line = encode_base_line(item)
    assert json.loads(line) == {"Item": item}  # the DynamoDB JSON import format, one per line
    assert decode_base_line(line, "data line 1") == item
    with pytest.raises(BaseError, match="alone"):
        decode_base_line(b'{"Item": {"id": {"S": "a"}}, "x": 1}', "data line 1")
    with pytest.raises(BaseError, match="bad N"):
        decode_base_line(b'{"Item": {"id": {"N": 1}}}', "data line 1")


def test_index_lines_keep_the_deciding_change() -> None:
    for state in (
        ItemState.of(change(12, 5)),
        ItemState.of(change(13, 6, event="REMOVE")),
        ItemState.snapshot({"id": {"S": "a"}}, {"id": {"S": "a"}}, at(7)),
    ):
        again = decode_index_line(encode_index_line(state), "index line")
        assert again == replace(state, image=None)
    with pytest.raises(BaseError, match="order"):
        encode_index_line(ItemState({"id": {"S": "a"}}, None, None))


def test_index_and_data_must_agree() -> None:
    present, removed = ItemState.of(change(1, 1, "a")), ItemState.of(change(2, 2, "b", "REMOVE"))
    index = {name("a"): replace(present, image=None), name("b"): replace(removed, image=None)}
    states = with_images(index, {name("a"): present.image})
    assert states[name("a")] == present and states[name("b")] == removed
    with pytest.raises(BaseError, match="disagree"):
        with_images(index, {})
    with pytest.raises(BaseError, match="not its index"):
        with_images({}, {name("a"): present.image})


def test_the_manifest_survives_its_document() -> None:
    original = manifest(60, 75, reflects_before=at(-100), previous="20261127T125700Z")
    original = replace(original, streams=watermarks([change(9, 1), change(12, 2)]))
    assert original.streams == {
        ARN: {"last_sequence": "12", "last_change_time": "2026-11-27T12:58:02Z"}
    }
    assert BaseManifest.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    with pytest.raises(BaseError, match="base manifest"):
        BaseManifest.from_dict({"format": "other"})
    with pytest.raises(BaseError, match="late horizon"):
        manifest(60, 75, horizon=61)


# --- the reader's rule -------------------------------------------------------------------


def test_what_a_reader_takes_from_each_record() -> None:
    base = manifest(60, 75, horizon=0)
    assert base.use_of(change(1, 61), False, at(100)) is RecordUse.APPLY
    assert base.use_of(change(1, 101), True, at(100)) is RecordUse.SKIP  # after the moment asked
    assert base.use_of(change(1, 60), False, at(100)) is RecordUse.SKIP  # in the base
    assert base.use_of(change(1, 60), True, at(100)) is RecordUse.PLACE  # late: weighed
    with pytest.raises(LateChangeError, match="late horizon"):
        base.use_of(change(1, -5), True, at(100))
    with pytest.raises(BaseError, match="after the moment"):
        base.use_of(change(1, 1), False, at(59))


def test_a_backfill_base_skips_what_its_scan_already_saw() -> None:
    scan = manifest(60, None, horizon=-60, reflects_before=at(0))
    late = scan.is_late(at(-1000))
    assert late  # no cutoff: every journal object is weighed against the scan's reads
    assert scan.use_of(change(1, -1), late, at(100)) is RecordUse.SKIP  # latest moment 0
    assert scan.use_of(change(1, -0.5), late, at(100)) is RecordUse.PLACE  # may follow a read
    assert scan.use_of(change(1, 30), late, at(100)) is RecordUse.PLACE
    assert scan.use_of(change(1, 61), late, at(100)) is RecordUse.APPLY


def test_which_journal_objects_a_reader_lists_and_reads() -> None:
    base = manifest(60, 75, horizon=0)
    assert base.journal_span(at(100)) == (at(0), at(100))

    def piece(first: float, last: float):
        return parse_piece_name(piece_name([change(1, first), change(2, last)]))

    assert base.needs_piece(piece(50, 70), at(70), at(100))  # straddles the moment
    assert not base.needs_piece(piece(50, 60), at(70), at(100))  # all in the base
    assert base.needs_piece(piece(50, 60), at(75), at(100))  # received after the cutoff
    assert not base.needs_piece(piece(101, 110), at(120), at(100))  # after the moment asked


# --- base + journal after it = the state at the moment ----------------------------------


@dataclass
class World:
    """One table's true history, and the journal objects its writers left."""

    changes: list[tuple[float, JournalRecord]]  # (the instant it happened, its record)
    objects: list[tuple[datetime, list[JournalRecord]]]  # (LastModified, a piece)

    def truth(self, moment: datetime) -> dict[str, dict[str, Any]]:
        """The state at ``moment``: each item's last change stamped at or before it."""
        states: dict[str, dict[str, Any] | None] = {}
        for _, record in self.changes:
            if record.change_time <= moment:
                states[record.name()] = record.image
        return {key: image for key, image in states.items() if image is not None}

    def read_at(self, instant: float) -> dict[str, dict[str, Any]]:
        """What a scan reading every item at ``instant`` sees: changes made before it."""
        states: dict[str, dict[str, Any] | None] = {}
        for happened, record in self.changes:
            if happened < instant:
                states[record.name()] = record.image
        return {key: image for key, image in states.items() if image is not None}


def make_world(rng: random.Random, count: int = 60) -> World:
    changes: list[tuple[float, JournalRecord]] = []
    instant, sequence = 0.0, 1000
    for _ in range(count):
        instant += rng.choice([0.0, 0.1, 0.4, 1.0, 2.5, 7.0])
        sequence += rng.randint(1, 40)
        key = rng.choice("abcde")
        event = rng.choice(["MODIFY", "MODIFY", "REMOVE"])
        record = change(sequence, math.floor(instant), key, event, f"{sequence}")
        changes.append((instant, record))
    records = [record for _, record in changes]
    objects: list[tuple[datetime, list[JournalRecord]]] = []
    start = 0
    while start < len(records):
        end = min(len(records), start + rng.randint(1, 12))
        batches = [records[start:end]]
        if rng.random() < 0.3:  # redelivered with other boundaries (bisect, a retry)
            batches.append(records[rng.randint(0, start) : rng.randint(start + 1, end)])
        for batch in batches:
            newest = max(record.change_time for record in batch)
            delay = rng.choice([0.5, 1, 3, 10]) if rng.random() < 0.85 else rng.choice([60, 400])
            for piece in split_batch(batch):
                objects.append((newest + timedelta(seconds=delay), piece))
        start = end
    rng.shuffle(objects)
    return World(changes, objects)


def compact(
    world: World, previous: BaseManifest | None, states: dict[str, ItemState], moment: float,
    cutoff: float, horizon: float = -3600,
) -> tuple[BaseManifest, dict[str, ItemState]]:  # fmt: skip
    """What compaction does: fold the objects received before the cutoff onto the previous
    base, keep the states its index will hold."""
    picked = select_records(previous, world.objects, at(moment), received_before=at(cutoff))
    base_moment = previous.moment if previous is not None else None
    folded = fold(states, picked.records, at(moment), base_moment)
    new = BaseManifest("Users", at(moment), at(cutoff), at(horizon),
                       previous=previous.id if previous else None)  # fmt: skip
    reflects = previous.reflects_before if previous is not None else None
    return replace(new, reflects_before=reflects), prune_removals(folded, at(horizon))


def restore(world: World, base: BaseManifest | None, states: dict[str, ItemState], moment: float):
    """What restore does: the base (its index read only for the items a late change meets)
    and the journal after it."""
    picked = select_records(base, world.objects, at(moment))
    unread = {
        key: state if key in picked.placed else replace(state, order=None)
        for key, state in states.items()
    }
    base_moment = base.moment if base is not None else None
    return present_items(fold(unread, picked.records, at(moment), base_moment))


@pytest.mark.parametrize("seed", range(60))
def test_base_plus_journal_after_is_the_state_at_every_moment(seed: int) -> None:
    rng = random.Random(seed)
    world = make_world(rng)
    end = max(record.change_time for _, record in world.changes)
    span = int((end - T0).total_seconds()) + 2
    m1 = rng.randint(0, span)
    m2 = rng.randint(m1, span)
    first, first_states = compact(world, None, {}, m1, m1 + rng.choice([0, 2, 30]))
    second, second_states = compact(world, first, first_states, m2, m2 + rng.choice([0, 2, 30]))
    for moment in sorted({rng.uniform(-2, span + 5) for _ in range(12)} | {m1, m2, m1 + 0.5}):
        assert restore(world, None, {}, moment) == world.truth(at(moment)), moment
        for base, states in ((first, first_states), (second, second_states)):
            if base.moment <= at(moment):
                got = restore(world, base, states, moment)
                assert got == world.truth(at(moment)), (moment, base.id)


@pytest.mark.parametrize("seed", range(40))
def test_a_backfill_base_plus_the_journal_is_the_state_at_every_later_moment(seed: int) -> None:
    rng = random.Random(1000 + seed)
    world = make_world(rng)
    end = max(happened for happened, _ in world.changes)
    scan_start = rng.uniform(0, end)
    scan_end = scan_start + rng.uniform(0, 20)
    # The journal began just before the scan: earlier changes may be missing from it.
    world.objects = [
        (received, [r for r in piece if r.latest_time > at(scan_start) or rng.random() < 0.5])
        for received, piece in world.objects
    ]
    world.objects = [(received, piece) for received, piece in world.objects if piece]
    # Each item read once, somewhere in the scan, dated to the second by DynamoDB's clock.
    states: dict[str, ItemState] = {}
    for key in "abcde":
        instant = rng.uniform(scan_start, scan_end)
        image = world.read_at(instant).get(name(key))
        if image is not None:
            states[name(key)] = ItemState.snapshot(
                {"id": {"S": key}}, image, at(math.floor(instant))
            )
    moment = math.floor(scan_end) + 1
    base = BaseManifest("Users", at(moment), None, at(scan_start - 60), at(scan_start))
    for asked in sorted({rng.uniform(moment, max(moment, end + 5)) for _ in range(8)} | {moment}):
        assert restore(world, base, states, asked) == world.truth(at(asked)), asked
    # Compacted on top: the next base reads the late changes against the scan's reads.
    next_moment = max(math.ceil(end), moment) + 1
    later, later_states = compact(world, base, states, next_moment, next_moment + 2,
                                  horizon=scan_start - 60)  # fmt: skip
    assert later.reflects_before == at(scan_start)
    for asked in (next_moment, next_moment + 10):
        # Objects received after its cutoff (delays of 60 and 400 s) are late for it.
        assert restore(world, later, later_states, asked) == world.truth(at(asked)), asked


def test_a_batch_straddling_the_bases_moment_is_split_between_base_and_journal() -> None:
    batch = [change(1, 58, value="1"), change(2, 60, value="2"), change(3, 62, value="3")]
    world = World([(float(r.change_time.second), r) for r in batch], [(at(63), batch)])
    base, states = compact(world, None, {}, 60, 70)
    assert present_items(states)[name("a")]["v"] == {"S": "2"}  # the changes up to the moment
    assert restore(world, base, states, 61)[name("a")]["v"] == {"S": "2"}
    assert restore(world, base, states, 62)[name("a")]["v"] == {"S": "3"}  # the rest after it


def test_a_change_older_than_the_late_horizon_is_refused_not_lost() -> None:
    world = World([], [(at(500), [change(1, 10, value="late")])])
    base = manifest(60, 75, horizon=30)
    with pytest.raises(LateChangeError):
        select_records(base, world.objects, at(100))


def test_pruned_removals_are_older_than_the_horizon() -> None:
    states = {
        "x": ItemState.of(change(1, 1, "a", "REMOVE")),
        "y": ItemState.of(change(2, 50, "b", "REMOVE")),
        "z": ItemState.of(change(3, 1, "c")),
    }
    assert set(prune_removals(states, at(30))) == {"y", "z"}


def test_a_table_read_that_found_no_item_is_indexed_as_a_removal_at_its_order() -> None:
    from dynamo_backups.core.journal import snapshot_record

    moment = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
    gone = snapshot_record({"pk": {"S": "a"}}, None, moment)
    there = snapshot_record({"pk": {"S": "b"}}, {"pk": {"S": "b"}}, moment)
    states = fold({}, [gone, there], moment + timedelta(seconds=1))
    index = {
        name: decode_index_line(encode_index_line(state), "index line")
        for name, state in states.items()
    }
    images = {name: state.image for name, state in states.items() if state.image is not None}
    joined = with_images(index, images)  # the base's halves agree
    assert {name: state.order for name, state in joined.items()} == {
        name: state.order for name, state in states.items()
    }
    assert [state.present for state in joined.values()] == [s.present for s in states.values()]


def test_a_converted_piece_is_skipped_only_by_the_base_that_vouches_for_it() -> None:
    """convert --history: a ``converted`` piece older than the base's late horizon is late to
    a base without cutoff; only a base with ``converted_history`` skips it (its fold), never a
    base that does not vouch for it, whatever the piece's name says."""
    old = converted_record(
        {"id": {"S": "a"}}, {"id": {"S": "a"}, "v": {"S": "0"}}, "MODIFY", at(-7200), SECOND, "7"
    )
    read = converted_record({"id": {"S": "b"}}, None, "SNAPSHOT", at(-7100), SECOND, None)
    assert (old.stream_arn, old.sequence_number, read.event_name, read.sequence) == (
        CONVERTED_STREAM, "7", EVENT_SNAPSHOT, -1,
    )  # fmt: skip
    for record in (old, read):  # the line round-trips, a stream change keeps its sequence
        assert decode_record(encode_record(record)) == record
    piece = parse_piece_name(piece_name([old]))
    assert (piece.stream_tag, piece.first_sequence) == (CONVERTED_STREAM, 7)
    vouching = manifest(0, None, horizon=-3600, converted_history=True)
    other = manifest(0, None, horizon=-3600)
    assert BaseManifest.from_dict(vouching.to_dict()).converted_history
    assert not BaseManifest.from_dict(other.to_dict()).converted_history
    assert not vouching.needs_piece(piece, at(10), at(60))
    assert vouching.use_of(old, True, at(60)) is RecordUse.SKIP
    with pytest.raises(LateChangeError):
        other.use_of(old, True, at(60))
    # A stream event stays refused on the repair pseudo-stream.
    line = encode_record(old).replace(b'"stream":"converted"', b'"stream":"repair"')
    with pytest.raises(JournalError):
        decode_record(line)
