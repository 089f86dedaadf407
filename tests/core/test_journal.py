"""The journal layout's records, pieces, names, duplicates and fold (pure; no servers)."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_backups.core.journal import (
    ChangeOrder,
    ItemState,
    JournalConflict,
    JournalError,
    JournalRecord,
    UnplacedChange,
    by_item,
    check_piece,
    decode_piece,
    decode_record,
    drop_duplicates,
    encode_piece,
    encode_record,
    fold,
    gunzip_lines,
    gzip_lines,
    item_history,
    listing_prefixes,
    parse_piece_name,
    piece_name,
    present_items,
    record_of_stream,
    split_batch,
)
from dynamo_backups.core.keys import object_name
from dynamo_backups.core.layout import MINUTE, SECOND
from dynamo_backups.core.stream_records import InvalidRecordError

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/Users/stream/2026-01-01T00:00:00.000"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raw(
    sequence: int,
    seconds: float,
    key: str = "a",
    event: str = "MODIFY",
    value: str = "1",
    **extra: Any,
) -> dict[str, Any]:
    """A Lambda-shaped stream record."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": (T0 + timedelta(seconds=seconds)).timestamp(),
        "Keys": {"id": {"S": key}},
        "SequenceNumber": str(sequence),
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event != "REMOVE":
        body["NewImage"] = {"id": {"S": key}, "n": {"N": value}}
    record = {
        "eventID": f"e{sequence}",
        "eventName": event,
        "eventSourceARN": ARN,
        "dynamodb": body,
    }
    record.update(extra)
    return record


def change(sequence: int, seconds: float, key: str = "a", event: str = "MODIFY", value: str = "1"):
    return record_of_stream(raw(sequence, seconds, key, event, value))


def name(key: str) -> str:
    return object_name({"id": {"S": key}})


# --- records ---------------------------------------------------------------------------


def test_a_record_survives_its_line_exactly() -> None:
    image = {
        "id": {"S": "é"},
        "big": {"N": "12345678901234567890123456789012345678"},
        "tiny": {"N": "0.000000000000000000000000000000000000001"},
        "bin": {"B": "AAEC/w=="},
        "set": {"BS": ["AQ==", "Ag=="]},
        "nums": {"NS": ["1.5", "-2"]},
        "deep": {"M": {"l": {"L": [{"NULL": True}, {"BOOL": False}, {"SS": ["x"]}]}}},
    }
    source = raw(7, 0.25, key="é")
    source["dynamodb"]["NewImage"] = image
    record = record_of_stream(source)
    line = encode_record(record)
    assert b"\n" not in line
    again = decode_record(line)
    assert again == record
    assert again.image == image  # numbers stay their text, binary its base64
    assert again.change_time == at(0.25)
    assert again.event_id == "e7" and again.precision == SECOND


def test_binary_given_as_bytes_is_kept_as_base64() -> None:
    source = raw(1, 0)
    source["dynamodb"]["Keys"] = {"id": {"B": b"\x00\xff"}}
    source["dynamodb"]["NewImage"] = {"id": {"B": b"\x00\xff"}}
    record = record_of_stream(source)
    assert record.keys == {"id": {"B": "AP8="}}
    assert decode_record(encode_record(record)).keys == {"id": {"B": "AP8="}}


def test_a_ttl_deletion_keeps_its_origin() -> None:
    ttl = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record = record_of_stream(raw(3, 1, event="REMOVE", userIdentity=ttl))
    again = decode_record(encode_record(record))
    assert again.is_removal and again.is_ttl_removal and again.image is None
    assert again.user_identity == ttl
    assert not change(4, 1, event="REMOVE").is_ttl_removal


def test_the_shard_is_kept_when_the_writer_knows_it() -> None:
    record = record_of_stream(raw(3, 1), shard="shardId-0001")
    assert decode_record(encode_record(record)).shard == "shardId-0001"


def test_dynamodb_local_minute_precision_is_kept() -> None:
    local = raw(3, 60)
    local["eventSourceARN"] = ARN.replace("eu-west-1", "ddblocal")
    record = record_of_stream(local)
    assert record.precision == MINUTE
    assert decode_record(encode_record(record)).precision == MINUTE


