"""The run lease is a conditional write (If-Match on its ETag), and a 409
ConditionalRequestConflict is no verdict on the condition: it is sent again. Taken for a
refusal, one 409 on a renewal (S3: a concurrent request on the key
was in progress, e.g. a client-side retry of a renewal whose first attempt S3 is still
handling) would make the live holder conclude "taken over", stop renewing and never renew again.
The lease lapses while the attempt still runs, and a second attempt of the same run (a
``--resume`` on another host, or an operator's second command) takes it over: two live
attempts of one run do the same units at once, which the lease exists to prevent.

The 409 is S3's answer, given once by the fault proxy in front of SeaweedFS; the lease's
length is shortened so the lapse takes seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dynamo_backups.backup import run_lease
from dynamo_backups.backup.ledger import JobRun, LedgerError
from dynamo_backups.backup.run_lease import RunLease
from dynamo_backups.backup.writer import BackupWriter
from tests import faultproxy
from tests.servers import make_client

pytestmark = pytest.mark.servers

CONFLICT = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ConditionalRequestConflict</Code>"
    b"<Message>A conflicting conditional operation is currently in progress against this "
    b"resource. Please try again.</Message></Error>"
)


class FirstRenewalConflicts:
    """Answers the first If-Match put of the lease (its first renewal) 409, once."""

    def __init__(self) -> None:
        self.left = 1
        self._lock = threading.Lock()

    def __call__(self, request: faultproxy.Request) -> str | faultproxy.Answer:
        with self._lock:
            renewal = request.method == "PUT" and "if-match" in request.headers
            if not renewal or not request.path.split("?")[0].endswith("lease.json"):
                return faultproxy.FORWARD
            if self.left == 0:
                return faultproxy.FORWARD
            self.left -= 1
        return faultproxy.Answer(409, {"Content-Type": "application/xml"}, CONFLICT)


def test_one_409_on_a_renewal_does_not_give_a_live_attempts_lease_away(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_lease, "RUN_LEASE_SECONDS", 2.0)  # renewed every 0.5 s
    run = JobRun(bucket, f"{prefix}/.dynamo-backups/T/jobs/restore-into-T/", "run-1")
    rule = FirstRenewalConflicts()
    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        client = make_client("s3", proxy.endpoint, retries={"total_max_attempts": 1})
        first = RunLease(BackupWriter(client, bucket), run)
        first.acquire()
        try:
            time.sleep(6)  # the first attempt runs on, renewing (or not) its lease
            assert rule.left == 0, "the renewal was never sent"
            second = RunLease(BackupWriter(s3, bucket), run)
            with pytest.raises(LedgerError):
                second.acquire()  # the first attempt is alive: must be refused
            second.release()
        finally:
            first.release()
