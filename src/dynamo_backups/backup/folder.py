"""Opening a table's backup folder, the one way every command does it: the layout it was
written with (``layout.json``: how object names are made), the table description saved beside
it, and what readers need of them (the key's attribute names and types).

A folder written with ``--key-hash sha256`` is read with sha256 by restore, ``--keys``,
history, verify, snapshot, ``--native-import`` and replay alike; a folder without a manifest
(written by another tool, or before manifests) is read as md5, the checklist's naming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.backup.aliases import AliasIndex
from dynamo_backups.backup.manifest import key_types_from_description
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.core.keys import DEFAULT_KEY_HASH, KEY_HASHES, key_attribute_names
from dynamo_backups.core.layout import META_FOLDER, LayoutError, TableLayout


@dataclass(frozen=True)
class BackupFolder:
    """A table's folder in a bucket, as its own documents describe it."""

    bucket: str
    layout: TableLayout
    manifest: dict[str, Any] | None
    description: dict[str, Any] | None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.layout.items_prefix}"

    @property
    def key_schema(self) -> list[dict[str, str]] | None:
        if self.description is not None:
            return self.description["table"]["KeySchema"]
        return (self.manifest or {}).get("key_schema")

    @property
    def aliases(self) -> AliasIndex | None:
        """The alias index, when ``adopt`` found items under another tool's names."""
        return AliasIndex.from_manifest(self.bucket, self.manifest)

    @property
    def adopted(self) -> bool:
        return bool((self.manifest or {}).get("adopted"))

    @property
    def key_names(self) -> list[str] | None:
        schema = self.key_schema
        return key_attribute_names(schema) if schema else None

    @property
    def key_types(self) -> dict[str, str] | None:
        if self.description is not None:
            return key_types_from_description(self.description["table"])
        return (self.manifest or {}).get("key_types")


def open_folder(
    s3: Any, bucket: str, prefix: str | None, table: str, policy: RetryPolicy | None = None
) -> BackupFolder:
    """The folder of ``table`` under ``prefix``, named as its manifest says."""
    probe = TableLayout.of(prefix, table)
    manifest = read_document(s3, bucket, probe.manifest_key, policy)
    key_hash = (manifest or {}).get("key_hash") or DEFAULT_KEY_HASH
    if key_hash not in KEY_HASHES:
        raise LayoutError(
            f"s3://{bucket}/{probe.manifest_key} names objects with {key_hash!r}, which this "
            f"version cannot read (it knows {', '.join(sorted(KEY_HASHES))})"
        )
    layout = TableLayout.of(prefix, table, key_hash)
    description = read_document(s3, bucket, layout.table_description_key, policy)
    return BackupFolder(bucket, layout, manifest, description)


def open_folder_path(
    s3: Any, bucket: str, folder: str, policy: RetryPolicy | None = None
) -> BackupFolder:
    """The folder given as a path, ``Prod/Users`` (the restore form)."""
    probe = TableLayout.from_folder(folder)
    return open_folder(s3, bucket, probe.prefix, probe.table, policy)


class NoBackupError(LayoutError):
    """The folder a command was pointed at holds no backup (a wrong bucket or prefix)."""


def open_backup(
    s3: Any, bucket: str, prefix: str | None, table: str, policy: RetryPolicy | None = None
) -> BackupFolder:
    """The folder of ``table``, which must hold a backup: the tool's manifest or table
    description, or at least one object (a folder the checklist's original Lambda wrote
    has objects and nothing else). Raises NoBackupError before anything is written."""
    try:
        folder = open_folder(s3, bucket, prefix, table, policy)
    except ClientError as error:
        if error_code(error) == "NoSuchBucket":
            raise NoBackupError(
                f"no backup at s3://{bucket}/: there is no bucket {bucket}"
            ) from None
        raise
    if folder.manifest is None and folder.description is None:
        _require_objects(s3, folder, policy)
    return folder


def open_backup_path(
    s3: Any, bucket: str, folder: str, policy: RetryPolicy | None = None
) -> BackupFolder:
    """``open_backup`` of a folder given as a path, ``Prod/Users``."""
    probe = TableLayout.from_folder(folder)
    return open_backup(s3, bucket, probe.prefix, probe.table, policy)


def _require_objects(s3: Any, folder: BackupFolder, policy: RetryPolicy | None) -> None:
    """Raise NoBackupError unless the folder itself holds an object (a version or a delete
    marker); objects in folders below it are other tables', named in the message."""
    where = folder.layout.items_prefix
    page = call_with_retries(
        lambda: s3.list_object_versions(
            Bucket=folder.bucket, Prefix=where, Delimiter="/", MaxKeys=10
        ),
        policy or READ_POLICY,
        f"list s3://{folder.bucket}/{where}",
    )
    if page.get("Versions") or page.get("DeleteMarkers"):
        return
    below = [
        name
        for entry in page.get("CommonPrefixes", [])
        if (name := entry["Prefix"][len(where) :].strip("/")) != META_FOLDER
    ]
    hint = (
        f": it holds folders ({', '.join(below[:5])}); name the table's folder, e.g. "
        f"{where}{below[0]}"
        if below
        else ": check the bucket, the prefix and the table's name"
    )
    raise NoBackupError(f"no backup at s3://{folder.bucket}/{where}{hint}")
