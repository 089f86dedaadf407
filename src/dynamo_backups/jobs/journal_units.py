"""The work units every job reading a journal folder runs (docs/journal.md, "Reading" and
"Compaction"): ``route`` (one unit per hour folder of the journal span: the pieces the job
needs, read and cut down to the records it takes, written to the run's scratch folder by
partition) and the partition stage's input (a partition's base states and routed records),
which ``compact`` folds into a base's files and ``restore`` into the table.

``JournalView`` says what a job reads: the base it starts from (or none: the journal from its
beginning), the moment it wants, and the objects it may read (those S3 received before
``received_before``: a compaction's cutoff, a restore's pinned start), so that every attempt
of a resumed run reads exactly what the first read.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.journal_store import (
    GZIP_TYPE,
    JOURNAL_SINCE,
    JSON_TYPE,
    ListedPiece,
    RetentionClock,
    listed_pieces,
    put_bytes,
    put_if_absent,
    read_json,
    read_lines,
    read_piece,
    read_retention,
)
from dynamo_backups.backup.ledger import JobRun
from dynamo_backups.backup.s3_clock import s3_clock, wait_past
from dynamo_backups.core.base import (
    BaseError,
    BaseManifest,
    BasePaths,
    LateChangeError,
    decode_base_line,
    decode_index_line,
    partition_label,
    partition_of,
    select_records,
    with_images,
)
from dynamo_backups.core.cancel import CancelToken
from dynamo_backups.core.ddbjson import Item
from dynamo_backups.core.journal import (
    ItemState,
    JournalRecord,
    decode_record,
    encode_record,
    format_change_time,
    gzip_lines,
    listing_prefixes,
)
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import LayoutError, TableLayout, parse_time
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.retention import RetentionPolicyError
from dynamo_backups.core.units import PARTITION_COUNTS, UnitResult, WorkUnit

ROUTE_STAGE = "route"
# The most a stream rounds a change time down (a minute, on DynamoDB Local; a second on AWS).
PRECISION_BOUND = timedelta(minutes=1)
_HOUR_NAME = "%Y%m%dT%H"


@dataclass(frozen=True)
class JournalView:
    """What a job reads of one table's journal folder (picklable: it travels to workers)."""

    bucket: str
    table_folder: str  # "<prefix>/<table>/"
    key_hash: str
    key_names: tuple[str, ...]
    base: BaseManifest | None  # the base the state starts from; None: the journal's start
    at: datetime  # the state at this moment
    received_before: datetime | None  # objects S3 received at or after this are not read
    partition_digits: int  # of the job's partitions (and of its routed scratch files)
    # Only these items (object names; ``restore --keys``), None: every item.
    names: frozenset[str] | None = None

    @property
    def base_moment(self) -> datetime | None:
        return self.base.moment if self.base is not None else None

    def needs(self, listed: ListedPiece) -> bool:
        """Whether a listed piece can hold a record the job takes (from its name and date)."""
        if self.received_before is not None and listed.last_modified >= self.received_before:
            return False
        if self.base is None:
            return listed.piece.first_time <= self.at
        return self.base.needs_piece(listed.piece, listed.last_modified, self.at)

    def route_units(self, objects: Any, journal_start: datetime | None) -> list[WorkUnit]:
        """One unit per hour folder holding a piece the job needs. The driver lists the whole
        journal here (from its first hour to the moment: a LIST per 1,000 pieces, whole days
        at a time) and only the hours with a needed piece (by name and LastModified) become
        units, which list their hour again. Before the base's late horizon nothing is
        needed, but a late piece there would hold changes the base cannot place: those are
        an error (``LateChangeError``), never skipped in silence."""
        if journal_start is None:
            return []
        end = self.at if self.base is None else self.base.journal_span(self.at)[1]
        hours: set[str] = set()
        for folder in listing_prefixes(journal_start, end):
            for listed in listed_pieces(objects, self.table_folder, folder):
                if self.needs(listed):
                    hours.add(listed.piece.hour.strftime(_HOUR_NAME))
                elif self._unplaceable(listed):
                    assert self.base is not None
                    raise LateChangeError(
                        f"s3://{objects.bucket}/{listed.key} reached the journal after base "
                        f"{self.base.id} was made and holds changes older than its late "
                        f"horizon {format_change_time(self.base.late_horizon)}: that base "
                        "cannot place them (compact again from an older base, or restore at "
                        "a moment before it)"
                    )
        return [WorkUnit(ROUTE_STAGE, hour) for hour in sorted(hours)]

    def _unplaceable(self, listed: ListedPiece) -> bool:
        """A piece not needed only because its changes are older than the base's late
        horizon, though they reached the journal after the base was made."""
        base = self.base
        if base is None or not base.is_late(listed.last_modified):
            return False
        if base.holds_piece(listed.piece):
            return False  # a converted piece of the conversion that made the base
        if self.received_before is not None and listed.last_modified >= self.received_before:
            return False  # not read by this job, whatever it holds
        piece = listed.piece
        if piece.first_time > min(base.moment, self.at):
            return False
        if base.skips_before(piece.last_time + PRECISION_BOUND):
            return False  # every change of it is before the scan the base began from
        return piece.last_time < base.late_horizon

    def partition(self, name: str) -> str:
        return partition_of(name, self.partition_digits)

    def wants(self, name: str) -> bool:
        """Whether the job takes the item of this object name."""
        return self.names is None or name in self.names

    def name_of_item(self, item: Item) -> str:
        return object_name(extract_key(item, self.key_names), self.key_hash)


