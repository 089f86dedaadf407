"""Writing a backup folder: item versions, removals (tombstone, then delete marker), the
conditional writes that never replace a newer state, and the tool's own documents. Every
write goes through the retry policy. The one copy of each; everything that writes a backup
(the stream applier, backfill, verify --repair, replay) writes through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dynamo_backups.aws.errors import PRECONDITION_CODES, ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects, ObjectStore
from dynamo_backups.core.layout import ITEM_CONTENT_TYPE, TOMBSTONE_CONTENT_TYPE, VersionMetadata


class BackupWriter:
    """Writes item versions, tombstones and the tool's own documents to one bucket.

    ``s3`` is a boto3 client (used for the tool's documents, and for item writes unless
    ``objects`` supplies the fast transport, see ``aws.fast_objects.FastObjects``)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        policy: RetryPolicy | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.policy = policy or RetryPolicy()
        self.objects: ObjectStore = objects or BotocoreObjects(s3, bucket)

    def _retrying(self, what: str, object_key: str, call: Any, deadline: float | None) -> Any:
        return call_with_retries(
            call, self.policy, f"{what} s3://{self.bucket}/{object_key}", deadline=deadline
        )

    def put_item(
        self, object_key: str, body: bytes, metadata: VersionMetadata, deadline: float | None = None
    ) -> str | None:
        """Write one item state as a new version; returns its version id."""
        fields = metadata.to_s3()
        return self._retrying(
            "put",
            object_key,
            lambda: self.objects.put_object(object_key, body, ITEM_CONTENT_TYPE, fields),
            deadline,
        )

    def put_item_if_absent(
        self, object_key: str, body: bytes, metadata: VersionMetadata, deadline: float | None = None
    ) -> str | None:
        """Write only if the key has no current object; returns the version id, or None
        when something is already there (S3 answers 412 PreconditionFailed)."""
        fields = metadata.to_s3()
        try:
            version = self._retrying(
                "put",
                object_key,
                lambda: self.objects.put_object(
                    object_key, body, ITEM_CONTENT_TYPE, fields, if_none_match=True
                ),
                deadline,
            )
        except ClientError as error:
            if error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return version or ""

    def remove_item(
        self, object_key: str, metadata: VersionMetadata, deadline: float | None = None
    ) -> None:
        """Record a removal: an empty tombstone version carrying the change time, then a
        delete marker on top. Delete markers hold no metadata; the tombstone under it is
        what lets a point-in-time restore know when the item went away."""
        fields = metadata.to_s3()
        self._retrying(
            "put tombstone",
            object_key,
            lambda: self.objects.put_object(object_key, b"", TOMBSTONE_CONTENT_TYPE, fields),
            deadline,
        )
        self._retrying(
            "delete", object_key, lambda: self.objects.delete_object(object_key), deadline
        )

    # --- conditional writes: never over a state someone else wrote meanwhile -----------------

    def current_etag(self, object_key: str) -> str | None:
        """The ETag of the object's current version; None when it has none (or a marker)."""

        def head() -> str | None:
            try:
                return self.s3.head_object(Bucket=self.bucket, Key=object_key)["ETag"]
            except ClientError as error:
                if error_code(error) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

        return self._retrying("head", object_key, head, None)

    def version_metadata(self, object_key: str, version_id: str) -> VersionMetadata | None:
        """What the tool recorded on one version (None for a version it did not write)."""
        head = self._retrying(
            "head",
            object_key,
            lambda: self.s3.head_object(Bucket=self.bucket, Key=object_key, VersionId=version_id),
            None,
        )
        return VersionMetadata.from_s3(head.get("Metadata") or {})

    def _conditional_put(
        self,
        object_key: str,
        body: bytes,
        content_type: str,
        fields: dict[str, str],
        current_etag: str | None,
    ) -> str | None:
        """Put only over ``current_etag`` (or only where nothing is current): the new ETag, or
        None when another write came first."""
        condition = {"IfMatch": current_etag} if current_etag else {"IfNoneMatch": "*"}
        try:
            answer = self._retrying(
                "conditional put",
                object_key,
                lambda: self.s3.put_object(
                    Bucket=self.bucket,
                    Key=object_key,
                    Body=body,
                    ContentType=content_type,
                    Metadata=fields,
                    **condition,
                ),
                None,
            )
        except ClientError as error:
            if error_code(error) in PRECONDITION_CODES:
                return None
            raise
        return str(answer["ETag"])

    def put_item_if_current(
        self, object_key: str, body: bytes, metadata: VersionMetadata, current_etag: str | None
    ) -> bool:
        """Write an item state only if the object is still as it was seen."""
        written = self._conditional_put(
            object_key, body, ITEM_CONTENT_TYPE, metadata.to_s3(), current_etag
        )
        return written is not None

    def remove_item_if_current(
        self, object_key: str, metadata: VersionMetadata, current_etag: str | None
    ) -> bool:
        """Record a removal (tombstone, then delete marker) only if the object is still as it
        was seen, and the marker only on that tombstone: a newer write always wins."""
        tombstone = self._conditional_put(
            object_key, b"", TOMBSTONE_CONTENT_TYPE, metadata.to_s3(), current_etag
        )
        if tombstone is None:
            return False
        try:
            self._retrying(
                "conditional delete",
                object_key,
                lambda: self.s3.delete_object(
                    Bucket=self.bucket, Key=object_key, IfMatch=tombstone
                ),
                None,
            )
        except ClientError as error:
            if error_code(error) in PRECONDITION_CODES:
                return False  # a newer write landed on the tombstone: it stands
            raise
        return True

    def put_document(self, object_key: str, document: Mapping[str, Any]) -> None:
        """Write one of the tool's own JSON documents (manifest, description, checkpoint)."""
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8")
        self._retrying(
            "put",
            object_key,
            lambda: self.s3.put_object(
                Bucket=self.bucket, Key=object_key, Body=body, ContentType="application/json"
            ),
            None,
        )
