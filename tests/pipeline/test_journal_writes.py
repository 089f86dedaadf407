"""The journal layout's write path (docs/journal.md, "Writing: one object per batch"): the
Lambda handler and ``stream`` writing delivered batches as journal objects into SeaweedFS
(versioned, If-None-Match honoured), fed real stream records from DynamoDB Local. What was
written is read back with the core's own reader (``decode_piece``, ``drop_duplicates``,
``fold``) and compared with the table."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups import handler
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.manifest import ensure_manifest, read_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.journal import (
    JOURNAL_CONTENT_TYPE,
    JournalRecord,
    decode_piece,
    drop_duplicates,
    encode_piece,
    fold,
    parse_piece_name,
    piece_name,
    present_items,
    record_of_stream,
)
from dynamo_backups.core.keys import object_name
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.installer.samples import CONSOLE_SAMPLE_CLASSIC
from dynamo_backups.pipeline.journal_applier import JournalApplier
from tests import faultproxy
from tests.helpers import ONCE, create_table, expected_name, lambda_records, scan_all
from tests.test_handler import FakeContext, writer_via

pytestmark = pytest.mark.servers

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["fast", "botocore"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def journal_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: Any, bucket: str, prefix: str) -> str:
    """The handler's environment for a function installed with --layout journal."""
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    return prefix


def journal_folder(prefix: str, table: str) -> str:
    return f"{prefix}/{table}/journal/"


def journal_versions(s3: Any, bucket: str, prefix: str, table: str) -> list[dict[str, Any]]:
    """Every version under the table's journal folder (a retried put must not add one)."""
    answer = s3.list_object_versions(Bucket=bucket, Prefix=journal_folder(prefix, table))
    assert not answer.get("DeleteMarkers")
    return answer.get("Versions", [])


def read_journal(s3: Any, bucket: str, prefix: str, table: str) -> dict[str, list[JournalRecord]]:
    """Each journal object's records, by name under journal/, read as any reader would."""
    folder = journal_folder(prefix, table)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder).get("Contents", [])
    pieces = {}
    for entry in listed:
        got = s3.get_object(Bucket=bucket, Key=entry["Key"])
        assert got["ContentType"] == JOURNAL_CONTENT_TYPE
        name = entry["Key"][len(folder) :]
        parse_piece_name(name)  # every object is named as the layout defines
        pieces[name] = decode_piece(got["Body"].read(), entry["Key"])
    return pieces


def item_objects(s3: Any, bucket: str, prefix: str, table: str) -> list[str]:
    answer = s3.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/{table}/", Delimiter="/")
    return [entry["Key"] for entry in answer.get("Versions", []) + answer.get("DeleteMarkers", [])]


def table_state(dynamodb: Any, table: str) -> dict[str, Any]:
    return {expected_name({"pk": item["pk"]}): item for item in scan_all(dynamodb, table).values()}


def journal_state(pieces: dict[str, list[JournalRecord]]) -> dict[str, Any]:
    records = [record for piece in pieces.values() for record in piece]
    return present_items(fold({}, records, FAR_FUTURE))


def journal_manifest(s3: Any, bucket: str, prefix: str, table: str, layout: str | None) -> None:
    """What deploy (or stream) records in the folder before the first batch."""
    ensure_manifest(
        BackupWriter(s3, bucket),
        TableLayout.of(prefix, table),
        [{"AttributeName": "pk", "KeyType": "HASH"}],
        {"pk": "S"},
        layout,
    )


def some_changes(dynamodb: Any, table: str) -> None:
    """a inserted and modified, b inserted and removed, c with every kind of value."""
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2.50"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "b"}})
    dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "c"},
            "n": {"N": "12345678901234567890123456789012345678"},
            "bin": {"B": bytes(range(256))},
            "ns": {"NS": ["1", "0.1"]},
            "m": {"M": {"l": {"L": [{"NULL": True}, {"BOOL": False}]}}},
        },
    )


def run_handler(records: list[dict[str, Any]], context: Any = None) -> dict[str, Any]:
    return handler.backup({"Records": records}, context or FakeContext())


# --- the handler ---------------------------------------------------------------------------


