"""A latest restore waits out its pin (``jobs/restore_pin``) in the background and reads the
first units' likely versions meanwhile (``backup/prefetch``). What it restores is still decided
by the units' own listings after the wait: a version read during the wait is used only for that
very version, the wait's errors and Ctrl-C behave as before, and a refusal still comes before
the table is created. DynamoDB Local and SeaweedFS, through fault proxies."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws import curl_reads
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.folder import open_folder_path
from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reader import BackupItems, Selected
from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.ddbjson import dumps_item
from dynamo_backups.core.layout import EVENT_MODIFY, SECOND, WRITER_STREAM, VersionMetadata
from dynamo_backups.jobs.restore import Restore
from dynamo_backups.jobs.restore_pin import PinWait, Prefetch
from tests import faultproxy, servers
from tests.cli.test_interrupt import cli, environment
from tests.helpers import create_table, expected_name, make_backfill, object_key, scan_all
from tests.jobs.test_restore_resume import invoke

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(not curl_reads.available(), reason="pycurl is not installed"),
]

ROWS = 40


def backed_up(dynamodb: Any, s3: Any, bucket: str, prefix: str) -> str:
    table = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        item = {"pk": {"S": f"k{index}"}, "v": {"N": "0"}}
        dynamodb.put_item(TableName=table, Item=item)
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    return table


def in_partition(partition: str) -> dict[str, Any]:
    """A key among the table's whose object name starts with ``partition``."""
    keys = ({"pk": {"S": f"k{index}"}} for index in range(ROWS))
    return next(key for key in keys if expected_name(key).startswith(partition))


def change(s3: Any, bucket: str, prefix: str, table: str, key: dict[str, Any], value: str) -> str:
    """A writer's change of ``key``, sent now; the version id."""
    BackupWriter(s3, bucket).put_item(
        object_key(prefix, table, key),
        dumps_item({**key, "v": {"N": value}}),
        VersionMetadata(WRITER_STREAM, EVENT_MODIFY, datetime.now(UTC), "9" * 21, precision=SECOND),
    )
    head = s3.head_object(Bucket=bucket, Key=object_key(prefix, table, key))
    return str(head["VersionId"])


def value_of(restored: dict[str, dict[str, Any]], key: dict[str, Any]) -> str:
    return str(restored[json.dumps(key, sort_keys=True)]["v"]["N"])


def test_a_read_ahead_version_is_used_only_for_that_version(
    seaweedfs: servers.Server, dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """Read ahead into the cache, then an item changes (a new version) and another loses the
    version that was read (deleted by version id): the listing after decides, and neither
    takes the body read before; the items that did not change are taken from the cache."""
    table = backed_up(dynamodb, s3, bucket, prefix)
    changed, pruned = in_partition("0"), in_partition("1")
    change(s3, bucket, prefix, table, pruned, "1")  # version 1, read ahead, then deleted
    reader = FastObjects(s3, bucket, _Credentials())
    layout = open_folder_path(s3, bucket, f"{prefix}/{table}").layout

    reads = PrefetchedReads(1 << 20)
    BackupItems(reader, bucket, layout).prefetch(reads, threading.Event())
    assert reads.stored == ROWS

    change(s3, bucket, prefix, table, changed, "2")
    newest = s3.list_object_versions(Bucket=bucket, Prefix=object_key(prefix, table, pruned))
    (latest,) = [v for v in newest["Versions"] if v["IsLatest"]]
    s3.delete_object(
        Bucket=bucket, Key=object_key(prefix, table, pruned), VersionId=latest["VersionId"]
    )

    selected: list[Selected] = []
    lock = threading.Lock()

    def keep(one: Selected) -> None:
        with lock:
            selected.append(one)

    BackupItems(reader, bucket, layout, ["pk"], prefetched=reads).for_each(keep)
    values = {one.item["pk"]["S"]: one.item["v"]["N"] for one in selected if one.item}
    assert len(values) == ROWS
    assert values[changed["pk"]["S"]] == "2"  # the newer version, not the body read before
    assert values[pruned["pk"]["S"]] == "0"  # the version left, not the deleted one's body
    assert reads.taken == ROWS - 2  # the others' bodies came from the cache


class _Credentials:
    def get_frozen_credentials(self) -> Credentials:
        return Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)


