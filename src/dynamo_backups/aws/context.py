"""boto3 sessions and clients, following AWS conventions, and the transports built on them.

``--region``, ``--profile`` and ``--endpoint-url`` act as they do in the AWS CLI; without
them boto3's own configuration applies, including the per-service endpoint variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS``),
``AWS_CA_BUNDLE``, ``AWS_USE_FIPS_ENDPOINT`` and ``AWS_USE_DUALSTACK_ENDPOINT``. Every
request names dynamo-backups and its version in its User-Agent.

``DYNAMO_BACKUPS_TRANSPORT=botocore`` sends everything through botocore; the default
(``fast``) sends object requests through obstore and bulk DynamoDB calls through botocore's
signer without its serializers (see ``s3objects`` and ``dynamodb``).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from dynamo_backups import __version__
from dynamo_backups.aws.dynamodb import BotocoreDynamoDB, RawDynamoDB
from dynamo_backups.aws.endpoints import UnsupportedTarget
from dynamo_backups.aws.errors import NoCredentialsError
from dynamo_backups.aws.fast_objects import OBSTORE_MISSING, FastObjects, HttpSettings
from dynamo_backups.aws.s3objects import BotocoreObjects, ObjectStore, checksum_every_put
from dynamo_backups.aws.timeouts import timeouts_from_environment
from dynamo_backups.aws.waiting import watch_client

logger = logging.getLogger("dynamo_backups.aws")

USER_AGENT = f"dynamo-backups/{__version__}"
TRANSPORT_VARIABLE = "DYNAMO_BACKUPS_TRANSPORT"
TRANSPORTS = ("fast", "botocore")

# The Streams API is served by the DynamoDB endpoint in DynamoDB Local; this spelling is
# also accepted as an alias of boto3's AWS_ENDPOINT_URL_DYNAMODB_STREAMS.
_STREAMS_ENDPOINT_ALIASES = (
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "AWS_ENDPOINT_URL_DYNAMODBSTREAMS",
)


class TransportSettingError(ValueError):
    """DYNAMO_BACKUPS_TRANSPORT names no transport."""


def chosen_transport(environ: Any = None) -> str:
    """``fast`` (default) or ``botocore``, from DYNAMO_BACKUPS_TRANSPORT."""
    value = (environ or os.environ).get(TRANSPORT_VARIABLE, "").strip().lower() or "fast"
    if value not in TRANSPORTS:
        raise TransportSettingError(
            f"{TRANSPORT_VARIABLE} must be one of {', '.join(TRANSPORTS)}, not {value!r}"
        )
    return value


@dataclass
class AwsContext:
    """The AWS settings of one invocation (command line or Lambda); makes sessions,
    clients and transports."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    # Per request; defaults and DYNAMO_BACKUPS_* variables in ``timeouts``.
    connect_timeout: float = field(default_factory=lambda: timeouts_from_environment().connect)
    read_timeout: float = field(default_factory=lambda: timeouts_from_environment().read)
    max_attempts: int = field(default_factory=lambda: timeouts_from_environment().attempts)
    _session: Any = field(default=None, repr=False)

    @classmethod
    def of_session(cls, session: Any, **settings: Any) -> AwsContext:
        return cls(_session=session, **settings)

    def __getstate__(self) -> dict[str, Any]:
        # A worker process (--engine processes, spark) makes its own session from the settings.
        return {**self.__dict__, "_session": None}

    def settings_key(self) -> tuple[Any, ...]:
        """What makes two contexts' clients interchangeable."""
        return (
            self.region,
            self.profile,
            self.endpoint_url,
            self.connect_timeout,
            self.read_timeout,
            self.max_attempts,
            chosen_transport(),
            # Endpoints boto3 reads from the environment, which a worker may see change.
            tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT"))),
        )

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
        self,
        service: str,
        *,
        pool: int = 10,
        retries: int = 5,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> Any:
        """A client for ``service`` (in ``region``, default the session's); ``pool`` sizes its
        connection pool for that many threads; ``retries`` is botocore's own attempt budget
        (1 where a retry policy of ours, with a deadline, does the retrying), at most
        ``max_attempts``. Every attempt is noted while in flight (``waiting``)."""
        attempts = max(1, min(retries, self.max_attempts))
        config = Config(
            max_pool_connections=max(10, pool),
            retries={"mode": "standard", "total_max_attempts": attempts},
            user_agent_extra=USER_AGENT,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            tcp_keepalive=True,
        )
        endpoint = endpoint_url or self.endpoint_url or self._fallback_endpoint(service)
        client = self.session.client(
            service,
            endpoint_url=endpoint,
            config=config,
            region_name=region or self.session.region_name,
        )
        if service == "s3":
            checksum_every_put(client)  # Object Lock refuses a put without a checksum
        watch_client(client, attempts)
        return client

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

    # --- transports -----------------------------------------------------------------------

    def http_settings(self, s3_client: Any, pool: int = 64) -> HttpSettings:
        """What botocore's HTTP layer honours, for the fast transport: the CA bundle, the
        client's proxies (else the environment's), NO_PROXY, timeouts."""
        core = self.session._session  # botocore's session behind boto3's
        config = s3_client.meta.config
        proxies = dict(config.proxies or {})
        if not proxies:
            proxies = {
                scheme: url
                for scheme, url in urllib.request.getproxies().items()
                if scheme in ("http", "https")
            }
        return HttpSettings(
            ca_bundle=core.get_config_variable("ca_bundle"),
            proxies=proxies,
            no_proxy=os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "",
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            pool=pool,
        )

    def objects(self, s3_client: Any, bucket: str, pool: int = 64) -> ObjectStore:
        """Object reads and writes on ``bucket`` for bulk work: the fast transport unless
        DYNAMO_BACKUPS_TRANSPORT=botocore (or botocore addresses the bucket in a way the fast
        transport does not support, which is logged)."""
        if chosen_transport() == "botocore":
            return BotocoreObjects(s3_client, bucket)
        if OBSTORE_MISSING is not None:
            logger.warning("obstore cannot be loaded (%s): using botocore", OBSTORE_MISSING)
            return BotocoreObjects(s3_client, bucket)
        config = s3_client.meta.config

        def client_in_region(region: str) -> Any:
            return self.session.client(
                "s3",
                region_name=region,
                endpoint_url=self.endpoint_url,
                config=config,
            )

        try:
            return FastObjects(
                s3_client,
                bucket,
                self.credentials(),
                self.http_settings(s3_client, pool),
                client_in_region,
            )
        except UnsupportedTarget as reason:
            logger.info("%s: using botocore for its objects", reason)
            return BotocoreObjects(s3_client, bucket)

    def dynamodb_api(self, dynamodb_client: Any, libcurl: bool = True) -> Any:
        """DynamoDB calls in wire form for bulk work (Scan, BatchWriteItem, ...), sent by
        libcurl where it applies (``curl_posts``; ``libcurl=False``: the Lambda handler,
        whose package has no pycurl)."""
        if chosen_transport() == "botocore":
            return BotocoreDynamoDB(dynamodb_client)
        try:
            sender = _curl_posts_for() if libcurl else None
            return RawDynamoDB(dynamodb_client, self.credentials(), sender)
        except UnsupportedTarget as reason:
            logger.info("%s: using botocore for DynamoDB", reason)
            return BotocoreDynamoDB(dynamodb_client)

    def assume_role(self, role_arn: str, region: str | None = None) -> AwsContext:
        """A context acting as ``role_arn``, its credentials renewed before they expire."""
        sts = self.client("sts", region=region)

        def fetch() -> dict[str, str]:
            answer = sts.assume_role(RoleArn=role_arn, RoleSessionName="dynamo-backups")
            credentials = answer["Credentials"]
            expiry = credentials["Expiration"]
            if isinstance(expiry, datetime) and expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=UTC)
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": expiry.isoformat(),
            }

        core = botocore.session.get_session()
        core._credentials = RefreshableCredentials.create_from_metadata(
            fetch(), fetch, "sts-assume-role"
        )
        session = boto3.session.Session(
            botocore_session=core, region_name=region or self.session.region_name
        )
        return AwsContext.of_session(
            session,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_attempts=self.max_attempts,
        )


def _curl_posts_for() -> Any:
    """``curl_posts.curl_posts_for``, imported only when asked for: the Lambda handler (which
    passes ``libcurl=False``) has no pycurl in its package."""
    from dynamo_backups.aws import curl_posts

    return curl_posts.curl_posts_for
