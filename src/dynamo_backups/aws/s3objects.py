"""Object reads, writes and listings on one bucket: what every caller needs of a bucket
(``ObjectReader``, ``ObjectStore``), ``BotocoreObjects`` (every request through botocore: the
documented fallback, ``DYNAMO_BACKUPS_TRANSPORT=botocore``) and ``RawListing`` (listings signed
and sent by botocore, parsed without its timestamp cost). The fast transport for the per-item
requests is ``fast_objects.FastObjects``.

Both transports raise botocore's ``ClientError`` (and connection errors) so that retry
policies and error messages treat them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from dynamo_backups.aws.endpoints import prepared_request
from dynamo_backups.aws.errors import (
    modeled_error,
)
from dynamo_backups.aws.waiting import watched
from dynamo_backups.core.s3_listing import (
    ObjectPage,
    VersionPage,
    parse_object_page,
    parse_version_page,
)

logger = logging.getLogger("dynamo_backups.aws")


class ObjectReader(Protocol):
    """What restores need of a bucket."""

    def read_object(
        self, key: str, version_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]: ...

    def head_object(self, key: str, version_id: str | None = None) -> dict[str, str]: ...


class ObjectStore(ObjectReader, Protocol):
    """Object writes, reads and listings on one bucket (``FastObjects`` or
    ``BotocoreObjects``)."""

    bucket: str

    def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> str | None: ...

    def delete_object(self, key: str) -> None: ...

    def list_versions_page(
        self, prefix: str, key_marker: str | None = None, version_marker: str | None = None
    ) -> VersionPage: ...

    def list_objects_page(self, prefix: str, token: str | None = None) -> ObjectPage: ...


_RAW_LISTING = "RawListing"

# botocore's default checksum for a put (request_checksum_calculation "when_supported").
PUT_CHECKSUM_ALGORITHM = "CRC32"


def _name_a_checksum(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("ChecksumAlgorithm", PUT_CHECKSUM_ALGORITHM)


def checksum_every_put(s3: Any) -> None:
    """Make every PutObject of this client carry a checksum of its body, whatever
    ``request_checksum_calculation`` (AWS_REQUEST_CHECKSUM_CALCULATION) says: with
    "when_required" botocore sends none for a put, and an Object Lock bucket with a default
    retention refuses a put without one. Other operations keep the setting."""
    s3.meta.events.register(
        "before-parameter-build.s3.PutObject",
        _name_a_checksum,
        unique_id="dynamo-backups-checksum-every-put",
    )


def _keep_raw_listing(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
    if isinstance(parsed, dict) and http_response.status_code == 200:
        parsed[_RAW_LISTING] = http_response.content


class BotocoreObjects:
    """Every object request through a boto3 S3 client."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        # boto3's parsed ListObjectVersions separates versions from delete markers and loses
        # their order; the raw answer keeps it.
        s3.meta.events.register(
            "after-call.s3.ListObjectVersions",
            _keep_raw_listing,
            unique_id="dynamo-backups-raw-listing",
        )

    def put_object(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Write an object; ``tags`` go with the put (``x-amz-tagging``: what lifecycle rules
        filter on), so the object is never rewritten to tag it."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        if tags:
            extra["Tagging"] = urlencode(sorted(tags.items()))
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata=dict(metadata),
            **extra,
        )
        return response.get("VersionId")

    def delete_object(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def read_object(self, key: str, version_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and user metadata of a version (the current one without ``version_id``)."""
        extra = {"VersionId": version_id} if version_id else {}
        response = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
        return response["Body"].read(), dict(response.get("Metadata") or {})

    def head_object(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """User metadata of a version, without its body (HeadObject)."""
        extra = {"VersionId": version_id} if version_id else {}
        response = self.s3.head_object(Bucket=self.bucket, Key=key, **extra)
        return dict(response.get("Metadata") or {})

    def list_versions_page(
        self, prefix: str, key_marker: str | None = None, version_marker: str | None = None
    ) -> VersionPage:
        """One ListObjectVersions page, parsed from the answer's own XML."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if key_marker is not None:
            kwargs.update(KeyMarker=key_marker, VersionIdMarker=version_marker or "")
        return parse_version_page(self.s3.list_object_versions(**kwargs)[_RAW_LISTING])

    def list_objects_page(self, prefix: str, token: str | None = None) -> ObjectPage:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        answer = self.s3.list_objects_v2(**kwargs)
        return ObjectPage(
            [
                {
                    "Key": entry["Key"],
                    "Size": entry.get("Size", 0),
                    "ETag": entry.get("ETag", ""),
                    "LastModified": entry["LastModified"],
                }
                for entry in answer.get("Contents", [])
            ],
            answer.get("NextContinuationToken") if answer.get("IsTruncated") else None,
        )


class RawListing:
    """ListObjectsV2 and ListObjectVersions signed by botocore's own signer and sent on the
    client's own HTTP session, to the URL botocore prepared, and parsed by ``listing``:
    botocore's parser spends more CPU on a page's timestamps (through dateutil) than the
    reads that page lists cost. Errors are botocore's, parsed by its own S3 error parser."""

    def __init__(self, s3: Any, bucket: str, credentials_source: Any) -> None:
        prepared = prepared_request(s3, "ListObjectsV2", Bucket=bucket)
        self.s3 = s3
        self.bucket = bucket
        self.url = prepared.url.split("?", 1)[0]
        self.user_agent = prepared.user_agent
        self.signing_region = prepared.signing_region
        self._credentials_source = credentials_source
        self._http = s3._endpoint.http_session  # the client's own HTTP session

    def _get(self, operation: str, query: dict[str, str]) -> bytes:
        request = AWSRequest(
            "GET",
            self.url,
            headers={"User-Agent": self.user_agent},
            params=dict(sorted(query.items())),
        )
        credentials = self._credentials_source.get_frozen_credentials()
        S3SigV4Auth(credentials, "s3", self.signing_region).add_auth(request)
        with watched("s3", operation, f"s3://{self.bucket}/{query.get('prefix', '')}"):
            response = self._http.send(request.prepare())
        if response.status_code != 200:
            raise modeled_error(self.s3, "rest-xml", operation, response)
        return response.content

    def list_versions_page(
        self, prefix: str, key_marker: str | None = None, version_marker: str | None = None
    ) -> VersionPage:
        query = {"versions": "", "prefix": prefix, "encoding-type": "url"}
        if key_marker is not None:
            query.update({"key-marker": key_marker, "version-id-marker": version_marker or ""})
        return parse_version_page(self._get("ListObjectVersions", query))

    def list_objects_page(self, prefix: str, token: str | None = None) -> ObjectPage:
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        return parse_object_page(self._get("ListObjectsV2", query))
