"""Leases on S3 checkpoints, with real processes and threads against DynamoDB Local and
SeaweedFS: a crashed holder on this host is taken over at once, a live one elsewhere is waited
for, expiry never depends on the taker's wall clock, and a holder that cannot renew stops
writing before its lease can be taken."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.aws.retry import RetryPolicy
from dynamo_backups.backup.checkpoints import (
    CheckpointError,
    S3CheckpointStore,
    StreamCheckpoint,
    process_start,
)
from dynamo_backups.cli import main
from dynamo_backups.pipeline.consumer import StreamConsumer
from tests.backup.leasing import QUICK, lease_consumer, lease_store
from tests.faultproxy import FORWARD, SLOW_DOWN, FaultProxy, Request
from tests.helpers import (
    ONCE,
    bodies,
    create_table,
    history,
    object_key,
    stream_arn,
    wait_until,
)
from tests.servers import make_client

ROOT = Path(__file__).resolve().parents[2]


def stored_lease(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body).get("lease")


def backed_up(s3: Any, bucket: str, prefix: str, table: str, name: str) -> list[Any]:
    return bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": name}})))


class Running:
    """A consumer running in a thread; what it raised, if anything."""

    def __init__(self, consumer: StreamConsumer, once: bool = False) -> None:
        self.consumer = consumer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(once,), daemon=True)
        self.thread.start()

    def _run(self, once: bool) -> None:
        try:
            self.consumer.run(once)
        except BaseException as error:
            self.error = error

    def stop(self, timeout: float = 30) -> None:
        self.consumer.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive()


@contextmanager
def holder_process(
    table: str, bucket: str, prefix: str, host: str, seconds: float
) -> Iterator[Any]:
    """A consumer in its own process whose lease names ``host``; killed (no release) on exit."""
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.backup.leasing", table, bucket, prefix, host, str(seconds)],
        cwd=ROOT,
        env=environment,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


# --- a holder that crashed on this host -------------------------------------------------------


@pytest.mark.servers
def test_a_crashed_consumer_restarted_on_the_same_host_takes_over_at_once(
    aws_env: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    command = ["stream", table, "--bucket", bucket, "--prefix", prefix]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dynamo_backups.cli.entry", *command, "--poll-interval", "0.1"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr").open("w"),
    )
    try:
        wait_until(
            lambda: backed_up(s3, bucket, prefix, table, "a") or process.poll() is not None,
            timeout=60,
        )
        assert process.poll() is None, (tmp_path / "stderr").read_text()
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.dynamo-backups/")
        (key,) = [entry["Key"] for entry in listed["Contents"] if "/checkpoints/" in entry["Key"]]
        lease = stored_lease(s3, bucket, key)
        assert lease is not None and lease["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGKILL)  # a crash: the lease is left behind
        process.wait(10)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})

    started = time.monotonic()
    result = CliRunner().invoke(main, [*command, *ONCE])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60  # not the 120 s of the dead process's lease
    assert backed_up(s3, bucket, prefix, table, "b") == [{"pk": {"S": "b"}}]
    assert stored_lease(s3, bucket, key) is None  # released at the end


@pytest.mark.servers
def test_a_live_pid_of_another_process_on_this_host_is_not_the_holder(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """pid reuse: the lease's pid now belongs to another process (another start time)."""
    table = create_table(dynamodb)
    holder = lease_store(s3, bucket, prefix, table)
    holder.load()
    holder.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=holder.object_key)["Body"].read())
        live_lease = dict(document["lease"])
        assert live_lease["started"]  # the holder's start time is recorded beside its pid
        # The same live process: refused.
        with pytest.raises(CheckpointError, match="held by another consumer"):
            lease_store(s3, bucket, prefix, table).load()
        # Its pid reused by another live process (started later): taken over at once.
        document["lease"]["pid"] = sleeper.pid
        s3.put_object(Bucket=bucket, Key=holder.object_key, Body=json.dumps(document).encode())
        assert lease_store(s3, bucket, prefix, table).load() is not None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.servers
def test_a_lapsed_lease_is_taken_even_from_a_process_that_still_runs(
    s3: Any, bucket: str, prefix: str
) -> None:
    """A hung holder on this host: its deadline stopped its writes long ago."""
    table = "hung-holder"
    hung = lease_store(s3, bucket, prefix, table, lease_seconds=1)
    hung.load()
    hung.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    with pytest.raises(CheckpointError, match="which is running on this host"):
        lease_store(s3, bucket, prefix, table).load()
    time.sleep(3)
    assert hung.write_deadline() is not None
    assert hung.write_deadline() < time.monotonic()  # it writes nothing more ...
    assert lease_store(s3, bucket, prefix, table).load() is not None  # ... and is taken over


# --- a live holder elsewhere --------------------------------------------------------------------


