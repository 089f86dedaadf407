"""The fast transport for the per-item requests: PutObject, GetObject and DeleteObject
through obstore (Rust: HTTP, TLS and SigV4 in a maintained library), addressed and signed
exactly as botocore would (``endpoints.s3_target``).

The hot paths (the stream handler's puts and deletes, backfill's conditional puts, the reads
of restore, verify and snapshot) send one request per item, so the client's CPU per request
sets their pace. What obstore lacks (listing versions, conditional deletes, bucket settings)
goes through botocore (``s3objects.RawListing``). obstore's failures are translated into
botocore's exceptions, and a bucket in another region is found and followed as botocore does.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dynamo_backups import __version__
from dynamo_backups.aws.endpoints import S3Target, s3_target
from dynamo_backups.aws.errors import (
    CertificateError,
    ClientError,
    HTTPClientError,
    client_error,
    error_code,
)
from dynamo_backups.aws.s3objects import RawListing
from dynamo_backups.aws.waiting import watched
from dynamo_backups.core.s3_listing import (
    ObjectPage,
    VersionPage,
)

logger = logging.getLogger("dynamo_backups.aws")

try:  # a hard dependency; without its native wheel the botocore path still works
    import obstore
    from obstore.exceptions import (
        AlreadyExistsError,
        NotFoundError,
        PreconditionError,
    )
    from obstore.store import S3Store
except ImportError as missing:  # pragma: no cover - exercised only where the wheel is absent
    obstore = None  # type: ignore[assignment]
    OBSTORE_MISSING: str | None = str(missing)
else:
    OBSTORE_MISSING = None


@dataclass(frozen=True)
class HttpSettings:
    """What botocore's HTTP layer would honour, for a transport that is not botocore's."""

    ca_bundle: str | None = None  # PEM file (AWS_CA_BUNDLE, ca_bundle in the config)
    proxies: Mapping[str, str] = field(default_factory=dict)  # scheme -> proxy URL
    no_proxy: str = ""  # NO_PROXY: hosts that bypass the proxy
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    pool: int = 64


def fast_user_agent() -> str:
    return f"dynamo-backups/{__version__} obstore/{getattr(obstore, '__version__', '?')}"


_STATUS = re.compile(r"status code: (\d{3})")
_CERTIFICATE = re.compile(r"InvalidCertificate\(\s*(\w+)")
_XML_FIELD = re.compile(r"<(Code|Message|Region)>([^<]*)</\1>")
_STANDARD_ATTRIBUTES = frozenset(
    {"content-type", "content-encoding", "content-language", "content-disposition", "cache-control"}
)
# Answers that mean "this bucket lives in another region": find it and send there.
_REDIRECT_STATUSES = frozenset({301, 307})
_REDIRECT_CODES = frozenset(
    {"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed", "301", "307"}
)


def translate_error(error: Exception, operation: str, where: str) -> Exception:
    """botocore's exception for an obstore failure: a ClientError carrying the S3 error code
    and HTTP status of an error answer, or a (transient) HTTPClientError when no answer came."""
    text = str(error)
    status_match = _STATUS.search(text)
    if status_match is None and "redirect" in text.lower():
        # object_store reports a 3xx without following it: S3's sign of another region.
        return client_error(operation, "PermanentRedirect", text.split("\n", 1)[0], 301)
    certificate = _CERTIFICATE.search(text)
    if status_match is None and certificate is not None:
        return CertificateError(endpoint=where, reason=certificate.group(1))
    if status_match is None:
        if isinstance(error, AlreadyExistsError | PreconditionError):
            return client_error(operation, "PreconditionFailed", text[:300], 412)
        if isinstance(error, NotFoundError):
            return client_error(operation, "NoSuchKey", text[:300], 404)
        reason = text.split("\n", 1)[0]
        return HTTPClientError(error=f"{operation} {where}: {reason}")
    status = int(status_match.group(1))
    fields = dict(_XML_FIELD.findall(text[status_match.end() :]))
    code = fields.get("Code") or str(status)
    message = fields.get("Message") or text.split("\n", 1)[0][:300]
    extra = {"Region": fields["Region"]} if fields.get("Region") else {}
    return client_error(operation, code, message, status, **extra)


def needs_other_region(error: BaseException) -> bool:
    """An answer saying the bucket is in another region than the request was sent to."""
    if not isinstance(error, ClientError):
        return False
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status in _REDIRECT_STATUSES or error_code(error) in _REDIRECT_CODES


def bucket_region(s3: Any, bucket: str) -> str | None:
    """The bucket's region, as botocore finds it: HeadBucket (which botocore's own region
    redirector follows) answers with x-amz-bucket-region, even when it refuses access."""
    try:
        headers = s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as error:
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region")


class FastObjects:
    """PutObject, GetObject and DeleteObject on one bucket through obstore; listings through
    botocore. ``s3`` is the boto3 client whose endpoint, region and settings apply;
    ``client_in_region`` makes one like it in another region (for region redirects)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        credentials_source: Any,
        settings: HttpSettings | None = None,
        client_in_region: Callable[[str], Any] | None = None,
    ) -> None:
        if obstore is None:
            raise RuntimeError(f"obstore is not installed: {OBSTORE_MISSING}")
        self.s3 = s3
        self.bucket = bucket
        self.settings = settings or HttpSettings()
        self._credentials_source = credentials_source
        self._client_in_region = client_in_region
        self._listing = RawListing(s3, bucket, credentials_source)
        self._lock = threading.Lock()
        self.target = s3_target(s3, bucket)
        self._store = self._store_for(self.target)

    # --- the store ---------------------------------------------------------------------------

    def _credentials(self) -> dict[str, Any]:
        frozen = self._credentials_source.get_frozen_credentials()
        # boto3 renews temporary credentials; asking it again every few minutes picks that up.
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + timedelta(minutes=5),
        }

    def _store_for(self, target: S3Target) -> Any:
        settings = self.settings
        scheme = target.origin.split("://", 1)[0]
        options: dict[str, Any] = {
            "allow_http": scheme == "http",
            "user_agent": fast_user_agent(),
            "connect_timeout": timedelta(seconds=settings.connect_timeout),
            "timeout": timedelta(seconds=settings.read_timeout),
            "pool_max_idle_per_host": str(settings.pool),
        }
        if settings.ca_bundle:
            with open(settings.ca_bundle, encoding="utf-8") as handle:
                options["root_certificate"] = handle.read()
        proxy = settings.proxies.get(scheme)
        if proxy:
            options["proxy_url"] = proxy
            if settings.no_proxy:
                options["proxy_excludes"] = settings.no_proxy
        return S3Store(
            target.bucket,
            endpoint=target.origin,
            region=target.signing_region,
            virtual_hosted_style_request=not target.path_style,
            credential_provider=self._credentials,
            client_options=options,
            # One attempt per call: the caller's retry policy, with its deadline, retries.
            retry_config={
                "max_retries": 0,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=10),
                    "max_backoff": timedelta(milliseconds=10),
                    "base": 2,
                },
                "retry_timeout": timedelta(seconds=settings.read_timeout),
            },
        )

    def _retarget(self, failed_store: Any) -> bool:
        """Follow a region redirect: find the bucket's region and address it there."""
        with self._lock:
            if self._store is not failed_store:
                return True  # another thread already moved
            region = bucket_region(self.s3, self.bucket)
            if not region or region == self.target.signing_region:
                return False
            client = self._client_in_region(region) if self._client_in_region else None
            if client is None:
                return False
            target = s3_target(client, self.bucket)
            logger.info(
                "bucket %s is in %s: sending its object requests to %s",
                self.bucket,
                region,
                target.origin,
            )
            self.s3, self.target = client, target
            self._listing = RawListing(client, self.bucket, self._credentials_source)
            self._store = self._store_for(target)
            return True

    def _call(self, operation: str, key: str, action: Callable[[Any], Any]) -> Any:
        for attempt in (1, 2):
            store = self._store
            try:
                with watched("s3", operation, f"s3://{self.bucket}/{key}"):
                    return action(store)
            except obstore.exceptions.BaseError as error:
                translated = translate_error(error, operation, f"s3://{self.bucket}/{key}")
                if attempt == 1 and needs_other_region(translated) and self._retarget(store):
                    continue
                raise translated from None
            except FileNotFoundError as error:  # obstore's NotFoundError is also one
                raise translate_error(error, operation, f"s3://{self.bucket}/{key}") from None
        raise AssertionError("unreachable")

    # --- object requests -------------------------------------------------------------------

    def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
    ) -> str | None:
        """Write an object; the answer's version id. The payload's SHA-256 is signed, so S3
        rejects a body changed on the way."""
        attributes = {"Content-Type": content_type, **metadata}
        mode = "create" if if_none_match else "overwrite"
        result = self._call(
            "PutObject",
            key,
            lambda store: obstore.put(store, key, body, attributes=attributes, mode=mode),
        )
        return result.get("version")

    def delete_object(self, key: str) -> None:
        self._call("DeleteObject", key, lambda store: obstore.delete(store, key))

    def read_object(self, key: str, version_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and user metadata of a version (the current one without ``version_id``)."""
        options = {"version": version_id} if version_id else {}

        def read(store: Any) -> tuple[bytes, dict[str, str]]:
            result = obstore.get(store, key, options=options)
            return bytes(result.bytes()), user_metadata(result.attributes)

        return self._call("GetObject", key, read)

    def _list(self, action: Callable[[RawListing], Any]) -> Any:
        for attempt in (1, 2):
            listing = self._listing
            try:
                return action(listing)
            except ClientError as error:
                if attempt == 1 and needs_other_region(error) and self._retarget(self._store):
                    continue
                raise
        raise AssertionError("unreachable")

    def list_versions_page(
        self, prefix: str, key_marker: str | None = None, version_marker: str | None = None
    ) -> VersionPage:
        return self._list(
            lambda listing: listing.list_versions_page(prefix, key_marker, version_marker)
        )

    def list_objects_page(self, prefix: str, token: str | None = None) -> ObjectPage:
        return self._list(lambda listing: listing.list_objects_page(prefix, token))


def user_metadata(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The user metadata among obstore's attributes, named as boto3 reports them."""
    return {
        name.lower(): str(value)
        for name, value in attributes.items()
        if name.lower() not in _STANDARD_ATTRIBUTES
    }
