"""Point in time, property-based: random puts, updates and deletes go through the handler
with controlled change times, delivered late (every write reaches S3 well after its change),
in batches split at random, then some of them delivered again in any order (a retry, a replay,
a second writer: older changes written above newer ones). Restoring (latest, and at random
moments) must equal an in-memory model of the table at that moment, in the stream's order."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import normalize_number
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.history import item_history
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.helpers import restore_job, scan_all

pytestmark = pytest.mark.servers

TABLE = "Ledger"
ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-01-01T00:00:00.000"
KEYS = ["alice", "bob", "carol"]

operation = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from(["put", "put", "delete"]),
    st.integers(min_value=0, max_value=3),  # seconds since the previous change (ties allowed)
)


def build_history(operations: list[tuple[str, str, int]], start: int) -> list[dict[str, Any]]:
    """Stream records for the operations that make sense (no delete of an absent item)."""
    present: dict[str, int] = {}
    records, moment = [], start
    for number, (key, kind, gap) in enumerate(operations):
        moment += gap
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": moment,
            "Keys": {"pk": {"S": key}},
            "SequenceNumber": f"{number + 1:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if kind == "delete":
            if key not in present:
                continue
            del present[key]
            event = "REMOVE"
        else:
            event = "MODIFY" if key in present else "INSERT"
            present[key] = number
            body["NewImage"] = {
                "pk": {"S": key},
                "version": {"N": str(number)},
                "amount": {"N": normalize_number(f"-{number}.{number:035d}7")},
            }
        records.append({"eventName": event, "eventSourceARN": ARN, "dynamodb": body})
    return records


def model_at(records: list[dict[str, Any]], moment: int) -> dict[str, dict[str, Any]]:
    """The table at ``moment``: every change up to it applied, in stream order."""
    table: dict[str, dict[str, Any]] = {}
    for record in records:
        body = record["dynamodb"]
        if body["ApproximateCreationDateTime"] > moment:
            break  # change times never decrease along the stream
        key = body["Keys"]["pk"]["S"]
        if record["eventName"] == "REMOVE":
            table.pop(key, None)
        else:
            table[key] = body["NewImage"]
    return {f'{{"pk": {{"S": "{key}"}}}}': item for key, item in table.items()}


# Examples in scripts/test's run (each restores several times); raise for a longer run.
EXAMPLES = int(os.environ.get("DYNAMO_BACKUPS_PITR_EXAMPLES", "15"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=14), data=st.data())
def test_restore_at_any_moment_equals_the_model(
    dynamodb_local: Any,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    operations: list[tuple[str, str, int]],
    data: st.DataObject,
) -> None:
    prefix = f"pitr-{uuid.uuid4().hex[:10]}"
    # Changes happened between two and one minutes ago; they reach S3 only now (late).
    start = int(time.time()) - 120
    records = build_history(operations, start)
    if not records:
        return
    applier = BackupApplier(BackupWriter(s3, bucket), prefix)
    split = data.draw(st.integers(min_value=0, max_value=len(records)), label="batch split")
    for batch in (records[:split], records[split:]):
        if batch:
            assert applier.apply(batch).failures == []
    again = data.draw(
        st.lists(st.sampled_from(records), max_size=4), label="records delivered again, late"
    )
    for copy in again:  # one batch each: their order on top is the drawn one
        assert applier.apply([copy]).failures == []

    end = records[-1]["dynamodb"]["ApproximateCreationDateTime"]
    offsets = data.draw(
        st.lists(st.integers(0, end - start), min_size=1, max_size=2),
        label="moments, in seconds after the first change",
    )
    moments = sorted(
        {
            start - 1,
            end,
            int(time.time()) + 3600,  # the last is past the skew
            *(start + offset for offset in offsets),
        }
    )
    for moment in [*moments, None]:  # None: the latest
        target = unique_table_name("pitr")
        job = restore_job(
            dynamodb_local.endpoint,
            s3,
            bucket,
            f"{prefix}/{TABLE}",
            target,
            at=datetime.fromtimestamp(moment, UTC) if moment is not None else None,
            key_schema="pk:S",
        )
        report = job.run()
        assert report.complete
        expected = model_at(records, moment if moment is not None else end)
        where = f"at {moment - start} s" if moment is not None else "latest"
        assert scan_all(dynamodb, target) == expected, f"{where}, copies again: {again}"
    assert_history_in_stream_order(s3, bucket, prefix, records)


def assert_history_in_stream_order(
    s3: Any, bucket: str, prefix: str, records: list[dict[str, Any]]
) -> None:
    """``history`` lists each change once (copies marked), newest change first."""
    layout = TableLayout.of(prefix, TABLE)
    events = {"INSERT": "insert", "MODIFY": "modify", "REMOVE": "delete"}
    for key in KEYS:
        changes = [
            (events[record["eventName"]], record["dynamodb"]["SequenceNumber"])
            for record in records
            if record["dynamodb"]["Keys"]["pk"]["S"] == key
        ]
        _, entries = item_history(BotocoreObjects(s3, bucket), bucket, layout, {"pk": {"S": key}})
        shown = [
            (entry.event, entry.sequence_number)
            for entry in entries
            if entry.event != "delete-marker" and entry.duplicate_of is None
        ]
        assert shown == changes[::-1], key


def test_late_delivered_deletion_is_dated_by_its_change_time(
    dynamodb_local: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """An outage: a row deleted 3 hours ago reaches the backup only now."""
    now = int(time.time())
    records = build_history([("alice", "put", 0), ("alice", "delete", 0)], now - 4 * 3600)
    records[1]["dynamodb"]["ApproximateCreationDateTime"] = now - 3 * 3600
    BackupApplier(BackupWriter(s3, bucket), prefix).apply(records[:1])
    BackupApplier(BackupWriter(s3, bucket), prefix).apply(records[1:])

    def restored(at: datetime) -> dict[str, Any]:
        target = unique_table_name("outage")
        restore_job(
            dynamodb_local.endpoint,
            s3,
            bucket,
            f"{prefix}/{TABLE}",
            target,
            at=at,
            key_schema="pk:S",
        ).run()
        return scan_all(dynamodb, target)

    moment = datetime.fromtimestamp(now, UTC)
    assert list(restored(moment - timedelta(hours=3, minutes=30))) == ['{"pk": {"S": "alice"}}']
    assert restored(moment - timedelta(hours=2)) == {}  # S3 got the delete only now
    assert restored(moment - timedelta(hours=5)) == {}