@pytest.mark.parametrize(
    ("change_line", "message"),
    [
        (lambda d: d.update(image={"id": {"N": 1}}), "bad N"),
        (lambda d: d.pop("image"), "must have an image"),
        (lambda d: d.update(event="REMOVE"), "must not have an image"),
        (lambda d: d.update(seq="12a"), "decimal digits"),
        (lambda d: d.update(v=2), "format 2"),
        (lambda d: d.update(time="yesterday"), "cannot read time"),
        (lambda d: d.update(keys={}), "no key attributes"),
        (lambda d: d.update(event="UPSERT"), "unknown event"),
    ],
)
def test_a_bad_line_is_an_error_naming_it(change_line: Any, message: str) -> None:
    import json

    document = json.loads(encode_record(change(5, 0)))
    change_line(document)
    with pytest.raises(JournalError, match=message):
        decode_record(json.dumps(document), "piece line 3")


def test_a_bare_json_number_is_refused_not_rounded() -> None:
    line = encode_record(change(5, 0)).replace(b'"n":{"N":"1"}', b'"n":{"N":1.10}')
    with pytest.raises(JournalError, match="bad N"):
        decode_record(line)


def test_an_unusable_stream_record_is_an_error_not_a_skip() -> None:
    broken = raw(5, 0)
    del broken["dynamodb"]["Keys"]
    with pytest.raises(InvalidRecordError, match=r"no dynamodb\.Keys"):
        record_of_stream(broken)


# --- gzip framing ------------------------------------------------------------------------


def test_equal_lines_give_equal_bytes() -> None:
    records = [change(1, 0), change(2, 1, key="b")]
    assert encode_piece(records) == encode_piece(list(records))
    assert decode_piece(encode_piece(records), "p") == records
    assert gunzip_lines(gzip_lines([]), "empty") == []


def test_a_cut_short_or_foreign_body_is_an_error() -> None:
    body = encode_piece([change(1, 0), change(2, 1)])
    with pytest.raises(JournalError, match="not a whole gzip body"):
        gunzip_lines(body[:-9], "journal/x")
    with pytest.raises(JournalError, match="not a whole gzip body"):
        gunzip_lines(b"plain text", "journal/x")
    with pytest.raises(JournalError, match="no newline"):
        gunzip_lines(gzip.compress(b'{"v":1}'), "journal/x")


# --- pieces and names --------------------------------------------------------------------


def test_a_batch_within_an_hour_is_one_piece_named_from_its_records() -> None:
    batch = [change(100, 301), change(101, 302, key="b"), change(105, 359.5)]
    (piece,) = split_batch(batch)
    text = piece_name(piece)
    assert text.startswith("2026/11/27/12/0501-0600-")
    parsed = parse_piece_name(text)
    assert (parsed.first_sequence, parsed.last_sequence) == (100, 105)
    assert parsed.first_time <= min(r.change_time for r in piece)
    assert parsed.last_time >= max(r.change_time for r in piece)
    check_piece(text, piece)


def test_a_batch_across_hours_is_split_by_hour() -> None:
    batch = [change(1, 3590), change(2, 3599.999), change(3, 3600), change(4, 7300)]
    pieces = split_batch(batch)
    assert [[r.sequence for r in p] for p in pieces] == [[1, 2], [3], [4]]
    names = [piece_name(p) for p in pieces]
    assert [n[:14] for n in names] == ["2026/11/27/12/", "2026/11/27/13/", "2026/11/27/14/"]
    assert names[0].split("/")[-1].startswith("5950-6000-")  # rounded up to the hour's end
    assert parse_piece_name(names[0]).last_time == at(3600)


def test_a_retried_batch_has_its_name_and_a_bisected_one_others() -> None:
    batch = [change(sequence, sequence) for sequence in range(10, 20)]
    (whole,) = split_batch(batch)
    assert piece_name(whole) == piece_name(split_batch(list(batch))[0])
    halves = [piece_name(p) for part in (batch[:5], batch[5:]) for p in split_batch(part)]
    assert piece_name(whole) not in halves and len(set(halves)) == 2
    with pytest.raises(JournalConflict):
        check_piece(piece_name(whole), batch[:5])


