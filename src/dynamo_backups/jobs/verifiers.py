"""Which job verifies a folder: the one of the layout its ``layout.json`` records (docs/
journal.md, "One interface, two implementations"), chosen in this one place, so that the
``verify`` command never asks which layout it reads. ``VERIFIERS`` maps each layout to its
verify job (the same constructor, ``run(engine)`` and report).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL
from dynamo_backups.jobs.journal_verify import JournalVerify
from dynamo_backups.jobs.verify import Verify

VERIFIERS: Mapping[str, type[Verify]] = {
    LAYOUT_ITEMS: Verify,
    LAYOUT_JOURNAL: JournalVerify,
}


def verify_job(layout: str, *args: Any, **kwargs: Any) -> Verify:
    """The verify job of a folder in ``layout`` (a name ``layout_of`` gave)."""
    return VERIFIERS[layout](*args, **kwargs)
