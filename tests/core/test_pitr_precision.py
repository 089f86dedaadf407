"""The precision of change times: recorded by the stream writer, read per version, so that
history and selection order changes alike; and the reads selection needs for it."""

from __future__ import annotations

import pytest

from dynamo_backups.core.layout import (
    MINUTE,
    SECOND,
    VersionMetadata,
    parse_stream_arn,
    stream_time_precision,
)
from dynamo_backups.core.pitr import select_at, stream_order
from dynamo_backups.core.stream_records import parse_change
from tests.core.pitr_listings import LATEST, Recorded, marker, sec, version


def local(event: str, changed: float, sequence: str) -> VersionMetadata:
    """A stream version written from DynamoDB Local: its time rounded down to the minute."""
    return VersionMetadata("stream", event, sec(changed), sequence, precision=MINUTE)


def aws(event: str, changed: float, sequence: str) -> VersionMetadata:
    return VersionMetadata("stream", event, sec(changed), sequence, precision=SECOND)


def table_read(changed: float, writer: str = "backfill") -> VersionMetadata:
    return VersionMetadata(writer, "SNAPSHOT", sec(changed))


def test_the_stream_writer_records_the_sources_precision() -> None:
    record = {
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": 1780315200,
            "Keys": {"pk": {"S": "a"}},
            "NewImage": {"pk": {"S": "a"}},
            "SequenceNumber": "000000000000000000001",
        },
    }
    local_arn = "arn:aws:dynamodb:ddblocal:000000000000:table/Users/stream/2026-06-01T00:00:00.000"
    aws_arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/Users/stream/2026-06-01T00:00:00.000"
    assert parse_change({**record, "eventSourceARN": local_arn}, 0).time_precision == MINUTE
    assert parse_change({**record, "eventSourceARN": aws_arn}, 0).time_precision == SECOND
    assert stream_time_precision(parse_stream_arn(local_arn)) == MINUTE


def test_precision_round_trips_through_s3_metadata_and_defaults_to_a_second() -> None:
    written = local("INSERT", 0, "1").to_s3()
    assert written["change-time-precision"] == "60"
    assert VersionMetadata.from_s3(written) == local("INSERT", 0, "1")
    legacy = {name: value for name, value in written.items() if name != "change-time-precision"}
    read = VersionMetadata.from_s3(legacy)
    assert read is not None and read.precision is None and read.time_precision == SECOND
    assert VersionMetadata.from_s3({**written, "change-time-precision": "soon"}).precision is None
    assert "change-time-precision" not in read.to_s3()  # a copy keeps it unrecorded


@pytest.mark.parametrize("writer", ["backfill", "repair"])
def test_dynamodb_local_stream_change_after_a_read_of_the_same_minute_comes_last(
    writer: str,
) -> None:
    """DynamoDB Local: the read at 12:00:40 saw v=1; the MODIFY to v=2 at 12:00:50 is stamped
    12:00:00. The stream's change may have happened until 12:00:59: it comes after the read,
    in selection and in history alike."""
    entries = [version("modify", 51, latest=True), version("read", 41), version("insert", 6)]
    recorded = {
        "modify": local("MODIFY", 0, "200"),
        "read": table_read(40, writer),
        "insert": local("INSERT", 0, "100"),
    }
    chosen = select_at(entries, LATEST, Recorded(recorded)).version
    assert chosen is not None and chosen.version_id == "modify"
    # S3 received the read last (a slow put): the stream's change still comes after it
    entries = [version("read", 52, latest=True), version("modify", 51), version("insert", 6)]
    chosen = select_at(entries, LATEST, Recorded(recorded)).version
    assert chosen is not None and chosen.version_id == "modify"
    assert stream_order(entries, recorded)[0].entry.version_id == "modify"


