"""The scheduled compaction: a Lambda entry point (``handler``) that deploy's EventBridge rule
invokes every hour for a journal folder (docs/journal.md, "Compaction, scheduled").

Each invocation resumes the folder's unfinished compaction if there is one (``compact
--resume``: the same moment, the units recorded in the ledger skipped), else starts one when
the newest base is ``COMPACT_EVERY_HOURS`` old, else does nothing. It stops starting units
when less than ``COMPACT_UNIT_SECONDS`` of the invocation remain: the units it did not run
are left to the next invocation, an hour later. A table whose compaction cannot finish in a
few invocations runs ``compact`` in a container or a Glue job instead (README).

Environment:
    BACKUP_BUCKET         required: the bucket
    BACKUP_PREFIX         optional: the backups' prefix
    COMPACT_TABLE         required: the table whose folder is compacted
    COMPACT_EVERY_HOURS   optional: how old the newest base may get (default 24)
    COMPACT_PARTITIONS    optional: 1, 16, 256 or 4096 (default 16)
    COMPACT_UNIT_SECONDS  optional: time kept for the units running at the end (default 120)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.journal_store import newest_base, read_json
from dynamo_backups.backup.ledger import LedgerError
from dynamo_backups.backup.s3_clock import s3_clock
from dynamo_backups.core.cancel import CancelToken, Interrupted
from dynamo_backups.core.journal import JournalError
from dynamo_backups.core.layout import TableLayout, normalize_prefix
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.ratelimit import RateLimiter
from dynamo_backups.core.units import (
    UnitContext,
    UnitFailed,
    UnitResult,
    UnitTask,
    WorkUnit,
    failure_text,
)
from dynamo_backups.jobs.compact import CompactError, Compaction, CompactOptions

logger = logging.getLogger("dynamo_backups.compact")

COMPACT_HANDLER = "dynamo_backups.jobs.compact_lambda.handler"
DEFAULT_EVERY_HOURS = 24
DEFAULT_UNIT_SECONDS = 120
# The rule fires every hour: a base is due when the newest is this much short of the
# interval old, so that daily compactions keep their hour instead of drifting later.
DUE_TOLERANCE = timedelta(minutes=30)


class CompactConfigError(RuntimeError):
    """The function's environment is missing or has a bad setting."""


@dataclass(frozen=True)
class CompactConfig:
    bucket: str
    prefix: str
    table: str
    every_hours: int = DEFAULT_EVERY_HOURS
    partitions: int = 16
    unit_seconds: int = DEFAULT_UNIT_SECONDS
    key_hash: str = "md5"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CompactConfig:
        bucket, table = environ.get("BACKUP_BUCKET", ""), environ.get("COMPACT_TABLE", "")
        if not bucket.strip() or not table.strip():
            raise CompactConfigError("BACKUP_BUCKET and COMPACT_TABLE must be set")
        try:
            config = cls(
                bucket=bucket.strip(),
                prefix=normalize_prefix(environ.get("BACKUP_PREFIX", "")),
                table=table.strip(),
                every_hours=int(environ.get("COMPACT_EVERY_HOURS") or DEFAULT_EVERY_HOURS),
                partitions=int(environ.get("COMPACT_PARTITIONS") or 16),
                unit_seconds=int(environ.get("COMPACT_UNIT_SECONDS") or DEFAULT_UNIT_SECONDS),
                key_hash=environ.get("BACKUP_KEY_HASH") or "md5",
            )
        except ValueError as error:
            raise CompactConfigError(f"bad compaction setting: {error}") from None
        if config.partitions not in (1, 16, 256, 4096) or config.every_hours < 1:
            raise CompactConfigError(
                "COMPACT_PARTITIONS is 1, 16, 256 or 4096; COMPACT_EVERY_HOURS >= 1"
            )
        return config

    @property
    def layout(self) -> TableLayout:
        return TableLayout.of(self.prefix, self.table, self.key_hash)


