"""Hostile review of the S3 checkpoint leases (branch leases): reproductions against DynamoDB
Local and SeaweedFS, with real threads and processes and the fault proxy. Each test asserts
what the lease design promises (docs/layout.md, "One consumer at a time"); a failing test is
a demonstrated problem."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.backup.checkpoints import LeaseLost, StreamCheckpoint, write_time_limit
from dynamo_backups.cli.stream import _lease_bounded
from tests.backup.leasing import QUICK, lease_consumer, lease_store
from tests.backup.test_leases import STUBBORN, Running, stored_lease
from tests.faultproxy import FORWARD, RESET, SLOW_DOWN, Answer, FaultProxy, Request
from tests.helpers import (
    bodies,
    create_table,
    history,
    object_key,
    restore_job,
    scan_all,
    stream_arn,
    unique_table_name,
    wait_until,
)
from tests.servers import REGION, make_client

ROOT = Path(__file__).resolve().parents[2]


def item_key(prefix: str, table: str, name: str) -> str:
    return object_key(prefix, table, {"pk": {"S": name}})


def restored_latest(
    endpoint: str, dynamodb: Any, s3: Any, bucket: str, prefix: str, table: str
) -> Any:
    """The table as a latest restore (no --at) of its backup makes it: its items by key."""
    target = unique_table_name("restored")
    restore_job(endpoint, s3, bucket, f"{prefix}/{table}", target, key_schema="pk:S").run()
    return scan_all(dynamodb, target)


def current(s3: Any, bucket: str, key: str) -> Any:
    """The object's current version as backed up: its body, None (tombstone) or 'DM'."""
    entries = history(s3, bucket, key)
    return bodies(entries)[0] if entries else "absent"


# --- 1. a removal's delete marker is started after the write deadline ---------------------------


class HoldTombstoneAnswer:
    """A fault proxy rewrite: the answer to the holder's tombstone PUT (which S3 has stored)
    is held back until ``release`` is set, as a slow S3 answer would be (well inside the
    client's 60 s read timeout). Every item write the proxy forwards is timed."""

    def __init__(self) -> None:
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.item_writes: list[tuple[float, str, str]] = []  # (when, method, content type)

    def __call__(self, request: Request) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        if request.method in ("PUT", "DELETE") and "/.dynamo-backups/" not in request.path:
            kind = request.headers.get("content-type", "")
            self.item_writes.append((time.monotonic(), request.method, kind))
            if self.armed and request.method == "PUT" and "tombstone" in kind:
                self.armed = False

                def late(answer: bytes) -> bytes:
                    self.held.set()
                    self.release.wait(60)
                    return answer

                return request.body, late
        return None


@pytest.mark.servers
def test_a_stale_holder_starts_no_delete_after_its_lease_was_taken(
    dynamodb_local: Any,
    seaweedfs: Any,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """The holder checks its deadline before a removal's tombstone, but sends the delete
    marker after the tombstone's (slow) answer without checking it again: a write started
    long after the deadline, after another consumer took the lease and wrote a newer state.
    The backup's current version of the item is then a delete marker although the item
    exists: a latest restore leaves it out."""
    table = create_table(dynamodb)
    seconds = 6.0
    x = {"pk": {"S": "x"}}
    dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "0"}})
    hold = HoldTombstoneAnswer()
    with FaultProxy(seaweedfs.endpoint, rewrite=hold) as proxy:
        slow = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(
            slow, bucket, prefix, table, host="another-host", lease_seconds=seconds, policy=QUICK
        )
        holder = Running(lease_consumer(dynamodb, streams, store, table, prefix))
        taker = None
        try:
            wait_until(lambda: current(s3, bucket, item_key(prefix, table, "x")) != "absent", 30)
            hold.armed = True
            dynamodb.delete_item(TableName=table, Key=x)  # C1: the holder's tombstone lands,
            assert hold.held.wait(30)  # ... and its answer is slow
            dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "2"}})  # C2
            taker_store = lease_store(s3, bucket, prefix, table, lease_seconds=seconds)
            taker = Running(lease_consumer(dynamodb, streams, taker_store, table, prefix))
            wait_until(
                lambda: current(s3, bucket, item_key(prefix, table, "x")) == {**x, "v": {"N": "2"}},
                timeout=60,
            )  # the taker took the lease over and wrote C1 and C2
            taken = stored_lease(s3, bucket, store.object_key)
            assert taken is not None and taken["owner"] == taker_store.lease.owner
            taken_at = time.monotonic()
            hold.release.set()  # the tombstone's answer reaches the stale holder at last
            holder.thread.join(30)
            assert isinstance(holder.error, LeaseLost), holder.error  # it stopped, but ...
            late = [(m, k) for when, m, k in hold.item_writes if when >= taken_at]
            now = current(s3, bucket, item_key(prefix, table, "x"))
            restored = restored_latest(dynamodb_local.endpoint, dynamodb, s3, bucket, prefix, table)
            # Seen: late == [("DELETE", "")], now == "DM", restored == {} (x is in the table).
            expected = {**x, "v": {"N": "2"}}
            assert (late, now, list(restored.values())) == ([], expected, [expected]), (
                f"the stale holder wrote {late} after the takeover; the backup's current "
                f"state of x is {now!r}, the table's is v=2; a latest restore holds {restored}"
            )
        finally:
            hold.release.set()
            if taker is not None:
                taker.stop()
            holder.stop()


