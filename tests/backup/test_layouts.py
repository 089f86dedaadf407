"""Which layout a folder's layout.json names (pure)."""

from __future__ import annotations

import pytest

from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL, layout_of


def test_folders_without_the_field_are_the_item_layout() -> None:
    assert layout_of(None) == LAYOUT_ITEMS
    assert layout_of({"format": "dynamo-backups", "key_hash": "md5"}) == LAYOUT_ITEMS
    assert layout_of({"layout": "journal"}) == LAYOUT_JOURNAL


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="not one this version reads"):
        layout_of({"layout": "columns"})