def test_the_handler_writes_a_batch_as_one_journal_object(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "journal")
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)

    assert run_handler(records) == {"batchItemFailures": []}

    pieces = read_journal(s3, bucket, journal_env, table)
    assert len(pieces) == 1  # the batch is within one hour (DynamoDB Local dates by minute)
    ((name, written),) = pieces.items()
    assert written == [record_of_stream(record, index) for index, record in enumerate(records)]
    assert name == piece_name(written)
    assert [record.event_name for record in written] == [r["eventName"] for r in records]
    assert [record.event_id for record in written] == [raw["eventID"] for raw in records]
    assert journal_state(pieces) == table_state(dynamodb, table)  # numbers, binary, sets exact
    assert item_objects(s3, bucket, journal_env, table) == []  # no item object besides


def test_a_retried_identical_batch_makes_no_second_object(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "journal")
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    assert run_handler(records) == {"batchItemFailures": []}
    (first,) = journal_versions(s3, bucket, journal_env, table)

    # Lambda delivers the same batch again (its answer was lost, the invocation timed out).
    assert run_handler(copy.deepcopy(records)) == {"batchItemFailures": []}

    (again,) = journal_versions(s3, bucket, journal_env, table)
    assert (again["Key"], again["VersionId"]) == (first["Key"], first["VersionId"])


def test_a_bisected_redelivery_makes_another_object_whose_copies_readers_drop(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "journal")
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    assert len(records) == 5
    assert run_handler(records) == {"batchItemFailures": []}

    # Bisect-on-error: the batch again as halves, with other boundaries than the first time.
    assert run_handler(records[:2]) == {"batchItemFailures": []}
    assert run_handler(records[2:]) == {"batchItemFailures": []}

    pieces = read_journal(s3, bucket, journal_env, table)
    assert len(pieces) == 3
    everything = [record for piece in pieces.values() for record in piece]
    unique = drop_duplicates(everything)
    assert (len(unique.records), unique.duplicates) == (5, 5)
    assert journal_state(pieces) == table_state(dynamodb, table)


def test_a_folder_without_layout_json_is_recorded_as_the_functions_layout(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    """A function installed from the template (no deploy to write layout.json) records its
    layout in the folder, so that readers open it without being told."""
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)

    assert run_handler(records) == {"batchItemFailures": []}

    manifest = read_manifest(s3, bucket, TableLayout.of(journal_env, table))
    assert manifest is not None and manifest["layout"] == "journal"
    assert len(read_journal(s3, bucket, journal_env, table)) == 1


def test_the_handler_writes_each_folder_in_its_recorded_layout(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    seaweedfs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No BACKUP_LAYOUT: the folder's layout.json decides (and absent, the item layout)."""
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    journal_table, item_table = create_table(dynamodb), create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, journal_table, "journal")
    for table in (journal_table, item_table):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})

    for table in (journal_table, item_table):
        assert run_handler(lambda_records(dynamodb, streams, table)) == {"batchItemFailures": []}

    assert len(read_journal(s3, bucket, prefix, journal_table)) == 1
    assert item_objects(s3, bucket, prefix, journal_table) == []
    assert read_journal(s3, bucket, prefix, item_table) == {}
    assert item_objects(s3, bucket, prefix, item_table) == [
        f"{prefix}/{item_table}/{expected_name({'pk': {'S': 'a'}})}"
    ]


def test_a_journal_function_refuses_an_item_folder(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "items")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)

    response = run_handler(records)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert read_journal(s3, bucket, journal_env, table) == {}
    assert item_objects(s3, bucket, journal_env, table) == []


# --- the applier ---------------------------------------------------------------------------


def in_next_hour(record: dict[str, Any]) -> dict[str, Any]:
    """A record as if made an hour later (DynamoDB Local's changes all fall in one hour)."""
    moved = copy.deepcopy(record)
    moved["dynamodb"]["ApproximateCreationDateTime"] += 3600
    return moved


