"""A lease on one run of a bulk job: only one attempt of a run is live at a time.

``--resume`` takes over an unfinished run; an attempt of it that still runs (a driver thought
dead, a second operator's command) would do the same units at once, and their last phases
would read each other's files. So each attempt holds ``<run>/lease.json``, renews it while
it runs and releases it when it ends; an attempt finds it held and live and stops with a clear
message. The lease is taken over when it was released, when it lapsed unrenewed
(``RUN_LEASE_SECONDS`` by S3's clock), or when its holder ran on this host and no longer runs
(a driver killed with SIGKILL resumes at once). Writes are conditional (ETag), so of two
attempts taking it at once, one wins; only a 412 is a refusal: a 409
``ConditionalRequestConflict`` (a concurrent request on the key was still in progress) is no
verdict on the condition, and the write is sent again with backoff. A renewal that fails
otherwise (S3 unreachable for a while) is tried again at the next interval; only a refusal
(another attempt wrote the lease) stops the renewals. The holder identity is the stream
consumers' (``Lease`` of ``backup.checkpoints``).

``lease_ended`` tells others (backfill's removal check, ``backup.removal_check``) whether the
attempt holding a run's lease has provably ended: released, or lapsed by S3's clock.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import asdict
from typing import Any

from dynamo_backups.aws.errors import (
    CONDITIONAL_CONFLICT_CODES,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    ClientError,
    error_code,
    is_conditional_conflict,
    is_transient,
)
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.checkpoints import Lease, process_runs, server_age
from dynamo_backups.backup.ledger import JobRun, LedgerError
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter

logger = logging.getLogger("dynamo_backups.backup.run_lease")

RUN_LEASE_SECONDS = 120.0  # a live attempt renews it every quarter of this
# The lease's condition did not hold: another attempt wrote it. (A 409 is no such verdict.)
REFUSED_CODES = PRECONDITION_CODES - CONDITIONAL_CONFLICT_CODES
# A renewal that fails this many times running stops being logged each time.
_QUIET_AFTER = 3


def _worth_sending_again(error: BaseException) -> bool:
    return is_transient(error) or is_conditional_conflict(error)


def read_lease(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], str, float | None] | None:
    """The lease at ``key``: its document, ETag and age by S3's clock; None when absent."""

    def read() -> tuple[dict[str, Any], str, float | None] | None:
        try:
            answer = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        body = answer["Body"].read()
        return json.loads(body), answer["ETag"], server_age(answer)

    return call_with_retries(read, READ_POLICY, f"read s3://{bucket}/{key}")


def lapsed(document: dict[str, Any], age: float | None) -> bool:
    """Unrenewed for longer than the lease's own length, by S3's clock (whole seconds)."""
    seconds = float(document.get("seconds", RUN_LEASE_SECONDS))
    return age is not None and age > seconds + 1


def lease_ended(s3: Any, bucket: str, key: str) -> bool:
    """Whether the attempt that held the lease at ``key`` has provably ended: it released the
    lease (after its work had stopped), or let it lapse unrenewed (a live attempt renews it
    every quarter of its length). An absent lease, or one held on this host by a process that
    no longer runs but within its length, is not proof: a request the process sent just before
    it died may still land."""
    found = read_lease(s3, bucket, key)
    if found is None:
        return False
    document, _, age = found
    return bool(document.get("released")) or lapsed(document, age)


