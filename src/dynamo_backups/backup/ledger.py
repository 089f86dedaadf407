"""Job ledgers: which units of a bulk job are done, and what each found, recorded beside the
backup so that a re-run with ``--resume`` skips them and still reports the whole job.

    <prefix>/.dynamo-backups/<table>/jobs/<job>/run.json                   the latest run
    <prefix>/.dynamo-backups/<table>/jobs/<job>/<run>/units/<unit>.json    one per finished unit
    <prefix>/.dynamo-backups/<table>/jobs/<job>/<run>/scratch/...          the run's own files

A unit is recorded by whichever worker ran it, right after it finished, so a driver that
dies loses nothing. Only units that completed are recorded: a unit with failures is done
again by the next run. What a job's last phase needs from its units (the names a restore
kept, for ``--delete-absent``) is written by each unit to the run's scratch folder and
referenced from its record, so a resumed run's last phase sees every unit's, whichever
attempt ran it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dynamo_backups.aws.errors import (
    ACCESS_DENIED_CODES,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    ClientError,
    describe_error,
    error_code,
)
from dynamo_backups.backup.reading import (
    iter_current_objects,
    read_document,
    read_document_and_etag,
)
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout, format_time, utc_now
from dynamo_backups.core.units import UnitResult, WorkUnit

logger = logging.getLogger("dynamo_backups.backup.ledger")
CLOSE_ATTEMPTS = 5  # reads and conditional writes of a run's record before giving up

RUN_FORMAT = "dynamo-backups-job-run"


class LedgerError(RuntimeError):
    """A run cannot resume as asked; the message says what to do."""


@dataclass(frozen=True)
class JobRun:
    """One run of a job: where its unit records and scratch files go (picklable)."""

    bucket: str
    job_prefix: str  # .../jobs/<job>/
    run_id: str
    resumed: bool = False
    recorded: bool = True  # False for dry runs: nothing is written, not even this ledger
    started: str | None = None  # when the run's first attempt started (a resumed run's too)

    @property
    def units_prefix(self) -> str:
        return f"{self.job_prefix}{self.run_id}/units/"

    @property
    def scratch_prefix(self) -> str:
        return f"{self.job_prefix}{self.run_id}/scratch/"

    def unit_key(self, unit: WorkUnit) -> str:
        return f"{self.units_prefix}{unit.id}.json"


def record_unit(writer: BackupWriter, run: JobRun, unit: WorkUnit, result: UnitResult) -> None:
    """Mark ``unit`` done in ``run``, with what it found."""
    if run.recorded:
        writer.put_document(run.unit_key(unit), result.to_dict())


class JobLedger:
    """The ledger of one job (``restore-into-Users``, ``backfill``, ...) of one table."""

    def __init__(
        self,
        writer: BackupWriter,
        layout: TableLayout,
        job: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.writer = writer
        self.job = job
        self.job_prefix = f"{layout.meta_prefix}jobs/{job}/"
        self.clock = clock

    @property
    def run_key(self) -> str:
        return self.job_prefix + "run.json"

    def dry_run(self) -> JobRun:
        """A run that records nothing."""
        started = format_time(self.clock())
        return JobRun(self.writer.bucket, self.job_prefix, "dry-run", False, False, started)

    def begin(self, parameters: Mapping[str, Any], resume: bool, required: bool = True) -> JobRun:
        """A new run, or with ``resume`` the unfinished one with the same parameters. A job
        that only reads the backup (``required=False``: restore, verify, snapshot) runs
        without a ledger where the bucket may not be written (a read-only role)."""
        latest = read_document(self.writer.s3, self.writer.bucket, self.run_key)
        unfinished = latest is not None and latest.get("state") == "running"
        wanted = _comparable(parameters)
        if resume and unfinished and latest is not None:
            if _comparable(latest.get("parameters") or {}) != wanted:
                raise LedgerError(
                    f"the unfinished {self.job} run of {latest.get('started')} had other "
                    f"options ({_difference(latest.get('parameters') or {}, wanted)}): "
                    "resume it with the same options, or run without --resume to start over"
                )
            logger.info("%s: resuming the run of %s", self.job, latest.get("started"))
            run_id, started = str(latest["run_id"]), latest.get("started")
            return JobRun(self.writer.bucket, self.job_prefix, run_id, True, started=started)
        if resume:
            logger.info("%s: no unfinished run to resume; starting one", self.job)
        elif unfinished and latest is not None:
            # Its lease, not the ledger, tells whether it still runs: say what is known.
            logger.warning(
                "%s: the run of %s has not ended (it may still be running, or it stopped); "
                "this one starts over (--resume continues that one once it is not running)",
                self.job,
                latest.get("started"),
            )
        now = self.clock()
        run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        started = format_time(now)
        document = {
            "format": RUN_FORMAT,
            "job": self.job,
            "run_id": run_id,
            "parameters": wanted,
            "state": "running",
            "started": started,
        }
        try:
            self.writer.put_document(self.run_key, document)
        except ClientError as error:
            if required or error_code(error) not in ACCESS_DENIED_CODES:
                raise
            logger.warning(
                "%s: no write access to s3://%s/%s (%s): this run keeps no ledger, so an "
                "interrupted run starts over",
                self.job,
                self.writer.bucket,
                self.job_prefix,
                error_code(error),
            )
            return JobRun(
                self.writer.bucket, self.job_prefix, run_id, recorded=False, started=started
            )
        return JobRun(self.writer.bucket, self.job_prefix, run_id, False, started=started)

    def finished_units(self, run: JobRun) -> dict[str, UnitResult]:
        """The recorded result of every unit of ``run`` done so far, by unit id."""
        keys = [
            listed["Key"] for listed in iter_current_objects(self.writer.objects, run.units_prefix)
        ]
        with ThreadPoolExecutor(16, thread_name_prefix="ledger-read") as pool:
            documents = list(
                pool.map(lambda key: read_document(self.writer.s3, self.writer.bucket, key), keys)
            )
        found = {}
        for key, document in zip(keys, documents, strict=True):
            if document is not None:
                unit_id = key[len(run.units_prefix) :].removesuffix(".json")
                found[unit_id] = UnitResult.from_dict(document)
        return found

    def finish(self, run: JobRun, complete: bool, summary: Mapping[str, Any]) -> None:
        """Close the run: complete (a later --resume starts afresh) or not (it continues)."""
        state = "complete" if complete else "running"
        self._close(run, {"state": state, "summary": dict(summary)})

    def refuse(self, run: JobRun, reason: str) -> None:
        """Close a run refused before it wrote anything (its input was wrong): not one to
        resume, so the next run neither warns of it nor, with --resume, takes over its
        moment (a latest restore would give the state as of the refused attempt). Called
        while the refusal is on its way out: a failure to record it is logged, not raised,
        so that the user reads the refusal, not the ledger's trouble."""
        try:
            self._close(run, {"state": "refused", "error": reason})
        except Exception as error:
            logger.warning(
                "%s: could not record the refused run in s3://%s/%s (%s): the next run will "
                "say it has not ended",
                self.job,
                self.writer.bucket,
                self.run_key,
                describe_error(error),
            )

    def _close(self, run: JobRun, fields: Mapping[str, Any]) -> None:
        """Write ``fields`` and the time into the run's record, unless another run has
        started since (its record stands). Written only over the record read (If-Match):
        another run that begins between the read and the write is not overwritten."""
        if not run.recorded:
            return
        sent: dict[str, Any] | None = None  # the record last sent and refused
        refused_etag: str | None = None
        for _ in range(CLOSE_ATTEMPTS):
            found = read_document_and_etag(self.writer.s3, self.writer.bucket, self.run_key)
            if found is None or found[0].get("run_id") != run.run_id:
                return  # another run's record, or none (deleted): nothing of ours to close
            latest, etag = found
            if sent is not None and _same_close(latest, sent):
                return  # a refused retry of a write that had landed, its answer lost
            if refused_etag is not None and etag == refused_etag:
                self._close_unconditionally(latest, fields, etag)
                return
            sent = {**latest, **fields, "finished": format_time(self.clock())}
            try:
                self.writer.put_document(self.run_key, sent, if_match=etag)
                return
            except ClientError as error:
                if error_code(error) not in PRECONDITION_CODES | NOT_FOUND_CODES:
                    raise
                refused_etag = etag  # changed since read (or deleted: AWS answers 404)
        raise LedgerError(
            f"s3://{self.writer.bucket}/{self.run_key} was changed by another attempt of run "
            f"{run.run_id} each time it was read to be closed"
        )

    def _close_unconditionally(
        self, latest: Mapping[str, Any], fields: Mapping[str, Any], etag: str | None
    ) -> None:
        """A store that refuses If-Match over the ETag it just gave: closed as before
        conditions, with a plain put."""
        logger.warning(
            "%s: s3://%s refused a conditional write over the version of %s it had just "
            "given (ETag %s): writing it unconditionally",
            self.job,
            self.writer.bucket,
            self.run_key,
            etag,
        )
        finished = format_time(self.clock())
        self.writer.put_document(self.run_key, {**latest, **fields, "finished": finished})


def _same_close(found: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    """Whether ``found`` is the record ``sent`` (its state and the time it was closed)."""
    return found.get("state") == sent["state"] and found.get("finished") == sent["finished"]


def _comparable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {name: (str(value) if value is not None else None) for name, value in parameters.items()}


def _difference(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    names = sorted(set(before) | set(now))
    changed = [
        f"{name}: {before.get(name)} then, {now.get(name)} now"
        for name in names
        if before.get(name) != now.get(name)
    ]
    return "; ".join(changed) or "unknown"
