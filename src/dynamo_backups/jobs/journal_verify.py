"""Verify a journal folder: compare a live table with the folder's latest state (the newest
base and the journal after it), and with ``--repair`` write the table's state of every
difference as table reads (docs/journal.md, "Implemented: replay and verify").

The same stages, output, options and exit codes as the item layout's ``Verify``: the scan
units spill the table by object name; then the journal's ``route`` units (``journal_units``)
route the records the latest state needs by partition; each compare unit folds its
partition (base and routed records, at the run's pinned moment: S3's clock when the run
began, the same for every attempt) and compares it with the scan's slice.

A difference is read again from both sides before it counts: the item from the table (a
consistent GetItem, dated by DynamoDB's clock), then the journal's state of it again, with the
pieces S3 received since the pinned moment (or holding changes made after it) in the hour
folders from ``REFRESH_MARGIN`` before it: a change in flight while verifying (the trigger's
batching window) is then not counted once it is in the bucket. A change still in flight at
the recheck (made within the window before it) counts, as one the item layout's trigger has
not written yet does; ``--repair`` then writes the state the table read found, which a
stream change made after it always overrides.

A repair is a ``SNAPSHOT`` record per item (``core/journal.snapshot_record``: the table's image
or none, dated by the read's second, sequence -1), written as pieces of the pseudo-stream
``repair`` (``JournalApplier.write_table_reads``: one piece per compare unit and hour, named
from its records, ``If-None-Match``). Readers order it against stream changes by the journal's
rule (``ChangeOrder``): a stream change made after the read wins, one the read reflects gives
its state. Nothing is conditional, nothing is overwritten, and nothing already written is
ever removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.backup.journal_store import (
    JSON_TYPE,
    first_piece_hour,
    listed_pieces,
    put_if_absent,
    read_json,
    read_manifest,
    read_piece,
    readable_base,
)
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.s3_clock import s3_clock, wait_past
from dynamo_backups.core.base import BaseError, BaseManifest, parse_base_id, select_records
from dynamo_backups.core.ddbjson import Item, dumps_item
from dynamo_backups.core.differences import difference
from dynamo_backups.core.journal import (
    ItemState,
    JournalRecord,
    fold,
    listing_prefixes,
    snapshot_record,
)
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.jobs.journal_units import (
    ROUTE_STAGE,
    JournalView,
    PartitionInput,
    base_states,
    partition_digits,
    retention_clock,
    route,
    route_outputs,
    routed_input,
)
from dynamo_backups.jobs.units import Engine, StageOutcome, run_stage
from dynamo_backups.jobs.verify import Verify, item_digest
from dynamo_backups.pipeline.journal_applier import JournalApplier

# How far before the pinned moment the recheck looks for pieces received since: longer than
# the longest batching window (300 s) and the stream's rounding (a minute on DynamoDB Local).
REFRESH_MARGIN = timedelta(minutes=10)
# The recheck folds every change it finds: none is made this far ahead of the clocks.
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class JournalVerify(Verify):
    """``JournalVerify(...).run(engine)``: ``Verify``'s constructor and report."""

    view: JournalView | None = None
    routed: list[dict[str, Any]] | None = None
    run_record: JobRun | None = None  # the run the route units write their scratch under

    def run_parameters(self) -> dict[str, Any]:
        return {"layout": LAYOUT_JOURNAL}

    # --- the driver ----------------------------------------------------------------------

    def start(self, run: JobRun) -> None:
        """Pin the moment (S3's clock when the run began: its ``moment.json``, so a resumed
        run reads what its first attempt read) and the newest base at or before it."""
        pinned = self._pin(run)
        table_folder = self.layout.items_prefix
        base = self._base(run, table_folder, pinned)
        self.view = JournalView(
            self.bucket,
            table_folder,
            self.layout.key_hash,
            tuple(self.key_names),
            base,
            pinned,
            pinned,
            partition_digits(self.partitions),
        )

    def _pin(self, run: JobRun) -> datetime:
        s3 = self.writer().s3
        if not run.recorded:  # a read-only role: no ledger, S3's clock now
            now = s3_clock(s3, self.bucket, f"{run.job_prefix}run.json")[1]
            return now.astimezone(UTC).replace(microsecond=0)
        key = f"{run.scratch_prefix}moment.json"
        put_if_absent(self.reader(), key, b"{}", JSON_TYPE, self.policy)
        received, _ = s3_clock(s3, self.bucket, key)
        assert received is not None  # just written, or by the run's first attempt
        pinned = received.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        wait_past(s3, self.bucket, key, pinned, time.sleep)
        return pinned

    def _base(self, run: JobRun, table_folder: str, pinned: datetime) -> BaseManifest | None:
        """The base at or before the moment the retention rules keep (``readable_base``: one
        whose journal may have expired is refused, not compared), the same in every attempt of
        a run (its
        ``base.json``): a base made meanwhile would not match the recorded route units."""
        objects = self.reader()
        key = f"{run.scratch_prefix}base.json"
        recorded = read_json(objects, key) if run.recorded and run.resumed else None
        if recorded is not None:
            if recorded.get("base") is None:
                return None
            base = read_manifest(objects, table_folder, parse_base_id(recorded["base"]))
            if base is None:
                raise BaseError(
                    f"base {recorded['base']}, which the run's first attempt read, is gone: "
                    "run without --resume to start over"
                )
            return base
        s3 = self.writer().s3
        clock = retention_clock(s3, objects, self.layout)
        where = f"s3://{self.bucket}/{table_folder}"
        base = readable_base(s3, objects, table_folder, pinned, clock, where)
        if run.recorded:
            body = json.dumps({"base": base.id if base else None}).encode()
            put_if_absent(objects, key, body, JSON_TYPE, self.policy)
        return base

    def prepare_compare(self, ledger: JobLedger, run: JobRun, engine: Engine) -> StageOutcome:
        """The route units of the journal after the base, up to the pinned moment."""
        assert self.view is not None
        self.run_record = run
        journal_start = first_piece_hour(self.reader(), self.view.table_folder)
        units = self.view.route_units(self.reader(), journal_start)
        routes = run_stage(self, ledger, run, units, engine, None, self.progress)
        self.routed = route_outputs(routes.results)
        return routes

    # --- the units -----------------------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        if unit.stage != ROUTE_STAGE:
            return super().run_unit(unit, context)
        run = self.run_record
        assert self.view is not None and run is not None
        return route(
            self.view,
            self.reader(),
            unit,
            run.scratch_prefix if run.recorded else None,
            self.policy,
            context.cancel,
            self.concurrency,
        )

    def _compare_partition(self, partition: str, result: UnitResult, context: UnitContext) -> None:
        """The partition's state in the journal against the scan's slice; what differs is
        read again from both sides, and repaired on request."""
        assert self.view is not None and self.routed is not None
        table_side = self._table_side(partition)
        routed = routed_input(self.reader(), partition, self.routed, self.concurrency)
        states = base_states(
            self.reader(), self.view, partition, bool(routed.placed), self.concurrency
        )
        folded = fold(
            states, routed.records, self.view.at, self.view.base_moment, self.layout.key_hash
        )
        candidates: dict[str, Item] = {}
        for name, state in sorted(folded.items()):
            context.cancel.check()
            if state.image is None:
                continue
            result.add("objects_in_backup")
            entry = table_side.pop(name, None)
            if entry is None or item_digest(state.image) != entry[0]:
                candidates[name] = state.keys
        for name, (_, _, key_text) in table_side.items():
            candidates[name] = json.loads(key_text)
        if candidates:
            self._recheck_journal(partition, candidates, routed, states, result, context)

    def _recheck_journal(
        self,
        partition: str,
        candidates: Mapping[str, Item],
        routed: PartitionInput,
        states: Mapping[str, ItemState],
        result: UnitResult,
        context: UnitContext,
    ) -> None:
        """The table first (so that the journal read after it holds every change the table
        had then, once the trigger wrote it), then the journal's state again."""
        live = {name: self._get_item(key) for name, key in candidates.items()}
        backup = self._journal_again(partition, set(candidates), routed, states)
        repairs: list[JournalRecord] = []
        for name, key in candidates.items():
            context.cancel.check()
            item, _ = live[name]
            state = backup.get(name)
            image = state.image if state is not None else None
            same = (
                item is not None and image is not None and item_digest(image) == item_digest(item)
            )
            kind = difference(item is not None, image is not None, same)
            if kind is None:
                continue
            result.add(kind)
            result.sample(kind, dumps_item(key).decode())
            if self.repair:
                order = state.order if state is not None else None
                read = self._repair_read(key, order.latest_time if order else None, context.cancel)
                if read is None:
                    result.add("repair_failed")
                    continue
                repairs.append(snapshot_record(key, *read))
        if repairs:
            self._write_repairs(repairs, result)

    def _journal_again(
        self,
        partition: str,
        names: set[str],
        routed: PartitionInput,
        states: Mapping[str, ItemState],
    ) -> dict[str, ItemState]:
        """The latest state of the items ``names`` by the journal as S3 holds it now: the
        records routed for the pinned moment, and those of the pieces S3 received since (or
        holding changes made after it) in the hour folders from REFRESH_MARGIN before it."""
        assert self.view is not None
        view, objects = self.view, self.reader()
        fresh: list[tuple[datetime, list[JournalRecord]]] = []
        now = datetime.now(UTC) + timedelta(hours=1)  # S3's clock may run ahead of ours
        for folder in listing_prefixes(view.at - REFRESH_MARGIN, now):
            for listed in listed_pieces(objects, view.table_folder, folder):
                if listed.last_modified >= view.at or listed.piece.last_time >= view.at:
                    fresh.append((listed.last_modified, read_piece(objects, listed.key)))
        picked = select_records(view.base, fresh, _FAR_FUTURE, key_hash=view.key_hash)
        records = [
            record
            for record in [*routed.records, *picked.records]
            if record.name(view.key_hash) in names
        ]
        if not routed.placed and (self.repair or (routed.placed | picked.placed) & names):
            # The base's deciding changes: a late change met now is weighed against them, and
            # a repair must know them to be read after them (``_read_after``); from the data
            # alone a repair in the minute of the base's moment would be placed before the
            # change it corrects by the next compaction, which reads the index.
            states = base_states(objects, view, partition, True, self.concurrency)
        mine = {name: state for name, state in states.items() if name in names}
        return fold(mine, records, _FAR_FUTURE, view.base_moment, view.key_hash)

    def _write_repairs(self, repairs: list[JournalRecord], result: UnitResult) -> None:
        """The table reads as pieces of the ``repair`` pseudo-stream (a piece that cannot be
        written fails the unit, done again by --resume, as an item repair's failed put)."""
        applier = JournalApplier(self.writer(), self.layout.prefix, self.layout.key_hash)
        applier.write_table_reads(self.layout.table, repairs)
        result.add("repaired", len(repairs))
