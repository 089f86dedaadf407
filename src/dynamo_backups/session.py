"""boto3 sessions and clients for the command line, following AWS conventions.

``--region``, ``--profile`` and ``--endpoint-url`` act as they do in the AWS CLI; without
them boto3's own configuration applies, including the per-service endpoint variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

# The Streams API is served by the DynamoDB endpoint in DynamoDB Local; this spelling is
# also accepted as an alias of boto3's AWS_ENDPOINT_URL_DYNAMODB_STREAMS.
_STREAMS_ENDPOINT_ALIASES = (
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "AWS_ENDPOINT_URL_DYNAMODBSTREAMS",
)


@dataclass
class AwsContext:
    """The AWS settings of one command-line invocation; makes sessions and clients."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    _session: Any = field(default=None, repr=False)

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
        return self._session

    def client(self, service: str, *, pool: int = 10, retries: int = 5) -> Any:
        """A client for ``service``; ``pool`` sizes its connection pool for that many threads."""
        config = Config(
            max_pool_connections=max(10, pool),
            retries={"mode": "standard", "total_max_attempts": retries},
            user_agent_extra="dynamo-backups",
        )
        endpoint = self.endpoint_url or self._fallback_endpoint(service)
        return self.session.client(service, endpoint_url=endpoint, config=config)

    def _fallback_endpoint(self, service: str) -> str | None:
        if service != "dynamodbstreams":
            return None
        for name in _STREAMS_ENDPOINT_ALIASES:
            if os.environ.get(name):
                return os.environ[name]
        if os.environ.get("AWS_ENDPOINT_URL"):
            return None
        # DynamoDB Local (and other emulators) serve Streams on the DynamoDB endpoint: when
        # only that one is configured, a streams client must not go to AWS itself.
        return os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None

    @property
    def region_name(self) -> str | None:
        return self.session.region_name
