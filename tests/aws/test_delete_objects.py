"""DeleteObjects (the fast transport's delete) answers 200 and reports a key it could not
delete in an <Error> of its own: that key's code is classified like any other answer. A
permanent one (AccessDenied) fails at once, naming the key; a transient one (InternalError,
SlowDown) is retried. The answers are S3's, given by the fault proxy in front of SeaweedFS
(which does not apply a bucket policy to DeleteObjects, only to DeleteObject)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups import handler
from dynamo_backups.aws.errors import ClientError, error_code, is_transient
from dynamo_backups.aws.fast_objects import FastObjects, translate_error
from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import VersionMetadata
from tests import faultproxy, servers
from tests.helpers import create_table, history, lambda_records, object_key
from tests.servers import make_client

CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


def key_error_answer(key: str, code: str, message: str) -> faultproxy.Answer:
    """S3's answer to a DeleteObjects of ``key`` that it refused for that key alone."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult '
        'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error>'
        f"<Key>{key}</Key><Code>{code}</Code><Message>{message}</Message>"
        "</Error></DeleteResult>"
    ).encode()
    return faultproxy.Answer(200, {"Content-Type": "application/xml"}, body)


class KeyErrors:
    """A fault-proxy rule: the first answers to DeleteObjects are per-key errors, in order
    (the last one repeated for ever with ``forever``), then requests go through."""

    def __init__(self, key: str, errors: list[tuple[str, str]], forever: bool = False) -> None:
        self.key, self.errors, self.forever = key, list(errors), forever
        self.deletes = 0
        self._lock = threading.Lock()

    def __call__(self, request: faultproxy.Request) -> str | faultproxy.Answer:
        if not (request.method == "POST" and request.path.endswith("?delete")):
            return faultproxy.FORWARD
        with self._lock:
            self.deletes += 1
            if self.errors:
                code, message = self.errors[0] if self.forever else self.errors.pop(0)
                return key_error_answer(self.key, code, message)
        return faultproxy.FORWARD


def fast_writer(endpoint: str, bucket: str, attempts: int = 5) -> BackupWriter:
    client = make_client("s3", endpoint, retries={"total_max_attempts": 1})
    objects = FastObjects(client, bucket, CREDENTIALS)
    policy = RetryPolicy(max_attempts=attempts, base_delay=0.01)
    return BackupWriter(client, bucket, policy, objects)


METADATA = VersionMetadata(
    writer="stream",
    event_name="REMOVE",
    change_time=datetime(2026, 12, 1, tzinfo=UTC),
    sequence_number="000000000000000000001",
)


# What obstore 0.12 raises for a key DeleteObjects reported in an <Error> (seen on the wire
# below): a one-line message, then object_store's error in Rust's Debug form.
OBSTORE_KEY_ERROR = (
    "Generic S3 error: DeleteObjects request failed for key {key}: {message} (code: {code})"
    '\n\nDebug source:\nGeneric {{\n    store: "S3",\n    source: DeleteFailed {{\n'
    '        path: "{quoted}",\n        code: "{code}",\n        message: "{message}",\n'
    "    }},\n}}"
)


@pytest.mark.parametrize("debug_form", [True, False])
def test_a_key_error_is_read_from_obstores_message(debug_form: bool) -> None:
    key = 'Prod/odd "name"'
    text = OBSTORE_KEY_ERROR.format(
        key=key, quoted=key.replace('"', '\\"'), code="SlowDown", message="Reduce your rate"
    )
    if not debug_form:
        text = text.split("\n", 1)[0]
    error = translate_error(Exception(text), "DeleteObject", f"s3://b/{key}")
    assert isinstance(error, ClientError)
    assert error_code(error) == "SlowDown" and is_transient(error)
    assert error.response["Error"]["Key"] == key
    assert str(error).endswith(f"Reduce your rate (key {key})")


@pytest.mark.servers
def test_a_key_denied_in_a_delete_objects_answer_fails_at_once_naming_the_key(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    key = f"{prefix}/Users/0cc175b9c0f1b6a831c399e269772661"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    denied = KeyErrors(key, [("AccessDenied", "Access Denied")], forever=True)
    with faultproxy.FaultProxy(seaweedfs.endpoint, denied) as proxy:
        writer = fast_writer(proxy.endpoint, bucket, attempts=5)
        with pytest.raises(ClientError) as refused:
            writer.remove_item(key, METADATA)
    assert error_code(refused.value) == "AccessDenied"
    assert not is_transient(refused.value)
    assert key in str(refused.value)
    assert denied.deletes == 1  # permanent: not retried
    # The tombstone went in; no delete marker on it.
    assert [entry["kind"] for entry in history(s3, bucket, key)] == ["version", "version"]


@pytest.mark.servers
@pytest.mark.parametrize("code", ["InternalError", "SlowDown"])
def test_a_transient_key_error_in_a_delete_objects_answer_is_retried(
    code: str, seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    key = f"{prefix}/Users/92eb5ffee6ae2fec3ad71c777531578f"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    flaky = KeyErrors(key, [(code, "We encountered an internal error. Please try again.")] * 3)
    with faultproxy.FaultProxy(seaweedfs.endpoint, flaky) as proxy:
        fast_writer(proxy.endpoint, bucket, attempts=5).remove_item(key, METADATA)
    assert flaky.deletes == 4
    assert [entry["kind"] for entry in history(s3, bucket, key)] == [
        "delete-marker",
        "version",
        "version",
    ]


@pytest.mark.servers
def test_the_handler_reports_a_removal_denied_per_key_without_retrying_it(
    dynamodb: Any,
    streams: Any,
    seaweedfs: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = create_table(dynamodb)
    item_key = {"pk": {"S": "gone"}}
    dynamodb.put_item(TableName=table, Item=item_key)
    dynamodb.delete_item(TableName=table, Key=item_key)
    insert, remove = lambda_records(dynamodb, streams, table)
    name = object_key(prefix, table, item_key)
    denied = KeyErrors(name, [("AccessDenied", "Access Denied")], forever=True)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 120_000

    with faultproxy.FaultProxy(seaweedfs.endpoint, denied) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        monkeypatch.setenv("BACKUP_BUCKET", bucket)
        monkeypatch.setenv("BACKUP_PREFIX", prefix)
        monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "6")
        answer = handler.backup({"Records": [insert, remove]}, Context())
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": remove["dynamodb"]["SequenceNumber"]}]
    }
    assert denied.deletes == 1
    assert f"{name}: AccessDenied: Access Denied (key {name})" in caplog.text
