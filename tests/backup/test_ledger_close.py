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


def test_a_close_whose_first_write_landed_unanswered_is_written_again(
    s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that landed but whose answer was lost is sent again, and its If-Match then
    fails on the version it wrote itself: the record is read again, is still this run's,
    and is closed over the new version."""
    ledger = JobLedger(BackupWriter(s3, bucket), TableLayout.from_folder(f"{prefix}/Users"), JOB)
    run = ledger.begin(PARAMETERS, resume=False, required=False)
    real_put = BackupWriter.put_document
    calls: list[str | None] = []

    def put_twice(writer: BackupWriter, key: str, document: Any, if_match: Any = None) -> None:
        calls.append(if_match)
        real_put(writer, key, document, if_match=if_match)
        if len(calls) == 1:  # it landed; the answer did not: sent again, over the old ETag
            real_put(writer, key, document, if_match=if_match)

    monkeypatch.setattr(BackupWriter, "put_document", put_twice)
    ledger.finish(run, True, {"written": 3})
    closed = record(s3, bucket, ledger)
    assert closed["state"] == "complete" and closed["run_id"] == run.run_id, closed
    assert len(calls) == 2 and calls[0] != calls[1], calls
