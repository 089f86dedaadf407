"""Benchmark: backfill, restore (latest) and restore --at on a 50,000-item table, against
DynamoDB Local and SeaweedFS, each run as the real command in its own process (so its peak
memory and CPU time are its own). Just before each step, ../shared/bench/ceiling measures the
servers' own ceiling in the same run and the same server state.

    .venv/bin/python -m bench.recovery [--items 50000] [--changed 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.credentials import Credentials
from tests import servers

from bench.common import (
    SERVER_PIDS,
    client,
    cpu_seconds,
    local_servers,
    measure_ceiling,
    measure_conditional_ceiling,
    measure_restore_reference,
    ratio,
)
from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.pipeline.backup_applier import BackupApplier

TABLE = "BenchSource"


def fill_table(dynamodb: Any, items: int) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))

    def write(start: int) -> None:
        requests = [
            {"PutRequest": {"Item": item(index, 0)}}
            for index in range(start, min(start + 25, items))
        ]
        while requests:
            answer = api.call("BatchWriteItem", {"RequestItems": {TABLE: requests}})
            requests = answer.get("UnprocessedItems", {}).get(TABLE, [])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, items, 25)))


def item(index: int, version: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"user-{index:07d}"},
        "version": {"N": str(version)},
        "balance": {"N": f"{index}.{version:04d}"},
        "name": {"S": "Ada Lovelace"},
        "tags": {"SS": ["a", "b"]},
        "note": {"S": "x" * 100},
    }


def change_items(s3: Any, bucket: str, prefix: str, count: int) -> None:
    """``count`` later MODIFYs through the stream handler's code (new versions to skip)."""
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-01-01T00:00:00.000"
    writer = BackupWriter(
        s3,
        bucket,
        objects=FastObjects(s3, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)),
    )
    applier = BackupApplier(writer, prefix, concurrency=32)
    now = time.time()
    for start in range(0, count, 100):
        records = [
            {
                "eventName": "MODIFY",
                "eventSourceARN": arn,
                "dynamodb": {
                    "ApproximateCreationDateTime": now,
                    "Keys": {"pk": {"S": f"user-{index:07d}"}},
                    "NewImage": item(index, 1),
                    "SequenceNumber": f"{index:021d}",
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
            for index in range(start, min(start + 100, count))
        ]
        assert not applier.apply(records).failures


@dataclass
class StepRun:
    report: dict[str, Any]  # the command's JSON report
    seconds: float
    peak_rss_mb: float  # the child's own high-water mark (VmHWM), read while it runs
    cpu: dict[str, float]  # CPU seconds of the child and of each server during the step


def timed(
    endpoints: dict[str, str], *arguments: str, extra_environment: Mapping[str, str] | None = None
) -> StepRun:
    """Run the CLI in a child process and measure it (``extra_environment``: e.g. another
    revision's sources as PYTHONPATH, for bench.compare)."""
    environment = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
        AWS_DEFAULT_REGION=servers.REGION,
        AWS_ENDPOINT_URL_S3=endpoints["s3"],
        AWS_ENDPOINT_URL_DYNAMODB=endpoints["dynamodb"],
        **(extra_environment or {}),
    )
    servers_before = {name: cpu_seconds(pid) for name, pid in SERVER_PIDS.items()}
    children_before = _children_cpu_seconds()
    started = time.perf_counter()
    # The output goes to files, not pipes: a report larger than a pipe's buffer (history of
    # an item with many changes) would block the child while this loop waits for it to end.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamo_backups.cli.entry",
                "--quiet",
                "--output",
                "json",
                *arguments,
            ],
            env=environment,
            stdout=out,
            stderr=err,
        )
        peak_kb = 0
        while child.poll() is None:
            peak_kb = max(peak_kb, _high_water_kb(child.pid))
            time.sleep(0.05)
        cpu = {"client_s": round(_children_cpu_seconds() - children_before, 2)}
        for name, pid in SERVER_PIDS.items():
            cpu[f"{name}_s"] = round(cpu_seconds(pid) - servers_before[name], 1)
        child.wait()
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"{arguments} failed: {stderr.decode()[-2000:]}")
    return StepRun(json.loads(stdout), elapsed, peak_kb / 1024, cpu)


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended (the step's child, once reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _high_water_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def measured_step(endpoints: dict[str, str], *arguments: str) -> tuple[dict[str, Any], dict]:
    """The servers' ceiling, measured just before the step (same server state, servers warm),
    then the step itself: its report and its figures."""
    ceiling = measure_ceiling(endpoints, "s3,dynamodb", "--items", "20000")
    run = timed(endpoints, *arguments)
    figures = {
        "seconds": round(run.seconds, 1),
        "peak_rss_mb": round(run.peak_rss_mb),
        "cpu": run.cpu,
        "ceiling": ceiling,
    }
    return run.report, figures


def cpu_per_item(figures: dict[str, Any], items: int) -> int:
    return round(figures["cpu"]["client_s"] / items * 1e6)


def restore_ceiling(ceiling: dict[str, Any] | None) -> float | None:
    if not ceiling:
        return None
    return min(ceiling["s3_get_per_s"], ceiling["ddb_batch_write_items_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--changed", type=int, default=5_000)
    arguments = parser.parse_args()
    items = arguments.items
    results: dict[str, Any] = {"items": items, "changed_after_moment": arguments.changed}
    with local_servers() as endpoints:
        s3 = client("s3", endpoints["s3"])
        dynamodb = client("dynamodb", endpoints["dynamodb"])
        bucket, prefix = "bench-recovery", f"run-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="warm", Body=b"x")
        fill_table(dynamodb, items)

        # A backfill writes with If-None-Match into a versioned bucket (it must never replace
        # what the stream wrote); the server's own rate for such puts, same Node client:
        conditional = measure_conditional_ceiling(endpoints)
        report, figures = measured_step(
            endpoints, "backfill", TABLE, "--bucket", bucket, "--prefix", prefix
        )
        assert report["tables"][0]["written"] == items, report
        rate = round(items / figures["seconds"])
        results["backfill"] = {"items_per_s": rate, **figures}
        results["backfill"]["client_cpu_us_per_item"] = cpu_per_item(figures, items)
        if figures["ceiling"]:
            ceiling = figures["ceiling"]
            results["backfill"]["vs_ceiling"] = ratio(rate, ceiling["s3_put_per_s"])
            results["backfill"]["vs_versioned_conditional_put_ceiling"] = ratio(
                rate, ceiling.get("s3_versioned_conditional_put_per_s")
            )
        if conditional:
            results["backfill"]["conditional_put_ceiling"] = conditional
            results["backfill"]["vs_versioned_put"] = ratio(rate, conditional["s3_put_per_s"])
            results["backfill"]["vs_conditional_put"] = ratio(
                rate, conditional["s3_conditional_put_per_s"]
            )

        time.sleep(1.5)  # S3 keeps whole seconds: the moment falls between the two sets of writes
        moment = datetime.now(UTC)
        time.sleep(1.5)
        change_items(s3, bucket, prefix, arguments.changed)

        folder = f"{prefix}/{TABLE}"
        for step, extra in (
            ("restore_latest", ["Latest"]),
            ("restore_at", ["AtMoment", "--at", moment.isoformat()]),
        ):
            report, figures = measured_step(endpoints, "restore", bucket, folder, *extra)
            assert report["written"] == items, report
            rate = round(items / figures["seconds"])
            results[step] = {
                "items_per_s": rate,
                "versions_read": report["versions_read"],
                **figures,
                "vs_ceiling": ratio(rate, restore_ceiling(figures["ceiling"])),
                "client_cpu_us_per_item": cpu_per_item(figures, items),
            }
        reference = measure_restore_reference(endpoints, bucket, folder, "NodeReference", "pk")
        if reference:
            assert reference["written"] == items, reference
            results["restore_node_reference"] = reference
            for step in ("restore_latest", "restore_at"):
                results[step]["vs_node_reference"] = ratio(
                    results[step]["items_per_s"], reference["items_per_s"]
                )
        restored = dynamodb.get_item(TableName="AtMoment", Key={"pk": {"S": "user-0000000"}})
        assert restored["Item"]["version"]["N"] == "0", "restore --at returned a later version"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
