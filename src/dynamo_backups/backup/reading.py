"""Reading a backup folder: the tool's JSON documents, and the version and object listings
in S3's own order (versions and delete markers interleaved, newest first per key), page by
page, each page retried.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.core.pitr import ObjectVersion, newest_first

READ_POLICY = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5)


def read_document(
    s3: Any, bucket: str, object_key: str, policy: RetryPolicy | None = None
) -> dict[str, Any] | None:
    """One of the tool's JSON documents, or None if it does not exist."""
    found = read_document_and_etag(s3, bucket, object_key, policy)
    return None if found is None else found[0]


def read_document_and_etag(
    s3: Any, bucket: str, object_key: str, policy: RetryPolicy | None = None
) -> tuple[dict[str, Any], str | None] | None:
    """One of the tool's JSON documents and its ETag (to write over it only if unchanged:
    If-Match; None where the store gives none), or None if it does not exist."""

    def read() -> tuple[bytes, str | None] | None:
        try:
            answer = s3.get_object(Bucket=bucket, Key=object_key)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return answer["Body"].read(), answer.get("ETag")

    found = call_with_retries(read, policy or READ_POLICY, f"read s3://{bucket}/{object_key}")
    return None if found is None else (json.loads(found[0]), found[1])


def iter_versions(lister: Any, prefix: str) -> Iterator[ObjectVersion]:
    """Every version and delete marker under ``prefix`` (``lister`` is an ObjectStore): keys
    in order, each key's entries newest first, page by page."""
    key_marker: str | None = None
    version_marker: str | None = None
    while True:
        page = call_with_retries(
            lambda k=key_marker, v=version_marker: lister.list_versions_page(prefix, k, v),
            READ_POLICY,
            f"list versions under {prefix}",
        )
        yield from page.entries
        if page.next_key_marker is None:
            return
        key_marker, version_marker = page.next_key_marker, page.next_version_marker


def object_versions(lister: Any, object_key: str) -> list[ObjectVersion]:
    """Every version and delete marker of exactly ``object_key``, newest first."""
    return newest_first(
        [entry for entry in iter_versions(lister, object_key) if entry.key == object_key]
    )


def iter_key_histories(versions: Iterator[ObjectVersion]) -> Iterator[list[ObjectVersion]]:
    """Group a listing's entries by object key (a key's entries can span pages)."""
    current: list[ObjectVersion] = []
    for entry in versions:
        if current and entry.key != current[0].key:
            yield current
            current = []
        current.append(entry)
    if current:
        yield current


def iter_current_objects(lister: Any, prefix: str) -> Iterator[dict[str, Any]]:
    """The current version (Key, Size, ETag) of each object under ``prefix``; deleted objects
    are not listed."""
    token: str | None = None
    while True:
        page = call_with_retries(
            lambda t=token: lister.list_objects_page(prefix, t),
            READ_POLICY,
            f"list objects under {prefix}",
        )
        yield from page.objects
        if page.next_token is None:
            return
        token = page.next_token