def partition_digits(count: int) -> int:
    return PARTITION_COUNTS[count]


def _folder_of(unit: WorkUnit) -> str:
    """The journal folder (``yyyy/mm/dd/hh/``) a route unit reads."""
    hour = datetime.strptime(unit.name, _HOUR_NAME)
    return hour.strftime("%Y/%m/%d/%H/")


def route(
    view: JournalView,
    objects: Any,
    unit: WorkUnit,
    scratch_prefix: str | None,
    policy: RetryPolicy,
    cancel: CancelToken,
    concurrency: int = 16,
) -> UnitResult:
    """A route unit: the records of its hour folder the job takes, by partition, in the run's
    scratch folder (names fixed by the unit, so a unit done again replaces its own files),
    and the items whose late changes must be weighed against the base's index. A run that
    keeps no ledger (a dry run, a role that may only read the bucket) writes nothing: its
    records travel in the unit's result (``scratch_prefix`` None)."""
    result = UnitResult(unit.id)
    needed: list[ListedPiece] = []
    for listed in listed_pieces(objects, view.table_folder, _folder_of(unit)):
        result.add("pieces_listed")
        if view.needs(listed):
            needed.append(listed)
    records: dict[str, RoutedLines] = {}
    placed: dict[str, set[str]] = {}
    # ``concurrency`` pieces read at a time, not the whole hour ahead: an hour of a busy
    # table is hundreds of 1,000-record pieces, and decoded at once they held 600 MB.
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="route-read") as pool:
        for listed, piece in (
            pair
            for chunk in batched(needed, max(1, concurrency))
            for pair in zip(
                chunk, pool.map(lambda entry: read_piece(objects, entry.key), chunk), strict=True
            )
        ):
            cancel.check()
            result.add("pieces_read")
            result.add("records_read", len(piece))
            picked = select_records(
                view.base,
                [(listed.last_modified, piece)],
                view.at,
                received_before=view.received_before,
                key_hash=view.key_hash,
            )
            for record in picked.records:
                name = record.name(view.key_hash)
                if not view.wants(name):
                    continue
                part = view.partition(name)
                if part not in records:
                    records[part] = RoutedLines(keep_text=scratch_prefix is None)
                records[part].add(encode_record(record))
            for name in picked.placed:
                if view.wants(name):
                    placed.setdefault(view.partition(name), set()).add(name)
    for part in sorted(records):
        routed = records[part]
        result.add("records_routed", routed.count)
        if routed.text is not None:
            result.outputs.append({"routed_lines": routed.text, "partition": part})
            continue
        key = f"{scratch_prefix}routed/{unit.id}/{partition_label(part)}.jsonl.gz"
        put_bytes(objects, key, routed.gzipped(), GZIP_TYPE, policy)
        result.outputs.append({"routed": key, "partition": part, "records": routed.count})
    for part in sorted(placed):
        if scratch_prefix is None:
            result.outputs.append({"placed_names": sorted(placed[part]), "partition": part})
            continue
        key = f"{scratch_prefix}routed/{unit.id}/{partition_label(part)}.placed.gz"
        lines = [name.encode() for name in sorted(placed[part])]
        put_bytes(objects, key, gzip_lines(lines), GZIP_TYPE, policy)
        result.outputs.append({"placed": key, "partition": part})
    return result