# --- 2. a renewal that landed but whose answer was lost ------------------------------------------


class LoseRenewalAnswer:
    """Fault proxy rule and rewrite: once armed, the next checkpoint PUT is stored by S3 but
    its answer is lost (the connection drops), and the retries that follow get 503 SlowDown
    until ``healed``: a short S3 blip right after a renewal landed."""

    def __init__(self) -> None:
        self.armed = False
        self.failing = False
        self.refused = 0
        self.dropped = threading.Event()

    @staticmethod
    def _is_checkpoint_put(request: Request) -> bool:
        return request.method == "PUT" and "/.dynamo-backups/" in request.path

    def rule(self, request: Request) -> str:
        if self.failing and self._is_checkpoint_put(request):
            self.refused += 1
            return SLOW_DOWN
        return FORWARD

    def rewrite(self, request: Request) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        if not (self.armed and self._is_checkpoint_put(request)):
            return None
        self.armed, self.failing = False, True

        def lost(answer: bytes) -> bytes:
            self.dropped.set()
            raise ConnectionAbortedError("the answer is lost on its way back")

        return request.body, lost


@pytest.mark.servers
def test_a_holder_whose_renewal_landed_unanswered_keeps_its_lease(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The renewal lands, its answer is lost, the retries fail (S3 blip): the renewal is
    logged as failed and retried later, If-Match the ETag *before* the landed one. S3
    refuses (412), the token in the object is the lost save's, not the retry's: the holder
    concludes another consumer wrote and stops, though the lease in S3 is its own (and stays
    there unreleased, so a standby elsewhere waits a whole lease for a consumer that quit)."""
    table = create_table(dynamodb)
    seconds = 6.0
    fault = LoseRenewalAnswer()
    with FaultProxy(seaweedfs.endpoint, fault.rule, rewrite=fault.rewrite) as proxy:
        flaky = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(
            flaky, bucket, prefix, table, host="another-host", lease_seconds=seconds, policy=QUICK
        )
        holder = Running(
            lease_consumer(dynamodb, streams, store, table, prefix, retry_policy=STUBBORN)
        )
        try:
            wait_until(lambda: stored_lease(s3, bucket, store.object_key) is not None, 30)
            fault.armed = True  # the next renewal (within 1.5 s) lands unanswered
            assert fault.dropped.wait(30)
            wait_until(lambda: fault.refused >= 2, 30)  # QUICK: 3 attempts, all failed
            time.sleep(5)  # the blip outlasts the save's retries
            fault.failing = False  # S3 answers again
            time.sleep(seconds)  # several renewals are due meanwhile
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["owner"] == store.lease.owner  # still its own
            # Seen: LeaseLost "... was written by another consumer (host another-host, pid
            # <its own pid>): stopping", and the lease left behind unreleased.
            assert holder.error is None, repr(holder.error)
            assert holder.thread.is_alive()
        finally:
            holder.stop()


# --- 3. a live holder on this host whose /proc entry this taker cannot read ----------------------

UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
TAKER = """
import sys
from dynamo_backups.backup.checkpoints import LeaseHeld
from tests.backup.leasing import lease_store
from tests.servers import REGION, make_client
endpoint, bucket, prefix, table = sys.argv[1:]
store = lease_store(make_client("s3", endpoint), bucket, prefix, table)
try:
    store.load()
except LeaseHeld as held:
    print("HELD", held)
else:
    print("TAKEN: may take over the lease at once")
"""


@pytest.mark.servers
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a proc instance with hidepid")
def test_a_live_holder_on_this_host_is_not_taken_over_when_its_proc_entry_is_hidden(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """/proc mounted with hidepid (systemd ProtectProc=invisible, hardened hosts): another
    user's /proc/<pid> cannot be read. process_start() gives None and process_runs calls the
    live holder dead (None != its start time): its lease is taken at once, two consumers
    write. (Unreadable is not gone: only ENOENT says a process is gone.)"""
    table = "hidden-holder"
    holder = lease_store(s3, bucket, prefix, table)  # this process, this host: alive
    holder.load()
    holder.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}

    def taker(proc_options: str) -> str:
        """What a consumer of another user on this host concludes, /proc mounted so."""
        command = (
            f"mount -t proc -o {proc_options} proc /proc && exec setpriv --reuid=65534 "
            '--regid=65534 --clear-groups "$@"'
        )
        answer = subprocess.run(
            [
                *UNSHARE,
                command,
                "taker",
                sys.executable,
                "-c",
                TAKER,
                seaweedfs.endpoint,
                bucket,
                prefix,
                table,
            ],
            env=environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answer.returncode == 0, answer.stderr
        return answer.stdout

    seen = taker("defaults")  # control: /proc as usual
    assert seen.startswith("HELD") and "running on this host" in seen, seen
    seen = taker("hidepid=invisible")
    assert seen.startswith("HELD") and "running on this host" in seen, seen  # seen: TAKEN


# --- 4. a renewal's check of the lease generation / older lease JSON -----------------------------


@pytest.mark.servers
def test_a_lease_written_by_the_previous_release_is_read_without_a_traceback(
    dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The previous release's lease: owner, host, pid, seconds, token (no boot id, pid
    namespace, start time or generation). A live one elsewhere is waited for."""
    table = create_table(dynamodb)
    store = lease_store(s3, bucket, prefix, table)
    document = {
        **StreamCheckpoint(table, stream_arn(dynamodb, table)).to_document(),
        "identity": store.identity.document() if store.identity else None,
        "lease": {"owner": "o", "host": "old", "pid": 1, "seconds": 120, "token": "t"},
    }
    s3.put_object(Bucket=bucket, Key=store.object_key, Body=json.dumps(document).encode())
    with pytest.raises(Exception, match="held by another consumer"):
        store.load()


# --- 5. a standby and a short S3 outage -----------------------------------------------------------


class Outage:
    """A fault proxy rule: 503 SlowDown to every request while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.refused = 0

    def __call__(self, request: Request) -> str:
        if self.down:
            self.refused += 1
            return SLOW_DOWN
        return FORWARD


@pytest.mark.servers
def test_a_standby_outlives_a_short_s3_outage(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A follow-mode standby exists to take over when the holder dies. Its lease checks are
    plain reads with the store's retry policy (about 10 s of attempts); a 20 s S3 outage
    makes ``load`` raise RetriesExhausted, which ``_take_lease`` does not catch: the standby
    quits (the CLI exits 1), while the holder rides the same outage out (its renewal
    failures are only logged)."""
    table = create_table(dynamodb)
    seconds = 6.0
    holder_store = lease_store(
        s3, bucket, prefix, table, host="another-host", lease_seconds=seconds
    )
    holder = Running(lease_consumer(dynamodb, streams, holder_store, table, prefix))
    outage = Outage()
    with FaultProxy(seaweedfs.endpoint, outage) as proxy:
        flaky = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        standby_store = lease_store(flaky, bucket, prefix, table, lease_seconds=seconds)
        standby = Running(lease_consumer(dynamodb, streams, standby_store, table, prefix))
        try:
            wait_until(lambda: outage.refused == 0 and len(proxy.log.requests) >= 1, 30)
            time.sleep(1)
            assert standby.thread.is_alive() and standby.error is None  # waiting
            outage.down = True
            time.sleep(20)
            outage.down = False
            time.sleep(2)
            # Seen: RetriesExhausted ("read s3://...: gave up after 8 attempts: SlowDown").
            assert standby.error is None, repr(standby.error)
            assert standby.thread.is_alive()
        finally:
            standby.consumer.stop.set()
            holder.stop()
            standby.thread.join(30)


# --- 6. an item write sent before the deadline that reaches S3 after the takeover ---------------


class HoldNextItemPut:
    """A fault proxy rule: once armed, the next item PUT is held before it is forwarded
    until ``release`` is set, or at most ``longest`` seconds (a slow network; the client
    waits, well inside its timeout)."""

    def __init__(self, longest: float = 60) -> None:
        self.armed = False
        self.longest = longest
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Request) -> str:
        if self.armed and request.method == "PUT" and "/.dynamo-backups/" not in request.path:
            self.armed = False
            self.held.set()
            self.release.wait(self.longest)
        return FORWARD


