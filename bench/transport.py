"""Benchmark: what each candidate transport costs the client per object request, against
SeaweedFS. 1 KB PutObject with the layout's metadata (what the stream handler sends), then
GetObject, each sequentially (one thread) and with 64 requests in flight (64 threads).

Candidates: botocore (boto3's put_object); urllib3 through botocore's own SigV4 signer and
HTTP session (no serializers); awscrt (AWS's C runtime: its S3Client, C SigV4 and HTTP; the
``bench`` extra installs it); obstore (Rust object_store), through ``FastObjects`` as the tool
uses it. CPU is this process's (all threads, native ones included) per request.

    .venv/bin/python -m bench.transport [--objects 3000]
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tests import servers

from bench.common import client, local_servers, measure_ceiling
from dynamo_backups.aws.fast_objects import FastObjects

BUCKET = "bench-transport"
BODY = b'{"pk":{"S":"user-0000001"},"note":{"S":"' + b"x" * 980 + b'"}}'
METADATA = {
    "writer": "stream",
    "event-name": "MODIFY",
    "change-time": "2026-11-27T00:00:00.000Z",
    "sequence-number": "000000000000000000001",
    "key-hash": "md5",
}
CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
Put = Callable[[str], Any]


def botocore_candidate(endpoint: str) -> tuple[Put, Put]:
    s3 = client("s3", endpoint, pool=64, attempts=1)

    def put(key: str) -> None:
        s3.put_object(
            Bucket=BUCKET, Key=key, Body=BODY, ContentType="application/json", Metadata=METADATA
        )

    def get(key: str) -> bytes:
        return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    return put, get


def urllib3_candidate(endpoint: str) -> tuple[Put, Put]:
    """botocore's signer and the client's own HTTP session (TCP_NODELAY, pool), no model."""
    s3 = client("s3", endpoint, pool=64, attempts=1)
    http = s3._endpoint.http_session
    headers = {"Content-Type": "application/json"} | {
        f"x-amz-meta-{name}": value for name, value in METADATA.items()
    }

    def send(method: str, key: str, body: bytes | None) -> bytes:
        request = AWSRequest(method, f"{endpoint}/{BUCKET}/{key}", headers=dict(headers), data=body)
        S3SigV4Auth(CREDENTIALS, "s3", servers.REGION).add_auth(request)
        response = http.send(request.prepare())
        assert response.status_code == 200, response.content
        return response.content

    return (lambda key: send("PUT", key, BODY)), (lambda key: send("GET", key, None))


def crt_candidate(endpoint: str) -> tuple[Put, Put] | None:
    try:
        from awscrt import auth, http, s3
    except ImportError:
        print("note: awscrt is not installed (pip install '.[bench]'); skipping it")
        return None
    host = urlsplit(endpoint).netloc
    crt = s3.S3Client(
        region=servers.REGION,
        credential_provider=auth.AwsCredentialsProvider.new_static(
            servers.ACCESS_KEY, servers.SECRET_KEY
        ),
        tls_mode=s3.S3RequestTlsMode.DISABLED,
        memory_limit=256 * 1024 * 1024,
        max_active_connections_override=64,
    )

    def send(method: str, key: str, body: bytes | None) -> bytes:
        pairs = [("Host", host)]
        if body is not None:
            pairs += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            pairs += [(f"x-amz-meta-{name}", value) for name, value in METADATA.items()]
        request = http.HttpRequest(
            method,
            f"/{BUCKET}/{key}",
            http.HttpHeaders(pairs),
            io.BytesIO(body) if body is not None else None,
        )
        chunks: list[bytes] = []
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def on_done(error: Any = None, status_code: int | None = None, **_: Any) -> None:
            outcome.update(error=error, status=status_code)
            done.set()

        request_type = s3.S3RequestType.PUT_OBJECT if body else s3.S3RequestType.GET_OBJECT
        crt.make_request(
            type=request_type,
            request=request,
            on_body=lambda chunk, **_: chunks.append(bytes(chunk)),
            on_done=on_done,
        ).finished_future.result()
        assert outcome["error"] is None, outcome
        return b"".join(chunks)

    return (lambda key: send("PUT", key, BODY)), (lambda key: send("GET", key, None))


def obstore_candidate(endpoint: str) -> tuple[Put, Put]:
    objects = FastObjects(client("s3", endpoint, pool=64, attempts=1), BUCKET, CREDENTIALS)

    def put(key: str) -> None:
        objects.put_object(key, BODY, "application/json", METADATA)

    return put, (lambda key: objects.read_object(key)[0])


CANDIDATES = {
    "botocore": botocore_candidate,
    "urllib3_botocore_sigv4": urllib3_candidate,
    "awscrt": crt_candidate,
    "obstore": obstore_candidate,
}


def measure(action: Put, keys: list[str], threads: int) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        for key in keys:
            action(key)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(action, keys))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us": round(cpu / len(keys) * 1e6), "per_s": round(len(keys) / wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    arguments = parser.parse_args()
    results: dict[str, Any] = {"objects": arguments.objects, "body_bytes": len(BODY)}
    with local_servers(dynamodb=False) as endpoints:
        s3 = client("s3", endpoints["s3"])
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=BUCKET, Key="warm", Body=b"x")
        results["ceiling"] = measure_ceiling(endpoints, "s3")
        for name, make in CANDIDATES.items():
            made = make(endpoints["s3"])
            if made is None:
                continue
            put, get = made
            put(f"{name}/warm")
            get(f"{name}/warm")
            sequential = [f"{name}/seq/{index:06d}" for index in range(arguments.objects // 6)]
            parallel = [f"{name}/par/{index:06d}" for index in range(arguments.objects)]
            results[name] = {
                "put_sequential": measure(put, sequential, 1),
                "put_64_in_flight": measure(put, parallel, 64),
                "get_sequential": measure(get, sequential, 1),
                "get_64_in_flight": measure(get, parallel, 64),
            }
            print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
