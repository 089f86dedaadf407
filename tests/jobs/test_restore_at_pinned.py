"""A resumed ``restore --at`` reads the backup the first attempt read: a change dated before
the moment that reaches the backup between the attempts (a lagging stream, a replay) is read
by neither, and a resume with another ``--at`` is refused. The first attempt's units fail for
real (a fault proxy rejects one partition's writes). DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.layout import EVENT_MODIFY, SECOND, WRITER_STREAM, VersionMetadata
from tests import faultproxy, servers
from tests.helpers import create_table, expected_name, make_backfill, object_key, scan_all
from tests.jobs.test_restore_resume import fail_puts_in_partition, invoke

pytestmark = pytest.mark.servers

ROWS = 40


def test_a_resumed_restore_at_a_moment_reads_the_backup_its_first_attempt_read(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The failed first attempt writes its unwritten keys to TABLE.unwritten-keys.jsonl in the
    # current directory: the test's own, not the repository's.
    monkeypatch.chdir(tmp_path)
    table = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    backup = scan_all(dynamodb, table)
    time.sleep(3)  # the moment is seconds after the backfill's reads
    at = datetime.now(UTC).replace(microsecond=0)
    folder, target = f"{prefix}/{table}", f"{table}-at"
    late = {"pk": {"S": "k7"}}
    partition = expected_name(late)[0]

    rule, seen = fail_puts_in_partition(partition)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(
            "--output", "json", "restore", bucket, folder, target, "--at", at.isoformat()
        )
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and seen["rejected"] >= 1, first.output
    assert json.loads(first.stdout)["unfinished_units"] == [f"partition-{partition}"]

    # A stream change dated a second before the moment reaches the backup only now.
    changed = {**late, "v": {"N": "700"}}
    BackupWriter(s3, bucket).put_item(
        object_key(prefix, table, late),
        dumps_item(changed),
        VersionMetadata(
            WRITER_STREAM, EVENT_MODIFY, at - timedelta(seconds=1), "9" * 21, precision=SECOND
        ),
    )

    other = (at - timedelta(seconds=1)).isoformat()
    refused = invoke("restore", bucket, folder, target, "--at", other, "--resume")
    assert refused.exit_code == 1 and "resume it with the same options" in refused.output

    resumed = invoke("restore", bucket, folder, target, "--at", at.isoformat(), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert scan_all(dynamodb, target) == backup  # k7 as the first attempt's backup held it
    job = f"{prefix}/.dynamo-backups/{table}/jobs/restore-into-{target}/"
    run = read_document(s3, bucket, job + "run.json")
    assert read_document(s3, bucket, f"{job}{run['run_id']}/scratch/moment.json") is not None

    # A new run reads the late change, as its moment's backup holds it.
    again = invoke("restore", bucket, folder, f"{table}-again", "--at", at.isoformat())
    assert again.exit_code == 0, again.output
    assert scan_all(dynamodb, f"{table}-again") == {
        **backup,
        json.dumps(late, sort_keys=True): changed,
    }