@pytest.mark.servers
def test_a_slow_write_of_a_stale_holder_is_given_up_within_the_write_time_limit(
    aws_env: Any, seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """docs/layout.md accepted that a write taking longer than the margin (40 s; the clients'
    own timeouts were 60 s) lands after a takeover, "so the backup holds that change twice,
    and the stream's order decides between the copies". For a latest restore it does not:
    the stale copy of an older change lands on top of the new holder's newer state. So a
    holder's write clients (as ``stream`` makes them) give a write up within the lease's
    write time limit (well inside the margin), and a write given up is tried again, in
    order, before anything newer. (The original review test held a write in the proxy for
    longer than the lease and delivered it after the takeover, long after its client had
    given up: no client can stop a network that delivers a request whenever it likes; the
    design's bound is that a request is delivered, if ever, within its client's timeouts.)"""
    table = create_table(dynamodb)
    seconds = 6.0
    x = {"pk": {"S": "x"}}
    dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "0"}})
    hold = HoldNextItemPut()
    with FaultProxy(seaweedfs.endpoint, hold) as proxy:
        aws = _lease_bounded(AwsContext(endpoint_url=proxy.endpoint, region=REGION), seconds)
        slow = aws.client("s3", retries=1)  # as ``stream`` makes its write clients
        store = lease_store(
            slow, bucket, prefix, table, host="another-host", lease_seconds=seconds, policy=QUICK
        )
        holder = Running(lease_consumer(dynamodb, streams, store, table, prefix))
        try:
            wait_until(lambda: current(s3, bucket, item_key(prefix, table, "x")) != "absent", 30)
            hold.armed = True
            dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "1"}})  # C1, held
            assert hold.held.wait(30)
            held_at = time.monotonic()
            count = sum(1 for r in proxy.log.requests if r.method == "PUT")

            def retried() -> bool:
                puts = [r for r in proxy.log.requests if r.method == "PUT"]
                return any("/.dynamo-backups/" not in r.path for r in puts[count:])

            # Seen before: the client waited for its 60 s read timeout.
            wait_until(retried, timeout=write_time_limit(seconds) + 5)
            given_up_after = time.monotonic() - held_at
            assert given_up_after <= write_time_limit(seconds) + 1, given_up_after
            dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "2"}})  # C2
            wait_until(
                lambda: current(s3, bucket, item_key(prefix, table, "x")) == {**x, "v": {"N": "2"}},
                timeout=60,
            )
            assert holder.error is None, repr(holder.error)
        finally:
            hold.release.set()
            holder.stop()


