"""What the bucket records about each backed-up table, beside its items folder: the layout
manifest (how objects are named) and, once saved, the table's description."""

from __future__ import annotations

from typing import Any

from dynamo_backups.backup.reading import read_document
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import LayoutError, TableLayout


def ensure_manifest(
    writer: BackupWriter,
    layout: TableLayout,
    key_schema: list[dict[str, str]] | None = None,
    key_types: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the layout manifest if there is none; refuse a folder that names its objects
    with another hash than ``layout`` would, since the two could never be matched up."""
    existing = read_document(writer.s3, writer.bucket, layout.manifest_key)
    if existing is not None:
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
            existing = {**existing, **missing}
            writer.put_document(layout.manifest_key, existing)
        return existing
    manifest = layout.manifest(key_schema, key_types)
    writer.put_document(layout.manifest_key, manifest)
    return manifest


def read_manifest(s3: Any, bucket: str, layout: TableLayout) -> dict[str, Any] | None:
    return read_document(s3, bucket, layout.manifest_key)


def key_types_from_description(table: dict[str, Any]) -> dict[str, str]:
    """Key attribute name -> S, N or B, from a DescribeTable ``Table``."""
    definitions = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    return {
        element["AttributeName"]: definitions[element["AttributeName"]]
        for element in table["KeySchema"]
    }
