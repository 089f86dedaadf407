"""``restore --native-import`` of a journal folder (docs/journal.md, "Restore options"):
DynamoDB's ImportTable makes the table from the newest base at or before the moment, straight
from the base's ``data/`` files (written for it: ``{"Item": ...}`` lines, gzip); then the
journal after the base is applied with writes: ``JournalRestore`` with ``imported_base`` folds
each partition the journal touched and writes only what differs from the base (puts, and
deletes of what the base held and the moment does not). At the base's own moment that is
nothing, unless a change reached the journal after the base was made (a late change): those
are applied too, so the table is the state at the moment, never the base's view of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.backup.journal_store import readable_base
from dynamo_backups.core.base import BaseManifest, BasePaths
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.jobs.journal_restore import JournalRestore, UnsupportedOnJournal
from dynamo_backups.jobs.journal_units import retention_clock
from dynamo_backups.jobs.native_import import ImportReport, run_import
from dynamo_backups.jobs.restore import RestoreError, RestoreOptions, RestoreReport
from dynamo_backups.jobs.tables import table_status
from dynamo_backups.jobs.units import Engine


@dataclass
class JournalImport:
    """What the native restore of a journal folder did: the base, its import, the journal."""

    base: str
    base_items: int
    imported: ImportReport
    journal: RestoreReport

    @property
    def complete(self) -> bool:
        return (
            self.imported.status == "COMPLETED"
            and self.imported.imported == self.base_items
            and self.journal.complete
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "base_items": self.base_items,
            "import": self.imported.__dict__,
            "journal": self.journal.to_dict(),
        }


def restore_natively(
    aws: AwsContext,
    bucket: str,
    folder: str,
    table: str,
    options: RestoreOptions,
    progress: ProgressSink,
    engine: Engine,
) -> JournalImport:
    """Import the base into the new ``table``, then apply the journal after it."""
    s3, dynamodb = aws.client("s3"), aws.client("dynamodb")
    api = aws.dynamodb_api(dynamodb)
    options = replace(options, into_existing=True)  # into the table ImportTable made
    job = JournalRestore(
        s3, aws.objects(s3, bucket), dynamodb, lambda request: api.call("BatchWriteItem", request),
        bucket, folder, table, options, progress, call=api.call, aws=aws,
    )  # fmt: skip
    opened = job.open()
    description = job.description(opened)
    if _exists(dynamodb, table):
        raise RestoreError(
            f"table {table} exists: ImportTable creates the table, so give a new name"
        )
    job.check_restorable(opened)  # refusals before ImportTable makes the table
    base = _base_for(s3, job, opened, options.at)
    data_prefix = BasePaths(opened.layout.items_prefix, base.moment).data_prefix
    imported = run_import(dynamodb, description, table, bucket, data_prefix, switch_ttl=False)
    if imported.status != "COMPLETED" or imported.imported != base.item_count:
        report = RestoreReport(job.report.source, table)
        report.errors.append(
            f"ImportTable of base {base.id} ended {imported.status} with {imported.imported:,} "
            f"of {base.item_count:,} items: the journal after it was not applied"
        )
        return JournalImport(base.id, base.item_count, imported, report)
    job.imported_base = base.id
    return JournalImport(base.id, base.item_count, imported, job.run(engine))


def _base_for(
    s3: Any, job: JournalRestore, folder: BackupFolder, at: datetime | None
) -> BaseManifest:
    """The base at or before the moment (now, by S3's clock, for latest) the retention rules
    keep (``readable_base``: the journal restore then reads the journal after it)."""
    clock = retention_clock(s3, job.reader(), folder.layout)
    moment = at if at is not None else clock.now.astimezone(UTC)
    table_folder = folder.layout.items_prefix
    base = readable_base(s3, job.reader(), table_folder, moment, clock, folder.where)
    if base is None:
        raise UnsupportedOnJournal(
            f"{folder.where} is a journal folder with no base at or before "
            f"{moment:%Y-%m-%dT%H:%M:%SZ}: --native-import imports a base's data/ files (make "
            "one with compact), or restore without --native-import"
        )
    return base


def _exists(dynamodb: Any, table: str) -> bool:
    try:
        table_status(dynamodb, table)
    except dynamodb.exceptions.ResourceNotFoundException:
        return False
    return True
