"""The layouts a backup folder can be in, and which one a folder is: ``layout.json``'s
``"layout"`` field (``"items" | "journal"``; absent: ``items``, every folder written before the
journal layout). Each layout's implementation (docs/journal.md, "One interface, two
implementations") is one ``jobs/layouts.Layout`` object, chosen once per opened folder by
``jobs/layouts.layout_for`` from ``layout_of``; writing a batch is chosen below it, in
``pipeline/appliers.APPLIERS``, for the Lambda handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo_backups.core.layout import LayoutError

LAYOUT_ITEMS = "items"
LAYOUT_JOURNAL = "journal"
LAYOUTS = (LAYOUT_ITEMS, LAYOUT_JOURNAL)


class UnknownLayout(LayoutError):
    """A ``layout.json`` naming a layout this version does not know."""


class LayoutMismatch(LayoutError):
    """A writer told to write one layout into a folder that records the other."""


def layout_of(manifest: Mapping[str, Any] | None) -> str:
    """The layout ``layout.json`` records; a folder without one (or without the field, every
    folder written before the journal layout) is the item layout."""
    name = (manifest or {}).get("layout", LAYOUT_ITEMS)
    if name not in LAYOUTS:
        raise UnknownLayout(f"layout {name!r} is not one this version reads ({', '.join(LAYOUTS)})")
    return str(name)


def check_layout(recorded: str, wanted: str | None, where: str) -> str:
    """The folder's layout, refusing a writer told another (``wanted`` None: no opinion).
    The two layouts' objects could never be read as one history, so nothing is written."""
    if wanted is not None and wanted != recorded:
        raise LayoutMismatch(
            f"{where} holds a backup in the {recorded} layout (its layout.json says so), not "
            f"the {wanted} layout: pass --layout {recorded}, or use another prefix or bucket"
        )
    return recorded


def manifest_fields(layout: str) -> dict[str, str]:
    """What ``layout.json`` gains for ``layout``: nothing for the item layout (a folder without
    the field is one, so item folders' manifests stay as every earlier version wrote them)."""
    return {} if layout == LAYOUT_ITEMS else {"layout": layout}
