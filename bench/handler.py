"""Benchmark: the backup handler on 100-record batches of distinct keys, against SeaweedFS.

Prints, from one run: the handler's records/s (default transport, and with
DYNAMO_BACKUPS_TRANSPORT=botocore); the same batches written serially; plain boto3 put_object
at the same concurrency; the client's CPU per record; and the server's own ceiling for the
same work, measured by ../shared/bench/ceiling --only s3 (a lean Node client):
``s3_versioned_put_per_s``, plain puts into a versioned bucket.

    .venv/bin/python -m bench.handler [--batches 30] [--concurrency 16]

With ``--entry-point`` it only times the Lambda entry point, ``dynamo_backups.handler.backup``,
configured by BACKUP_BUCKET / BACKUP_PREFIX / BACKUP_CONCURRENCY against the S3 server named by
AWS_ENDPOINT_URL_S3, and prints one JSON line: bench.compare runs it under each revision's
sources. That is why this module imports dynamo_backups inside its functions: the entry point is
the one interface every revision has, the modules the other measures use are newer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests import servers

from bench.common import client, local_servers, measure_ceiling, ratio

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


def handler_rate(
    bucket: str, batches: list[list[dict]], concurrency: int, transport: str = "fast"
) -> tuple[float, float]:
    """The handler's own applier, built as the Lambda entry point builds it: records/s and
    client CPU microseconds per record."""
    from dynamo_backups.aws.context import AwsContext
    from dynamo_backups.handler import BackupConfig, build_backup_applier

    os.environ["DYNAMO_BACKUPS_TRANSPORT"] = transport
    config = BackupConfig(bucket, f"bench-{uuid.uuid4().hex[:6]}", concurrency=concurrency)
    applier = build_backup_applier(config, AwsContext(connect_timeout=5, read_timeout=30))
    cpu, started = time.process_time(), time.perf_counter()
    for records in batches:
        result = applier.apply(records)
        assert not result.failures, result.failures[0]
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    applier.close()
    count = sum(map(len, batches))
    return count / elapsed, cpu / count * 1e6


def boto3_rate(s3: Any, bucket: str, batches: list[list[dict]], concurrency: int) -> float:
    """The same puts with nothing of ours around them: a thread pool calling put_object."""
    from dynamo_backups.core.ddbjson import dumps_item

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


def entry_point_rate(batches: int) -> dict[str, Any]:
    """Records/s, CPU per record (this process, every thread) and peak RSS of the Lambda entry
    point on ``batches`` 100-record batches, after one warm-up batch (clients, threads)."""
    from dynamo_backups.handler import backup

    def apply(records: list[dict]) -> None:
        answer = backup({"Records": records}, None)
        assert not answer.get("batchItemFailures"), answer

    apply(batch(99_999))
    work = [batch(number) for number in range(batches)]
    cpu, started = time.process_time(), time.perf_counter()
    for records in work:
        apply(records)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    count = sum(map(len, work))
    return {
        "records": count,
        "seconds": round(elapsed, 2),
        "records_per_s": round(count / elapsed),
        "client_cpu_us_per_record": round(cpu / count * 1e6),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--entry-point", action="store_true", help="see the module's doc")
    arguments = parser.parse_args()
    if arguments.entry_point:
        print(json.dumps(entry_point_rate(arguments.batches)))
        return
    with local_servers(dynamodb=False) as endpoints:
        os.environ.update(
            AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
            AWS_DEFAULT_REGION=servers.REGION,
            AWS_ENDPOINT_URL_S3=endpoints["s3"],
        )
        s3 = client("s3", endpoints["s3"], pool=max(64, arguments.concurrency), attempts=1)
        bucket = "bench-handler"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        handler_rate(bucket, [batch(99_999)], arguments.concurrency)  # warm-up
        work = [batch(number) for number in range(arguments.batches)]
        ceiling = measure_ceiling(endpoints, "s3")  # just before: the same server state
        rate, cpu = handler_rate(bucket, work, arguments.concurrency)
        botocore_rate, botocore_cpu = handler_rate(bucket, work, arguments.concurrency, "botocore")
        results = {
            "records": sum(map(len, work)),
            "handler_records_per_s": round(rate),
            "handler_client_cpu_us_per_record": round(cpu),
            "handler_botocore_transport_records_per_s": round(botocore_rate),
            "handler_botocore_transport_cpu_us_per_record": round(botocore_cpu),
            "serial_records_per_s": round(handler_rate(bucket, work[:5], 1)[0]),
            "plain_boto3_puts_per_s": round(boto3_rate(s3, bucket, work, arguments.concurrency)),
            "concurrency": arguments.concurrency,
            "ceiling": ceiling,
        }
        versioned = ceiling["s3_versioned_put_per_s"] if ceiling else None
        results["handler_vs_boto3"] = ratio(rate, results["plain_boto3_puts_per_s"])
        results["handler_vs_versioned_put_ceiling"] = ratio(rate, versioned)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
