"""Review of 02e924c: a latest restore's pin against S3 front ends whose clocks differ by half a
second (the one answering the pin's HEADs ahead of the one dating a writer's puts).

docs/layout.md: a latest restore reads "the backup as S3 held it when the run began ... the first
attempt waits until S3's clock (its answers' ``Date``) is a second past that cutoff before it
reads: every version dated before the cutoff has then been received ... nothing that reached it
later is read, and the units of every attempt read one backup". The wait ends a second after a
``Date`` showing the cutoff's second: a front end less than a second ahead cannot end it before
the cutoff (02e924c waited 0.25 s, and this test failed on it).

On SeaweedFS (one clock) the proxy in front of it gives HEAD answers the ``Date`` of a front end
0.5 s ahead (``floor(now + 0.5 s)``); everything else is SeaweedFS's. A writer's change of two
items (a transaction, say) reaches the backup after the pin's wait, once the restore has read
the first item's partition: the restore reads the second item's new version (dated before the
cutoff), not the first's, and leaves a state the table never had."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.layout import EVENT_MODIFY, SECOND, WRITER_STREAM, VersionMetadata
from dynamo_backups.jobs.restore_pin import Prefetch
from tests import faultproxy, servers
from tests.helpers import create_table, expected_name, make_backfill, object_key, scan_all
from tests.jobs.test_restore_resume import invoke

pytestmark = pytest.mark.servers

AHEAD_SECONDS = 0.5
ROWS = 24
ROUNDS = 4


class FrontEndAhead(faultproxy.FaultProxy):
    """S3 through a proxy whose HEAD answers carry the Date of a front end ``AHEAD_SECONDS``
    ahead (this host's clock is SeaweedFS's)."""

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler_class()

        class Ahead(base):  # type: ignore[valid-type,misc]
            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "date" and self.command == "HEAD":
                    value = formatdate(int(time.time() + AHEAD_SECONDS), usegmt=True)
                super().send_header(keyword, value)

        return Ahead


def _listed_prefix(request: faultproxy.Request) -> str | None:
    """The prefix of a ListObjectVersions request, else None."""
    query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
    if request.method != "GET" or "versions" not in query:
        return None
    return query.get("prefix", [""])[0]


class Backup:
    """The item backup of a table whose ``first`` and ``last`` items (in the first and the last
    partition a restore reads) a writer always changes together."""

    def __init__(self, dynamodb: Any, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.table = create_table(dynamodb, view_type=None)
        for index in range(ROWS):
            item = {"pk": {"S": f"k{index}"}, "v": {"N": "0"}}
            dynamodb.put_item(TableName=self.table, Item=item)
        assert make_backfill(dynamodb, s3, bucket, prefix, self.table).run().complete
        keys = sorted(({"pk": {"S": f"k{index}"}} for index in range(ROWS)), key=expected_name)
        self.first, self.last = keys[0], keys[-1]
        assert expected_name(self.first)[0] != expected_name(self.last)[0]
        self.sent: list[float] = []

    def change_both(self, value: str) -> None:
        """A writer's change of both items (one transaction), sent now."""
        self.sent.append(time.time())
        for key in (self.first, self.last):
            BackupWriter(self.s3, self.bucket).put_item(
                object_key(self.prefix, self.table, key),
                dumps_item({**key, "v": {"N": value}}),
                VersionMetadata(
                    WRITER_STREAM, EVENT_MODIFY, datetime.now(UTC), "9" * 21, precision=SECOND
                ),
            )

    def after_first_read(self, value: str, waited: threading.Event) -> faultproxy.Rewrite:
        """Once the restore's first read of the first item's partition by its unit has been
        answered (before the answer goes back): the writer's change reaches the backup. The
        units run once the reading ahead during the pin's wait has stopped (``waited``): a
        listing before only reads ahead, and the unit lists again."""
        listed = f"{self.prefix}/{self.table}/{expected_name(self.first)[0]}"
        self.sent = []

        def rewrite(request: faultproxy.Request) -> Any:
            if self.sent or not waited.is_set() or _listed_prefix(request) != listed:
                return None

            def finish(answer: bytes) -> bytes:
                self.change_both(value)
                return answer

            return request.body, finish

        return rewrite


def test_a_latest_restore_reads_one_backup_with_front_ends_half_a_second_apart(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    backup = Backup(dynamodb, s3, bucket, prefix)
    waited = threading.Event()
    stop = Prefetch.stop

    def stopped(prefetch: Prefetch) -> PrefetchedReads:
        reads = stop(prefetch)
        waited.set()
        return reads

    monkeypatch.setattr(Prefetch, "stop", stopped)
    outcomes: list[dict[str, Any]] = []
    for round_ in range(1, ROUNDS + 1):
        target = f"{backup.table}-latest-{round_}"
        waited.clear()
        rewrite = backup.after_first_read(str(round_), waited)
        with FrontEndAhead(seaweedfs.endpoint, rewrite=rewrite) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
            # One unit at a time, in partition order.
            folder = f"{prefix}/{backup.table}"
            result = invoke("restore", bucket, folder, target, "--workers", "1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
        assert result.exit_code == 0, result.output
        assert backup.sent, "the restore never listed the first item's partition"
        restored = scan_all(dynamodb, target)
        outcomes.append(
            {
                "first": restored[json.dumps(backup.first, sort_keys=True)]["v"]["N"],
                "last": restored[json.dumps(backup.last, sort_keys=True)]["v"]["N"],
                "held when the run began": str(round_ - 1),
            }
        )
    # Both items are always changed together, and the change reached the backup after the
    # run's pin: every round must restore both as the backup held them when the run began.
    # On 02e924c the last partition's item is read with the change and the first's without:
    # a state the table never had.
    wrong = [
        outcome
        for outcome in outcomes
        if outcome["first"] != outcome["held when the run began"]
        or outcome["last"] != outcome["held when the run began"]
    ]
    assert wrong == [], wrong
