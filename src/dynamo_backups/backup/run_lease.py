"""A lease on one run of a bulk job: only one attempt of a run is live at a time.

``--resume`` takes over an unfinished run; an attempt of it that still runs (a driver thought
dead, a second operator's command) would do the same units at once, and their last phases
would read each other's files. So each attempt holds ``<run>/lease.json``, renews it while
it runs and releases it when it ends; an attempt finds it held and live and stops with a clear
message. The lease is taken over when it was released, when it lapsed unrenewed
(``RUN_LEASE_SECONDS`` by S3's clock), or when its holder ran on this host and no longer runs
(a driver killed with SIGKILL resumes at once). Writes are conditional (ETag), so of two
attempts taking it at once, one wins. The holder identity is the stream consumers' (``Lease``
of ``backup.checkpoints``).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import asdict
from typing import Any

from dynamo_backups.aws.errors import (
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    ClientError,
    error_code,
)
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.checkpoints import Lease, process_runs, server_age
from dynamo_backups.backup.ledger import JobRun, LedgerError
from dynamo_backups.backup.reading import READ_POLICY
from dynamo_backups.backup.writer import BackupWriter

logger = logging.getLogger("dynamo_backups.backup.run_lease")

RUN_LEASE_SECONDS = 120.0  # a live attempt renews it every quarter of this


class RunLease:
    """Held by one attempt of ``run`` from ``acquire()`` to ``release()``."""

    def __init__(self, writer: BackupWriter, run: JobRun) -> None:
        self.writer = writer
        self.run = run
        self.key = f"{run.job_prefix}{run.run_id}/lease.json"
        self.holder = Lease()
        self._etag: str | None = None
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
            if error_code(error) not in PRECONDITION_CODES:
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
        except ClientError as error:  # taken over (we lapsed), or S3 is down: it lapses
            logger.warning("%s: lease not released: %s", self.key, error_code(error))
        self._etag = None

    def _renew(self) -> None:
        interval = max(0.5, RUN_LEASE_SECONDS / 4)
        while not self._stop.wait(interval):
            try:
                self._etag = self._put(False, {"IfMatch": self._etag or ""})
            except ClientError as error:
                logger.error(
                    "%s: the lease could not be renewed (%s): another attempt may take the run "
                    "over",
                    self.key,
                    error_code(error),
                )
                if error_code(error) in PRECONDITION_CODES:
                    self._etag = None
                    return  # taken over: never write over the new holder's lease

    def _refuse_if_live(self, document: dict[str, Any], etag: str, age: float | None) -> None:
        if document.get("released"):
            return
        if self.holder.on_this_machine(document) and not process_runs(
            int(document.get("pid") or 0), document.get("started")
        ):
            logger.warning("%s: its holder (pid %s) no longer runs", self.key, document["pid"])
            return
        seconds = float(document.get("seconds", RUN_LEASE_SECONDS))
        if age is not None and age > seconds + 1:  # S3 times are whole seconds
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
        s3, bucket = self.writer.s3, self.writer.bucket

        def read() -> tuple[dict[str, Any], str, float | None] | None:
            try:
                answer = s3.get_object(Bucket=bucket, Key=self.key)
            except ClientError as error:
                if error_code(error) in NOT_FOUND_CODES:
                    return None
                raise
            body = answer["Body"].read()
            return json.loads(body), answer["ETag"], server_age(answer)

        return call_with_retries(read, READ_POLICY, f"read s3://{bucket}/{self.key}")

    def _put(self, released: bool, condition: dict[str, str]) -> str:
        """One conditional write; its ETag. Refused, it is ours all the same when the
        lease holds its token (a retry of a write that had landed)."""
        token = uuid.uuid4().hex
        try:
            return self._put_once(released, condition, token)
        except ClientError as error:
            if error_code(error) not in PRECONDITION_CODES:
                raise
            found = self._read()
            if found is not None and found[0].get("token") == token:
                return found[1]
            raise

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
        )
        return str(answer["ETag"])
