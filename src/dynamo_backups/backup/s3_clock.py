"""S3's own clock: when S3 received an object, and waiting until its clock reaches a moment.

Jobs that pin "what the backup held when the run began" compare S3's times (an object's
``LastModified``) with each other, never with this host's clock. S3 gives both to the second:
``LastModified`` and an answer's ``Date`` are truncated, so a moment is reached when an answer's
``Date`` is at or after it (S3's clock is then somewhere in that second).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from dynamo_backups.aws.errors import NOT_FOUND_CODES, ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.reading import READ_POLICY

# Waited once S3's clock shows the moment's second: S3's front ends are distinct hosts, and
# the one that dates a put may run behind the one that answered. AWS states no bound on their
# difference; a whole second is what the pins have always tolerated.
SKEW_MARGIN_SECONDS = 1.0
# How often S3's clock is read while the moment is less than a second away (its Date is
# to the second, so only a new answer tells that the second has turned).
POLL_SECONDS = 0.1


def s3_clock(s3: Any, bucket: str, key: str) -> tuple[datetime | None, datetime]:
    """When S3 received ``key`` (None: it is not there) and S3's clock now (an answer's
    Date; this host's clock when the answer has no usable Date), by one HEAD request."""
    received, now = _head_times(s3, bucket, key)
    return received, now or datetime.now(UTC)


def wait_past(
    s3: Any, bucket: str, key: str, moment: datetime, sleep: Callable[[float], None]
) -> None:
    """Wait until S3's clock is past ``moment`` (by its answers' Date, read by HEADs of
    ``key``), and ``SKEW_MARGIN_SECONDS`` more: then no object S3 receives can be dated
    before ``moment``. Sleeps through the whole seconds first, then reads the clock every
    ``POLL_SECONDS`` until its second turns, rather than oversleeping up to a second."""
    while True:
        _, now = _head_times(s3, bucket, key)
        if now is None:  # no clock to read: this host's is not S3's, so wait it out in full
            sleep(1 + SKEW_MARGIN_SECONDS)
            return
        behind = (moment - now).total_seconds()
        if behind <= 0:
            # S3's clock is at least ``-behind`` past the moment (its Date is truncated).
            if -behind < SKEW_MARGIN_SECONDS:
                sleep(SKEW_MARGIN_SECONDS + behind)
            return
        # Date is truncated: S3's clock is in [now, now + 1 s), so the moment is at least
        # ``behind - 1`` seconds away.
        sleep(max(POLL_SECONDS, behind - 1))


def _head_times(s3: Any, bucket: str, key: str) -> tuple[datetime | None, datetime | None]:
    """``key``'s LastModified (None: not there) and the answer's Date (None: unusable)."""

    def head() -> dict[str, Any]:
        try:
            return s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return {"ResponseMetadata": error.response.get("ResponseMetadata", {})}
            raise

    answer = call_with_retries(head, READ_POLICY, f"head s3://{bucket}/{key}")
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        now = None
    return answer.get("LastModified"), now