def test_pieces_of_two_streams_never_share_a_name() -> None:
    other = raw(10, 10)
    other["eventSourceARN"] = ARN.replace("2026-01-01", "2026-02-02")
    first, second = [change(10, 10)], [record_of_stream(other)]
    assert piece_name(first) != piece_name(second)
    assert len(split_batch(first + second)) == 2


@pytest.mark.parametrize(
    "text",
    [
        "2026/11/27/12/0501-0600-0123abcd-1-2-0123456789abcdef0123.jsonl",
        "2026/11/27/12/0561-0600-0123abcd-1-2-0123456789abcdef0123.jsonl.gz",
        "2026/11/27/12/0600-0501-0123abcd-1-2-0123456789abcdef0123.jsonl.gz",
        "2026/02/30/12/0501-0600-0123abcd-1-2-0123456789abcdef0123.jsonl.gz",
        "2026/11/27/0501-0600-0123abcd-1-2-0123456789abcdef0123.jsonl.gz",
    ],
)
def test_names_that_are_not_pieces_are_refused(text: str) -> None:
    with pytest.raises(JournalError):
        parse_piece_name(text)


def test_piece_may_hold_a_span() -> None:
    piece = parse_piece_name(piece_name([change(1, 300), change(2, 400)]))
    assert piece.may_hold(None, at(300)) and not piece.may_hold(None, at(299))
    assert piece.may_hold(at(399), at(9999)) and not piece.may_hold(at(400), at(9999))


def test_listing_prefixes_cover_a_span_with_days_and_hours() -> None:
    assert listing_prefixes(at(60), at(120)) == ["2026/11/27/12/"]
    start = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)
    end = datetime(2026, 11, 30, 1, 5, tzinfo=UTC)
    assert listing_prefixes(start, end) == [
        "2026/11/27/22/",
        "2026/11/27/23/",
        "2026/11/28/",
        "2026/11/29/",
        "2026/11/30/00/",
        "2026/11/30/01/",
    ]
    assert listing_prefixes(end, start) == []
    # Every hour of the span is under exactly one prefix.
    hour = start.replace(minute=0)
    while hour <= end:
        holders = [p for p in listing_prefixes(start, end) if f"{hour:%Y/%m/%d/%H}/".startswith(p)]
        assert len(holders) == 1, hour
        hour += timedelta(hours=1)


# --- duplicates and order ----------------------------------------------------------------


def test_duplicates_from_overlapping_batches_count_once() -> None:
    first = [change(s, s) for s in range(1, 7)]
    bisected_again = [change(s, s) for s in range(4, 10)]
    kept = drop_duplicates(first + bisected_again)
    assert [r.sequence for r in kept.records] == list(range(1, 10))
    assert kept.duplicates == 3


def test_the_writer_known_shard_does_not_make_a_copy_differ() -> None:
    plain, with_shard = change(3, 3), record_of_stream(raw(3, 3), shard="shardId-9")
    assert drop_duplicates([plain, with_shard]).duplicates == 1


def test_two_different_copies_of_one_change_are_a_conflict() -> None:
    with pytest.raises(JournalConflict, match="sequence number 3"):
        drop_duplicates([change(3, 3, value="1"), change(3, 3, value="2")])


def test_sequence_numbers_compare_as_integers() -> None:
    # Same second: "9" < "10" as numbers, not as text.
    items = by_item([change(10, 5, value="new"), change(9, 5, value="old")])
    assert [r.sequence for r in items[name("a")]] == [9, 10]
    state = fold({}, [change(10, 5, value="new"), change(9, 5, value="old")], at(5))
    assert state[name("a")].image == {"id": {"S": "a"}, "n": {"N": "new"}}


