"""Snapshot of a journal folder: the same export files, manifests and report as the item
layout's ``jobs/snapshot`` (whose file writer, ledger and manifests it reuses), made from the
newest complete base at or before the moment and the journal after it, by the restore's two
stages of units (``jobs/journal_units``): ``route`` (the records the snapshot takes, by
partition) then one ``partition`` unit per partition (the base's states of its partition,
its index only when a late change must be weighed against them, and the routed records
folded at the moment), each writing its own data files.

Every attempt of a run reads the journal as S3 held it when the run began (the run's
``moment.json``, as a journal restore pins it): a latest snapshot is the state at that moment,
and a resumed run reads the same objects and the same base. Options the journal layout does
not take are refused before anything runs (``unsupported``).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.journal_store import (
    JSON_TYPE,
    earliest_reflecting_base,
    first_piece,
    first_piece_hour,
    put_if_absent,
    read_json,
    read_manifest,
    readable_base,
)
from dynamo_backups.backup.ledger import JobLedger
from dynamo_backups.core.base import BaseManifest, parse_base_id
from dynamo_backups.core.journal import fold
from dynamo_backups.core.layout import LayoutError, format_time
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.jobs.journal_units import (
    ROUTE_STAGE,
    JournalView,
    base_states,
    partition_digits,
    present_sorted,
    retention_clock,
    route,
    route_outputs,
    routed_input,
    run_moment,
)
from dynamo_backups.jobs.snapshot import Snapshot, SnapshotError, SnapshotOptions, _PartitionFiles
from dynamo_backups.jobs.units import Engine, StageOutcome, run_stage

# SnapshotOptions fields a journal folder's snapshot refuses, as flags: an invalid record
# makes its whole journal object unreadable, so there is no item to go on past.
_REFUSED = {"skip_invalid": "--skip-invalid"}


class NothingAtMoment(LayoutError):
    """An --at before the journal's first change, with no base at or before it (exit 2, as
    the item layout's snapshot says it; here before any export file is written)."""


class UnsupportedOnJournal(LayoutError):
    """An option a journal folder's snapshot does not take (exit 2)."""


class BeforeJournalBegins(LayoutError):
    """An --at before the first base of a journal that began mid-way (exit 2, as restore
    refuses it): the journal alone holds only part of the table then."""


def unsupported(options: SnapshotOptions) -> list[str]:
    """The options given that a journal folder's snapshot does not take."""
    return [flag for field, flag in _REFUSED.items() if getattr(options, field)]


def refusal(where: str, refused: list[str]) -> str:
    return (
        f"{where} is a journal folder, whose snapshot does not take {', '.join(refused)}: "
        "an invalid journal object stops the snapshot rather than being skipped"
    )


