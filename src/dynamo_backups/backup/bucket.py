"""Checks that a bucket can hold a backup: it exists and keeps every version."""

from __future__ import annotations

from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.reading import READ_POLICY


class BucketError(RuntimeError):
    """The bucket is missing, unreachable, or does not keep versions."""


class NoSuchBucketError(BucketError):
    """The bucket does not exist: a wrong name (bad input, exit 2 on the command line)."""


def versioning_status(s3: Any, bucket: str) -> str:
    """``Enabled``, ``Suspended`` or ``Off``; a clear error for a missing bucket."""
    try:
        response = call_with_retries(
            lambda: s3.get_bucket_versioning(Bucket=bucket),
            READ_POLICY,
            f"read the versioning of bucket {bucket}",
        )
    except ClientError as error:
        if error_code(error) in ("NoSuchBucket", "404"):
            raise NoSuchBucketError(f"bucket {bucket} does not exist") from None
        raise BucketError(f"cannot read bucket {bucket}: {describe_error(error)}") from None
    return response.get("Status") or "Off"


def require_versioning(s3: Any, bucket: str) -> None:
    """Refuse a bucket without versioning: each change would overwrite the last, and a
    delete would erase the item's history."""
    status = versioning_status(s3, bucket)
    if status != "Enabled":
        raise BucketError(
            f"bucket {bucket} has versioning {status}: backups need every version kept; "
            f"enable it (aws s3api put-bucket-versioning --bucket {bucket} "
            "--versioning-configuration Status=Enabled)"
        )