@pytest.mark.servers
def test_a_follower_waits_for_a_live_holder_elsewhere_and_takes_over_when_it_dies(
    aws_env: Any,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = create_table(dynamodb)
    seconds = 6.0
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    store = lease_store(s3, bucket, prefix, table, lease_seconds=seconds)
    with holder_process(table, bucket, prefix, "another-host", seconds) as holder:
        wait_until(lambda: backed_up(s3, bucket, prefix, table, "a"), timeout=60)
        follower = Running(lease_consumer(dynamodb, streams, store, table, prefix))
        try:
            # Two lease durations: the holder keeps renewing, the follower keeps waiting.
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
            time.sleep(2 * seconds)
            assert follower.error is None and follower.thread.is_alive()
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["host"] == "another-host"
            assert backed_up(s3, bucket, prefix, table, "b") == [{"pk": {"S": "b"}}]
            assert "waiting" in caplog.text and "another-host" in caplog.text
            holder.kill()  # dies without releasing
            holder.wait(10)
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "c"}})
            wait_until(lambda: backed_up(s3, bucket, prefix, table, "c"), timeout=10 * seconds)
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["owner"] == store.lease.owner
        finally:
            follower.stop()
    assert follower.error is None
    assert backed_up(s3, bucket, prefix, table, "b") == [{"pk": {"S": "b"}}]  # not written twice


