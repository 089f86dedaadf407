"""Which job restores a folder: the one of the layout its ``layout.json`` records (docs/
journal.md, "One interface, two implementations"), chosen in this one place, so that the
``restore`` command never asks which layout it reads. ``RESTORERS`` maps each layout to its
restore job (the same constructor and ``run(engine)``), to the options it refuses, and to its
``--native-import`` (None: the command's own, a snapshot of the folder then ImportTable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL
from dynamo_backups.core.layout import LayoutError
from dynamo_backups.jobs import journal_native
from dynamo_backups.jobs.journal_restore import JournalRestore, earliest_journal_change
from dynamo_backups.jobs.journal_restore import not_yet_message as journal_refusal
from dynamo_backups.jobs.journal_restore import unsupported as journal_unsupported
from dynamo_backups.jobs.restore import (
    Restore,
    RestoreOptions,
    RestoreReport,
    earliest_change_found,
)


class UnsupportedOption(LayoutError):
    """An option the folder's layout does not support (yet): refused before anything runs."""


class RestoreJob(Protocol):
    report: RestoreReport

    def run(self, engine: Any = None) -> RestoreReport: ...


@dataclass(frozen=True)
class Restorer:
    """A layout's restore: the job, and the options it does not take (named as flags)."""

    job: Callable[..., RestoreJob]
    # (s3 client, folder) -> the folder's earliest change and whether it was sampled: what
    # an --at that found no item names as the first restorable moment.
    earliest_change: Callable[[Any, Any], tuple[datetime, bool] | None]
    unsupported: Callable[[RestoreOptions, bool], list[str]]
    refusal: Callable[[str, list[str]], str]
    # restore_natively(aws, bucket, folder, table, options, progress, engine) -> a report
    # with ``complete`` and ``to_dict()``; None: a snapshot of the folder, then ImportTable.
    native_import: Callable[..., Any] | None = None


def _all_supported(options: RestoreOptions, native_import: bool) -> list[str]:
    return []


RESTORERS: Mapping[str, Restorer] = {
    LAYOUT_ITEMS: Restorer(Restore, earliest_change_found, _all_supported, lambda where, flags: ""),
    LAYOUT_JOURNAL: Restorer(
        JournalRestore,
        earliest_journal_change,
        journal_unsupported,
        journal_refusal,
        journal_native.restore_natively,
    ),
}


def restore_job(layout: str, *args: Any, **kwargs: Any) -> RestoreJob:
    """The restore job of a folder in ``layout`` (a name ``layout_of`` gave)."""
    return RESTORERS[layout].job(*args, **kwargs)


def earliest_change_of(layout: str) -> Callable[[Any, Any], tuple[datetime, bool] | None]:
    """How the layout finds a folder's earliest change (for an --at that found no item)."""
    return RESTORERS[layout].earliest_change


def native_importer(layout: str) -> Callable[..., Any] | None:
    """The layout's own ``--native-import`` (None: the snapshot-then-import of any folder)."""
    return RESTORERS[layout].native_import


def check_options(
    layout: str, where: str, options: RestoreOptions, native_import: bool = False
) -> None:
    """Refuse (a LayoutError: exit 2) the options ``layout``'s restore does not take."""
    restorer = RESTORERS[layout]
    refused = restorer.unsupported(options, native_import)
    if refused:
        raise UnsupportedOption(restorer.refusal(where, refused))
