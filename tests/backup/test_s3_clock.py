"""Waiting for S3's clock (``backup/s3_clock.wait_past``) against SeaweedFS: once it returns,
nothing S3 receives is dated before the moment, and it does not oversleep by a second."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from dynamo_backups.backup.s3_clock import SKEW_MARGIN_SECONDS, s3_clock, wait_past


def test_after_the_wait_every_put_is_dated_at_or_after_the_moment(s3: Any, bucket: str) -> None:
    for _ in range(3):  # the pin's second starts anywhere in S3's second
        key = f"clock-{uuid.uuid4().hex}/moment.json"
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
        received, _ = s3_clock(s3, bucket, key)
        assert received is not None
        moment = received.replace(microsecond=0) + timedelta(seconds=1)
        started = time.monotonic()
        wait_past(s3, bucket, key, moment, time.sleep)
        waited = time.monotonic() - started
        later = f"{key}.after"
        s3.put_object(Bucket=bucket, Key=later, Body=b"{}")
        after, _ = s3_clock(s3, bucket, later)
        assert after is not None and after >= moment, (received, moment, after)
        # At most the rest of the pin's second, a poll and the skew margin (a fixed sleep
        # took up to 2.5 s).
        assert waited < 1 + SKEW_MARGIN_SECONDS + 0.3, waited


def test_a_moment_long_past_is_not_waited_for(s3: Any, bucket: str) -> None:
    key = f"clock-{uuid.uuid4().hex}/moment.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    received, _ = s3_clock(s3, bucket, key)
    assert received is not None
    slept: list[float] = []
    wait_past(s3, bucket, key, received - timedelta(seconds=5), slept.append)
    assert slept == []
