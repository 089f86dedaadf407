"""How much S3 clock difference the run's pin (``backup/s3_clock.wait_past``) tolerates. S3's
answers come from many front ends; the one that answers the pin's HEAD (its ``Date``) is not the
one that dates a writer's put (``LastModified``). The pin waits a second past the moment's own
second (``SKEW_MARGIN_SECONDS``): a front end up to a second ahead of the one dating puts cannot
end the wait early. (A review of 02e924c, which waited 0.25 s, found it failing: these tests.)

Simulated on SeaweedFS (one host, so one clock: its own ``Date`` and ``LastModified`` agree): the
HEADs ``wait_past`` sends get the ``Date`` a front end half a second ahead would give
(``floor(now + 0.5 s)``, read from this host, which is SeaweedFS's), puts are dated by SeaweedFS
itself."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from email.utils import formatdate
from typing import Any

import pytest

from dynamo_backups.backup.s3_clock import s3_clock, wait_past
from tests import servers

pytestmark = pytest.mark.servers

AHEAD_SECONDS = 0.5  # well under the second the pin tolerates


def _front_end_ahead(endpoint: str, ahead: float) -> Any:
    """An S3 client whose HeadObject answers carry the Date of a front end ``ahead`` seconds
    ahead of SeaweedFS's clock (truncated to the second, as every HTTP Date)."""
    client = servers.make_client("s3", endpoint)

    def shift(parsed: dict[str, Any], **_: Any) -> None:
        headers = parsed.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if "date" in headers:
            headers["date"] = formatdate(int(time.time() + ahead), usegmt=True)

    client.meta.events.register("after-call.s3.HeadObject", shift)
    return client


def _start_of_a_second(at: float = 0.05) -> None:
    """Sleep until this host's clock (SeaweedFS's) is ``at`` s into a second."""
    fraction = time.time() % 1
    time.sleep((at - fraction) % 1)


def test_a_front_end_half_a_second_ahead_cannot_end_the_pin_before_its_moment(
    seaweedfs: servers.Server, s3: Any, bucket: str
) -> None:
    ahead = _front_end_ahead(seaweedfs.endpoint, AHEAD_SECONDS)
    early: list[tuple[Any, Any]] = []
    for _ in range(3):
        _start_of_a_second()
        key = f"clock-review-{uuid.uuid4().hex}/moment.json"
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
        received, _ = s3_clock(s3, bucket, key)
        assert received is not None
        moment = received.replace(microsecond=0) + timedelta(seconds=1)  # a restore's pin
        wait_past(ahead, bucket, key, moment, time.sleep)
        # A writer's put sent once the wait is over: the run has begun and read nothing yet.
        later = f"{key}.after"
        s3.put_object(Bucket=bucket, Key=later, Body=b"{}")
        after, _ = s3_clock(s3, bucket, later)
        assert after is not None
        if after < moment:
            early.append((moment, after))
    # Dated before the pin, so read as held "when the run began" by every attempt that lists
    # after it landed (and by none that listed before): on 02e924c every round is early.
    assert early == [], early
