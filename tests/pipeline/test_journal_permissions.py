"""The journal function with the role deploy and the template give it: s3:GetObject on its
folder's layout.json and journal objects, and no s3:ListBucket. Real S3 then answers the read
of a layout.json that does not exist with 403 AccessDenied, not 404 (a role that may not list
is not told whether a key exists); the fault proxy gives that answer in front of SeaweedFS."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_backups.backup.manifest import read_manifest
from dynamo_backups.core.layout import TableLayout
from tests import faultproxy
from tests.helpers import create_table, lambda_records
from tests.pipeline.test_journal_writes import (
    item_objects,
    journal_manifest,
    read_journal,
    run_handler,
)

pytestmark = pytest.mark.servers

ACCESS_DENIED = faultproxy.Answer(
    403,
    {"Content-Type": "application/xml"},
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
)


def denying_reads_of(manifest_key: str) -> faultproxy.Rule:
    """A GET (or HEAD) of the layout.json is refused, as for a role that may not list."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        if request.method in ("GET", "HEAD") and request.path.split("?")[0].endswith(
            "/" + manifest_key
        ):
            return ACCESS_DENIED
        return faultproxy.FORWARD

    return rule


def handler_env(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str, prefix: str, layout: str
) -> None:
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("BACKUP_LAYOUT", layout)
    monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)


def test_a_journal_function_denied_a_missing_layout_json_records_it_and_writes(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    seaweedfs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Installed from the template (no deploy wrote layout.json): the 403 of the missing
    document is not taken as a refusal; the If-None-Match put of layout.json succeeds, which
    proves there was none, and the batch is written as a journal object."""
    table = create_table(dynamodb)
    folder = TableLayout.of(prefix, table)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)

    with faultproxy.FaultProxy(seaweedfs.endpoint, denying_reads_of(folder.manifest_key)) as proxy:
        handler_env(monkeypatch, proxy.endpoint, bucket, prefix, "journal")
        assert run_handler(records) == {"batchItemFailures": []}
        denied = [request for request in proxy.log.requests if request.method == "GET"]
        assert denied and all(request.path.endswith(folder.manifest_key) for request in denied)

    manifest = read_manifest(s3, bucket, folder)
    assert manifest is not None and manifest["layout"] == "journal"
    assert len(read_journal(s3, bucket, prefix, table)) == 1


def test_a_journal_function_denied_an_existing_layout_json_writes_nothing(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    seaweedfs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A layout.json it cannot read (a role without the read, a KMS key it may not use) may
    record the item layout: the put is refused with 412, and the batch fails (reported, for
    Lambda to retry and the alarms to show), with nothing written."""
    table = create_table(dynamodb)
    folder = TableLayout.of(prefix, table)
    journal_manifest(s3, bucket, prefix, table, "items")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    records = lambda_records(dynamodb, streams, table)

    with faultproxy.FaultProxy(seaweedfs.endpoint, denying_reads_of(folder.manifest_key)) as proxy:
        handler_env(monkeypatch, proxy.endpoint, bucket, prefix, "journal")
        response = run_handler(records)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    }
    assert "layout" not in (read_manifest(s3, bucket, folder) or {})
    assert read_journal(s3, bucket, prefix, table) == {}
    assert item_objects(s3, bucket, prefix, table) == []
