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
from botocore.exceptions import NoCredentialsError

from dynamo_backups.s3store import Boto3Bucket
from dynamo_backups.wire import BotocoreDynamoDB, LeanDynamoDB, LeanS3Bucket, lean_path_usable

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
            session = boto3.Session(profile_name=self.profile, region_name=self.region)
            if session.region_name is None and os.environ.get("AWS_REGION"):
                # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what Lambda and the newer
                # AWS SDKs use, so it is honoured too.
                session = boto3.Session(
                    profile_name=self.profile, region_name=os.environ["AWS_REGION"]
                )
            self._session = session
        return self._session

    def client(
        self, service: str, *, pool: int = 10, retries: int = 5, region: str | None = None
    ) -> Any:
        """A client for ``service`` (in ``region``, default the session's); ``pool`` sizes its
        connection pool for that many threads."""
        config = Config(
            max_pool_connections=max(10, pool),
            retries={"mode": "standard", "total_max_attempts": retries},
            user_agent_extra="dynamo-backups",
        )
        endpoint = self.endpoint_url or self._fallback_endpoint(service)
        return self.session.client(
            service,
            endpoint_url=endpoint,
            config=config,
            region_name=region or self.session.region_name,
        )

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

    def credentials(self) -> Any:
        credentials = self.session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        return credentials

    def objects(self, s3_client: Any, bucket: str) -> Any:
        """Object reads and writes for bulk work: lean signed requests where they can be
        used (see ``wire.lean_path_usable``), else botocore."""
        if lean_path_usable():
            return LeanS3Bucket(s3_client, bucket, self.credentials())
        return Boto3Bucket(s3_client, bucket)

    def dynamodb_api(self, dynamodb_client: Any) -> Any:
        """DynamoDB calls in wire form for bulk work (Scan, BatchWriteItem, ...)."""
        if lean_path_usable():
            return LeanDynamoDB(dynamodb_client, self.credentials())
        return BotocoreDynamoDB(dynamodb_client)
