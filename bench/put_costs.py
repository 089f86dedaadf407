"""What each kind of put costs SeaweedFS in a versioned bucket: its CPU per put and the rate,
for plain puts, puts with the layout's metadata, conditional (If-None-Match) puts, and both
(what a backfill sends), written by the fast transport (obstore) with 32 threads, in rounds
of 5,000.

    .venv/bin/python -m bench.put_costs [--rounds 3] [--objects 5000]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from botocore.credentials import Credentials
from tests import servers

from bench.common import SERVER_PIDS, client, cpu_seconds, local_servers
from dynamo_backups.aws.fast_objects import FastObjects

BUCKET = "bench-put-costs"
BODY = b'{"pk":{"S":"user-0000001"},"note":{"S":"' + b"x" * 200 + b'"}}'
METADATA = {
    "event-name": "BACKFILL",
    "change-time": "2026-11-27T00:00:00.000Z",
    "sequence-number": "",
    "writer": "backfill",
    "key-hash": "md5",
}
KINDS = {  # name: (metadata, If-None-Match)
    "plain": ({}, False),
    "metadata": (METADATA, False),
    "conditional": ({}, True),
    "metadata_and_conditional": (METADATA, True),
}


def put_one(
    lean: FastObjects, folder: str, metadata: dict[str, str], conditional: bool, index: int
) -> str | None:
    return lean.put_object(
        f"{folder}{index:030x}", BODY, "application/json", metadata, if_none_match=conditional
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objects", type=int, default=5000)
    arguments = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with local_servers(dynamodb=False) as endpoints:
        s3 = client("s3", endpoints["s3"])
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        lean = FastObjects(s3, BUCKET, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
        seaweedfs = SERVER_PIDS["seaweedfs"]
        with ThreadPoolExecutor(32) as pool:
            for round_number in range(arguments.rounds):
                for kind, (metadata, conditional) in KINDS.items():
                    put = partial(
                        put_one, lean, f"{kind}/Table/{round_number:02d}", metadata, conditional
                    )
                    used = cpu_seconds(seaweedfs)
                    started = time.perf_counter()
                    list(pool.map(put, range(arguments.objects)))
                    seconds = time.perf_counter() - started
                    used = cpu_seconds(seaweedfs) - used
                    results[kind].append(
                        {
                            "puts_per_s": round(arguments.objects / seconds),
                            "server_cpu_ms_per_put": round(used / arguments.objects * 1000, 2),
                        }
                    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
