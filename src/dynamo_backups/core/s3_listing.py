"""S3 listing answers (ListObjectVersions, ListObjectsV2) parsed from their XML (pure).

Versions and delete markers keep S3's own interleaving, newest first per key, which boto3's
parsed output (two separate lists) loses; and nothing is spent on parsing what is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from dynamo_backups.core.pitr import ObjectVersion

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class VersionPage:
    entries: list[ObjectVersion] = field(default_factory=list)
    next_key_marker: str | None = None  # None: the listing is complete
    next_version_marker: str | None = None


@dataclass
class ObjectPage:
    objects: list[dict[str, Any]] = field(default_factory=list)  # Key, Size, ETag, LastModified
    next_token: str | None = None


def _text(element: ElementTree.Element, name: str) -> str:
    return element.findtext(f"{_NS}{name}") or ""


def _decoder(root: ElementTree.Element) -> Any:
    # With encoding-type=url, keys and markers come percent-encoded (as botocore decodes them).
    return unquote_plus if _text(root, "EncodingType") == "url" else (lambda text: text)


def parse_version_page(xml: bytes) -> VersionPage:
    root = ElementTree.fromstring(xml)
    decode = _decoder(root)
    page = VersionPage()
    for element in root:
        tag = element.tag.removeprefix(_NS)
        if tag not in ("Version", "DeleteMarker"):
            continue
        page.entries.append(
            ObjectVersion(
                key=decode(_text(element, "Key")),
                version_id=_text(element, "VersionId") or "null",
                last_modified=datetime.fromisoformat(_text(element, "LastModified")),
                is_delete_marker=tag == "DeleteMarker",
                is_latest=_text(element, "IsLatest") == "true",
                size=int(_text(element, "Size") or 0),
                etag=element.findtext(f"{_NS}ETag"),
            )
        )
    if _text(root, "IsTruncated") == "true":
        page.next_key_marker = decode(_text(root, "NextKeyMarker"))
        page.next_version_marker = _text(root, "NextVersionIdMarker")
    return page


def parse_object_page(xml: bytes) -> ObjectPage:
    root = ElementTree.fromstring(xml)
    decode = _decoder(root)
    page = ObjectPage()
    for element in root.iter(f"{_NS}Contents"):
        page.objects.append(
            {
                "Key": decode(_text(element, "Key")),
                "Size": int(_text(element, "Size") or 0),
                "ETag": _text(element, "ETag"),
                "LastModified": datetime.fromisoformat(_text(element, "LastModified")),
            }
        )
    if _text(root, "IsTruncated") == "true":
        page.next_token = _text(root, "NextContinuationToken")
    return page
