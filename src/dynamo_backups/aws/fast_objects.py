"""The fast transport for the per-item requests: PutObject, GetObject and DeleteObject
through obstore (Rust: HTTP, TLS and SigV4 in a maintained library), addressed and signed
exactly as botocore would (``endpoints.s3_target``).

The hot paths (the stream handler's puts and deletes, backfill's conditional puts, the reads
of restore, verify and snapshot) send one request per item, so the client's CPU per request
sets their pace. What obstore lacks (listing versions, conditional deletes, bucket settings)
goes through botocore (``s3objects.RawListing``). obstore's failures are translated into
botocore's exceptions, and a bucket in another region is found and followed as botocore does.

Every write carries a checksum of its body, as botocore's do: S3 refuses a put into an Object
Lock bucket with a default retention without one (``Content-MD5``, or
``x-amz-sdk-checksum-algorithm`` with its ``x-amz-checksum-*``). Writes go through a store
that sends ``x-amz-checksum-sha256`` (computed by object_store over the body it sends) and
names the algorithm; reads through one that does not, so that no GET carries a header meant
for uploads.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import InvalidRegionError
from botocore.utils import validate_region_name

from dynamo_backups import __version__
from dynamo_backups.aws.endpoints import S3Target, s3_target
from dynamo_backups.aws.errors import (
    CertificateError,
    ClientError,
    HTTPClientError,
    client_error,
    error_code,
    key_error,
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


# What every write sends: object_store computes x-amz-checksum-sha256 over the body, and the
# header naming the algorithm (S3's documented rule for Object Lock, and what moto checks) is
# added to each request before it is signed. SHA-256 rather than botocore's CRC32: object_store
# offers no CRC32, and SHA-256 is FIPS-approved and the checksum S3-compatible stores implement
# most widely (SeaweedFS verifies it: a mismatch is BadDigest).
CHECKSUM_ALGORITHM = "SHA256"
_CHECKSUM_HEADERS = {"x-amz-sdk-checksum-algorithm": CHECKSUM_ALGORITHM}


def fast_user_agent() -> str:
    return f"dynamo-backups/{__version__} obstore/{getattr(obstore, '__version__', '?')}"


_STATUS = re.compile(r"status code: (\d{3})")
_CERTIFICATE = re.compile(r"InvalidCertificate\(\s*(\w+)")
_XML_FIELD = re.compile(r"<(Code|Message|Region)>([^<]*)</\1>")
_STANDARD_ATTRIBUTES = frozenset(
    {"content-type", "content-encoding", "content-language", "content-disposition", "cache-control"}
)
# Answers that mean "this bucket lives in another region": find it and send there. These are
# the answers botocore's S3RegionRedirectorv2 follows; IllegalLocationConstraintException is
# what a bucket in an opt-in region answers through another region's endpoint.
_REDIRECT_STATUSES = frozenset({301, 302, 307})
_REDIRECT_CODES = frozenset(
    {
        "PermanentRedirect",
        "TemporaryRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
        "301",
        "302",
        "307",
    }
)
# DeleteObjects answers 200 and reports each key it could not delete in an <Error>;
# object_store raises it as DeleteFailed (Rust's Debug form, strings quoted and escaped).
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_DELETE_FAILED = re.compile(
    rf"DeleteFailed \{{\s*path: {_QUOTED},\s*code: {_QUOTED},\s*message: {_QUOTED}"
)
# ... and its one-line form, where the Debug form is missing.
_DELETE_FAILED_LINE = re.compile(
    r"DeleteObjects request failed for key (.+?): (.*) \(code: (\w+)\)"
)


def translate_error(error: Exception, operation: str, where: str) -> Exception:
    """botocore's exception for an obstore failure: a ClientError carrying the S3 error code
    and HTTP status of an error answer, or a (transient) HTTPClientError when no answer came."""
    text = str(error)
    key_failed = _DELETE_FAILED.search(text)
    if key_failed is not None:
        key, code, message = (_unescape(part) for part in key_failed.groups())
        return key_error(operation, key, code, message)
    key_failed = _DELETE_FAILED_LINE.search(text)
    if key_failed is not None:
        key, message, code = key_failed.groups()
        return key_error(operation, key, code, message)
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


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def _unescape(quoted: str) -> str:
    """A string as Rust's Debug form quoted it (backslash escapes undone)."""
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match[1], match[1]), quoted)