def test_a_batch_across_an_hour_is_two_objects_and_a_failure_reports_its_earliest_record(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    table = create_table(dynamodb)
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    records = records[:2] + [in_next_hour(record) for record in records[2:]]
    later_hour = piece_name([record_of_stream(records[2], 2)]).rsplit("/", 1)[0]

    def rule(request: faultproxy.Request) -> str:
        failing = request.method == "PUT" and f"/journal/{later_hour}" in request.path
        return faultproxy.INTERNAL_ERROR if failing else faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        writer = writer_via(proxy.endpoint, bucket, transport, RetryPolicy(3, 0.01, 0.02))
        result = JournalApplier(writer, prefix).apply(records)

    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[2]["dynamodb"]["SequenceNumber"]}]
    }
    assert result.first_failure is not None and result.first_failure.retryable
    assert "gave up after 3 attempts" in result.first_failure.reason
    assert result.applied_count == 2
    (written,) = read_journal(s3, bucket, prefix, table).values()
    assert [record.sequence_number for record in written] == [
        record["dynamodb"]["SequenceNumber"] for record in records[:2]
    ]

    # Lambda resends from the failed record once S3 answers: the rest lands, nothing lost.
    retry = JournalApplier(BackupWriter(s3, bucket), prefix).apply(records[2:])
    assert retry.failures == [] and retry.applied_count == 3
    pieces = read_journal(s3, bucket, prefix, table)
    assert len(pieces) == 2
    assert journal_state(pieces) == table_state(dynamodb, table)


def test_a_refused_put_over_other_records_is_an_error_not_a_skip(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    table = create_table(dynamodb)
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    ours = [record_of_stream(record, index) for index, record in enumerate(records)]
    # The object the batch is named for already holds the same changes with another image.
    forged = [
        replace(record, image={"pk": {"S": "x"}}) if record.image else record for record in ours
    ]
    key = journal_folder(prefix, table) + piece_name(ours)
    s3.put_object(Bucket=bucket, Key=key, Body=encode_piece(forged))

    result = JournalApplier(writer_via(s3.meta.endpoint_url, bucket, transport), prefix).apply(
        records
    )

    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert result.first_failure is not None and not result.first_failure.retryable
    assert "two different copies" in result.first_failure.reason
    assert len(journal_versions(s3, bucket, prefix, table)) == 1  # the forged one, untouched


def test_a_put_stored_but_answered_with_an_error_is_retried_into_the_check(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """S3 stored the piece but the answer was a 500 (or never came): the retry is refused
    with 412, the object is read back, found to be this batch, and counted as written."""
    table = create_table(dynamodb)
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    ours = [record_of_stream(record, index) for index, record in enumerate(records)]
    key = journal_folder(prefix, table) + piece_name(ours)
    seen: list[str] = []

    def rule(request: faultproxy.Request) -> str:
        if request.method == "PUT" and "/journal/" in request.path:
            seen.append(request.headers.get("if-none-match", ""))
            if len(seen) == 1:
                s3.put_object(Bucket=bucket, Key=key, Body=encode_piece(ours))
                return faultproxy.INTERNAL_ERROR
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        writer = writer_via(proxy.endpoint, bucket, transport, RetryPolicy(5, 0.01, 0.02))
        result = JournalApplier(writer, prefix).apply(records)

    assert result.failures == [] and result.applied_count == len(records)
    assert seen == ["*", "*"]  # both attempts conditional
    (version,) = journal_versions(s3, bucket, prefix, table)
    assert version["Key"] == key


def test_writers_racing_on_one_batch_make_one_object(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, transport: str
) -> None:
    """Two writers of one stream (a Lambda trigger and stream --allow-second-writer, or a
    retry overlapping a slow first attempt) put the same piece at once."""
    table = create_table(dynamodb)
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    writers = [
        JournalApplier(writer_via(s3.meta.endpoint_url, bucket, transport), prefix)
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(writers))

    def write(applier: JournalApplier) -> Any:
        barrier.wait()
        return applier.apply(copy.deepcopy(records))

    with ThreadPoolExecutor(len(writers)) as pool:
        results = list(pool.map(write, writers))

    assert [result.failures for result in results] == [[]] * len(writers)
    assert len(journal_versions(s3, bucket, prefix, table)) == 1
    pieces = read_journal(s3, bucket, prefix, table)
    assert journal_state(pieces) == table_state(dynamodb, table)


def test_the_deadline_leaves_the_batch_for_the_retry(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> None:
    table = create_table(dynamodb)
    journal_manifest(s3, bucket, journal_env, table, "journal")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "late"}})
    records = lambda_records(dynamodb, streams, table)
    response = run_handler(records, FakeContext(remaining_ms=0))
    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert read_journal(s3, bucket, journal_env, table) == {}


