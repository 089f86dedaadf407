"""Adopt a folder written by the checklist's original Lambda (or a mix of it and this tool).

Units of the first stage each take one partition of the folder: every object's newest body
is read to learn the item it holds and which naming its name follows (ours, the
replicator's, both alike, unknown). Objects with no body at all (the replicator's bare
deletes) are matched afterwards against the names every known item may have. The driver then
writes the alias index (``backup/aliases``) and records the adoption in ``layout.json``;
readers merge an item's histories under all its names from then on. Nothing is rewritten.

With ``rewrite``, a second stage copies each aliased item's history from the other names into
its own name, oldest first, dated by the original versions (LastModified), and then puts the
item's latest state on top again, so that the own name's current version is the item's
latest state whichever name held it. Nothing is deleted.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups.aws.client_source import ClientSource
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.aliases import AliasIndex, write_alias_index
from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.ledger import JobLedger, JobRun
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.reading import (
    READ_POLICY,
    iter_key_histories,
    iter_versions,
    object_versions,
    read_document,
)
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import InvalidDynamoJSON, dumps_item, loads_item
from dynamo_backups.core.foreign_names import REPLICATOR, UNKNOWN, ItemNames
from dynamo_backups.core.keys import extract_key, key_attribute_names
from dynamo_backups.core.layout import (
    EVENT_MODIFY,
    EVENT_REMOVE,
    WRITER_ADOPT,
    VersionMetadata,
    format_time,
)
from dynamo_backups.core.parallel import ThreadEngine, batched
from dynamo_backups.core.pitr import AUTHORITATIVE_WRITERS, ObjectVersion, newest_first
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.units import (
    UnitContext,
    UnitResult,
    WorkUnit,
    merge_results,
    partition_units,
)
from dynamo_backups.core.wording import counted
from dynamo_backups.jobs.units import BucketClients, Engine, run_stage

NAMINGS = ("ours", "replicator", "both", "unknown")
REASSERT_ATTEMPTS = 5
# Every version's change time is read: copies just written sit above newer versions in S3.
FULL_HISTORY = timedelta(days=36500)


class AdoptError(Exception):
    """The folder cannot be adopted as asked."""


@dataclass
class AdoptOptions:
    rewrite: bool = False
    partitions: int = 16
    read_concurrency: int = 16
    resume: bool = False


@dataclass
class AdoptReport:
    source: str
    objects: int = 0
    ours: int = 0
    replicator: int = 0
    both: int = 0  # our name and the replicator's are the same name (ASCII, one attribute)
    unknown: int = 0
    deletes_only: int = 0  # objects with no item version at all (bare deletes)
    deletes_matched: int = 0  # of those, matched to an item by its possible names
    aliases: int = 0  # object names read as another name's item
    items_with_aliases: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)
    rewritten_items: int = 0
    versions_copied: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished_units: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors and not self.unfinished_units

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "complete": self.complete}


class Adopt(BucketClients):
    """``Adopt(...).run(engine)``. The clients given are used in this process; workers
    elsewhere make their own from ``aws``."""

    def __init__(
        self,
        s3: Any,
        reader: Any,
        folder: BackupFolder,
        key_schema: list[dict[str, str]],
        options: AdoptOptions,
        progress: ProgressSink | None = None,
        aws: AwsContext | None = None,
        key_types: dict[str, str] | None = None,
    ) -> None:
        self.clients = ClientSource(aws, s3=s3, reader=reader)
        self.folder = folder
        self.backup_bucket = folder.bucket
        self.read_concurrency = options.read_concurrency
        self.key_types = key_types
        self.layout = folder.layout
        self.key_schema = key_schema
        self.key_names = key_attribute_names(key_schema)
        self.options = options
        self.progress = progress or NoProgress()
        self.report = AdoptReport(folder.where)
        self.job_run: JobRun | None = None
        self.index: AliasIndex | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NoProgress()}

    # --- the run -------------------------------------------------------------------------------

    def run(self, engine: Engine | None = None) -> AdoptReport:
        started = time.monotonic()
        engine = engine or ThreadEngine(4)
        ledger = JobLedger(self.ledger_writer(), self.layout, "adopt")
        run = self.job_run = ledger.begin(
            {"partitions": self.options.partitions, "rewrite": self.options.rewrite},
            self.options.resume,
        )
        units = partition_units(self.options.partitions, "classify")
        classified = run_stage(self, ledger, run, units, engine, None, self.progress)
        self._count(classified.results, classified.failures)
        if not classified.failures:
            owners = self._owners(classified.results)
            self.index = self._record(run, owners)
            if self.options.rewrite:
                units = partition_units(self.options.partitions, "rewrite")
                rewritten = run_stage(self, ledger, run, units, engine, None, NoProgress())
                merged = merge_results(rewritten.results)
                self.report.rewritten_items = merged.count("rewritten_items")
                self.report.versions_copied = merged.count("versions_copied")
                self._fail(rewritten.failures, merged.unfinished)
        self.report.seconds = round(time.monotonic() - started, 3)
        ledger.finish(run, self.report.complete, {"aliases": self.report.aliases})
        return self.report

    def _count(self, results: list[UnitResult], failures: list[tuple[str, str]]) -> None:
        merged = merge_results(results)
        for name in ("objects", *NAMINGS, "deletes_only"):
            setattr(self.report, name, merged.count(name))
        self.report.samples = {kind: texts for kind, texts in merged.samples.items() if texts}
        self._fail(failures, merged.unfinished)

    def _fail(self, failures: list[tuple[str, str]], unfinished: list[str]) -> None:
        self.report.errors += [f"{unit}: {reason}" for unit, reason in failures]
        self.report.unfinished_units = sorted(
            {*self.report.unfinished_units, *unfinished, *(unit for unit, _ in failures)}
        )

    def _owners(self, results: list[UnitResult]) -> dict[str, str]:
        """Every other name -> the item's own name, bare deletes matched by the names every
        item seen may have. The units' documents are read one at a time, twice (the names
        every item may have outnumber the rest): memory holds the aliases and bare deletes."""
        owners: dict[str, str] = {}
        deletes: set[str] = set()
        for result in results:
            document = self._scratch(result)
            owners.update(document["owners"])
            deletes.update(document["deletes_only"])
        matched = 0
        for result in results if deletes else []:
            for name, own in self._scratch(result)["candidates"].items():
                if name in deletes:
                    deletes.discard(name)
                    matched += 1
                    if name != own:
                        owners[name] = own
        self.report.deletes_matched = matched
        self.report.aliases = len(owners)
        self.report.items_with_aliases = len(set(owners.values()))
        if deletes:
            self.report.samples["deletes_unmatched"] = sorted(deletes)[:10]
        return owners

    def _scratch(self, result: UnitResult) -> dict[str, Any]:
        (output,) = result.outputs
        document = read_document(self.s3(), self.folder.bucket, output["scratch"])
        if document is None:
            raise AdoptError(f"s3://{self.folder.bucket}/{output['scratch']} has gone")
        return document

    def _record(self, run: JobRun, owners: dict[str, str]) -> AliasIndex:
        """Write the alias index and record the adoption in layout.json."""
        writer = self.ledger_writer()
        root = f"{self.layout.meta_prefix}aliases/{run.run_id}/"
        own_groups, other_groups = write_alias_index(writer, root, owners)
        manifest = self.folder.manifest or self.layout.manifest(self.key_schema, self.key_types)
        adopted = {
            "naming": REPLICATOR,
            "aliases": root,
            "own_groups": own_groups,
            "other_groups": other_groups,
            "adopted_at": format_time(datetime.now(UTC)),
            "objects": {name: getattr(self.report, name) for name in NAMINGS},
        }
        manifest = {**manifest, "adopted": adopted}
        for name, value in (("key_schema", self.key_schema), ("key_types", self.key_types)):
            if value and not manifest.get(name):
                manifest[name] = value
        writer.put_document(self.layout.manifest_key, manifest)
        return AliasIndex(self.folder.bucket, root, frozenset(own_groups), frozenset(other_groups))

    # --- one unit, wherever it runs -----------------------------------------------------------

    def run_unit(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        if unit.stage == "rewrite":
            return self._rewrite_partition(unit)
        return self._classify_partition(unit, context)

    def _classify_partition(self, unit: WorkUnit, context: UnitContext) -> UnitResult:
        assert self.job_run is not None
        result = UnitResult(unit.id)
        found: dict[str, Any] = {"owners": {}, "candidates": {}, "deletes_only": []}
        lock = threading.Lock()
        prefix = self.layout.items_prefix + (unit.partition or "")
        histories = iter_key_histories(iter_versions(self.reader(), prefix))
        with ThreadPoolExecutor(self.options.read_concurrency, "adopt-read") as pool:
            for batch in batched(histories, 256):
                context.cancel.check()
                for name, outcome in pool.map(self._classify_object, batch):
                    with lock:
                        self._note(name, outcome, result, found)
                context.progress.advance(len(batch))
        scratch = f"{self.job_run.scratch_prefix}{unit.id}.json"
        self.ledger_writer().put_document(scratch, found)
        result.outputs = [{"scratch": scratch}]
        return result

    def _classify_object(
        self, entries: list[ObjectVersion]
    ) -> tuple[str, tuple[str, ItemNames | None, str | None]]:
        """The object's name, and (naming, the item's names, problem) from its newest item
        version."""
        object_key = entries[0].key
        name = self.layout.name_of(object_key)
        newest = next((e for e in newest_first(entries) if not e.is_removal), None)
        if newest is None:
            return name, ("deletes_only", None, None)
        body, _ = self._read_version(object_key, newest.version_id)
        try:
            key = extract_key(loads_item(body, object_key), self.key_names)
        except InvalidDynamoJSON as error:
            return name, (UNKNOWN, None, f"{object_key}: {error}")
        names = ItemNames.of(key, self.layout.key_hash)
        return name, (names.naming(name), names, None)

    def _read_version(self, object_key: str, version_id: str) -> tuple[bytes, dict[str, str]]:
        return call_with_retries(  # type: ignore[no-any-return]
            lambda: self.reader().read_object(object_key, version_id),
            READ_POLICY,
            f"read s3://{self.folder.bucket}/{object_key}?versionId={version_id}",
        )

    def _note(
        self,
        name: str,
        outcome: tuple[str, ItemNames | None, str | None],
        result: UnitResult,
        found: dict[str, Any],
    ) -> None:
        naming, names, problem = outcome
        result.add("objects")
        result.add(naming)
        if naming == "deletes_only":
            found["deletes_only"].append(name)
            return
        if names is None or naming == UNKNOWN:
            result.sample("unknown", problem or name)
            return
        if naming == REPLICATOR:
            found["owners"][name] = names.own
        for candidate in names.candidates:
            if candidate != name:
                found["candidates"][candidate] = names.own

    # --- rewrite: other names' history into the item's own name -------------------------------

    def _rewrite_partition(self, unit: WorkUnit) -> UnitResult:
        assert self.index is not None
        result = UnitResult(unit.id)
        aliases = self.index.for_partition(self.reader(), unit.partition or "")
        for own, others in sorted(aliases.by_own_name.items()):
            copied = self._copy_history(own, others)
            self._reassert(own, others)
            result.add("rewritten_items")
            result.add("versions_copied", copied)
        return result

    def _copy_history(self, own: str, others: list[str]) -> int:
        writer = self.ledger_writer()
        own_key = self.layout.items_prefix + own
        handover = self._handover(writer, own_key)
        copied = 0
        for other in others:
            other_key = self.layout.items_prefix + other
            for entry in reversed(object_versions(self.reader(), other_key)):
                if entry.is_removal:
                    metadata = self._metadata(EVENT_REMOVE, entry, None, handover)
                    writer.remove_item(own_key, metadata)
                else:
                    body, raw = self._read_version(other_key, entry.version_id)
                    metadata = self._metadata(EVENT_MODIFY, entry, raw, handover)
                    writer.put_item(own_key, body, metadata)
                copied += 1
        return copied

    def _handover(self, writer: BackupWriter, own_key: str) -> datetime | None:
        """The first change our stream handler recorded under the own name: from there on
        it records every change, so no copied version may be dated later than that."""
        times = []
        for entry in object_versions(self.reader(), own_key):
            if entry.is_delete_marker:
                continue
            metadata = writer.version_metadata(own_key, entry.version_id)
            if metadata is not None and metadata.writer in AUTHORITATIVE_WRITERS:
                times.append(metadata.change_time)
        return min(times) if times else None

    def _metadata(
        self,
        event: str,
        entry: ObjectVersion,
        raw: dict[str, str] | None,
        handover: datetime | None,
    ) -> VersionMetadata:
        """Ours where the version has it; else dated by when S3 received the original (an
        upper bound of its change time), and never after the handover."""
        existing = VersionMetadata.from_s3(raw) if raw is not None else None
        if existing is not None:
            return existing
        dated = min(entry.last_modified, handover) if handover else entry.last_modified
        return VersionMetadata(WRITER_ADOPT, event, dated, None, self.layout.key_hash)

    def _reassert(self, own: str, others: list[str]) -> None:
        """Put the item's latest state on top of its own name, as the change that decided it
        (its writer and sequence number kept), unless a newer write came in meanwhile (then
        the latest is computed again with it)."""
        writer = self.ledger_writer()
        own_key = self.layout.items_prefix + own
        items = BackupItems(
            self.reader(),
            self.folder.bucket,
            self.layout,
            self.key_names,
            at=datetime.now(UTC) + timedelta(days=1),  # every change so far, and then
            skew=FULL_HISTORY,  # no version taken as surely earlier: all are dated
            aliases=self.index,
        )
        for _ in range(REASSERT_ATTEMPTS):
            current = writer.current_version(own_key)
            selected = items.select_names([own, *others])
            decision = selected.decision
            if decision is None:
                return  # no change at all: nothing to put back
            event = EVENT_MODIFY if selected.item is not None else EVENT_REMOVE
            metadata = decision.metadata or VersionMetadata(
                WRITER_ADOPT, event, decision.change_time, None, self.layout.key_hash
            )
            if selected.item is not None:
                written = writer.put_item_if_current(
                    own_key, dumps_item(selected.item), metadata, current
                )
            else:
                written = writer.remove_item_if_current(own_key, metadata, current)
            if written:
                return
        raise AdoptError(
            f"s3://{self.folder.bucket}/{own_key} kept changing: its latest state could not be "
            f"put back on top after {counted(REASSERT_ATTEMPTS, 'attempt')} (run adopt --rewrite "
            "--resume)"
        )