def test_a_read_a_minute_after_a_dynamodb_local_change_comes_after_it() -> None:
    entries = [version("read", 61, latest=True), version("insert", 6)]
    recorded = {"read": table_read(60), "insert": local("INSERT", 0, "100")}
    chosen = select_at(entries, LATEST, Recorded(recorded)).version
    assert chosen is not None and chosen.version_id == "read"
    assert stream_order(entries, recorded)[0].entry.version_id == "read"


def test_a_read_on_top_reads_below_as_far_as_a_minute_rounded_change_could_reach() -> None:
    """Until one of the object's stream versions is read, a version below may be rounded to
    the minute: a read on top is compared with what lies up to a minute (and the allowance)
    before it; once a stream version shows the stream's precision, the allowance alone."""
    entries = [
        version("read", 100, latest=True),
        version("m2", 50),  # stamped 12:00:00 on DynamoDB Local: may be 12:00:59, after the read
        version("m1", 5),
    ]
    recorded = {
        "read": table_read(99),
        "m2": local("MODIFY", 0, "2"),
        "m1": local("INSERT", 0, "1"),
    }
    inspect = Recorded(recorded)
    assert select_at(entries, LATEST, inspect).version == entries[0]
    assert inspect.read == ["read", "m2"]  # m1 (received at 12:00:05) cannot reach 12:01:40
    # The same listing from AWS: m2 is stamped to the second, 12:00:49
    recorded = {
        "read": table_read(99),
        "m2": aws("MODIFY", 49, "2"),
        "m1": aws("INSERT", 4, "1"),
    }
    inspect = Recorded(recorded)
    assert select_at(entries, LATEST, inspect).version == entries[0]
    assert inspect.read == ["read", "m2"]


def test_a_stream_version_on_top_needs_no_read_below_beyond_the_allowance() -> None:
    entries = [version("v2", 10, latest=True), version("v1", 5)]
    inspect = Recorded({"v2": aws("MODIFY", 9, "2"), "v1": aws("INSERT", 4, "1")})
    assert select_at(entries, LATEST, inspect).version == entries[0]
    assert inspect.read == ["v2"]
    # received 2 s apart or less: v1 could hold a later change (a late copy)
    entries = [version("v2", 10, latest=True), version("v1", 8)]
    inspect = Recorded({"v2": aws("MODIFY", 9, "2"), "v1": aws("INSERT", 7, "1")})
    assert select_at(entries, LATEST, inspect).version == entries[0]
    assert inspect.read == ["v2", "v1"]


def test_a_late_copy_received_within_the_allowance_is_placed_by_its_change() -> None:
    entries = [version("late", 10, latest=True), version("v2", 9), version("v1", 1)]
    recorded = {
        "late": aws("INSERT", 0, "1"),  # a retried copy of the first change
        "v2": aws("MODIFY", 8, "2"),
        "v1": aws("INSERT", 0, "1"),
    }
    chosen = select_at(entries, LATEST, Recorded(recorded)).version
    assert chosen is not None and chosen.version_id == "v2"
    assert stream_order(entries, recorded)[0].entry.version_id == "v2"


def test_an_object_of_removals_only_needs_no_read() -> None:
    entries = [marker("dm2", 30, latest=True), version("t2", 30, 0), marker("dm", 1)]
    inspect = Recorded({})
    assert select_at(entries, LATEST, inspect).version is None
    assert inspect.read == []


def test_a_removal_received_well_after_the_item_needs_one_read() -> None:
    entries = [marker("dm", 100, latest=True), version("tomb", 100, 0), version("v1", 5)]
    inspect = Recorded({"tomb": aws("REMOVE", 99, "2"), "v1": aws("INSERT", 4, "1")})
    assert select_at(entries, LATEST, inspect).version is None
    assert inspect.read == ["tomb"]
    # a late copy of an old removal: the version below holds the later change
    inspect = Recorded({"tomb": aws("REMOVE", -3600, "0"), "v1": aws("INSERT", 4, "1")})
    assert select_at(entries, LATEST, inspect).version == entries[2]
    assert inspect.read == ["tomb", "v1"]