def test_an_invalid_record_is_reported_and_the_records_before_it_written(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    some_changes(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)
    del records[3]["dynamodb"]["Keys"]
    result = JournalApplier(BackupWriter(s3, bucket), prefix).apply(records)
    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[3]["dynamodb"]["SequenceNumber"]}]
    }
    assert not result.first_failure.retryable
    (written,) = read_journal(s3, bucket, prefix, table).values()
    assert len(written) == 3


def test_a_record_without_its_change_time_is_refused_not_dated_by_arrival(
    s3: Any, bucket: str, prefix: str
) -> None:
    """The console's classic sample has no ApproximateCreationDateTime: the item layout dates
    it by arrival; a journal object named by arrival would differ on every resend."""
    records = CONSOLE_SAMPLE_CLASSIC["Records"]
    result = JournalApplier(BackupWriter(s3, bucket), prefix).apply(records)
    assert result.lambda_response() == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert result.first_failure is not None and not result.first_failure.retryable
    assert "ApproximateCreationDateTime" in result.first_failure.reason
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents") is None


# --- layout.json and the stream command -----------------------------------------------------


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments))


def test_stream_with_layout_journal_writes_the_journal_and_records_the_layout(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, aws_env: dict[str, str]
) -> None:
    table = create_table(dynamodb)
    some_changes(dynamodb, table)

    result = invoke(
        "stream", table, "--bucket", bucket, "--prefix", prefix, "--layout", "journal", *ONCE
    )
    assert result.exit_code == 0, result.output

    manifest = read_manifest(s3, bucket, TableLayout.of(prefix, table))
    assert manifest is not None and manifest["layout"] == "journal"
    pieces = read_journal(s3, bucket, prefix, table)
    assert journal_state(pieces) == table_state(dynamodb, table)
    assert item_objects(s3, bucket, prefix, table) == []

    # Later runs need not be told: the folder's layout.json says journal.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "d"}})
    again = invoke("stream", table, "--bucket", bucket, "--prefix", prefix, *ONCE)
    assert again.exit_code == 0, again.output
    assert item_objects(s3, bucket, prefix, table) == []
    assert journal_state(read_journal(s3, bucket, prefix, table)) == table_state(dynamodb, table)


def test_stream_refuses_a_layout_that_contradicts_the_folder(
    dynamodb: Any, s3: Any, bucket: str, prefix: str, aws_env: dict[str, str]
) -> None:
    items, journal = create_table(dynamodb), create_table(dynamodb)
    journal_manifest(s3, bucket, prefix, items, "items")
    journal_manifest(s3, bucket, prefix, journal, "journal")
    for table in (items, journal):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})

    told_journal = invoke(
        "stream", items, "--bucket", bucket, "--prefix", prefix, "--layout", "journal", *ONCE
    )
    told_items = invoke(
        "stream", journal, "--bucket", bucket, "--prefix", prefix, "--layout", "items", *ONCE
    )

    assert told_journal.exit_code == 2, told_journal.output
    assert "holds a backup in the items layout" in told_journal.output
    assert "pass --layout items" in told_journal.output
    assert told_items.exit_code == 2, told_items.output
    assert "holds a backup in the journal layout" in told_items.output
    assert "Traceback" not in told_journal.output + told_items.output
    for table in (items, journal):
        assert item_objects(s3, bucket, prefix, table) == []
        assert read_journal(s3, bucket, prefix, table) == {}


def test_a_folder_of_item_objects_without_layout_json_is_not_claimed_for_the_journal(
    s3: Any, bucket: str, prefix: str
) -> None:
    """Written before manifests (or by the replicator this tool descends from)."""
    s3.put_object(Bucket=bucket, Key=f"{prefix}/Users/{object_name({'pk': {'S': 'a'}})}")
    with pytest.raises(ValueError, match="holds a backup in the items layout"):
        journal_manifest(s3, bucket, prefix, "Users", "journal")
    assert read_manifest(s3, bucket, TableLayout.of(prefix, "Users")) is None


def test_item_folders_manifests_are_unchanged(s3: Any, bucket: str, prefix: str) -> None:
    journal_manifest(s3, bucket, prefix, "Users", None)
    manifest = read_manifest(s3, bucket, TableLayout.of(prefix, "Users"))
    assert manifest is not None and "layout" not in manifest
