"""Benchmark: client CPU per versioned GetObject of a small object (what restore reads per
item), obstore through ``FastObjects`` against pycurl's CurlMulti (libcurl's own SigV4),
against SeaweedFS. pycurl is not a dependency: run with a venv that has it.

Candidates, each reading every object once by version id (``?versionId=``):
- ``obstore``: ``FastObjects.read_object`` from N threads (as restore's readers call it);
- ``curl-multi``: one thread driving a CurlMulti with N easy handles (N GETs in flight);
- ``curl-threads``: 4 threads, each driving its own CurlMulti over a quarter of the reads;
- ``curl-queue``: N threads each calling a blocking read that hands the request to one
  thread driving the CurlMulti and waits for its answer (the shape a drop-in reader for
  restore's threads would have).

CPU is this process's (every thread, native ones included, ``getrusage``) per GET.

    python -m bench.curl_get [--objects 20000] [--in-flight 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import selectors
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any
from urllib.parse import quote

import pycurl
from botocore.credentials import Credentials
from tests import servers

from bench.common import client, local_servers
from dynamo_backups.aws.fast_objects import FastObjects

BUCKET = "bench-curl-get"
PREFIX = "backups/table/items/"
BODY_TEMPLATE = '{{"pk":{{"S":"user-{:07d}"}},"n":{{"N":"{}"}},"note":{{"S":"{}"}}}}'
CREDENTIALS = Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)
Target = tuple[str, str]  # key, version id


class _Frozen:
    def get_frozen_credentials(self) -> Credentials:
        return CREDENTIALS


def body_of(index: int) -> bytes:
    return BODY_TEMPLATE.format(index, index * 7, "x" * 170).encode()


def fill(endpoint: str, count: int) -> list[Target]:
    s3 = client("s3", endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    objects = FastObjects(s3, BUCKET, _Frozen())

    def put(index: int) -> Target:
        key = f"{PREFIX}{index:032x}"
        version = objects.put_object(key, body_of(index), "application/json", {"writer": "b"})
        assert version, "the bucket must be versioned"
        return key, version

    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(put, range(count)))


def obstore_reads(endpoint: str, targets: list[Target], in_flight: int) -> int:
    objects = FastObjects(client("s3", endpoint, pool=in_flight), BUCKET, _Frozen())
    slices = [targets[start::in_flight] for start in range(in_flight)]

    def read(part: list[Target]) -> int:
        size = 0
        for key, version in part:
            size += len(objects.read_object(key, version)[0])
        return size

    with ThreadPoolExecutor(in_flight) as pool:
        return sum(pool.map(read, slices))


def _easy(endpoint: str) -> Any:
    handle = pycurl.Curl()
    handle.setopt(pycurl.AWS_SIGV4, f"aws:amz:{servers.REGION}:s3")
    handle.setopt(pycurl.USERPWD, f"{CREDENTIALS.access_key}:{CREDENTIALS.secret_key}")
    handle.setopt(pycurl.TCP_NODELAY, 1)
    handle.setopt(pycurl.NOSIGNAL, 1)
    return handle


def _url(endpoint: str, target: Target) -> str:
    key, version = target
    return f"{endpoint}/{BUCKET}/{quote(key, safe='/~')}?versionId={quote(version, safe='')}"


def curl_multi_reads(endpoint: str, targets: list[Target], in_flight: int) -> int:
    """One thread, ``in_flight`` easy handles reused on keep-alive connections."""
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, in_flight)
    pending = iter(targets)
    size = 0
    idle: list[Any] = [_easy(endpoint) for _ in range(in_flight)]
    active = 0

    def start(handle: Any) -> bool:
        target = next(pending, None)
        if target is None:
            idle.append(handle)
            return False
        buffer = BytesIO()
        handle.buffer = buffer
        handle.setopt(pycurl.URL, _url(endpoint, target))
        handle.setopt(pycurl.WRITEDATA, buffer)
        multi.add_handle(handle)
        return True

    while idle:
        if not start(idle.pop()):
            break
        active += 1
    while active:
        while True:
            code, _ = multi.perform()
            if code != pycurl.E_CALL_MULTI_PERFORM:
                break
        _, done, failed = multi.info_read()
        for handle in done:
            multi.remove_handle(handle)
            status = handle.getinfo(pycurl.RESPONSE_CODE)
            assert status == 200, (status, handle.buffer.getvalue())
            size += len(handle.buffer.getvalue())
            active -= 1
            if start(handle):
                active += 1
        for _handle, errno, message in failed:
            raise RuntimeError(f"curl error {errno}: {message}")
        if active and not done:
            multi.select(1.0)
    return size


class CurlQueue:
    """Blocking reads from any thread, sent by one thread driving a CurlMulti: a request is
    handed over on a queue, the driver is woken through a pipe, the caller waits on an Event."""

    def __init__(self, endpoint: str, in_flight: int) -> None:
        self.endpoint = endpoint
        self.multi = pycurl.CurlMulti()
        self.idle = [_easy(endpoint) for _ in range(in_flight)]
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        self.sockets: dict[int, int] = {}
        self.timeout_ms = -1
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._timer)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _socket(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        events = {
            pycurl.POLL_IN: selectors.EVENT_READ,
            pycurl.POLL_OUT: selectors.EVENT_WRITE,
            pycurl.POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
        }.get(what)
        if fd in self.sockets:
            self.selector.unregister(fd)
            del self.sockets[fd]
        if events:
            self.selector.register(fd, events, fd)
            self.sockets[fd] = events

    def _timer(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms

    def read(self, target: Target) -> bytes:
        done = threading.Event()
        slot: list[Any] = [target, done, None]
        self.requests.put(slot)
        os.write(self.wake_write, b"x")
        done.wait()
        return slot[2]  # type: ignore[no-any-return]

    def _start_waiting(self) -> None:
        while self.idle:
            try:
                slot = self.requests.get_nowait()
            except queue.Empty:
                return
            handle = self.idle.pop()
            handle.buffer = BytesIO()
            handle.slot = slot
            handle.setopt(pycurl.URL, _url(self.endpoint, slot[0]))
            handle.setopt(pycurl.WRITEDATA, handle.buffer)
            self.multi.add_handle(handle)
            self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)

    def _finish(self) -> None:
        while True:
            left, done, failed = self.multi.info_read()
            for handle in done:
                self.multi.remove_handle(handle)
                handle.slot[2] = handle.buffer.getvalue()
                handle.slot[1].set()
                self.idle.append(handle)
            for _handle, errno, message in failed:
                raise RuntimeError(f"curl error {errno}: {message}")
            if not left:
                return

    def _run(self) -> None:
        while not self.closed:
            timeout = None if self.timeout_ms < 0 else self.timeout_ms / 1000
            events = self.selector.select(timeout)
            for key, mask in events:
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_read, 4096)
                    continue
                flags = (pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0) | (
                    pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0
                )
                self.multi.socket_action(key.data, flags)
            if not events or self.timeout_ms == 0 or not self.sockets:  # libcurl's timer
                self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            self._finish()
            self._start_waiting()


def curl_queue_reads(endpoint: str, targets: list[Target], in_flight: int) -> int:
    reader = CurlQueue(endpoint, in_flight)
    slices = [targets[start::in_flight] for start in range(in_flight)]

    def read(part: list[Target]) -> int:
        return sum(len(reader.read(target)) for target in part)

    with ThreadPoolExecutor(in_flight) as pool:
        size = sum(pool.map(read, slices))
    reader.closed = True
    return size


def curl_threads_reads(endpoint: str, targets: list[Target], in_flight: int) -> int:
    """Several threads, each driving its own CurlMulti over its share (no hand-offs)."""
    threads = 4
    slices = [targets[start::threads] for start in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return sum(
            pool.map(lambda part: curl_multi_reads(endpoint, part, in_flight // threads), slices)
        )


def measure(run: Callable[[], int], count: int, expected: int) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    switches = before.ru_nvcsw + before.ru_nivcsw
    started = time.perf_counter()
    size = run()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert size == expected, (size, expected)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "gets_per_s": round(count / elapsed),
        "cpu_us_per_get": round(cpu / count * 1e6, 1),
        "sys_us_per_get": round((after.ru_stime - before.ru_stime) / count * 1e6, 1),
        "switches_per_get": round((after.ru_nvcsw + after.ru_nivcsw - switches) / count, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--candidates", default="obstore,curl-multi,curl-queue,curl-threads")
    options = parser.parse_args()
    candidates = {
        "obstore": obstore_reads,
        "curl-multi": curl_multi_reads,
        "curl-queue": curl_queue_reads,
        "curl-threads": curl_threads_reads,
    }
    chosen = options.candidates.split(",")
    with local_servers(dynamodb=False) as endpoints:
        endpoint = endpoints["s3"]
        targets = fill(endpoint, options.objects)
        expected = sum(len(body_of(index)) for index in range(options.objects))
        results: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
        for _ in range(options.rounds):
            for name in chosen:
                figures = measure(
                    lambda name=name: candidates[name](endpoint, targets, options.in_flight),
                    len(targets),
                    expected,
                )
                figures["load"] = round(os.getloadavg()[0], 1)
                results[name].append(figures)
                print(name, json.dumps(figures), flush=True)
    print(json.dumps({"in_flight": options.in_flight, "results": results}))


if __name__ == "__main__":
    main()