def needs_other_region(error: BaseException) -> bool:
    """An answer saying the bucket is in another region than the request was sent to."""
    if not isinstance(error, ClientError):
        return False
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status in _REDIRECT_STATUSES or error_code(error) in _REDIRECT_CODES


def region_named_by(error: ClientError) -> str | None:
    """The bucket's region as a redirecting answer names it, where botocore looks first:
    the x-amz-bucket-region header, then the error's <Region>; None when it names none."""
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}
    region = headers.get("x-amz-bucket-region") or error.response.get("Error", {}).get("Region")
    if not region:
        return None
    try:
        validate_region_name(region)
    except InvalidRegionError:
        return None
    return str(region)


def bucket_region(s3: Any, bucket: str) -> str | None:
    """The bucket's region, as botocore finds it: HeadBucket (which botocore's own region
    redirector follows) answers with x-amz-bucket-region, even when it refuses access."""
    try:
        headers = s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as error:
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region")


@dataclass(frozen=True)
class _Stores:
    """The obstore stores for one bucket address: reads, and writes (with a checksum)."""

    reads: Any
    writes: Any


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
        self._stores = self._stores_for(self.target)
        self._put_failures: Any = None  # curl_puts.RunFailures, once conditional_puts is used

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

    def _stores_for(self, target: S3Target) -> _Stores:
        return _Stores(self._store_for(target), self._store_for(target, writes=True))

    def _store_for(self, target: S3Target, writes: bool = False) -> Any:
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
        checksum: dict[str, Any] = {}
        if writes:
            options["default_headers"] = dict(_CHECKSUM_HEADERS)
            checksum["checksum_algorithm"] = CHECKSUM_ALGORITHM
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
            **checksum,
        )

    def _retarget(self, failed: _Stores, error: ClientError) -> bool:
        """Follow a region redirect: find the bucket's region and address it there."""
        with self._lock:
            if self._stores is not failed:
                return True  # another thread already moved
            region = region_named_by(error) or bucket_region(self.s3, self.bucket)
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
            self._stores = self._stores_for(target)
            return True

    def _call(
        self, operation: str, key: str, action: Callable[[Any], Any], writes: bool = False
    ) -> Any:
        where = f"s3://{self.bucket}/{key}"
        for attempt in (1, 2):
            stores = self._stores
            try:
                with watched("s3", operation, where):
                    return action(stores.writes if writes else stores.reads)
            except obstore.exceptions.BaseError as error:
                translated = translate_error(error, operation, where)
                if (
                    attempt == 1
                    and isinstance(translated, ClientError)
                    and needs_other_region(translated)
                    and self._retarget(stores, translated)
                ):
                    continue
                raise translated from None
            except FileNotFoundError as error:  # obstore's NotFoundError is also one
                raise translate_error(error, operation, where) from None
        raise AssertionError("unreachable")

    # --- object requests -------------------------------------------------------------------

    def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Write an object; the answer's version id. The payload's SHA-256 is signed and sent
        as its checksum, so S3 rejects a body changed on the way (and Object Lock accepts it).
        ``tags`` go with the put (object_store sends them as ``x-amz-tagging``)."""
        attributes = {"Content-Type": content_type, **metadata}
        mode = "create" if if_none_match else "overwrite"
        tag_set = dict(tags) if tags else None
        result = self._call(
            "PutObject",
            key,
            lambda store: obstore.put(
                store, key, body, attributes=attributes, mode=mode, tags=tag_set
            ),
            writes=True,
        )
        return result.get("version")

    def delete_object(self, key: str) -> None:
        self._call("DeleteObject", key, lambda store: obstore.delete(store, key), writes=True)

    def read_object(self, key: str, version_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and user metadata of a version (the current one without ``version_id``)."""
        options = {"version": version_id} if version_id else {}

        def read(store: Any) -> tuple[bytes, dict[str, str]]:
            result = obstore.get(store, key, options=options)
            return bytes(result.bytes()), user_metadata(result.attributes)

        return self._call("GetObject", key, read)

    def read_ahead(self, in_flight: int) -> Any:
        """Reads of many versions in flight from one thread (``curl_reads.CurlGets``), for
        one thread's use; None where that path does not apply: pycurl missing, a proxy
        configured (this path sends nothing through proxies), or turned off by
        DYNAMO_BACKUPS_READ_AHEAD=off. The caller reads again here what it could not read."""
        if self.settings.proxies or not read_ahead_enabled():
            return None
        # Imported here: the Lambda handler, which never restores, does not load pycurl.
        from dynamo_backups.aws import curl_reads

        if not curl_reads.available():
            return None
        target = self.target
        credentials = self._credentials_source
        return curl_reads.CurlGets(target, credentials, in_flight, **self._curl(target))

    def conditional_puts(self, in_flight: int) -> Any:
        """First attempts of many conditional puts (``If-None-Match: *``) in flight from one
        thread (``curl_puts.CurlPuts``), for one thread's use; None where that path does not
        apply: pycurl missing, a proxy configured, a checksum other than the one it sends,
        turned off by DYNAMO_BACKUPS_CURL_PUTS=off, or given up for this bucket after
        failures. The caller puts again through ``put_object`` what got no answer."""
        if self.settings.proxies or not curl_puts_enabled() or CHECKSUM_ALGORITHM != "SHA256":
            return None
        # Imported here: the Lambda handler, which never backfills, does not load pycurl.
        from dynamo_backups.aws import curl_puts, curl_reads

        if not curl_reads.available():
            return None
        with self._lock:
            if self._put_failures is None:
                self._put_failures = curl_puts.RunFailures()
            failures = self._put_failures
        if failures.exhausted:
            return None
        target = self.target
        return curl_puts.CurlPuts(
            target, self._credentials_source, in_flight, run_failures=failures, **self._curl(target)
        )

    def _curl(self, target: S3Target) -> dict[str, Any]:
        """The settings a libcurl path shares with this store's, for ``target``: it stops
        once a region redirect moves the store elsewhere (``still_current``)."""
        return {
            "ca_bundle": self.settings.ca_bundle,
            "connect_timeout": self.settings.connect_timeout,
            "read_timeout": self.settings.read_timeout,
            "still_current": lambda: self.target is target,
        }

    def head_object(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """User metadata of a version, without its body (a HEAD request)."""
        options: dict[str, Any] = {"head": True}
        if version_id:
            options["version"] = version_id

        def head(store: Any) -> dict[str, str]:
            return user_metadata(obstore.get(store, key, options=options).attributes)

        return self._call("HeadObject", key, head)

    def _list(self, action: Callable[[RawListing], Any]) -> Any:
        for attempt in (1, 2):
            stores, listing = self._stores, self._listing
            try:
                return action(listing)
            except ClientError as error:
                if attempt == 1 and needs_other_region(error) and self._retarget(stores, error):
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


READ_AHEAD_VARIABLE = "DYNAMO_BACKUPS_READ_AHEAD"


def read_ahead_enabled() -> bool:
    """False when DYNAMO_BACKUPS_READ_AHEAD=off: every read through obstore, one per thread."""
    return os.environ.get(READ_AHEAD_VARIABLE, "").strip().lower() not in ("off", "0", "no")


CURL_PUTS_VARIABLE = "DYNAMO_BACKUPS_CURL_PUTS"


def curl_puts_enabled() -> bool:
    """False when DYNAMO_BACKUPS_CURL_PUTS=off: backfill's puts through obstore, one per
    thread of its pool."""
    return os.environ.get(CURL_PUTS_VARIABLE, "").strip().lower() not in ("off", "0", "no")


def user_metadata(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The user metadata among obstore's attributes, named as boto3 reports them."""
    return {
        name.lower(): str(value)
        for name, value in attributes.items()
        if name.lower() not in _STANDARD_ATTRIBUTES
    }
