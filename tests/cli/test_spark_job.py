"""The Spark job entry point: spark-submit (local[2]) runs a command on the Spark engine, and
Glue's way of passing parameters is understood."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dynamo_backups.cli import spark_job
from tests import servers
from tests.helpers import create_table, object_key


def test_glue_parameters_give_the_command_and_the_engine_is_spark() -> None:
    glue = [
        "--JOB_ID",
        "j_1",
        "--dynamo_backups_command",
        "restore my-backups 'Prod/Users' Users-restored --at 2026-11-27T09:00:00Z",
        "--JOB_RUN_ID",
        "jr_1",
    ]
    assert spark_job.command_arguments(glue) == [
        "restore",
        "my-backups",
        "Prod/Users",
        "Users-restored",
        "--at",
        "2026-11-27T09:00:00Z",
        "--engine",
        "spark",
    ]
    chosen = ["verify", "Users", "--bucket", "b", "--engine", "processes"]
    assert spark_job.command_arguments(chosen) == chosen


@pytest.mark.servers
def test_spark_submit_runs_a_backfill_on_the_spark_engine(
    dynamodb_local: servers.Server,
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    # With a stream, as a backed-up table has: without one backfill warns on stderr, and
    # spark-submit's Python runner merges the driver's stderr into its stdout.
    table = create_table(dynamodb)
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    entry = subprocess.run(
        [sys.executable, "-m", "dynamo_backups.cli.spark_job", "--path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    environment = {
        **os.environ,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint,
        "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    submitted = subprocess.run(
        [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            "local[2]",
            entry,
            "--output",
            "json",
            "-q",
            "backfill",
            table,
            "--bucket",
            bucket,
            "--prefix",
            prefix,
            "--segments",
            "4",
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=240,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    (report,) = json.loads(submitted.stdout)["tables"]
    assert (report["scanned"], report["written"], report["units"]) == (20, 20, 4)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/")
    assert listed["KeyCount"] == 20
    assert object_key(prefix, table, {"pk": {"S": "k0"}}) in [c["Key"] for c in listed["Contents"]]
