"""Benchmark: backfill, restore and verify on each engine (threads, processes, spark local[N])
against DynamoDB Local and SeaweedFS, each run as the real command in its own process. Reports
items/s, items per unit-second (what one unit does, whatever runs it), the CPU of the whole
process tree per item (Spark's JVM and Python workers included), and the servers' own ceiling
for the same work, measured just before each step by ../shared/bench/ceiling.

    .venv/bin/python -m bench.engines [--items 20000] [--workers 2] [--engines threads,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from tests import servers

from bench.common import (
    SERVER_PIDS,
    client,
    cpu_seconds,
    local_servers,
    measure_ceiling,
    measure_conditional_ceiling,
    ratio,
)
from bench.recovery import TABLE, fill_table, restore_ceiling


def process_tree(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every process below it, now."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    tree, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, its_parent in parents.items():
            if its_parent == parent and pid not in tree:
                tree.add(pid)
                todo.append(pid)
    return {pid: cpu_seconds(pid) for pid in tree}


def run_step(endpoints: dict[str, str], *arguments: str) -> dict[str, Any]:
    """Run the CLI in a child process; its report, wall time and the tree's CPU seconds
    (sampled every 50 ms: a process that ends between samples loses at most that much)."""
    environment = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
        AWS_DEFAULT_REGION=servers.REGION,
        AWS_ENDPOINT_URL_S3=endpoints["s3"],
        AWS_ENDPOINT_URL_DYNAMODB=endpoints["dynamodb"],
        PYSPARK_PYTHON=sys.executable,
    )
    servers_before = {name: cpu_seconds(pid) for name, pid in SERVER_PIDS.items()}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dynamo_backups.cli.entry", "-q", "--output", "json", *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: dict[int, float] = {}
    while child.poll() is None:
        seen.update(process_tree(child.pid))
        time.sleep(0.05)
    stdout, stderr = child.communicate()
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{arguments} failed: {stderr.decode()[-2000:]}")
    return {
        "report": json.loads(stdout),
        "seconds": elapsed,
        "client_cpu_s": sum(seen.values()),
        "servers_cpu_s": {
            name: round(cpu_seconds(pid) - servers_before[name], 1)
            for name, pid in SERVER_PIDS.items()
        },
    }


def engine_arguments(engine: str, workers: int) -> list[str]:
    if engine == "spark":
        return ["--engine", "spark", "--spark-master", f"local[{workers}]"]
    return ["--engine", engine, "--workers", str(workers)]


def figures(step: dict[str, Any], items: int, unit_seconds: float) -> dict[str, Any]:
    return {
        "items_per_s": round(items / step["seconds"]),
        "seconds": round(step["seconds"], 1),
        "items_per_unit_second": round(items / unit_seconds) if unit_seconds else None,
        "client_cpu_us_per_item": round(step["client_cpu_s"] / items * 1e6),
        "servers_cpu_s": step["servers_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", default="threads,processes,spark")
    arguments = parser.parse_args()
    items, workers = arguments.items, arguments.workers
    results: dict[str, Any] = {"items": items, "workers": workers, "cores": os.cpu_count()}
    with local_servers() as endpoints:
        s3 = client("s3", endpoints["s3"])
        dynamodb = client("dynamodb", endpoints["dynamodb"])
        bucket = "bench-engines"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="warm", Body=b"x")
        fill_table(dynamodb, items)
        for engine in arguments.engines.split(","):
            chosen = engine_arguments(engine, workers)
            prefix = f"{engine}-{uuid.uuid4().hex[:6]}"
            table_options = [TABLE, "--bucket", bucket, "--prefix", prefix, "--segments", "8"]
            conditional = measure_conditional_ceiling(endpoints)
            backfill = run_step(endpoints, "backfill", *table_options, *chosen)
            (report,) = backfill["report"]["tables"]
            assert report["written"] == items, report
            entry = {"backfill": figures(backfill, items, report["unit_seconds"])}
            if conditional:
                entry["backfill"]["vs_versioned_conditional_put"] = ratio(
                    entry["backfill"]["items_per_s"], conditional["s3_conditional_put_per_s"]
                )
            ceiling = measure_ceiling(endpoints, "s3,dynamodb", "--items", "20000")
            restore = run_step(
                endpoints,
                "restore",
                bucket,
                f"{prefix}/{TABLE}",
                f"Restored-{prefix}",
                "--partitions",
                "16",
                *chosen,
            )
            assert restore["report"]["written"] == items, restore["report"]
            entry["restore"] = figures(restore, items, restore["report"]["unit_seconds"])
            entry["restore"]["vs_ceiling"] = ratio(
                entry["restore"]["items_per_s"], restore_ceiling(ceiling)
            )
            verify = run_step(endpoints, "verify", *table_options, "--partitions", "16", *chosen)
            checked = verify["report"]
            assert checked["items_in_table"] == items and checked["missing"] == 0, checked
            entry["verify"] = figures(verify, items, checked["unit_seconds"])
            results[engine] = entry
            print(json.dumps({engine: entry}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
