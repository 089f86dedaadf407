"""Hostile review of resume-absent: verify resumed on Spark after a lifecycle rule expired
the run's spill. The scan units' records outlive their chunks; the resumed compare reads
nothing for the table side and reports a table item the backup lacks as no difference at all.
DynamoDB Local, SeaweedFS and a local Spark."""

from __future__ import annotations

from typing import Any

import pytest

from tests import servers
from tests.engines.test_engines import spark  # noqa: F401 (the module's local Spark)
from tests.engines.test_resume_last_phase import name_in, verify_job
from tests.helpers import create_table, make_backfill

pytestmark = pytest.mark.servers


class DriverKilled(BaseException):
    """The driver process dying (SIGKILL, OOM) between two stages."""


class DiesBeforeCompare:
    """Spark, whose driver dies when the compare stage would start."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name = engine.name
        self.local = engine.local
        self.slots = engine.slots

    def run(self, task: Any, units: Any, rate: Any, progress: Any) -> Any:
        if any(unit.stage == "compare" for unit in units):
            raise DriverKilled
        return self.engine.run(task, units, rate, progress)


def test_verify_resumed_after_its_spill_expired_misses_an_item_the_backup_lacks(
    spark: Any,  # noqa: F811 (the fixture imported above)
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(40):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    partition = "3"
    missing = name_in(partition, "new")
    dynamodb.put_item(TableName=table, Item={**missing, "v": {"N": "1"}})  # not in the backup

    # The driver dies once the scan stage is done on Spark (recorded, spilled to S3).
    with pytest.raises(DriverKilled):
        verify_job(dynamodb, s3, bucket, prefix, table).run(DiesBeforeCompare(spark))

    # A lifecycle rule on the scratch folder expires the spill (the records stay).
    jobs = f"{prefix}/.dynamo-backups/{table}/jobs/verify/"
    spilled = [
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=jobs)
        for entry in page.get("Contents", [])
        if "/scratch/spill/" in entry["Key"]
    ]
    assert spilled
    for key in spilled:
        s3.delete_object(Bucket=bucket, Key=key)

    resumed = verify_job(dynamodb, s3, bucket, prefix, table).run(spark)
    assert resumed.errors or resumed.missing == 1, (
        f"verify resumed without its spill: errors={resumed.errors}, missing="
        f"{resumed.missing}, unfinished={resumed.unfinished_units}, items_in_table="
        f"{resumed.items_in_table}: the item the backup lacks went unreported"
    )