@pytest.mark.servers
@pytest.mark.skipif(os.geteuid() != 0, reason="hides /proc in a mount namespace")
def test_without_proc_a_live_lease_is_waited_for_without_a_traceback(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """No /proc at all (boot id, pid namespace, start times unreadable): the taker cannot
    tell this host's processes apart, so it judges the lease by its lapse; no traceback."""
    table = "no-proc-holder"
    holder = lease_store(s3, bucket, prefix, table)
    holder.load()
    holder.save({"format": "dynamo-backups-checkpoint", "table": table, "stream_arn": "x"})
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    answer = subprocess.run(
        [
            *UNSHARE,
            'mount -t tmpfs none /proc && exec "$@"',
            "taker",
            sys.executable,
            "-c",
            TAKER,
            seaweedfs.endpoint,
            bucket,
            prefix,
            table,
        ],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("HELD"), answer.stdout


# --- 7. a holder that died with a write in flight, taken over at once ----------------------------


@pytest.mark.servers
def test_a_write_in_flight_when_the_holder_died_does_not_land_over_its_successor(
    aws_env: Any, seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """A dead holder on this host is taken over at once, without the margin that covers a
    lapsed holder's writes in flight. A PUT the holder sent just before it was killed (OOM,
    kill -9) that S3 finishes a moment later lands after its successor (restarted at once,
    say by systemd) replayed the same change and wrote a newer one: the old change becomes
    the item's current version."""
    table = create_table(dynamodb)
    x = {"pk": {"S": "x"}}
    dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "0"}})
    # The dead holder's PUT reaches S3 within the longest time a write of its lease may be
    # in flight (its clients time out within it): a write held longer is never delivered.
    hold = HoldNextItemPut(longest=write_time_limit(120))
    with FaultProxy(seaweedfs.endpoint, hold) as proxy:
        environment = {
            **os.environ,
            "AWS_ENDPOINT_URL_S3": proxy.endpoint,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.backup.leasing",
                table,
                bucket,
                prefix,
                socket.gethostname(),
                "120",
            ],
            cwd=ROOT,
            env=environment,
        )
        taker = None
        try:
            wait_until(lambda: current(s3, bucket, item_key(prefix, table, "x")) != "absent", 60)
            hold.armed = True
            dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "1"}})  # C1
            assert hold.held.wait(30)  # the holder's PUT of C1 is on its way ...
            process.kill()  # ... when the holder dies
            process.wait(10)
            dynamodb.put_item(TableName=table, Item={**x, "v": {"N": "2"}})  # C2
            successor = lease_store(s3, bucket, prefix, table)
            taker = Running(lease_consumer(dynamodb, streams, successor, table, prefix))
            wait_until(
                lambda: current(s3, bucket, item_key(prefix, table, "x")) == {**x, "v": {"N": "2"}},
                timeout=60,
            )  # taken over at once (not after 120 s), C1 and C2 written after a 20 s wait
            hold.release.set()  # S3 finishes the dead holder's PUT
            time.sleep(1)
            now = current(s3, bucket, item_key(prefix, table, "x"))
            # Seen: v=1 is the current version.
            assert now == {**x, "v": {"N": "2"}}, f"current state of x in the backup: {now}"
        finally:
            hold.release.set()
            if taker is not None:
                taker.stop()
            process.kill()
            process.wait(10)


