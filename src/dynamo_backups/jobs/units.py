"""Running a job's units on an engine: planning (which units, in which stages) stays with
the job in this process; each unit runs wherever the engine puts it and is recorded in the
job's ledger by the worker that ran it; a resumed run skips recorded units and merges their
results with the new ones, so the report is the whole job's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.backup.ledger import JobLedger, JobRun, record_unit
from dynamo_backups.backup.reading import iter_current_objects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.cancel import Interrupted
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.core.units import UnitContext, UnitFailed, UnitResult, WorkUnit


class Engine(Protocol):  # engines.base.Engine, as the jobs use it
    name: str
    local: bool  # every unit runs on this host (it may share files with the driver)

    @property
    def slots(self) -> int: ...

    def run(
        self,
        task: object,
        units: Sequence[WorkUnit],
        rate: float | None,
        progress: ProgressSink,
    ) -> list[UnitResult]: ...


class UnitJob(Protocol):
    """What a job gives the workers: how to run one unit, and where to record it."""

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult: ...

    def ledger_writer(self) -> BackupWriter: ...


class BucketClients:
    """The clients a job makes of its backup bucket, wherever one of its units runs: S3, the
    object reader, and the writer that records units. A job sets ``clients``,
    ``backup_bucket`` and ``read_concurrency`` (the connection pool)."""

    clients: ClientSource
    backup_bucket: str
    read_concurrency: int

    def s3(self) -> Any:
        return self.clients.get("s3", lambda aws: aws.client("s3", pool=self.read_concurrency))

    def reader(self) -> Any:
        bucket = self.backup_bucket
        return self.clients.get(
            "reader", lambda aws: aws.objects(self.s3(), bucket), variant=bucket
        )

    def ledger_writer(self) -> BackupWriter:
        return BackupWriter(self.s3(), self.backup_bucket)


def execute_unit(job: UnitJob, run: JobRun, unit: WorkUnit, context: UnitContext) -> UnitResult:
    """Run one unit where the engine put it, and record it once it completed."""
    started = time.monotonic()
    result = job.run_unit(unit, context)
    result.seconds = round(time.monotonic() - started, 3)
    if result.complete:
        record_unit(job.ledger_writer(), run, unit, result)
        context.progress.unit_done()
    return result


# How progress names a stage's units.
UNIT_LABELS = {
    "segment": "segments",
    "scan": "segments scanned",
    "file": "files",
    "partition": "partitions",
    "compare": "partitions compared",
    "removals": "partitions checked against deletions",
    "classify": "partitions",
    "rewrite": "partitions rewritten",
}


@dataclass
class StageOutcome:
    results: list[UnitResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (unit id, reason)
    skipped: int = 0  # recorded by an earlier attempt of the run


def run_stage(
    job: UnitJob,
    ledger: JobLedger,
    run: JobRun,
    units: Sequence[WorkUnit],
    engine: Engine,
    rate: float | None,
    progress: ProgressSink,
    resumable: bool = True,
) -> StageOutcome:
    """Every unit of one stage: recorded ones from the ledger (when ``resumable``: a stage
    whose units must see everything written before them runs in full), the others on the
    engine. Ctrl-C raises ``Interrupted`` once the running units stopped, naming the run
    and how many units are done (recorded ones: the others are done again on --resume)."""
    done = ledger.finished_units(run) if run.resumed and resumable else {}
    outcome = StageOutcome()
    todo = []
    for unit in units:
        if unit.id in done:
            outcome.results.append(done[unit.id])
            outcome.skipped += 1
        else:
            todo.append(unit)
    if units:
        progress.begin_units(len(units), outcome.skipped, UNIT_LABELS.get(units[0].stage, "units"))
    try:
        outcome.results.extend(engine.run(partial(execute_unit, job, run), todo, rate, progress))
    except Interrupted as stop:
        stop.results = outcome.results + stop.results
        stop.job, stop.run_id = ledger.job, run.run_id if run.recorded else None
        stop.stage, stop.total = units[0].stage if units else None, len(units)
        stop.done = _units_done(ledger, run, units, stop.results)
        raise
    except UnitFailed as failed:
        outcome.results.extend(failed.results)
        outcome.failures.extend(failed.failures)
    return outcome


def _units_done(
    ledger: JobLedger, run: JobRun, units: Sequence[WorkUnit], results: Sequence[UnitResult]
) -> int:
    """How many of the stage's units are done: as the ledger has them (a Spark executor
    records its units; the driver never sees their results once the job is cancelled)."""
    if not run.recorded:
        return sum(1 for result in results if result.complete)
    ids = {unit.id for unit in units}
    try:  # the names of the unit records are enough: listed, not read
        listed = iter_current_objects(ledger.writer.objects, run.units_prefix)
        recorded = {entry["Key"][len(run.units_prefix) :].removesuffix(".json") for entry in listed}
        return len(ids & recorded)
    except Exception:  # the count is a courtesy: the ledger itself is what resumes
        return sum(1 for result in results if result.complete)
