"""Writing a base's files (docs/journal.md, "Bases"): one partition's ImportTable-ready data
files and its index file, and the manifest written last. Shared by every job that makes a
base: ``compact`` (a fold of the previous base and the journal), ``backfill`` into a journal
folder (a scan of the table) and ``convert`` (an item-layout folder's state at a moment).

File names are fixed by the partition (``data/<part>-<nnnnn>.json.gz``,
``index/<part>.jsonl.gz``), so a unit done again replaces its own files; the manifest lists
the files with their line counts and md5, and a base without it is not a base.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.journal_store import GZIP_TYPE, JSON_TYPE, put_bytes, put_if_absent
from dynamo_backups.core.base import (
    BaseManifest,
    BasePaths,
    encode_base_line,
    encode_index_line,
)
from dynamo_backups.core.journal import ItemState, gzip_lines
from dynamo_backups.jobs.journal_units import present_sorted

DATA_FILE_ITEMS = 100_000  # lines per data file (ImportTable reads any number of files)
FILE_FIELDS = ("kind", "name", "partition", "items", "md5")


def write_partition(
    objects: Any,
    paths: BasePaths,
    partition: str,
    states: Mapping[str, ItemState],
    policy: RetryPolicy,
    tags: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Write one partition of a base: the present items of ``states`` (by object name) as
    data files, every state (removals too) as its index. The files' manifest entries, and
    how many items are present."""
    present = present_sorted(states)
    outputs: list[dict[str, Any]] = []
    for number, start in enumerate(range(0, len(present), DATA_FILE_ITEMS)):
        chunk = present[start : start + DATA_FILE_ITEMS]
        body = gzip_lines(encode_base_line(item) for _, item in chunk)
        key = paths.data_key(partition, number)
        put_bytes(objects, key, body, GZIP_TYPE, policy, tags)
        outputs.append(file_entry("data", key, paths.prefix, partition, len(chunk), body))
    if states:
        lines = [encode_index_line(states[name]) for name in sorted(states)]
        body = gzip_lines(lines)
        key = paths.index_key(partition)
        put_bytes(objects, key, body, GZIP_TYPE, policy, tags)
        outputs.append(file_entry("index", key, paths.prefix, partition, len(lines), body))
    return outputs, len(present)


def file_entry(
    kind: str, key: str, base_prefix: str, partition: str, items: int, body: bytes
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": key[len(base_prefix) :],
        "partition": partition,
        "items": items,
        "md5": hashlib.md5(body, usedforsecurity=False).hexdigest(),
    }


def manifest_files(outputs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's ``files``: the file entries among units' outputs, by name."""
    files = sorted((output for output in outputs if "kind" in output), key=lambda o: o["name"])
    return [{name: output[name] for name in FILE_FIELDS} for output in files]


def put_manifest(
    objects: Any,
    paths: BasePaths,
    manifest: BaseManifest,
    policy: RetryPolicy,
    tags: Mapping[str, str] | None = None,
) -> bool:
    """Write the manifest (``If-None-Match``): the base exists from now on. False when a
    manifest was there already."""
    body = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode()
    return put_if_absent(objects, paths.manifest_key, body, JSON_TYPE, policy, tags)