def test_a_split_shards_child_follows_its_parent() -> None:
    # The item's changes move to a child shard after a split: later times, higher numbers.
    parent = [change(100, 10, value="p1"), change(101, 11, value="p2")]
    child = [change(500, 11, value="c1"), change(501, 12, value="c2")]
    for delivered in (parent + child, child + parent):
        states = fold({}, delivered, at(11))
        assert states[name("a")].image["n"] == {"N": "c1"}  # same second: the higher number


def test_a_table_read_and_a_stream_change_of_one_second() -> None:
    read = ItemState.snapshot({"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "read"}}, at(5))
    states = fold({name("a"): read}, [change(9, 5, value="stream")], at(5), base_moment=None)
    assert states[name("a")].image["n"] == {"N": "stream"}  # as the item layout places them
    earlier = fold({name("a"): read}, [change(9, 4, value="stream")], at(5))
    assert earlier[name("a")].image["n"] == {"N": "read"}


# --- fold --------------------------------------------------------------------------------


def test_out_of_order_and_duplicated_batches_fold_alike() -> None:
    changes = [
        change(1, 1, "a", "INSERT", "1"),
        change(2, 2, "b", "INSERT", "1"),
        change(3, 3, "a", "MODIFY", "2"),
        change(4, 4, "b", "REMOVE"),
        change(5, 5, "c", "INSERT", "1"),
        change(6, 6, "a", "MODIFY", "3"),
    ]
    expected = fold({}, changes, at(100))
    rng = random.Random(7)
    for _ in range(50):
        batches = _random_batches(changes, rng)
        rng.shuffle(batches)
        delivered = [record for batch in batches for record in batch]
        assert fold({}, delivered, at(100)) == expected
    assert present_items(expected) == {
        name("a"): {"id": {"S": "a"}, "n": {"N": "3"}},
        name("c"): {"id": {"S": "c"}, "n": {"N": "1"}},
    }
    assert not expected[name("b")].present  # absent, and the removal is remembered


def _random_batches(changes: list[JournalRecord], rng: random.Random) -> list[list[JournalRecord]]:
    """Deliveries at least once: ranges with random boundaries, some sent again."""
    batches, start = [], 0
    while start < len(changes):
        end = rng.randint(start + 1, len(changes))
        batches.append(changes[start:end])
        if rng.random() < 0.4:  # a retry or a bisect: a range overlapping this one
            lo = rng.randint(0, start)
            batches.append(changes[lo:end])
        start = end
    return batches


def test_a_moment_inside_a_batch_takes_the_batchs_changes_up_to_it() -> None:
    batch = [change(1, 1, value="1"), change(2, 2, value="2"), change(3, 3, value="3")]
    assert fold({}, batch, at(2))[name("a")].image["n"] == {"N": "2"}
    assert fold({}, batch, at(2.5))[name("a")].image["n"] == {"N": "2"}
    assert fold({}, batch, at(0.5)) == {}


def test_a_base_with_unread_orders_takes_changes_after_its_moment_only() -> None:
    base = {name("a"): ItemState({"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "b"}}, None)}
    after = fold(base, [change(9, 20, value="after")], at(30), base_moment=at(10))
    assert after[name("a")].image["n"] == {"N": "after"}
    with pytest.raises(UnplacedChange, match="sequence number 8"):
        fold(base, [change(8, 5, value="late")], at(30), base_moment=at(10))


def test_a_late_change_is_placed_against_the_bases_deciding_change() -> None:
    decided = change(7, 8, value="base")
    base = {name("a"): ItemState.of(decided)}
    older, newer = change(5, 6, value="older"), change(8, 9, value="newer")
    assert fold(base, [older], at(30), base_moment=at(10))[name("a")].image["n"] == {"N": "base"}
    assert fold(base, [newer], at(30), base_moment=at(10))[name("a")].image["n"] == {"N": "newer"}
    assert fold(base, [decided], at(30), base_moment=at(10))[name("a")] == base[name("a")]


def test_a_late_older_change_does_not_bring_back_a_removed_item() -> None:
    removal = change(7, 8, event="REMOVE")
    base = {name("a"): ItemState.of(removal)}
    states = fold(base, [change(5, 6, value="older")], at(30), base_moment=at(10))
    assert not states[name("a")].present


# --- history -----------------------------------------------------------------------------


def test_an_items_history_newest_first_with_copies_counted() -> None:
    records = [change(1, 1, value="1"), change(2, 2, key="b"), change(3, 3, value="2")]
    records += [change(3, 3, value="2"), change(1, 1, value="1"), change(1, 1, value="1")]
    history = item_history(records, name("a"))
    assert [(h.record.sequence, h.copies) for h in history] == [(3, 1), (1, 2)]
    assert [h.record.sequence for h in item_history(records, name("a"), until=at(2))] == [1]


def test_change_order_is_total() -> None:
    one = ChangeOrder(at(1), 5, ARN, "x")
    assert one < ChangeOrder(at(1), 6) and one < ChangeOrder(at(2), -1)


# --- table reads (SNAPSHOT records: verify --repair) ---------------------------------------


def test_a_table_read_record_survives_its_line_and_names_its_own_pieces() -> None:
    from dynamo_backups.core.journal import snapshot_record

    present = snapshot_record({"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "1.50"}}, at(5.7))
    absent = snapshot_record({"id": {"S": "b"}}, None, at(5))
    for record in (present, absent):
        assert decode_record(encode_record(record)) == record
        assert record.sequence == -1 and record.change_time == at(5)  # DynamoDB's second
        assert record.order == ChangeOrder(at(6), -1, "repair", record.event_id or "")
    name_ = piece_name([present, absent])
    assert name_ == piece_name([present, absent])  # the same reads, the same name
    assert "-repair-0-0-" in name_
    parsed = parse_piece_name(name_)
    assert parsed.stream_tag == "repair" and parsed.first_time == at(5)
    assert drop_duplicates([present, present, absent]).duplicates == 1
    # Two reads of one item (other moments or images) are two changes, never a conflict.
    other = snapshot_record({"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "2"}}, at(5))
    assert len(drop_duplicates([present, other]).records) == 2


@pytest.mark.parametrize(
    ("change_line", "message"),
    [
        (lambda d: d.update(seq="7"), "a SNAPSHOT has stream"),
        (lambda d: d.update(stream=ARN), "a SNAPSHOT has stream"),
        (lambda d: d.update(event="MODIFY"), "table-read stream"),
    ],
)
def test_a_table_read_line_is_one_or_an_error(change_line: Any, message: str) -> None:
    import json

    from dynamo_backups.core.journal import snapshot_record

    read = snapshot_record({"id": {"S": "a"}}, {"id": {"S": "a"}}, at(5))
    document = json.loads(encode_record(read))
    change_line(document)
    with pytest.raises(JournalError, match=message):
        decode_record(json.dumps(document), "piece line 1")


def test_a_table_read_is_ordered_by_its_second_against_stream_changes() -> None:
    """After every change of an earlier second (the read saw it); before every change of its
    own second or later (a change after the read decides; one before it, in that second, was
    what the read saw, so it gives the read's state): never a newer change buried."""
    from dynamo_backups.core.journal import snapshot_record

    read = snapshot_record({"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "read"}}, at(5))
    image = lambda records: fold({}, records, at(99))[name("a")].image  # noqa: E731
    assert image([change(9, 4.9, value="s"), read])["n"] == {"N": "read"}
    assert image([read, change(9, 4.9, value="s")])["n"] == {"N": "read"}  # any order
    assert image([read, change(9, 5.0, value="s")])["n"] == {"N": "s"}
    assert image([change(9, 6, value="s"), read])["n"] == {"N": "s"}
    gone = snapshot_record({"id": {"S": "a"}}, None, at(5))
    assert fold({}, [change(9, 3, value="s"), gone], at(99))[name("a")].image is None
    # On DynamoDB Local (minute precision) a change of the read's minute comes after it too.
    local = raw(9, 0, value="s")
    local["eventSourceARN"] = ARN.replace("eu-west-1", "ddblocal")
    minute = record_of_stream(local)
    assert minute.precision == MINUTE and image([read, minute])["n"] == {"N": "s"}