class JournalSnapshot(Snapshot):
    """One snapshot of a journal folder: ``JournalSnapshot(...).run(engine)`` (the same
    constructor as ``Snapshot``)."""

    retry_policy = RetryPolicy(max_attempts=15, base_delay=0.05, max_delay=20)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refused = unsupported(self.options)
        if refused:  # before anything is read or written
            raise UnsupportedOnJournal(refusal(self.folder.where, refused))
        self.view: JournalView | None = None
        self.routed: list[dict[str, Any]] = []

    def run_stages(self, ledger: JobLedger, engine: Engine) -> StageOutcome:
        assert self.job_run is not None
        received_before = self._pin()
        at = self.options.at if self.options.at is not None else received_before
        table_folder = self.folder.layout.items_prefix
        base = self._base(table_folder, at)
        if self.options.at is not None and (base is None or base.reflects_before is None):
            self._refuse_before_journal_begins(table_folder, at)
        journal_start = first_piece_hour(self.reader(), table_folder)
        if not self.folder.key_names:
            raise SnapshotError(f"{self.folder.where} records no key schema")
        self.view = JournalView(
            self.folder.bucket,
            table_folder,
            self.folder.layout.key_hash,
            tuple(self.folder.key_names),
            base,
            at,
            received_before,
            partition_digits(self.options.partitions),
        )
        units = self.view.route_units(self.reader(), journal_start)
        routes = run_stage(self, ledger, self.job_run, units, engine, None, self.progress)
        if routes.failures:  # the partition units would miss the failed hours' records
            return StageOutcome([], routes.failures, routes.skipped)
        self.routed = route_outputs(routes.results)
        parts = run_stage(
            self,
            ledger,
            self.job_run,
            partition_units(self.options.partitions),
            engine,
            None,
            self.progress,
        )
        merged = merge_results(parts.results)
        folded = merged.count("items") + merged.count("absent")
        if self.options.at is not None and base is None and not parts.failures and not folded:
            raise NothingAtMoment(self._before_first_change(at))
        return parts  # the route units' results are scratch, not files of the export

    def _refuse_before_journal_begins(self, table_folder: str, at: datetime) -> None:
        """Refuse, before any export file is written, a moment no base at or before reflects
        a table older than the journal when a later base shows the journal began mid-way (a
        backfill's or a conversion's base): the journal alone would export part of the table
        (the check ``JournalRestore`` makes)."""
        first = earliest_reflecting_base(self.s3(), self.reader(), table_folder, at)
        if first is None:
            return
        raise BeforeJournalBegins(
            f"{self.folder.where} cannot be exported --at {format_time(at)}: its journal "
            f"begins mid-way (base {first.id} holds the rows older than the journal), so the "
            f"earliest moment a snapshot can take is {format_time(first.moment)}; give --at "
            "it or later (no export file was written)"
        )

    def _before_first_change(self, at: datetime) -> str:
        """What the item layout's snapshot says of an --at before its first backup (exit 2),
        naming the journal's earliest change (its first piece's first time)."""
        message = (
            f"--at: the backup held no item at {at.isoformat()}: it is before the first "
            f"backup of {self.folder.where}"
        )
        first = first_piece(self.reader(), self.folder.layout.items_prefix)
        if first is not None:
            message += (
                f"; its earliest change: {format_time(first.first_time)} (give --at from then on)"
            )
        return message

    def _pin(self) -> datetime:
        """The moment the run began by S3's clock (its ``moment.json``, written once): every
        attempt reads the journal objects S3 received before it. A run without a ledger
        (a role that may only read the bucket) takes S3's clock now."""
        assert self.job_run is not None
        objects, policy = self.reader(), self.retry_policy
        pinned, wait = run_moment(
            self.s3(), objects, self.backup_bucket, self.job_run, policy, SnapshotError
        )
        if wait is not None:
            wait(time.sleep)  # before the journal is listed
        return pinned

    def _base(self, table_folder: str, at: datetime) -> BaseManifest | None:
        """The base at or before ``at`` the retention rules keep (``readable_base``), the same
        one in every attempt."""
        assert self.job_run is not None
        objects = self.reader()
        key = f"{self.job_run.scratch_prefix}base.json"
        if self.job_run.resumed:
            recorded = read_json(objects, key)
            if recorded is not None:
                if recorded.get("base") is None:
                    return None
                base = read_manifest(objects, table_folder, parse_base_id(recorded["base"]))
                if base is None:
                    raise SnapshotError(
                        f"base {recorded['base']}, which the run's first attempt read, is gone: "
                        "run without --resume to start over"
                    )
                return base
        clock = retention_clock(self.s3(), objects, self.folder.layout)
        base = readable_base(self.s3(), objects, table_folder, at, clock, self.folder.where)
        if self.job_run.recorded:
            body = json.dumps({"base": base.id if base else None}).encode()
            put_if_absent(objects, key, body, JSON_TYPE, self.retry_policy)
        return base

    # --- the units ------------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.view is not None and self.job_run is not None
        if unit.stage == ROUTE_STAGE:
            return route(
                self.view,
                self.reader(),
                unit,
                self.job_run.scratch_prefix if self.job_run.recorded else None,
                self.retry_policy,
                context.cancel,
                self.read_concurrency,
            )
        return self._snapshot_partition(unit, context)

    def _snapshot_partition(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        """The partition's items at the moment, written as the partition's data files."""
        assert self.view is not None
        view, objects = self.view, self.reader()
        partition = unit.partition or ""
        files = _PartitionFiles(
            self.s3(), self.bucket, f"{self.data_prefix}{partition or 'all'}-", self.file_bytes
        )
        files.remove_earlier()
        result = UnitResult(unit.id)
        routed = routed_input(objects, partition, self.routed, self.read_concurrency)
        states = base_states(objects, view, partition, bool(routed.placed), self.read_concurrency)
        folded = fold(states, routed.records, view.at, view.base_moment, view.key_hash)
        present = present_sorted(folded)
        try:
            for _, item in present:
                context.cancel.check()  # Ctrl-C: the unit's files are dropped, --resume redoes it
                files.write(item)
                context.progress.advance()
        except BaseException:
            files.abort()
            raise
        result.outputs = files.close()
        result.add("items", files.items)
        result.add("absent", len(folded) - len(present))
        return result
