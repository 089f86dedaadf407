"""What the bucket records about each backed-up table, beside its items folder: the layout
manifest (how objects are named) and, once saved, the table's description."""

from __future__ import annotations

from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.aws.retry import call_with_retries
from dynamo_backups.backup.journal_store import JOURNAL_SINCE
from dynamo_backups.backup.layouts import LAYOUT_ITEMS, check_layout, layout_of, manifest_fields
from dynamo_backups.backup.reading import READ_POLICY, read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.journal import format_change_time
from dynamo_backups.core.layout import LayoutError, TableLayout


def ensure_manifest(
    writer: BackupWriter,
    layout: TableLayout,
    key_schema: list[dict[str, str]] | None = None,
    key_types: dict[str, str] | None = None,
    folder_layout: str | None = None,
    new_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the layout manifest if there is none (with ``new_fields`` too); refuse a folder
    that names its objects with another hash than ``layout`` would, since the two could never
    be matched up, and one recorded in another layout than ``folder_layout`` (None: the
    folder's, or the item layout for a new folder; see ``backup/layouts``)."""
    existing = read_document(writer.s3, writer.bucket, layout.manifest_key)
    where = f"s3://{writer.bucket}/{layout.items_prefix}"
    if existing is not None:
        check_layout(layout_of(existing), folder_layout, where)
        if existing.get("key_hash") != layout.key_hash:
            raise LayoutError(
                f"s3://{writer.bucket}/{layout.items_prefix} names objects with "
                f"{existing.get('key_hash')}, not {layout.key_hash}: use --key-hash "
                f"{existing.get('key_hash')} or another prefix"
            )
        missing = {
            name: value
            for name, value in (("key_schema", key_schema), ("key_types", key_types))
            if value and not existing.get(name)
        }
        if missing:
            existing = {**existing, **missing, **_began(writer, layout, existing)}
            writer.put_document(layout.manifest_key, existing)
        return existing
    chosen = folder_layout or LAYOUT_ITEMS
    if chosen != LAYOUT_ITEMS and _holds_item_objects(writer, layout):
        # Written before manifests (or by another tool): an item folder, whatever it is told.
        check_layout(LAYOUT_ITEMS, chosen, where)
    manifest = {
        **layout.manifest(key_schema, key_types),
        **manifest_fields(chosen),
        **(new_fields or {}),
    }
    writer.put_document(layout.manifest_key, manifest)
    return manifest


def folder_layout_for(
    writer: BackupWriter, layout: TableLayout, folder_layout: str | None = None
) -> str:
    """The layout ``ensure_manifest`` would record or accept for ``layout``'s folder, read
    without writing anything (a folder that cannot be written is refused here, before a
    deploy changes anything): the recorded one, which must be ``folder_layout`` when that is
    given; for a new folder ``folder_layout`` (or the item layout), a journal claim on a
    folder of item objects refused. A bucket that does not exist yet holds a new folder."""
    where = f"s3://{writer.bucket}/{layout.items_prefix}"
    try:
        existing = read_document(writer.s3, writer.bucket, layout.manifest_key)
    except ClientError as error:
        if error_code(error) != "NoSuchBucket":
            raise
        return folder_layout or LAYOUT_ITEMS
    if existing is not None:
        return check_layout(layout_of(existing), folder_layout, where)
    chosen = folder_layout or LAYOUT_ITEMS
    if chosen != LAYOUT_ITEMS and _holds_item_objects(writer, layout):
        check_layout(LAYOUT_ITEMS, chosen, where)
    return chosen


def _holds_item_objects(writer: BackupWriter, layout: TableLayout) -> bool:
    """Whether the table's folder itself holds objects (versions or delete markers): item
    objects, since every other layout keeps its objects in folders below it."""
    page = call_with_retries(
        lambda: writer.s3.list_object_versions(
            Bucket=writer.bucket, Prefix=layout.items_prefix, Delimiter="/", MaxKeys=10
        ),
        READ_POLICY,
        f"list s3://{writer.bucket}/{layout.items_prefix}",
    )
    return bool(page.get("Versions") or page.get("DeleteMarkers"))


def read_manifest(s3: Any, bucket: str, layout: TableLayout) -> dict[str, Any] | None:
    return read_document(s3, bucket, layout.manifest_key)


def key_types_from_description(table: dict[str, Any]) -> dict[str, str]:
    """Key attribute name -> S, N or B, from a DescribeTable ``Table``."""
    definitions = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    return {
        element["AttributeName"]: definitions[element["AttributeName"]]
        for element in table["KeySchema"]
    }


def _began(writer: BackupWriter, layout: TableLayout, existing: dict[str, Any]) -> dict[str, Any]:
    """Before ``layout.json`` is written again: when it was first written, kept as its
    ``journal_since`` (readers count a journal's retention from it, and the rewrite moves its
    LastModified later; ``jobs/journal_units.retention_clock``)."""
    if existing.get(JOURNAL_SINCE):
        return {}
    head = call_with_retries(
        lambda: writer.s3.head_object(Bucket=writer.bucket, Key=layout.manifest_key),
        READ_POLICY,
        f"head s3://{writer.bucket}/{layout.manifest_key}",
    )
    written = head.get("LastModified")
    return {JOURNAL_SINCE: format_change_time(written)} if written is not None else {}