class RunLease:
    """Held by one attempt of ``run`` from ``acquire()`` to ``release()``."""

    def __init__(self, writer: BackupWriter, run: JobRun) -> None:
        self.writer = writer
        self.run = run
        self.key = f"{run.job_prefix}{run.run_id}/lease.json"
        self.holder = Lease()
        self._etag: str | None = None
        self._tokens: set[str] = set()  # of every write of this holder: found, it is ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise LedgerError when another attempt holds it, live."""
        found = self._read()
        if found is not None:
            self._refuse_if_live(*found)
        condition = {"IfMatch": found[1]} if found is not None else {"IfNoneMatch": "*"}
        try:
            self._etag = self._put(False, condition)
        except ClientError as error:
            if error_code(error) not in REFUSED_CODES:
                raise
            raise self._held("another attempt took it at the same moment") from None
        self._thread = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._etag is None:
            return
        try:
            self._put(True, {"IfMatch": self._etag})
        except Exception as error:  # taken over (we lapsed), or S3 is down: it lapses
            logger.warning("%s: lease not released: %s", self.key, error)
        self._etag = None

    def abandon(self) -> None:
        """Stop renewing without releasing: the lease lapses ``RUN_LEASE_SECONDS`` after its
        last renewal. For an attempt whose work may still be writing (cancelled tasks that did
        not end): a release would tell others it had stopped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._etag is not None:
            logger.warning(
                "%s: left to lapse, %.0f s after its last renewal", self.key, RUN_LEASE_SECONDS
            )
        self._etag = None

    def _renew(self) -> None:
        """Renew every quarter of the lease until released. A refusal (412: another attempt
        wrote the lease) ends the renewals, never to write over the new holder's lease; any
        other failure (a 409 that outlasted its retries, S3 unreachable) is tried again at
        the next interval, while the lease may still be ours."""
        interval = max(0.5, RUN_LEASE_SECONDS / 4)
        failures = 0
        while not self._stop.wait(interval):
            try:
                self._etag = self._put(False, {"IfMatch": self._etag or ""})
                failures = 0
            except Exception as error:
                refused = error_code(error) in REFUSED_CODES
                failures += 1
                if refused or failures <= _QUIET_AFTER:
                    logger.error(
                        "%s: the lease could not be renewed (%s)%s",
                        self.key,
                        error,
                        ": another attempt took the run over"
                        if refused
                        else "; trying again (another attempt may take the run over if it lapses)",
                    )
                if refused:
                    self._etag = None
                    return

    def _refuse_if_live(self, document: dict[str, Any], etag: str, age: float | None) -> None:
        if document.get("released"):
            return
        if self.holder.on_this_machine(document) and not process_runs(
            int(document.get("pid") or 0), document.get("started")
        ):
            logger.warning("%s: its holder (pid %s) no longer runs", self.key, document["pid"])
            return
        if lapsed(document, age):
            logger.warning("%s: lapsed unrenewed: taking it over", self.key)
            return
        raise self._held(
            f"host {document.get('host')}, pid {document.get('pid')}, renewed "
            f"{'?' if age is None else f'{age:.0f} s'} ago"
        )

    def _held(self, what: str) -> LedgerError:
        return LedgerError(
            f"another attempt of run {self.run.run_id} is running ({what}): wait for it to "
            f"end (its lease lapses {RUN_LEASE_SECONDS:.0f} s after its last renewal), or "
            "stop it, before resuming"
        )

    def _read(self) -> tuple[dict[str, Any], str, float | None] | None:
        return read_lease(self.writer.s3, self.writer.bucket, self.key)

    def _put(self, released: bool, condition: dict[str, str]) -> str:
        """One conditional write; its ETag. A 409 conflict is sent again (in ``_put_once``).
        Refused (412), it is ours all the same when the lease holds a token of this holder:
        a retry of this write whose first attempt had landed, or an earlier renewal that
        landed unanswered (then this write is made again over it)."""
        token = uuid.uuid4().hex
        self._tokens.add(token)
        for _ in range(READ_POLICY.max_attempts):
            try:
                return self._put_once(released, condition, token)
            except ClientError as error:
                if error_code(error) not in REFUSED_CODES:
                    raise
                found = self._read()
                if found is None or found[0].get("token") not in self._tokens:
                    raise
                if found[0].get("token") == token:
                    return found[1]
                condition = {"IfMatch": found[1]}  # our earlier write: still ours
        raise LedgerError(f"{self.key}: the lease kept changing under its holder's writes")

    def _put_once(self, released: bool, condition: dict[str, str], token: str) -> str:
        document = {
            **asdict(self.holder),
            "seconds": RUN_LEASE_SECONDS,
            "released": released,
            "token": token,
        }
        body = json.dumps(document, sort_keys=True).encode("utf-8")
        answer = call_with_retries(
            lambda: self.writer.s3.put_object(
                Bucket=self.writer.bucket,
                Key=self.key,
                Body=body,
                ContentType="application/json",
                **condition,
            ),
            READ_POLICY,
            f"put s3://{self.writer.bucket}/{self.key}",
            retryable=_worth_sending_again,
        )
        return str(answer["ETag"])
