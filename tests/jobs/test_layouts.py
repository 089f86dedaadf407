"""Every layout a ``layout.json`` may name has one implementation, chosen in one place
(``jobs/layouts``), and a folder's ``layout.json`` chooses it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from dynamo_backups.backup import layouts as names
from dynamo_backups.backup.folder import BackupFolder
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.layouts import ITEM_LAYOUT, JOURNAL_LAYOUT, LAYOUTS, layout_for


def test_every_layout_name_has_one_implementation() -> None:
    assert tuple(LAYOUTS) == names.LAYOUTS
    assert all(layout.name == name for name, layout in LAYOUTS.items())
    # Every capability is the layout's own: none is left unset.
    for layout in LAYOUTS.values():
        unset = [f.name for f in fields(layout) if getattr(layout, f.name) is None]
        assert unset == (["native_import"] if layout is ITEM_LAYOUT else [])


@pytest.mark.parametrize(
    ("manifest", "chosen"),
    [
        (None, ITEM_LAYOUT),
        ({"key_hash": "md5"}, ITEM_LAYOUT),
        ({"layout": "journal"}, JOURNAL_LAYOUT),
    ],
)
def test_the_folders_layout_json_chooses(manifest: dict | None, chosen: object) -> None:
    folder = BackupFolder("b", TableLayout.of("Prod", "Users"), manifest, None)
    assert layout_for(folder) is chosen


def test_an_unknown_layout_is_refused() -> None:
    folder = BackupFolder("b", TableLayout.of("Prod", "Users"), {"layout": "columns"}, None)
    with pytest.raises(names.UnknownLayout):
        layout_for(folder)
