"""A run's record is closed (finished, refused) only over the version its closer read: a run
that begins between that read and the write keeps its record. Before, the closer's plain put
replaced it, the new run's own finish was then skipped ("another run has started since"), and
a later --resume began afresh instead of continuing the run that had done the work (found by
a hostile review, with this reproduction). Against SeaweedFS, the new run begun from inside
the closer's read."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dynamo_backups.aws.errors import ClientError
from dynamo_backups.backup import ledger as ledger_module
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout

pytestmark = pytest.mark.servers

PARAMETERS = {"source": "s3://bucket/backups/Users", "at": None}
JOB = "restore-into-Users"


def record(s3: Any, bucket: str, ledger: JobLedger) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=ledger.run_key)["Body"].read())


def a_run_begins_during_the_read(
    monkeypatch: pytest.MonkeyPatch, make_ledger: Callable[[], JobLedger]
) -> list[JobRun]:
    """The next read of a run record lets another run (another operator's restore) begin
    after the read and before the write that follows it."""
    real_read = ledger_module.read_document_and_etag
    begun: list[JobRun] = []

    def read_then_another_begins(*arguments: Any, **options: Any) -> Any:
        found = real_read(*arguments, **options)
        if not begun:
            begun.append(make_ledger().begin(PARAMETERS, resume=False, required=False))
        return found

    monkeypatch.setattr(ledger_module, "read_document_and_etag", read_then_another_begins)
    return begun


@pytest.mark.parametrize("close", ["refuse", "finish"])
def test_closing_a_run_keeps_the_record_of_a_run_begun_meanwhile(
    close: str, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = TableLayout.from_folder(f"{prefix}/Users")

    def make_ledger() -> JobLedger:
        return JobLedger(BackupWriter(s3, bucket), layout, JOB)

    first = make_ledger().begin(PARAMETERS, resume=True, required=False)
    begun = a_run_begins_during_the_read(monkeypatch, make_ledger)
    if close == "refuse":
        make_ledger().refuse(first, "table Users already has items")
    else:
        make_ledger().finish(first, True, {"written": 0})
    (second,) = begun
    assert record(s3, bucket, make_ledger())["run_id"] == second.run_id
    make_ledger().finish(second, False, {"written": 5})  # interrupted: to be resumed
    assert record(s3, bucket, make_ledger())["run_id"] == second.run_id
    resumed = make_ledger().begin(PARAMETERS, resume=True, required=False)
    assert resumed.resumed and resumed.run_id == second.run_id


def refused(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")


def ledger_and_run(s3: Any, bucket: str, prefix: str) -> tuple[JobLedger, JobRun]:
    ledger = JobLedger(BackupWriter(s3, bucket), TableLayout.from_folder(f"{prefix}/Users"), JOB)
    return ledger, ledger.begin(PARAMETERS, resume=False, required=False)


def test_a_close_whose_write_landed_unanswered_is_not_taken_for_a_change(
    s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that lands while its answer is lost (a 5xx, a reset) is sent again, and its
    If-Match then fails on the version it wrote itself: read again, the record is the one
    sent, and the close is done. Taken for another writer's change, five such answers in a
    row ended the job with "kept changing" (a hostile review's reproduction)."""
    ledger, run = ledger_and_run(s3, bucket, prefix)
    real_put = BackupWriter.put_document
    conditional: list[str] = []

    def lands_then_refused(writer: BackupWriter, key: str, document: Any, **options: Any) -> None:
        real_put(writer, key, document, **options)
        if options.get("if_match"):
            conditional.append(options["if_match"])
            raise refused("PreconditionFailed")  # the retry's answer, over its own write

    monkeypatch.setattr(BackupWriter, "put_document", lands_then_refused)
    ledger.finish(run, True, {"written": 3})
    closed = record(s3, bucket, ledger)
    assert closed["state"] == "complete" and closed["run_id"] == run.run_id, closed
    assert len(conditional) == 1, conditional


def test_a_record_deleted_before_the_close_is_written_is_left_deleted(
    s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers a conditional put over a deleted key (a delete marker) 404 NoSuchKey,
    where SeaweedFS answers 412: read again, there is no record to close, as when it was
    deleted before the read. The 404 ended the job (exit 1, no report) before."""
    ledger, run = ledger_and_run(s3, bucket, prefix)
    real_put = BackupWriter.put_document

    def deleted_meanwhile(writer: BackupWriter, key: str, document: Any, **options: Any) -> None:
        if options.get("if_match"):
            s3.delete_object(Bucket=bucket, Key=key)  # a lifecycle rule, an operator
            raise refused("NoSuchKey")
        real_put(writer, key, document, **options)

    monkeypatch.setattr(BackupWriter, "put_document", deleted_meanwhile)
    ledger.finish(run, True, {"written": 3})
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key=ledger.run_key)


def test_a_store_that_refuses_its_own_etag_is_written_unconditionally(
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store whose If-Match never matches the ETag its GET gave would leave every run
    "running" (and a later --resume would take over a finished run): the record is read
    again, unchanged, and written as before conditions, with a warning."""
    ledger, run = ledger_and_run(s3, bucket, prefix)
    real_put = BackupWriter.put_document

    def refuses_conditions(writer: BackupWriter, key: str, document: Any, **options: Any) -> None:
        if options.get("if_match"):
            raise refused("PreconditionFailed")
        real_put(writer, key, document, **options)

    monkeypatch.setattr(BackupWriter, "put_document", refuses_conditions)
    ledger.finish(run, True, {"written": 3})
    assert record(s3, bucket, ledger)["state"] == "complete"
    assert "writing it unconditionally" in caplog.text
