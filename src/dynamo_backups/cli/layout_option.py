"""``--layout``: which backup layout a writer (stream, deploy, template, backfill) writes a
folder in. Without it, a writer writes the folder's recorded layout (the item layout for a
new folder); with it, a folder recorded in the other layout is refused (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from dynamo_backups.backup.layouts import LAYOUTS

F = TypeVar("F", bound=Callable[..., object])


def layout_option(command: F) -> F:
    return click.option(
        "--layout",
        "folder_layout",
        type=click.Choice(LAYOUTS, case_sensitive=False),
        default=None,
        help="items: an object per item, a version per change (the default for a new "
        "folder); journal: an object per delivered batch (docs/journal.md). Default: the "
        "folder's own (its layout.json); one that contradicts it is refused.",
    )(command)
