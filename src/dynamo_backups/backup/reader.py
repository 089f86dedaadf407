"""Read a table's backup as it stood at a moment (or now): which version of each item, and
the item itself, checked. Listing is streamed and reads run on a bounded pool, so memory
stays flat whatever the table's size.

Latest and ``at`` alike list every object's versions (ListObjectVersions) and choose by the
stream's order (``core/pitr``), not by which version S3 received last: a late retry, a
replay or a second writer may have put an older change on top.

Used by restore, snapshot and history alike, so that they agree on what "the table at T" is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.aws.s3objects import ObjectReader
from dynamo_backups.backup.aliases import AliasIndex
from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reading import (
    iter_key_histories,
    iter_versions,
    object_versions,
)
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, loads_item
from dynamo_backups.core.foreign_names import (
    REPLICATOR,
    ItemNames,
    candidate_names,
)
from dynamo_backups.core.keys import extract_key, object_name
from dynamo_backups.core.layout import TableLayout, VersionMetadata
from dynamo_backups.core.parallel import batched
from dynamo_backups.core.pitr import (
    AUTHORITATIVE_WRITERS,
    DEFAULT_CLOCK_SKEW,
    Decision,
    Inspector,
    ObjectVersion,
    decide_at,
    handover_of,
    latest_decision,
    newest_first,
    select_at,
)
from dynamo_backups.core.progress import NoProgress, ProgressSink

UNITS_PER_TASK = 8
LATEST = datetime(9999, 1, 1, tzinfo=UTC)  # "now": every version counts


@dataclass(frozen=True)
class Selected:
    """One item of the backup: its item, or why there is none."""

    object_key: str
    item: dict[str, Any] | None = None
    invalid: str | None = None  # the object exists but is not a usable item
    key: dict[str, Any] | None = None  # the item's key, when it was asked for by key
    decision: Decision | None = None  # the change that decided it, for a merged history


@dataclass
class SelectionStats:
    objects: int = 0
    items: int = 0
    absent: int = 0
    invalid: int = 0
    versions_read: int = 0  # GETs (metadata and body)
    versions_headed: int = 0  # HEADs (metadata only)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def to_dict(self) -> dict[str, int]:
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_")}


Read = tuple[bytes, dict[str, str]]  # a version's body and user metadata


# Versions read ahead of a unit's selection, by version id and whether only its metadata
# was asked for (a HEAD); each has the body (empty for a HEAD) and user metadata.
Ahead = dict[tuple[str, bool], Read]
MOST_READ_AHEAD = 16  # versions of one object; its selection reads any others itself


@dataclass(frozen=True)
class _Unit:
    object_key: str
    entries: list[ObjectVersion] | None  # None: each of ``names`` is listed when it is read
    key: dict[str, Any] | None = None
    names: tuple[str, ...] = ()  # one item under several object keys: merge their histories
    ahead: Ahead | None = None  # the versions its selection most likely reads, read already


class ReadAhead(Protocol):
    """Many reads in flight from one thread (``aws.curl_reads.CurlGets``)."""

    def __len__(self) -> int: ...

    def start(
        self,
        tag: Hashable,
        key: str,
        version_id: str,
        size: int,
        head: bool = False,
        etag: str | None = None,
    ) -> bool: ...

    def finished(self, wait: float = 0.0) -> list[tuple[Hashable, Read | None]]: ...

    def close(self) -> None: ...


class BackupItems:
    """The items of one table's backup, latest or as of ``at``."""

    def __init__(
        self,
        reader: ObjectReader,
        bucket: str,
        layout: TableLayout,
        key_names: list[str] | None = None,
        at: datetime | None = None,
        keys: Iterable[dict[str, Any]] | None = None,
        concurrency: int = 32,
        skew: timedelta = DEFAULT_CLOCK_SKEW,
        retry_policy: RetryPolicy | None = None,
        progress: ProgressSink | None = None,
        partition: str = "",
        aliases: AliasIndex | None = None,
        adopted: bool = False,
        received_before: datetime | None = None,
        decisions: bool = False,
        prefetched: PrefetchedReads | None = None,
    ) -> None:
        self.reader = reader
        self.bucket = bucket
        self.layout = layout
        self.key_names = key_names
        self.at = at
        self.keys = keys
        self.concurrency = concurrency
        self.skew = skew
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=8, base_delay=0.05)
        self.stats = SelectionStats()
        self.progress = progress or NoProgress()
        # Only the objects whose names start with these hex digits (one unit of a job).
        self.partition = partition
        self.prefix = layout.items_prefix + partition
        # An adopted folder: items may also sit under the replicator's names (``adopt``).
        self.aliases = aliases
        self.adopted = adopted or aliases is not None
        # The backup as S3 held it at a moment (a run's, pinned for all its attempts): the
        # versions and delete markers S3 received later are left out.
        self.received_before = received_before
        # Each object's deciding change too (``Selected.decision``), removals included:
        # what ``convert`` writes a base's index from.
        self.decisions = decisions
        # Versions read before this listing (a restore's, during its pin's wait): a likely
        # read of the very version listed is taken from there instead of sent.
        self.prefetched = prefetched

    def for_each(
        self, consume: Callable[[Selected], None], stop: threading.Event | None = None
    ) -> SelectionStats:
        """Call ``consume`` (from worker threads) once per object; stops early when ``stop``
        is set. Exceptions from reads or from ``consume`` end the run and are raised."""
        stop = stop or threading.Event()
        slots = threading.BoundedSemaphore(self.concurrency * 2)
        errors: list[BaseException] = []

        def work(units: list[_Unit]) -> None:
            try:
                for unit in units:
                    if stop.is_set():
                        break
                    consume(self._select(unit))
            except BaseException as error:
                errors.append(error)
                stop.set()
            finally:
                slots.release()

        ahead = self._read_ahead()
        groups = (
            batched(self._units(), UNITS_PER_TASK)
            if ahead is None
            else self._read_ahead_groups(ahead, stop)
        )
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="backup-read") as pool:
                # Units go out in small groups: a task per object would cost the client more
                # CPU (futures, locks) than the object's own request.
                for units in groups:
                    if stop.is_set():
                        break
                    slots.acquire()
                    pool.submit(work, units)
        finally:
            if ahead is not None:
                ahead.close()
        if errors:
            raise errors[0]
        return self.stats

    # --- reading ahead ------------------------------------------------------------------------

    def _read_ahead(self) -> ReadAhead | None:
        """Many reads in flight from the listing's thread, where the reader offers it (one
        thread sending them costs the client less CPU than a request per reader thread):
        only for listed objects, each under one name."""
        if self.keys is not None or self.aliases is not None:
            return None
        make = getattr(self.reader, "read_ahead", None)
        return make(self.concurrency) if make is not None else None  # type: ignore[no-any-return]

    def _likely_reads(self, unit: _Unit) -> list[tuple[ObjectVersion, bool]]:
        """The versions ``_inspector`` most likely reads, and whether by a HEAD: those S3
        received after the moment (metadata only), then the first one received by it (whole,
        unless a tombstone). Delete markers are not read; nothing is when every entry is a
        removal (``select_at`` decides those unread)."""
        if unit.names or not unit.entries:
            return []
        ordered = self._received(newest_first(unit.entries))
        if all(entry.is_removal for entry in ordered):
            return []
        moment = self.at or LATEST
        reads: list[tuple[ObjectVersion, bool]] = []
        for entry in ordered:
            if len(reads) == MOST_READ_AHEAD:
                break
            if entry.is_delete_marker:
                continue
            if entry.last_modified > moment:
                reads.append((entry, True))
                continue
            reads.append((entry, entry.is_tombstone))
            break
        return reads

    def _read_ahead_groups(self, ahead: ReadAhead, stop: threading.Event) -> Iterator[list[_Unit]]:
        """The listed units in groups of ``UNITS_PER_TASK``, each with the versions its
        selection most likely reads read ahead (those whose read failed or does not apply
        are left out: its selection reads them as usual). A unit goes out once all its reads
        ahead have ended; listing goes on while they are in flight."""
        # unit number -> the unit, its reads ahead still running, what they brought
        waiting: dict[int, tuple[_Unit, list[int], Ahead]] = {}
        ready: list[_Unit] = []

        def collect(wait: float) -> None:
            for tag, read in ahead.finished(wait):
                number, version_id, head = tag  # type: ignore[misc]
                unit, running, found = waiting[number]
                if read is not None:
                    found[(version_id, head)] = read
                running[0] -= 1
                if not running[0]:
                    del waiting[number]
                    ready.append(replace(unit, ahead=found) if found else unit)

        for number, unit in enumerate(self._units()):
            if stop.is_set():
                break
            started = 0
            taken: Ahead = {}
            for entry, head in self._likely_reads(unit):
                read = self.prefetched.take(entry, head) if self.prefetched else None
                if read is not None:
                    taken[(entry.version_id, head)] = read
                    continue
                tag = (number, entry.version_id, head)
                started += ahead.start(
                    tag, entry.key, entry.version_id, entry.size, head, entry.etag
                )
            if started:
                waiting[number] = (unit, [started], taken)
            else:
                ready.append(replace(unit, ahead=taken) if taken else unit)
            while len(ahead) >= self.concurrency:
                collect(1.0)
            if number % UNITS_PER_TASK == 0:
                collect(0.0)
            while len(ready) >= UNITS_PER_TASK:
                yield ready[:UNITS_PER_TASK]
                del ready[:UNITS_PER_TASK]
        while waiting and not stop.is_set():
            collect(1.0)
            while len(ready) >= UNITS_PER_TASK:
                yield ready[:UNITS_PER_TASK]
                del ready[:UNITS_PER_TASK]
        if ready:
            yield ready

    def prefetch(self, into: PrefetchedReads, stop: threading.Event) -> None:
        """List the objects and read what their selection most likely reads (as ``for_each``
        would read it ahead) into ``into``, selecting nothing; until ``stop`` is set, ``into``
        is full or every object is listed. Nothing where there is no reading ahead."""
        ahead = self._read_ahead()
        if ahead is None:
            return
        try:
            for units in self._read_ahead_groups(ahead, stop):
                for unit in units:
                    if not self._keep_reads(unit, into):
                        return
        finally:
            ahead.close()

    @staticmethod
    def _keep_reads(unit: _Unit, into: PrefetchedReads) -> bool:
        """Put a unit's reads ahead into ``into``, each with the entry it was listed as;
        False once ``into`` is full."""
        if not unit.ahead:
            return True
        listed = {entry.version_id: entry for entry in unit.entries or []}
        return all(
            into.put(listed[version_id], head, read)
            for (version_id, head), read in unit.ahead.items()
        )

    def select_key(self, key: dict[str, Any]) -> Selected:
        """The item with ``key`` (under every name it may have), read now in this thread."""
        (unit,) = self._key_units([key])
        return self._select(unit)

    def select_names(self, names: list[str]) -> Selected:
        """The one item whose history is under these object names (its own first)."""
        object_keys = self._object_keys(names)
        return self._select(_Unit(object_keys[0], None, names=object_keys))

    # --- what to read ------------------------------------------------------------------------

    def _units(self) -> Iterator[_Unit]:
        if self.keys is not None:
            yield from self._key_units(self.keys)
            return
        listed = self._listed_units()
        if self.aliases is None:
            yield from listed
            return
        aliases = self.aliases.for_partition(self.reader, self.partition)
        merged: set[str] = set()
        for unit in listed:
            name = self.layout.name_of(unit.object_key)
            if name in aliases.other_names:
                continue  # read with the item's own name
            others = aliases.names_of(name)
            if not others:
                yield unit
                continue
            merged.add(name)
            yield self._merged_unit(name, others)
        for name, others in aliases.by_own_name.items():
            if name not in merged:  # the item is only under other names
                yield self._merged_unit(name, others)

    def _key_units(self, keys: Iterable[dict[str, Any]]) -> Iterator[_Unit]:
        for key in keys:
            object_key = self.layout.item_object_key(key)
            names = candidate_names(key, self.layout.key_hash) if self.adopted else []
            if len(names) > 1:
                yield _Unit(object_key, None, key=key, names=self._object_keys(names))
                continue
            yield _Unit(object_key, object_versions(self.reader, object_key), key=key)

    def _listed_units(self) -> Iterator[_Unit]:
        for entries in iter_key_histories(iter_versions(self.reader, self.prefix)):
            yield _Unit(entries[0].key, entries)

    def _merged_unit(self, name: str, others: list[str]) -> _Unit:
        names = self._object_keys([name, *others])
        return _Unit(names[0], None, names=names)

    def _object_keys(self, names: list[str]) -> tuple[str, ...]:
        return tuple(self.layout.items_prefix + name for name in names)

    # --- one object ----------------------------------------------------------------------------

    def _select(self, unit: _Unit) -> Selected:
        selected = self._select_unit(unit)
        return replace(selected, key=unit.key) if unit.key is not None else selected

    def _select_unit(self, unit: _Unit) -> Selected:
        self.stats.add(objects=1)
        self.progress.advance()
        if unit.names:
            return self._select_merged(unit)
        moment = self.at or LATEST
        inspect, bodies = self._inspector(moment, unit.ahead)
        ordered = self._received(newest_first(unit.entries or []))
        if not ordered:
            return self._absent(unit.object_key)
        if self.decisions:
            return self._decided(unit.object_key, ordered, moment, inspect, bodies)
        chosen = select_at(ordered, moment, inspect, self.skew).version
        body = self._body_of(chosen, bodies, unit.ahead) if chosen is not None else None
        if not body:  # removed, never there, or gone since it was listed
            return self._absent(unit.object_key)
        return self._parse(unit.object_key, body)

    def _decided(
        self,
        object_key: str,
        ordered: list[ObjectVersion],
        moment: datetime,
        inspect: Inspector,
        bodies: dict[tuple[str, str], bytes],
    ) -> Selected:
        """The object's state at ``moment`` with the change that decided it (a removal too:
        no item, its decision kept)."""
        decision = decide_at(ordered, moment, inspect, self.skew)
        if decision is None:
            return self._absent(object_key)
        if decision.removed:
            self.stats.add(absent=1)
            return Selected(object_key, decision=decision)
        body = self._body_of(decision.entry, bodies)
        if not body:  # a deciding version is never taken as absent: read it again
            self.stats.add(invalid=1)
            gone = f"version {decision.entry.version_id} is gone since it was listed"
            return Selected(object_key, invalid=f"s3://{self.bucket}/{object_key}: {gone}")
        return replace(self._parse(object_key, body), decision=decision)

    def _received(self, entries: list[ObjectVersion]) -> list[ObjectVersion]:
        """The entries S3 had received by the pinned moment (all of them when none is)."""
        if self.received_before is None:
            return entries
        return [entry for entry in entries if entry.last_modified < self.received_before]

    def _select_merged(self, unit: _Unit) -> Selected:
        """One item under several names: the latest change at the moment, whichever name
        holds it (dated by our metadata, or S3's LastModified for other tools' versions)."""
        moment = self.at or LATEST
        inspect, bodies = self._inspector(moment)
        decisions = []
        own_entries: list[ObjectVersion] = []
        for object_key in unit.names:
            entries = self._received(object_versions(self.reader, object_key))
            own_entries = own_entries or (entries if object_key == unit.names[0] else [])
            decisions.append(decide_at(entries, moment, inspect, self.skew) if entries else None)
        chosen = latest_decision(decisions)
        own = decisions[0]
        if own is not None and chosen is not own and own.writer not in AUTHORITATIVE_WRITERS:
            # Another name's change won against the own name's, dated by what the own name's
            # walk saw: date it by the own name's whole history, as history does.
            chosen = latest_decision(decisions, handover_of(own_entries, inspect))
        if chosen is None:
            return self._absent(unit.object_key)
        if chosen.removed:
            self.stats.add(absent=1)
            return Selected(unit.object_key, decision=chosen)
        body = self._body_of(chosen.entry, bodies)
        if body is None:
            return self._absent(unit.object_key)
        selected = self._parse(chosen.entry.key, body, item_key=unit.object_key)
        return replace(selected, decision=chosen)

    def _inspector(
        self, moment: datetime, ahead: Ahead | None = None
    ) -> tuple[Inspector, dict[tuple[str, str], bytes]]:
        """Reads a version's metadata for point-in-time selection. The version most likely to
        be chosen, the first one S3 received by ``moment`` when it is not a tombstone, is read
        whole (GET) and its body kept; every other one by a HEAD, metadata only: below a
        removal or a newer version, a version is seldom the one chosen (when it is, its body
        is read then). Each version is read once."""
        bodies: dict[tuple[str, str], bytes] = {}
        known: dict[tuple[str, str], VersionMetadata | None] = {}
        passed_first = False

        def inspect(entry: ObjectVersion) -> VersionMetadata | None:
            nonlocal passed_first
            where = (entry.key, entry.version_id)
            if where in known:
                return known[where]
            likely_chosen = not passed_first and entry.last_modified <= moment
            passed_first = passed_first or entry.last_modified <= moment
            raw: dict[str, str] | None
            if entry.is_tombstone or not likely_chosen:
                raw = self._head(entry.key, entry.version_id, ahead)
            else:
                found = self._read(entry.key, entry.version_id, ahead)
                raw = found[1] if found is not None else None
                if found is not None:
                    bodies[where] = found[0]
            known[where] = VersionMetadata.from_s3(raw) if raw is not None else None
            return known[where]

        return inspect, bodies

    def _body_of(
        self,
        entry: ObjectVersion,
        bodies: dict[tuple[str, str], bytes],
        ahead: Ahead | None = None,
    ) -> bytes | None:
        """The chosen version's body: kept from inspecting it, else read (None: gone since)."""
        body = bodies.get((entry.key, entry.version_id))
        if body is None:
            found = self._read(entry.key, entry.version_id, ahead)
            body = found[0] if found is not None else None
        return body

    def _read(
        self, object_key: str, version_id: str | None, ahead: Ahead | None = None
    ) -> Read | None:
        self.stats.add(versions_read=1)
        found = ahead.get((version_id, False)) if ahead and version_id else None
        if found is not None:
            return found  # read ahead (``_read_ahead_groups``): this version of this object
        return self._gone_is_none(
            lambda: self.reader.read_object(object_key, version_id),
            f"get s3://{self.bucket}/{object_key}",
        )

    def _head(
        self, object_key: str, version_id: str, ahead: Ahead | None = None
    ) -> dict[str, str] | None:
        """A version's user metadata without its body; None: deleted since it was listed."""
        self.stats.add(versions_headed=1)
        found = ahead.get((version_id, True)) if ahead else None
        if found is not None:
            return found[1]
        return self._gone_is_none(
            lambda: self.reader.head_object(object_key, version_id),
            f"head s3://{self.bucket}/{object_key}",
        )

    def _gone_is_none(self, request: Callable[[], Any], what: str) -> Any:
        try:
            return call_with_retries(request, self.retry_policy, what)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "NoSuchVersion", "404"):
                return None  # deleted since it was listed
            raise

    def _absent(self, object_key: str) -> Selected:
        self.stats.add(absent=1)
        return Selected(object_key)

    def _parse(self, object_key: str, body: bytes, item_key: str | None = None) -> Selected:
        """The item in ``body``, read from ``object_key`` for the item named ``item_key``
        (the same, unless the item's history is under several names)."""
        item_key = item_key or object_key
        try:
            item = loads_item(body, f"s3://{self.bucket}/{object_key}")
            if self.key_names is not None:
                self._check_name(object_key, item, item_key)
        except InvalidDynamoJSON as error:
            self.stats.add(invalid=1)
            return Selected(item_key, invalid=str(error))
        self.stats.add(items=1)
        return Selected(item_key, item)

    def _check_name(self, object_key: str, item: dict[str, Any], item_key: str) -> None:
        """An object holds the item its name was derived from; anything else is damage,
        or (an item under the replicator's name) history ``adopt`` has not indexed yet."""
        key = extract_key(item, self.key_names or [])
        name = self.layout.name_of(object_key)
        if object_key == item_key and name == object_name(key, self.layout.key_hash):
            return  # the common case: the item under its own name (no other names to weigh)
        names = ItemNames.of(key, self.layout.key_hash)
        expected = names.own
        if self.layout.name_of(item_key) == expected and name in names.candidates:
            return
        if names.naming(name) == REPLICATOR:
            raise InvalidDynamoJSON(
                f"s3://{self.bucket}/{object_key}: holds the item with key {key} under the "
                f"name the checklist's original Lambda gives it ({expected} is its own): run "
                f"`dynamo-backups adopt` on this folder so that both names are read as one item"
            )
        raise InvalidDynamoJSON(
            f"s3://{self.bucket}/{object_key}: holds the item with key {key}, whose object "
            f"name would be {expected}"
        )
