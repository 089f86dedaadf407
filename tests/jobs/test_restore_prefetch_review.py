"""Review of the pin's background wait and the reads done meanwhile (``jobs/restore_pin``,
``backup/prefetch``): reproductions against DynamoDB Local and SeaweedFS, through fault
proxies. Each test states what it shows; they fail on bcbe281."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from dynamo_backups.aws import curl_reads
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.folder import open_folder_path
from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import EVENT_REMOVE, SECOND, WRITER_STREAM, VersionMetadata
from dynamo_backups.jobs.restore_pin import Prefetch
from tests import faultproxy, servers
from tests.cli.test_interrupt import cli, environment
from tests.conftest import unique_table_name
from tests.helpers import create_table, expected_name, make_backfill, object_key, scan_all
from tests.jobs.test_restore_prefetch import (
    ROWS,
    SlowClock,
    _Credentials,
    _items_in,
    _moment_written,
    backed_up,
)
from tests.jobs.test_restore_resume import fail_puts_in_partition, invoke

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed"),
]

STALL_SECONDS = 45.0  # a listing S3 does not answer (a stuck connection): under the timeouts


class StallFirstListingAfterMoment:
    """Forwards everything, but holds the first ListObjectVersions sent after the run's
    moment.json was put (the reading ahead's listing, during the pin's wait) for
    ``STALL_SECONDS`` before forwarding it."""

    def __init__(self) -> None:
        self.moment_put = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: faultproxy.Request) -> str:
        path, _, query = request.path.partition("?")
        if request.method == "PUT" and path.endswith("/moment.json"):
            self.moment_put.set()
            return faultproxy.FORWARD
        listing = request.method == "GET" and "versions" in [
            part.split("=")[0] for part in query.split("&")
        ]
        if listing and self.moment_put.is_set():
            with self._lock:
                first = not self.stalled.is_set()
                self.stalled.set()
            if first:
                time.sleep(STALL_SECONDS)
        return faultproxy.FORWARD


def test_ctrl_c_during_the_wait_is_held_by_a_stalled_read_ahead_listing(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """Ctrl-C during the pin's wait stops the command at once before this change (the wait
    only slept). Now the driver's ``finally`` joins the reading-ahead thread
    (``Prefetch.stop``), which checks its stop only between units: while its listing is not
    answered (a stuck connection, up to the read timeout and its retries), the first Ctrl-C
    leaves the process hanging; only a second press (quit at once, nothing recorded) ends
    it. The same join holds a normal run after the wait, and a driver error."""
    table = backed_up(dynamodb, s3, bucket, prefix)
    target = f"{table}-stalled"
    job = f"{prefix}/.dynamo-backups/{table}/jobs/restore-into-{target}/"
    rule = StallFirstListingAfterMoment()
    with SlowClock(seaweedfs.endpoint, 60.0, rule=rule) as proxy:
        env = {**environment(aws_env), "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        command = cli("restore", bucket, f"{prefix}/{table}", target)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while not (_moment_written(s3, bucket, job) and rule.stalled.is_set()):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(1.0)  # the wait goes on (S3's clock 60 s behind)
            signalled = time.monotonic()
            process.send_signal(signal.SIGINT)
            try:
                _, stderr = process.communicate(timeout=STALL_SECONDS + 15)
            except subprocess.TimeoutExpired:
                stderr = "(still running)"
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert took < 10, f"Ctrl-C took {took:.1f} s to stop the restore: {stderr}"
    assert not _items_in(dynamodb, target)


def test_the_read_ahead_cache_bound_holds_heads_of_removed_items(
    seaweedfs: servers.Server, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """``PrefetchedReads`` is bounded by the bytes of the bodies it holds: a HEAD's read (a
    tombstone's metadata: every item deleted since the backup began) counts 0 bytes, so
    ``full`` is never set and the entries pile up, as many as the wait's time lets it read
    (each a key, a version id, an ETag and a metadata dict: about 1 KB of Python objects).
    With a bound of 1 byte, nothing should be held; all of them are."""
    table = backed_up(dynamodb, s3, bucket, prefix)
    writer = BackupWriter(s3, bucket)
    for index in range(ROWS):  # every item removed: a tombstone under a delete marker
        key = {"pk": {"S": f"k{index}"}}
        writer.remove_item(
            object_key(prefix, table, key),
            VersionMetadata(
                WRITER_STREAM, EVENT_REMOVE, datetime.now(UTC), "9" * 21, precision=SECOND
            ),
        )
    reader = FastObjects(s3, bucket, _Credentials())
    layout = open_folder_path(s3, bucket, f"{prefix}/{table}").layout
    reads = PrefetchedReads(max_bytes=1)
    BackupItems(reader, bucket, layout).prefetch(reads, threading.Event())
    assert reads.size <= reads.max_bytes
    assert reads.stored == 0, (
        f"{reads.stored} reads held under a 1-byte bound (size counted: {reads.size})"
    )


def test_a_failed_wait_leaves_a_created_table_that_a_rerun_fills_without_ttl(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """The pin's wait now fails after the table is created (it used to fail before): the
    error line says nothing of the new, empty table. Run again (the error names no --resume),
    the new run finds an empty table it did not create, fills it, and never switches TTL on
    (only a table the run created, or --into-existing, gets it): the source's TTL is silently
    lost. Before this change the rerun created the table and switched TTL on."""
    monkeypatch.chdir(tmp_path)
    table = create_table(dynamodb, view_type=None)
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    for index in range(ROWS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    target = unique_table_name("waitfail")
    heads = {"moment": 0}

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        if request.method == "HEAD" and request.path.split("?")[0].endswith("/moment.json"):
            heads["moment"] += 1
            if heads["moment"] > 1:  # the wait's HEADs, after the one that read the date
                body = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
                return faultproxy.Answer(403, {"Content-Type": "application/xml"}, body)
        return faultproxy.FORWARD

    folder = f"{prefix}/{table}"
    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        first = invoke("restore", bucket, folder, target)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    assert first.exit_code == 1, first.output
    again = invoke("--output", "json", "restore", bucket, folder, target)
    assert again.exit_code == 0, again.output
    assert len(scan_all(dynamodb, target)) == ROWS
    report = json.loads(again.stdout)
    ttl = dynamodb.describe_time_to_live(TableName=target)["TimeToLiveDescription"]
    assert ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"), (
        f"TTL of the restored table: {ttl}; first attempt said {first.output!r}; "
        f"rerun report created_table={report.get('created_table')}, "
        f"ttl_attribute={report.get('ttl_attribute')}"
    )


def test_a_resumed_restore_reads_ahead_only_the_units_it_skips(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """``Restore._prefetch`` reads ahead for ``units[:slots]``, the first units of the stage,
    whether or not the run's ledger already records them. A resumed run skips exactly those
    (units finish in order): the wait reads their versions (S3 requests, up to 64 MB held
    for the whole run) and no unit takes any of them. Here the first attempt finished every
    partition but the last; the resume reads ahead partition 0, which it skips."""
    monkeypatch.chdir(tmp_path)
    table = backed_up(dynamodb, s3, bucket, prefix)
    last = max(expected_name({"pk": {"S": f"k{index}"}})[0] for index in range(ROWS))
    target = f"{table}-resumed"
    folder = f"{prefix}/{table}"
    unwritten = ["--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    rule, seen = fail_puts_in_partition(last)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke("restore", bucket, folder, target, "--workers", "1", *unwritten)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and seen["rejected"], first.output

    fetched: list[PrefetchedReads] = []
    stop = Prefetch.stop

    def stopped(prefetch: Prefetch) -> PrefetchedReads:
        fetched.append(stop(prefetch))
        return fetched[-1]

    monkeypatch.setattr(Prefetch, "stop", stopped)
    resumed = invoke("restore", bucket, folder, target, "--workers", "1", "--resume", *unwritten)
    assert resumed.exit_code == 0, resumed.output
    assert len(scan_all(dynamodb, target)) == ROWS
    (reads,) = fetched
    assert reads.stored == reads.taken, (
        f"{reads.stored} versions read ahead for units the ledger had done, "
        f"{reads.taken} of them taken"
    )
