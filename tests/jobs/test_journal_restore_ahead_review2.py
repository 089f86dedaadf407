"""Review of 8a039ed (a journal restore reads the base of every partition unit ahead, at most
as many partitions as units run at once): what held against DynamoDB Local and SeaweedFS.

A resumed run reads ahead only the partitions its finished units left (the reader would
otherwise hold partitions no unit takes, and stop reading ahead once ``depth`` of them wait);
units that failed before taking their partition, and after, are done again from the base
exactly; units run in another order than the reader's restore the same items. No data
problem of the read-ahead was found; the proven problems are pure (tests/core/
test_fast_json_review2.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws import curl_posts
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.core.units import UnitResult, UnitTask, WorkUnit
from dynamo_backups.jobs import journal_restore
from dynamo_backups.jobs.journal_restore import JournalRestore
from dynamo_backups.jobs.restore import RestoreOptions
from tests import servers
from tests.jobs.test_journal_compact_restore import History, restored_state
from tests.jobs.test_journal_restore_ahead import backed_up_journal, reads_ahead
from tests.servers import make_client

__all__ = ["backed_up_journal"]  # the fixture, used by name

FAIL_BEFORE_TAKE = ("3", "a")  # partitions whose units fail reading their routed records
# Items whose writes fail, so their units (of partitions c, 2 and 4: 4 weighs a late change
# against the index, so its unit reads the base again) take their states, then fail.
REFUSED = ("k00", "k07", "k14")


def _job(
    dynamodb_local: Any, s3: Any, bucket: str, folder: str, target: str, **options: Any
) -> JournalRestore:
    dynamodb = make_client("dynamodb", dynamodb_local.endpoint)
    credentials = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
    api = RawDynamoDB(dynamodb, credentials, curl_posts.curl_posts_for)
    refuse = options.pop("refuse_writes_of", None)

    def write(request: dict[str, Any]) -> dict[str, Any]:
        for requests in request["RequestItems"].values():
            for one in requests:
                item = one.get("PutRequest", {}).get("Item")
                if refuse is not None and item is not None and refuse(item):
                    raise ConnectionResetError("injected: the write's connection was cut")
        return api.call("BatchWriteItem", request)  # type: ignore[no-any-return]

    return JournalRestore(
        s3, BotocoreObjects(s3, bucket), dynamodb, write, bucket, folder, target,
        RestoreOptions(**options),
    )  # fmt: skip


class Backwards(ThreadEngine):
    """The threads engine running a stage's units last first (another engine's order)."""

    def run(
        self, task: UnitTask, units: Sequence[WorkUnit], rate: float | None, progress: ProgressSink
    ) -> list[UnitResult]:
        return super().run(task, list(reversed(units)), rate, progress)


@pytest.mark.servers
def test_a_resumed_run_reads_ahead_only_the_unfinished_partitions_and_restores_them_all(
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    dynamodb_local: Any,
    s3: Any,
    bucket: str,
    backed_up_journal: tuple[str, str, History],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    _, folder, history = backed_up_journal
    expected = history.state_at(None)
    caplog.set_level(logging.DEBUG, logger="dynamo_backups.jobs.restore")
    real_routed_input = journal_restore.routed_input

    def cut_before_take(objects: Any, partition: str, *rest: Any, **options: Any) -> Any:
        if partition.startswith(FAIL_BEFORE_TAKE):
            raise ConnectionResetError(f"injected: routed records of {partition!r} cut")
        return real_routed_input(objects, partition, *rest, **options)

    monkeypatch.setattr(journal_restore, "routed_input", cut_before_take)
    target = f"restored-{os.urandom(4).hex()}"
    job = _job(dynamodb_local, s3, bucket, folder, target,
               refuse_writes_of=lambda item: item["pk"]["S"] in REFUSED,
               unwritten_keys_file=str(tmp_path / "unwritten.jsonl"))  # fmt: skip
    first = job.run(ThreadEngine(4))
    assert not first.complete and len(first.errors) == len(FAIL_BEFORE_TAKE), first.errors
    assert first.unwritten >= len(REFUSED), first
    unfinished = len(FAIL_BEFORE_TAKE) + len(REFUSED)
    caplog.clear()

    monkeypatch.setattr(journal_restore, "routed_input", real_routed_input)
    resumed = _job(dynamodb_local, s3, bucket, folder, target, resume=True).run(Backwards(2))
    assert resumed.complete, resumed
    assert restored_state(dynamodb, target) == expected
    # Every partition read ahead was taken by its unit: none of the finished ones was read
    # (the reader's order is the reverse of the units').
    read, taken = reads_ahead(caplog)
    assert 1 <= read == taken <= unfinished, (read, taken, unfinished)

    caplog.clear()
    target = f"restored-{os.urandom(4).hex()}"
    report = _job(dynamodb_local, s3, bucket, folder, target, partitions=256).run(Backwards(3))
    assert report.complete and restored_state(dynamodb, target) == expected
    assert reads_ahead(caplog)[1] >= 1
