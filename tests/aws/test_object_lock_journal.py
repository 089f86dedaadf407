"""The journal layout's writes into an Object Lock bucket with a default retention (moto
enforces S3's rule: a put without Content-MD5 or a checksum is refused): the handler's
conditional puts, a retried batch's refused put and read back, and ``stream --layout
journal``. Fixtures are test_object_lock's."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_backups import handler
from dynamo_backups.core.journal import decode_piece, drop_duplicates
from tests.aws.test_object_lock import (  # noqa: F401 - fixtures
    change_three_items,
    invoke,
    locked_bucket,
    locked_env,
    moto_s3,
)
from tests.helpers import ONCE, create_table, lambda_records

pytestmark = pytest.mark.servers


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def journal_objects(s3: Any, bucket: str, prefix: str, table: str) -> list[list[Any]]:
    """Each journal version's records; every version under the default retention."""
    folder = f"{prefix}/{table}/journal/"
    answer = s3.list_object_versions(Bucket=bucket, Prefix=folder)
    pieces = []
    for version in answer.get("Versions", []):
        got = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        assert got["ObjectLockMode"] == "GOVERNANCE"
        pieces.append(decode_piece(got["Body"].read(), version["Key"]))
    return pieces


def test_the_handler_writes_journal_objects_into_an_object_lock_bucket(
    dynamodb: Any,
    streams: Any,
    moto_s3: Any,  # noqa: F811
    locked_bucket: str,  # noqa: F811
    prefix: str,
    locked_env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_BUCKET", locked_bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", "journal")
    monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "2")
    table = create_table(dynamodb)
    change_three_items(dynamodb, table)
    records = lambda_records(dynamodb, streams, table)

    assert handler.backup({"Records": records}, Context()) == {"batchItemFailures": []}
    # The same batch again: the conditional put is refused, the object read and found equal.
    assert handler.backup({"Records": records}, Context()) == {"batchItemFailures": []}

    (piece,) = journal_objects(moto_s3, locked_bucket, prefix, table)
    assert [record.sequence_number for record in piece] == [
        record["dynamodb"]["SequenceNumber"] for record in records
    ]
    assert drop_duplicates(piece).duplicates == 0


def test_stream_writes_the_journal_into_an_object_lock_bucket(
    dynamodb: Any,
    moto_s3: Any,  # noqa: F811
    locked_bucket: str,  # noqa: F811
    prefix: str,
    locked_env: None,  # noqa: F811
) -> None:
    table = create_table(dynamodb)
    change_three_items(dynamodb, table)
    result = invoke(
        "stream", table, "--bucket", locked_bucket, "--prefix", prefix, "--layout", "journal",
        *ONCE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pieces = journal_objects(moto_s3, locked_bucket, prefix, table)
    assert sum(len(piece) for piece in pieces) == 5