@pytest.mark.servers
def test_once_waits_for_a_lease_nobody_renews_and_refuses_one_that_is_renewed(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    position = StreamCheckpoint(table, stream_arn(dynamodb, table)).to_document()
    crashed = lease_store(s3, bucket, prefix, table, host="another-host", lease_seconds=2)
    crashed.load()
    crashed.save(position)  # and never renewed: its consumer crashed on another host
    started = time.monotonic()
    store = lease_store(s3, bucket, prefix, table)
    report = lease_consumer(dynamodb, streams, store, table, prefix).run(once=True)
    assert report.records == 1
    assert time.monotonic() - started >= 1.5  # it waited for the lease to lapse

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    live = lease_store(s3, bucket, prefix, table, host="another-host", lease_seconds=6)
    holder = Running(lease_consumer(dynamodb, streams, live, table, prefix))
    try:
        wait_until(lambda: backed_up(s3, bucket, prefix, table, "b"), timeout=30)
        started = time.monotonic()
        drain = lease_consumer(
            dynamodb, streams, lease_store(s3, bucket, prefix, table), table, prefix
        )
        with pytest.raises(CheckpointError, match="does not wait for a consumer that is running"):
            drain.run(once=True)
        assert time.monotonic() - started < 20  # about one lease, not forever
    finally:
        holder.stop()
    assert holder.error is None


# --- clocks ------------------------------------------------------------------------------------


def shifted(offset: timedelta) -> Any:
    return lambda: datetime.now(UTC) + offset


@pytest.mark.servers
def test_a_taker_whose_clock_is_ahead_does_not_steal_a_live_lease(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    holder = lease_store(s3, bucket, prefix, table, host="another-host")  # 120 s
    holder.load()
    holder.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    ahead = shifted(timedelta(minutes=2, seconds=1))
    with pytest.raises(CheckpointError, match="held by another consumer"):
        lease_store(s3, bucket, prefix, table, wall_clock=ahead).load()

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    taker = lease_store(s3, bucket, prefix, table, wall_clock=ahead)
    follower = Running(lease_consumer(dynamodb, streams, taker, table, prefix))
    time.sleep(3)
    follower.stop()
    assert follower.error is None  # it waited ...
    lease = stored_lease(s3, bucket, holder.object_key)
    assert lease is not None and lease["owner"] == holder.lease.owner  # ... and took nothing
    assert backed_up(s3, bucket, prefix, table, "a") == []


@pytest.mark.servers
def test_a_taker_whose_clock_is_behind_takes_over_a_lapsed_lease(
    s3: Any, bucket: str, prefix: str
) -> None:
    table = "lapsed-lease"
    holder = lease_store(s3, bucket, prefix, table, host="another-host", lease_seconds=1)
    holder.load()
    holder.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    time.sleep(3)  # the lease (1 s) lapsed by S3's clock, long before this clock's
    behind = shifted(-timedelta(minutes=2))
    assert lease_store(s3, bucket, prefix, table, wall_clock=behind).load() is not None


# --- a holder that cannot renew -----------------------------------------------------------------


class Partition:
    """A fault proxy rule: while ``writes_fail``, S3 answers 503 SlowDown to the holder's
    writes (item writes only, or checkpoint writes too); every write's time is recorded."""

    def __init__(self, checkpoints_too: bool) -> None:
        self.checkpoints_too = checkpoints_too
        self.writes_fail = False
        self.item_writes: list[float] = []
        self.refused_items = 0

    def __call__(self, request: Request) -> str:
        if request.method not in ("PUT", "DELETE", "POST"):
            return FORWARD
        is_checkpoint = "/.dynamo-backups/" in request.path
        if not is_checkpoint:
            self.item_writes.append(time.monotonic())
        if self.writes_fail and (self.checkpoints_too or not is_checkpoint):
            self.refused_items += not is_checkpoint
            return SLOW_DOWN
        return FORWARD


class RecordingStore(S3CheckpointStore):
    """Notes when its first save (the takeover) is sent."""

    first_save_sent: float | None = None

    def save(self, document: dict[str, Any]) -> None:
        if self.first_save_sent is None:
            self.first_save_sent = time.monotonic()
        super().save(document)


STUBBORN = RetryPolicy(max_attempts=100_000, base_delay=0.05, max_delay=0.2)


@pytest.mark.servers
def test_a_holder_that_cannot_renew_stops_writing_before_its_lease_can_be_taken(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    seconds = 6.0
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    partition = Partition(checkpoints_too=True)
    with FaultProxy(seaweedfs.endpoint, partition) as proxy:
        cut_off = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(
            cut_off, bucket, prefix, table, host="another-host", lease_seconds=seconds, policy=QUICK
        )
        holder = Running(
            lease_consumer(dynamodb, streams, store, table, prefix, retry_policy=STUBBORN)
        )
        try:
            wait_until(lambda: backed_up(s3, bucket, prefix, table, "a"), timeout=30)
            partition.writes_fail = True  # from now on the holder writes nothing through
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
            wait_until(lambda: partition.refused_items > 0)
            taker_store = lease_store(
                s3, bucket, prefix, table, lease_seconds=seconds, kind=RecordingStore
            )
            taker = Running(lease_consumer(dynamodb, streams, taker_store, table, prefix))
            try:
                wait_until(lambda: backed_up(s3, bucket, prefix, table, "b"), timeout=30)
                taken_at = taker_store.first_save_sent
                assert taken_at is not None
                time.sleep(1)
                partition.writes_fail = False  # the holder's writes would land again
                holder.thread.join(30)
                late = [moment for moment in partition.item_writes if moment >= taken_at]
                assert late == [], f"{len(late)} item writes after the lease was taken"
                # Its stale checkpoint advance (or renewal) was refused: it stopped.
                assert not holder.thread.is_alive()
                assert isinstance(holder.error, CheckpointError), holder.error
                lease = stored_lease(s3, bucket, store.object_key)
                assert lease is not None and lease["owner"] == taker_store.lease.owner
            finally:
                taker.stop()
        finally:
            holder.stop()
    assert taker.error is None
    assert backed_up(s3, bucket, prefix, table, "b") == [{"pk": {"S": "b"}}]


@pytest.mark.servers
def test_a_holder_renews_its_lease_from_within_a_long_retry_loop(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    seconds = 5.0
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    partition = Partition(checkpoints_too=False)
    with FaultProxy(seaweedfs.endpoint, partition) as proxy:
        slow = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(
            slow, bucket, prefix, table, host="another-host", lease_seconds=seconds, policy=QUICK
        )
        holder = Running(
            lease_consumer(dynamodb, streams, store, table, prefix, retry_policy=STUBBORN)
        )
        try:
            wait_until(lambda: backed_up(s3, bucket, prefix, table, "a"), timeout=30)
            partition.writes_fail = True  # item writes fail; the checkpoint still answers
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
            taker_store = lease_store(s3, bucket, prefix, table, lease_seconds=seconds)
            taker = Running(lease_consumer(dynamodb, streams, taker_store, table, prefix))
            time.sleep(2 * seconds)  # the holder retries all along
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["owner"] == store.lease.owner, lease
            partition.writes_fail = False
            wait_until(lambda: backed_up(s3, bucket, prefix, table, "b"), timeout=30)
            taker.stop()
            assert taker.error is None
        finally:
            holder.stop()
    assert holder.error is None


def test_a_process_start_time_is_read_whatever_the_command_is_called(tmp_path: Path) -> None:
    odd = tmp_path / "odd) (name 7"  # the command name field of /proc/<pid>/stat
    odd.write_bytes(Path("/bin/sleep").read_bytes())
    odd.chmod(0o755)
    process = subprocess.Popen([str(odd), "30"])
    try:
        wait_until(lambda: "odd" in Path(f"/proc/{process.pid}/stat").read_text())
        started = process_start(process.pid)
        assert started is not None and started.isdigit()
        # Clock ticks since boot: it started a moment ago.
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert 0 <= uptime - int(started) / os.sysconf("SC_CLK_TCK") < 10
    finally:
        process.kill()
        process.wait()
    assert process_start(process.pid) is None  # gone (and reaped)