class RoutedLines:
    """One partition's routed record lines, gzipped as they come (an hour of a busy table is
    ~140,000 lines: held as they were, 4 route units at a time took ~200 MB), or kept as text
    for a run without a ledger (its records travel in the unit's result)."""

    def __init__(self, keep_text: bool) -> None:
        self.count = 0
        self.text: list[str] | None = [] if keep_text else None
        self._zip: Any = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip, header time 0
        self._parts: list[bytes] = []

    def add(self, line: bytes) -> None:
        self.count += 1
        if self.text is not None:
            self.text.append(line.decode())
        else:
            self._parts.append(self._zip.compress(line + b"\n"))

    def gzipped(self) -> bytes:
        """The lines as ``gunzip_lines`` reads them (each ended by a newline); no line may
        be added after."""
        if self._zip is not None:
            self._parts.append(self._zip.flush())
            self._zip = None
        return b"".join(self._parts)


@dataclass
class PartitionInput:
    """What a partition unit folds: its routed records, and the items a late change meets."""

    records: list[JournalRecord]
    placed: set[str]


def routed_input(
    objects: Any, partition: str, outputs: Iterable[Mapping[str, Any]], concurrency: int = 16
) -> PartitionInput:
    """The partition's routed records and placed names, from every route unit's outputs."""
    mine = [output for output in outputs if output.get("partition") == partition]
    got = PartitionInput([], set())
    for output in mine:  # carried in the results of a run without a ledger
        got.placed.update(output.get("placed_names", []))
        got.records.extend(
            decode_record(line, f"routed record {number}")
            for number, line in enumerate(output.get("routed_lines", []), 1)
        )
    mine = [output for output in mine if "routed" in output or "placed" in output]
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="routed-read") as pool:
        files = list(
            pool.map(
                lambda output: read_lines(objects, output.get("routed") or output["placed"]), mine
            )
        )
    for output, lines in zip(mine, files, strict=True):
        if "placed" in output:
            got.placed.update(line.decode() for line in lines)
            continue
        where = f"s3://{objects.bucket}/{output['routed']}"
        if len(lines) != output.get("records", len(lines)):
            raise BaseError(
                f"{where} holds {len(lines)} records, its unit routed {output['records']}"
            )
        got.records.extend(
            decode_record(line, f"{where} line {number}") for number, line in enumerate(lines, 1)
        )
    return got


def _overlaps(file_partition: str, partition: str) -> bool:
    return file_partition.startswith(partition) or partition.startswith(file_partition)


