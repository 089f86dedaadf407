"""The last phase of restore --delete-absent reads a unit's kept names only as its record
states them: a chunk holding fewer (or more) lines than recorded stops it before it deletes
anything. No servers: the chunks are bodies in a dict."""

from __future__ import annotations

import gzip

import pytest

from dynamo_backups.jobs.restore_absent import (
    KEPT_NAMES,
    ScratchLines,
    ScratchMismatch,
    chunk_key,
    scratch_lines,
)


def written(prefix: str, names: list[str], store: dict[str, bytes]) -> dict[str, object]:
    sink = ScratchLines(KEPT_NAMES, store.__setitem__, prefix)
    for name in names:
        sink.add(name)
    return sink.close()


def test_the_recorded_lines_are_read_back() -> None:
    store: dict[str, bytes] = {}
    outputs = [written("a/", ["n1", "n2"], store), written("b/", ["n3"], store)]
    assert list(scratch_lines(KEPT_NAMES, outputs, store.__getitem__)) == ["n1", "n2", "n3"]


def test_a_chunk_with_other_lines_than_recorded_stops_the_reading() -> None:
    """Another attempt's chunk in its place (or a damaged one): fewer names than recorded."""
    store: dict[str, bytes] = {}
    outputs = [written("a/", ["n1", "n2"], store)]
    store[chunk_key("a/", 0)] = gzip.compress(b"n1\n")
    with pytest.raises(ScratchMismatch, match="hold 1 lines where the unit recorded 2"):
        list(scratch_lines(KEPT_NAMES, outputs, store.__getitem__))