class DeadlineEngine:
    """Units on threads in this process, none started once ``clock()`` passes ``stop_at``:
    the stage then ends as a Ctrl-C would (``Interrupted``), its finished units recorded in
    the ledger for the next invocation to skip."""

    name = "threads"
    local = True

    def __init__(
        self, workers: int, stop_at: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.workers = max(1, workers)
        self.stop_at = stop_at
        self.clock = clock

    @property
    def slots(self) -> int:
        return self.workers

    def run(
        self,
        task: UnitTask,
        units: Sequence[WorkUnit],
        rate: float | None,
        progress: ProgressSink,
    ) -> list[UnitResult]:
        cancel = CancelToken()
        context = UnitContext(RateLimiter(rate, sleep=cancel.sleep), progress, cancel)
        pending = list(units)
        results: list[UnitResult] = []
        failures: list[tuple[str, str]] = []
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not pending or self.clock() >= self.stop_at:
                        return
                    unit = pending.pop(0)
                try:
                    result = task(unit, context)
                except Exception as error:
                    with lock:
                        failures.append((unit.id, failure_text(error)))
                    continue
                with lock:
                    results.append(result)

        threads = [threading.Thread(target=work, name=f"unit-{n}") for n in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise UnitFailed(failures, results)
        if pending:
            raise Interrupted(results, len(units))
        return results


def is_due(config: CompactConfig, aws: AwsContext) -> tuple[bool, str]:
    """Whether this invocation compacts: an unfinished run to resume, or a newest base (or
    none) at least the interval old, by S3's clock."""
    s3 = aws.client("s3")
    layout = config.layout
    run = read_json(aws.objects(s3, config.bucket), f"{layout.meta_prefix}jobs/compact/run.json")
    if run is not None and run.get("state") == "running":
        return True, f"resuming the compaction run {run.get('run_id')}"
    _, now = s3_clock(s3, config.bucket, layout.manifest_key)
    base = newest_base(s3, aws.objects(s3, config.bucket), layout.items_prefix, now)
    if base is None:
        return True, "no base yet"
    due_at = base.moment + timedelta(hours=config.every_hours) - DUE_TOLERANCE
    if now >= due_at:
        return True, f"the newest base {base.id} is {config.every_hours} hours old"
    return False, f"the newest base {base.id} is recent: the next is due at {due_at.isoformat()}"


def run_scheduled(
    config: CompactConfig,
    aws: AwsContext,
    remaining_seconds: float | None,
    clock: Callable[[], float] = time.monotonic,
    settle_seconds: float | None = None,
) -> dict[str, Any]:
    """One invocation's work; its summary (also logged as one JSON line)."""
    due, why = is_due(config, aws)
    summary: dict[str, Any] = {"message": "compaction", "table": config.table, "why": why}
    if not due:
        return _logged({**summary, "state": "not due"})
    start = clock()
    remaining = remaining_seconds if remaining_seconds is not None else 900.0
    engine = DeadlineEngine(4, start + remaining - config.unit_seconds, clock)
    s3 = aws.client("s3", pool=16)
    options = CompactOptions(partitions=config.partitions, resume=True)
    if settle_seconds is not None:
        options = CompactOptions(
            partitions=config.partitions, resume=True, settle_seconds=settle_seconds
        )
    job = Compaction(
        s3,
        aws.objects(s3, config.bucket),
        config.bucket,
        config.layout.items_prefix.rstrip("/"),
        options,
        NoProgress(),
        aws=aws,
    )
    try:
        report = job.run(engine)
    except Interrupted:
        return _logged({**summary, "state": "unfinished", "resumes": "at the next invocation"})
    except (CompactError, JournalError, LedgerError) as error:
        _logged({**summary, "state": "failed", "error": str(error)}, logging.ERROR)
        raise
    state = "complete" if report.complete else "failed"
    result = {**summary, "state": state, **_report_fields(report.to_dict())}
    if not report.complete:
        _logged(result, logging.ERROR)
        raise CompactError(f"the compaction of {config.table} failed: {report.errors[:3]}")
    return _logged(result)


def _report_fields(report: Mapping[str, Any]) -> dict[str, Any]:
    names = ("base", "moment", "previous", "retention", "items", "files", "existed")
    return {name: report.get(name) for name in names}


def _logged(summary: dict[str, Any], level: int = logging.INFO) -> dict[str, Any]:
    _ensure_log_output()
    logger.log(level, json.dumps(summary, sort_keys=True, default=str))
    return summary


def _ensure_log_output() -> None:
    if not logger.handlers and (
        "AWS_LAMBDA_FUNCTION_NAME" in os.environ or not logger.hasHandlers()
    ):
        output = logging.StreamHandler(sys.stdout)
        output.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(output)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (the EventBridge rule's target; the event is not read)."""
    config = CompactConfig.from_environ(os.environ)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds = remaining() / 1000.0 if remaining is not None else None
    return run_scheduled(config, AwsContext(connect_timeout=5.0, read_timeout=60.0), seconds)
