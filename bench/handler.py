"""Benchmark: the backup handler on 100-record batches of distinct keys, against SeaweedFS.

Prints, from one run: the handler's records/s; the same batches written serially; plain boto3
put_object at the same concurrency; and the server's own ceiling measured by
../shared/bench/ceiling --only s3 (a lean Node client).

    .venv/bin/python -m bench.handler [--batches 30] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.credentials import Credentials
from tests import servers

from bench.common import client, local_servers, measure_ceiling, ratio
from dynamo_backups.ddbjson import dumps_item
from dynamo_backups.handler import BackupConfig, build_backup_applier

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Bench/stream/2026-01-01T00:00:00.000"


def batch(number: int, size: int = 100) -> list[dict[str, Any]]:
    """Lambda-shaped INSERT records of distinct items, ~200 bytes each."""
    records = []
    for index in range(size):
        key = {"pk": {"S": f"user-{number:05d}-{index:03d}"}}
        image = {
            **key,
            "name": {"S": "Ada Lovelace"},
            "balance": {"N": "1234.5678"},
            "tags": {"SS": ["a", "b"]},
            "note": {"S": "x" * 80},
        }
        records.append(
            {
                "eventID": uuid.uuid4().hex,
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": ARN,
                "dynamodb": {
                    "ApproximateCreationDateTime": time.time(),
                    "Keys": key,
                    "NewImage": image,
                    "SequenceNumber": f"{number:010d}{index:011d}",
                    "SizeBytes": 200,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        )
    return records


def credentials() -> Credentials:
    return Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


def handler_rate(
    s3: Any, bucket: str, batches: list[list[dict]], concurrency: int, s3_client: str = "lean"
) -> float:
    """The handler's own applier, built as the Lambda entry point builds it."""
    config = BackupConfig(
        bucket, f"bench-{uuid.uuid4().hex[:6]}", concurrency=concurrency, s3_client=s3_client
    )
    applier = build_backup_applier(config, s3, credentials())
    started = time.perf_counter()
    for records in batches:
        result = applier.apply(records)
        assert not result.failures, result.failures[0]
    elapsed = time.perf_counter() - started
    applier.close()
    return sum(map(len, batches)) / elapsed


def boto3_rate(s3: Any, bucket: str, batches: list[list[dict]], concurrency: int) -> float:
    """The same puts with nothing of ours around them: a thread pool calling put_object."""
    prefix = f"plain-{uuid.uuid4().hex[:6]}"
    jobs = [
        (
            f"{prefix}/{record['dynamodb']['SequenceNumber']}",
            dumps_item(record["dynamodb"]["NewImage"]),
        )
        for records in batches
        for record in records
    ]
    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        list(pool.map(lambda job: s3.put_object(Bucket=bucket, Key=job[0], Body=job[1]), jobs))
        elapsed = time.perf_counter() - started
    return len(jobs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    arguments = parser.parse_args()
    with local_servers(dynamodb=False) as endpoints:
        s3 = client("s3", endpoints["s3"], pool=max(64, arguments.concurrency), attempts=1)
        bucket = "bench-handler"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        handler_rate(s3, bucket, [batch(99_999)], arguments.concurrency)  # warm-up
        work = [batch(number) for number in range(arguments.batches)]
        results = {
            "records": sum(map(len, work)),
            "handler_records_per_s": round(handler_rate(s3, bucket, work, arguments.concurrency)),
            "handler_boto3_client_records_per_s": round(
                handler_rate(s3, bucket, work, arguments.concurrency, "boto3")
            ),
            "serial_records_per_s": round(handler_rate(s3, bucket, work[:5], 1)),
            "plain_boto3_puts_per_s": round(boto3_rate(s3, bucket, work, arguments.concurrency)),
            "concurrency": arguments.concurrency,
        }
        ceiling = measure_ceiling(endpoints, "s3")
        results["ceiling"] = ceiling
        ceiling_rate = ceiling["s3_put_per_s"] if ceiling else None
        results["handler_vs_boto3"] = ratio(
            results["handler_records_per_s"], results["plain_boto3_puts_per_s"]
        )
        results["handler_vs_ceiling"] = ratio(results["handler_records_per_s"], ceiling_rate)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
