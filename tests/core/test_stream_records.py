"""Stream record parsing: every unusable record is a clear error, never a silent skip."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from dynamo_backups.core.stream_records import (
    BatchResult,
    InvalidRecordError,
    RecordFailure,
    parse_batch,
    parse_change,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Users/stream/2026-01-01T00:00:00.000"


def record(event_name: str = "INSERT", sequence: str = "100", **dynamodb: Any) -> dict[str, Any]:
    body = {
        "ApproximateCreationDateTime": 1795782900,
        "Keys": {"id": {"S": "a"}},
        "NewImage": {"id": {"S": "a"}, "n": {"N": "1"}},
        "SequenceNumber": sequence,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    body.update(dynamodb)
    return {"eventName": event_name, "eventSourceARN": ARN, "dynamodb": body}


def test_a_good_record() -> None:
    change = parse_change(record(), 0)
    assert (change.table, change.event_name, change.sequence_number) == ("Users", "INSERT", "100")
    assert change.change_time == datetime(2026, 11, 27, 12, 35, tzinfo=UTC)
    assert change.new_image == {"id": {"S": "a"}, "n": {"N": "1"}}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["dynamodb"].pop("Keys"), "has no dynamodb.Keys"),
        (lambda r: r.update(eventName="UPSERT"), "unknown eventName 'UPSERT'"),
        (lambda r: r["dynamodb"].pop("NewImage"), "must use NEW_IMAGE or NEW_AND_OLD_IMAGES"),
        (lambda r: r.update(eventSourceARN="arn:aws:dynamodb:x"), "malformed eventSourceARN"),
        (lambda r: r.pop("eventSourceARN"), "malformed eventSourceARN None"),
        (lambda r: r["dynamodb"].pop("SequenceNumber"), "has no dynamodb.SequenceNumber"),
        (
            lambda r: r["dynamodb"].update(ApproximateCreationDateTime="soon"),
            "invalid dynamodb.ApproximateCreationDateTime",
        ),
    ],
)
def test_bad_records_are_named_and_explained(mutate: Any, message: str) -> None:
    bad = copy.deepcopy(record())
    mutate(bad)
    with pytest.raises(InvalidRecordError, match=message) as caught:
        parse_change(bad, 3)
    assert str(caught.value).startswith("record 3")


def test_keys_only_stream_message_names_the_table_and_view() -> None:
    bad = record(StreamViewType="KEYS_ONLY")
    bad["dynamodb"].pop("NewImage")
    with pytest.raises(
        InvalidRecordError,
        match="INSERT of table Users has no NewImage \\(stream view type KEYS_ONLY\\)",
    ):
        parse_change(bad, 0)


def test_batch_stops_at_the_first_invalid_record() -> None:
    records = [record(sequence="1"), record(event_name="BOGUS", sequence="2"), record(sequence="3")]
    parsed = parse_batch(records)
    assert [change.sequence_number for change in parsed.changes] == ["1"]
    assert parsed.invalid is not None
    assert parsed.invalid.index == 1
    assert parsed.invalid.sequence_number == "2"


def test_missing_change_time_takes_the_arrival_time() -> None:
    undated = record()
    undated["dynamodb"].pop("ApproximateCreationDateTime")
    arrived = datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_batch([undated], arrived).changes[0].change_time == arrived


def test_lambda_response_names_the_earliest_failure() -> None:
    result = BatchResult(record_count=5)
    assert result.lambda_response() == {"batchItemFailures": []}
    result.failures += [RecordFailure(3, "300", "x", True), RecordFailure(1, "100", "y", True)]
    assert result.lambda_response() == {"batchItemFailures": [{"itemIdentifier": "100"}]}