def base_states(
    objects: Any,
    view: JournalView,
    partition: str,
    with_index: bool,
    concurrency: int = 16,
) -> dict[str, ItemState]:
    """The base's states of the items of ``partition``: from its data files (their deciding
    changes unknown), or with ``with_index`` joined with its index (removals included);
    ``concurrency`` files read at a time (1: in the calling thread, no pool)."""
    base = view.base
    if base is None:
        return {}
    paths = BasePaths(view.table_folder, base.moment)
    chosen = [
        entry
        for entry in base.files
        if _overlaps(str(entry["partition"]), partition) and (with_index or entry["kind"] == "data")
    ]

    def read(entry: Mapping[str, Any]) -> list[bytes]:
        return read_lines(objects, paths.prefix + entry["name"])  # type: ignore[no-any-return]

    if concurrency <= 1:  # in this thread alone (a restore's reads during its pin's wait)
        files = [read(entry) for entry in chosen]
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="base-read") as pool:
            files = list(pool.map(read, chosen))
    images: dict[str, Item] = {}
    index: dict[str, ItemState] = {}
    for entry, lines in zip(chosen, files, strict=True):
        where = f"s3://{objects.bucket}/{paths.prefix}{entry['name']}"
        if len(lines) != int(entry["items"]):
            raise BaseError(f"{where} holds {len(lines)} lines, its manifest says {entry['items']}")
        for number, line in enumerate(lines, 1):
            if entry["kind"] == "data":
                item = decode_base_line(line, f"{where} line {number}")
                name = view.name_of_item(item)
                if name.startswith(partition) and view.wants(name):
                    images[name] = item
            else:
                state = decode_index_line(line, f"{where} line {number}")
                name = object_name(state.keys, view.key_hash)
                if name.startswith(partition) and view.wants(name):
                    index[name] = state
    if with_index:
        return with_images(index, images)
    return {
        name: ItemState(extract_key(item, view.key_names), item, None)
        for name, item in images.items()
    }


def present_sorted(states: Mapping[str, ItemState]) -> list[tuple[str, Item]]:
    """The present items of a fold's answer, by object name (a deterministic order)."""
    return [(name, states[name].image) for name in sorted(states) if states[name].image is not None]  # type: ignore[misc]


def route_outputs(results: Iterable[UnitResult]) -> list[dict[str, Any]]:
    """Every route unit's outputs (this attempt's and the recorded ones), in unit order."""
    outputs: list[dict[str, Any]] = []
    for result in sorted(results, key=lambda result: result.unit):
        outputs.extend(result.outputs)
    return outputs


PinWaiting = Callable[[Callable[[float], None]], None]  # the wait, given how to sleep


def run_moment(
    s3: Any,
    objects: Any,
    bucket: str,
    run: JobRun,
    policy: RetryPolicy,
    unknown: Callable[[str], Exception],
) -> tuple[datetime, PinWaiting | None]:
    """The moment a reader's run began by S3's clock (its ``moment.json``, written once by
    the first attempt), a second past it, and the wait until S3's clock has passed that
    (None: nothing to wait for): once it has, every attempt reads the journal objects S3
    received before it. Only what lists the journal must come after the wait. A run
    without a ledger (a dry run, a role that may only read the bucket) takes S3's clock
    now. A resumed run whose ``moment.json`` is gone raises ``unknown(message)``."""
    if not run.recorded:
        now = s3_clock(s3, bucket, f"{run.job_prefix}run.json")[1]
        return now.astimezone(UTC).replace(microsecond=0), None
    key = f"{run.scratch_prefix}moment.json"
    if not run.resumed:
        put_if_absent(objects, key, b"{}", JSON_TYPE, policy)
    received, _ = s3_clock(s3, bucket, key)
    if received is None:
        raise unknown(
            f"the unfinished run {run.run_id} has no s3://{bucket}/{key}: its moment is "
            "unknown; run without --resume to start over"
        )
    pinned = received.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    return pinned, lambda sleep: wait_past(s3, bucket, key, pinned, sleep)


def retention_clock(s3: Any, objects: Any, layout: TableLayout) -> RetentionClock:
    """The folder's retention policy, S3's clock now and when the journal began (one HEAD of
    ``layout.json``, or its ``journal_since`` when earlier: a conversion writes layout.json
    after its converted pieces): what a reader's base choice (``readable_base``) weighs."""
    began, now = s3_clock(s3, objects.bucket, layout.manifest_key)
    since = (read_json(objects, layout.manifest_key) or {}).get(JOURNAL_SINCE)
    if began is not None and isinstance(since, str):
        try:
            began = min(began, parse_time(since))
        except (ValueError, OverflowError):
            raise LayoutError(
                f"s3://{objects.bucket}/{layout.manifest_key}: {JOURNAL_SINCE} {since!r} is "
                "not a time"
            ) from None
    try:
        policy = read_retention(objects, layout.meta_prefix)
    except RetentionPolicyError as error:
        raise LayoutError(str(error)) from None
    return RetentionClock(policy, now, began or now)
