"""Requests and time of ``history`` of one item on a journal folder (docs/journal.md,
"Implemented: history and snapshot"): a month of changes to 10,000 items written as batches of
1,000 (split at hours, as the writers split them) into SeaweedFS on loopback, then the history
of one item read with requests counted.

    .venv/bin/python -m bench.journal_history [--changes 1000000]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from tests import servers

from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.folder import open_folder
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.journal import JournalRecord, encode_piece, piece_name, split_batch
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.journal_history import journal_item_history

BATCH = 1_000
ITEMS = 10_000
PREFIX, TABLE = "Bench", "Journal"
STREAM = f"arn:aws:dynamodb:us-east-1:1:table/{TABLE}/stream/2026-11-01T00:00:00.000"


class CountingObjects(BotocoreObjects):
    """The bucket's objects, counting GETs and LISTs."""

    def __init__(self, s3: Any, bucket: str) -> None:
        super().__init__(s3, bucket)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def read_object(self, key: str, version_id: str | None = None) -> Any:
        with self.lock:
            self.counts["GET"] += 1
        return super().read_object(key, version_id)

    def list_objects_page(self, prefix: str, token: str | None = None) -> Any:
        with self.lock:
            self.counts["LIST"] += 1
        return super().list_objects_page(prefix, token)


def write_journal(s3: Any, bucket: str, changes: int) -> int:
    """``changes`` changes over a month, as batches of 1,000: the number of pieces."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(days=30) / changes

    def batch(number: int) -> int:
        records = []
        for index in range(number * BATCH, (number + 1) * BATCH):
            key = {"pk": {"S": f"item-{index % ITEMS}"}}
            image = {**key, "v": {"N": str(index)}, "pad": {"S": "x" * 100}}
            records.append(
                JournalRecord(STREAM, str(10**20 + index), "MODIFY", start + step * index, key,
                              image, event_id=f"e{index}")
            )  # fmt: skip
        pieces = split_batch(records)
        for piece in pieces:
            key = f"{PREFIX}/{TABLE}/journal/{piece_name(piece)}"
            s3.put_object(Bucket=bucket, Key=key, Body=encode_piece(piece))
        return len(pieces)

    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(batch, range(changes // BATCH)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    changes = parser.parse_args().changes
    server = servers.start_seaweedfs()
    try:
        s3 = servers.make_client("s3", server.endpoint, max_pool_connections=64)
        bucket = "bench-journal-history"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
        layout = TableLayout.of(PREFIX, TABLE)
        ensure_manifest(BackupWriter(s3, bucket), layout, schema, {"pk": "S"}, "journal")
        began = time.monotonic()
        pieces = write_journal(s3, bucket, changes)
        print(f"wrote {changes:,} changes as {pieces:,} pieces in {time.monotonic() - began:.1f} s")
        folder = open_folder(s3, bucket, PREFIX, TABLE)
        objects = CountingObjects(s3, bucket)
        began = time.monotonic()
        _, entries = journal_item_history(s3, objects, folder, {"pk": {"S": "item-42"}})
        print(
            f"history of one item: {len(entries)} changes, {objects.counts['LIST']} LISTs of "
            f"the journal, 1 LIST of bases/, {objects.counts['GET']:,} GETs, "
            f"{time.monotonic() - began:.1f} s"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
