"""moto as a server on loopback, for what DynamoDB Local and SeaweedFS do not serve (IAM,
STS, Lambda's control plane, CloudWatch Logs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import requests
from botocore.config import Config

from tests import servers


@contextmanager
def moto_server() -> Iterator[str]:
    from moto.iam.access_control import IAMPolicy
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.s3.models import FakeBucket

    port = servers.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    original = FakeBucket.get_permission

    def get_permission(self: Any, action: str, resource: str) -> Any:
        # moto ignores policy conditions, so a "deny unless TLS" statement would deny every
        # request; real S3 evaluates it, and every real request is over TLS. Drop it here.
        if self.policy is None:
            return original(self, action, resource)
        import json

        document = json.loads(self.policy.decode())
        statements = [
            statement
            for statement in document.get("Statement", [])
            if "aws:SecureTransport" not in json.dumps(statement.get("Condition", {}))
        ]
        return IAMPolicy(json.dumps({**document, "Statement": statements})).is_action_permitted(
            action, resource
        )

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]
    server.start()
    # moto's state is the process's, shared by every server in it: a test's own server
    # starts empty only once what a session-wide server's tests left (an Object Lock bucket,
    # which cannot be deleted) is gone.
    requests.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        requests.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=10)
        server.stop()
        FakeBucket.get_permission = original  # type: ignore[method-assign]


def moto_client(endpoint: str, service: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )


class CallRecorder:
    """Every API operation the given clients make, in order."""

    def __init__(self, *clients: Any) -> None:
        self.calls: list[str] = []
        for client in clients:
            client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def changing(self) -> list[str]:
        reading = ("Describe", "Get", "List", "Head")
        return [call for call in self.calls if not call.startswith(reading)]