def test_a_change_during_the_wait_is_restored_as_the_pin_decides(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An item of the first unit changes once the wait's reading ahead has read it, before the
    unit lists: the restore holds the new version when S3 dated it before the cutoff (in
    moment.json's second), the one read ahead otherwise. Rounds until the change landed
    before the cutoff at least once (it does unless the machine stalls for a second)."""
    monkeypatch.chdir(tmp_path)
    table = backed_up(dynamodb, s3, bucket, prefix)
    item = in_partition("0")
    pins: list[datetime] = []
    sent: list[datetime] = []
    pin_moment, prefetch = Restore._pin_moment, BackupItems.prefetch

    def pinned(restore: Restore) -> Any:
        pin = pin_moment(restore)
        pins.append(pin[1])
        return pin

    def read_ahead(items: BackupItems, into: PrefetchedReads, stop: threading.Event) -> None:
        prefetch(items, into, stop)
        if items.partition == "0" and not sent:
            version = change(s3, bucket, prefix, table, item, str(len(pins)))
            key = object_key(prefix, table, item)
            head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
            sent.append(head["LastModified"])

    fetched: list[PrefetchedReads] = []
    stop = Prefetch.stop

    def stopped(self: Prefetch) -> PrefetchedReads:
        fetched.append(stop(self))
        return fetched[-1]

    monkeypatch.setattr(Restore, "_pin_moment", pinned)
    monkeypatch.setattr(BackupItems, "prefetch", read_ahead)
    monkeypatch.setattr(Prefetch, "stop", stopped)
    before_cutoff = 0
    for round_ in range(1, 6):
        sent.clear()
        now = time.time()
        time.sleep(1.02 - (now - int(now)))  # start early in a second: the pin's is this one
        target = f"{table}-r{round_}"
        result = invoke("restore", bucket, f"{prefix}/{table}", target, "--workers", "1")
        assert result.exit_code == 0, result.output
        assert sent, "the wait read nothing ahead of the first unit"
        assert fetched[-1].stored >= 1
        restored = scan_all(dynamodb, target)
        assert len(restored) == ROWS
        if sent[0] < pins[-1]:
            before_cutoff += 1
            assert value_of(restored, item) == str(round_), "the body read ahead was restored"
        else:
            assert value_of(restored, item) == str(round_ - 1), "a change after the cutoff"
        if before_cutoff:
            break
    assert before_cutoff, "no change landed before the cutoff in 5 rounds"


class SlowClock(faultproxy.FaultProxy):
    """S3 whose HEAD answers carry a Date ``behind`` seconds back: the pin's wait lasts that
    long. Other requests go through unchanged."""

    def __init__(self, upstream: str, behind: float, **kwargs: Any) -> None:
        self.behind = behind
        super().__init__(upstream, **kwargs)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler_class()
        behind = self

        class Behind(base):  # type: ignore[valid-type,misc]
            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "date" and self.command == "HEAD":
                    value = formatdate(int(time.time() - behind.behind), usegmt=True)
                super().send_header(keyword, value)

        return Behind


def test_ctrl_c_during_the_wait_stops_the_restore_before_any_unit(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """Ctrl-C while the pin's wait goes on (S3's clock 60 s behind) stops the command at once
    (exit 130, the resume line, no traceback), with nothing restored; --resume then restores
    the backup."""
    table = backed_up(dynamodb, s3, bucket, prefix)
    target = f"{table}-stopped"
    job = f"{prefix}/.dynamo-backups/{table}/jobs/restore-into-{target}/"
    with SlowClock(seaweedfs.endpoint, 60.0) as proxy:
        env = {**environment(aws_env), "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        command = cli("restore", bucket, f"{prefix}/{table}", target)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while not _moment_written(s3, bucket, job):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(1.0)  # well into the wait (the table is prepared meanwhile)
            signalled = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "--resume" in stderr, stderr
    assert took < 10, took
    assert not _items_in(dynamodb, target)
    resumed = subprocess.run(
        [*command, "--resume"], env=environment(aws_env), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(scan_all(dynamodb, target)) == ROWS


def _moment_written(s3: Any, bucket: str, job: str) -> bool:
    run = read_document(s3, bucket, job + "run.json")
    return bool(run) and read_document(s3, bucket, f"{job}{run['run_id']}/scratch/moment.json")


def _items_in(dynamodb: Any, table: str) -> int:
    try:
        return int(dynamodb.scan(TableName=table, Select="COUNT")["Count"])
    except dynamodb.exceptions.ResourceNotFoundException:
        return 0


def test_the_waits_error_is_one_error_line(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """S3 refusing the wait's HEADs of moment.json (after the one that read its date) ends the
    restore with one error line and exit 1, as it did when the wait was not in the
    background; no unit ran."""
    monkeypatch.chdir(tmp_path)
    table = backed_up(dynamodb, s3, bucket, prefix)
    target = f"{table}-refused"
    heads = {"moment": 0}

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        if request.method == "HEAD" and request.path.split("?")[0].endswith("/moment.json"):
            heads["moment"] += 1
            if heads["moment"] > 1:
                body = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
                return faultproxy.Answer(403, {"Content-Type": "application/xml"}, body)
        return faultproxy.FORWARD

    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result = invoke("restore", bucket, f"{prefix}/{table}", target)
    assert heads["moment"] >= 2
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    # One line, naming the object the refused call was for (the retries' description).
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"error: head s3://{bucket}/{prefix}/"), result.output
    assert errors[0].endswith("/scratch/moment.json: HeadObject: 403: Forbidden"), result.output
    assert "Traceback" not in result.output
    assert not _items_in(dynamodb, target)


def test_a_resume_without_moment_is_refused_before_the_table_is_created(
    aws_env: dict[str, str],
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A resumed run whose moment.json is gone is refused before anything is made: the table
    the first attempt would have created is not created by the refused attempt."""
    monkeypatch.chdir(tmp_path)
    table = backed_up(dynamodb, s3, bucket, prefix)
    target = f"{table}-resumed"
    ensure = Restore._prepare_target

    def interrupted(restore: Restore, *args: Any) -> None:
        raise KeyboardInterrupt  # the first attempt stops before its table is made

    monkeypatch.setattr(Restore, "_prepare_target", interrupted)
    first = invoke("restore", bucket, f"{prefix}/{table}", target)
    assert first.exit_code == 130, first.output
    monkeypatch.setattr(Restore, "_prepare_target", ensure)
    job = f"{prefix}/.dynamo-backups/{table}/jobs/restore-into-{target}/"
    run = read_document(s3, bucket, job + "run.json")
    moment = f"{job}{run['run_id']}/scratch/moment.json"
    for version in s3.list_object_versions(Bucket=bucket, Prefix=moment).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=moment, VersionId=version["VersionId"])
    refused = invoke("restore", bucket, f"{prefix}/{table}", target, "--resume")
    assert refused.exit_code == 1 and "its moment is unknown" in refused.output, refused.output
    with pytest.raises(dynamodb.exceptions.ResourceNotFoundException):
        dynamodb.describe_table(TableName=target)


def test_a_wait_error_reaches_join_and_cancel_ends_the_sleep() -> None:
    """``PinWait``: the wait's error is raised by join(); cancel() wakes a sleep at once."""
    failing = PinWait(lambda sleep: (_ for _ in ()).throw(RuntimeError("head failed")))
    with pytest.raises(RuntimeError, match="head failed"):
        failing.join()
    slept = PinWait(lambda sleep: sleep(timedelta(minutes=5).total_seconds()))
    began = time.monotonic()
    slept.cancel()
    with pytest.raises(Exception, match="interrupted"):
        slept.join()
    assert time.monotonic() - began < 2