@pytest.mark.servers
def test_a_takeover_that_landed_unanswered_does_not_end_the_consumer(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The takeover save lands, its answer is lost and the retries fail (S3 blip):
    RetriesExhausted leaves ``_take_lease`` (it catches LeaseHeld and LeaseLost only) and
    the consumer ends, leaving behind a lease in its own name that nobody renews, which
    every other consumer elsewhere now waits out."""
    table = create_table(dynamodb)
    position = StreamCheckpoint(table, stream_arn(dynamodb, table)).to_document()
    crashed = lease_store(s3, bucket, prefix, table, host="another-host", lease_seconds=2)
    crashed.load()
    crashed.save(position)  # its consumer crashed elsewhere: lapses in 2 s
    fault = LoseRenewalAnswer()
    with FaultProxy(seaweedfs.endpoint, fault.rule, rewrite=fault.rewrite) as proxy:
        flaky = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(flaky, bucket, prefix, table, policy=QUICK)
        fault.armed = True  # its first checkpoint write is the takeover
        taker = Running(lease_consumer(dynamodb, streams, store, table, prefix))
        try:
            assert fault.dropped.wait(30)
            wait_until(lambda: fault.refused >= 2, 30)
            time.sleep(5)  # the blip outlasts the save's retries
            fault.failing = False
            time.sleep(3)
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["owner"] == store.lease.owner  # it landed
            # Seen: RetriesExhausted ("save s3://...: gave up after 3 attempts: SlowDown").
            assert taker.error is None, repr(taker.error)
            assert taker.thread.is_alive()
        finally:
            taker.stop()


# --- 8. a batch that the write deadline cuts into many partial attempts --------------------------


def slow_item_writes(seconds: float) -> Callable[[Request], str]:
    """A fault proxy rule: every item write takes ``seconds`` longer (slow S3)."""

    def rule(request: Request) -> str:
        if request.method in ("PUT", "DELETE") and "/.dynamo-backups/" not in request.path:
            time.sleep(seconds)
        return FORWARD

    return rule


@pytest.mark.servers
def test_a_batch_cut_by_the_write_deadline_keeps_making_progress(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """One hot key changed 100 times: its changes are one chain, written one after another.
    When S3 is slow the write deadline (renewal + 2/3 of the lease) cuts each attempt of
    the batch after part of it, as meant; but every cut counts as a failed attempt of
    ``_apply``'s retry budget (8) although each attempt made progress, so the consumer
    stops with "still failing after 8 attempts" (before leases, the batch just took long).
    Scaled: a 6 s lease and 0.5 s writes are a 120 s lease and 10 s writes."""
    table = create_table(dynamodb)
    for version in range(100):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "hot"}, "v": {"N": str(version)}})
    with FaultProxy(seaweedfs.endpoint, slow_item_writes(0.5)) as proxy:
        slow = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(slow, bucket, prefix, table, lease_seconds=6.0)
        report = lease_consumer(dynamodb, streams, store, table, prefix).run(once=True)
    # Seen: StreamError "... still failing after 8 attempts: stopped before the invocation
    # deadline".
    assert report.records == 100
    assert current(s3, bucket, item_key(prefix, table, "hot"))["v"] == {"N": "99"}


# --- 9. the release at the end of a run ----------------------------------------------------------


class FailRelease:
    """A fault proxy rule: the release (a checkpoint PUT whose lease is null) gets ``fault``
    once: a single lost write."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.failed = 0

    def __call__(self, request: Request) -> str:
        is_release = (
            request.method == "PUT"
            and "/.dynamo-backups/" in request.path
            and b'"lease": null' in request.body
        )
        if is_release and not self.failed:
            self.failed += 1
            return self.fault
        return FORWARD


@pytest.mark.servers
@pytest.mark.parametrize("fault", [SLOW_DOWN, RESET])
def test_one_failed_release_neither_fails_a_finished_run_nor_leaves_the_lease_behind(
    fault: str, seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """release() is one unretried PUT in run()'s ``finally``: a single 503 is swallowed and
    leaves the lease in S3 (the next consumer elsewhere waits a whole lease for a consumer
    that has finished); a dropped connection raises out of ``finally``, so a run that
    drained everything fails (and would mask the error of a run that failed)."""
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    rule = FailRelease(fault)
    with FaultProxy(seaweedfs.endpoint, rule) as proxy:
        # As the CLI makes it: aws.client("s3", retries=1), botocore retries nothing.
        flaky = make_client(
            "s3", proxy.endpoint, retries={"mode": "standard", "total_max_attempts": 1}
        )
        store = lease_store(flaky, bucket, prefix, table)
        consumer = lease_consumer(dynamodb, streams, store, table, prefix)
        try:
            report = consumer.run(once=True)
        except Exception as error:  # seen with RESET: ConnectionClosedError
            pytest.fail(f"a drained run failed in its release: {error!r}")
    assert rule.failed == 1 and report.records == 1
    # Seen with SLOW_DOWN: the finished consumer's lease is still there.
    assert stored_lease(s3, bucket, store.object_key) is None


# --- 10. a renewal refused with 409 ConditionalRequestConflict ------------------------------------


class ConflictOnce:
    """A fault proxy rule: once armed, the next checkpoint PUT is answered 409
    ConditionalRequestConflict (a conflicting conditional write was in progress) without
    being stored, as S3 may answer a conditional write."""

    def __init__(self) -> None:
        self.armed = False
        self.answered = threading.Event()

    def __call__(self, request: Request) -> str | Answer:
        if self.armed and request.method == "PUT" and "/.dynamo-backups/" in request.path:
            self.armed = False
            self.answered.set()
            return Answer(
                409,
                {"Content-Type": "application/xml"},
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ConditionalRequestConflict"
                b"</Code><Message>A conflicting conditional operation is currently in progress"
                b" against this resource.</Message></Error>",
            )
        return FORWARD


@pytest.mark.servers
def test_a_renewal_refused_with_a_conflict_over_its_own_version_is_tried_again(
    seaweedfs: Any, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """409 ConditionalRequestConflict stored nothing; the object read back is still the
    version this holder wrote: the lease is its own, so the renewal is made again (before:
    LeaseLost, 'written by another consumer' naming this very consumer)."""
    table = create_table(dynamodb)
    conflict = ConflictOnce()
    with FaultProxy(seaweedfs.endpoint, conflict) as proxy:
        client = make_client("s3", proxy.endpoint, retries={"max_attempts": 1})
        store = lease_store(client, bucket, prefix, table, lease_seconds=6.0, policy=QUICK)
        holder = Running(lease_consumer(dynamodb, streams, store, table, prefix))
        try:
            wait_until(lambda: stored_lease(s3, bucket, store.object_key) is not None, 30)
            conflict.armed = True  # the next renewal (within 1.5 s) is refused with 409
            assert conflict.answered.wait(30)
            time.sleep(3)  # more renewals
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "after"}})
            wait_until(
                lambda: current(s3, bucket, item_key(prefix, table, "after")) != "absent", 30
            )
            assert holder.error is None, repr(holder.error)
            lease = stored_lease(s3, bucket, store.object_key)
            assert lease is not None and lease["owner"] == store.lease.owner
        finally:
            holder.stop()
