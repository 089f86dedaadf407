"""Clients for a job's work units, wherever the units run.

In the process that built the job, the clients it was given are used as they are. A job sent
to another process (``--engine processes``) or to a Spark executor travels as settings only
(clients hold sockets and locks, which do not pickle); there each client is made once per
process from the job's ``AwsContext`` and shared by every unit that process runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dynamo_backups.aws.context import AwsContext

T = TypeVar("T")

_made: dict[tuple[Any, ...], Any] = {}
_making = threading.RLock()  # making one client may need another


class ClientSource:
    """``source.get("s3", lambda aws: aws.client("s3"))``: the given client of that name, or
    one made from the AWS settings (once per process)."""

    def __init__(self, aws: AwsContext | None = None, **given: Any) -> None:
        self.aws = aws
        self._given = dict(given)

    def get(self, name: str, make: Callable[[AwsContext], T], variant: str = "") -> T:
        """``variant`` tells apart clients of one name made differently (another bucket)."""
        if name in self._given:
            return self._given[name]  # type: ignore[no-any-return]
        if self.aws is None:
            raise RuntimeError(
                f"this job was given its clients and no AWS settings: it cannot make {name} "
                "in another process (run it with --engine threads)"
            )
        key = (*self.aws.settings_key(), name, variant)
        with _making:  # boto3 sessions are not safe to make clients from in many threads
            if key not in _made:
                _made[key] = make(self.aws)
            return _made[key]  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        return {"aws": self.aws, "_given": {}}
