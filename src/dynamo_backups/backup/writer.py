"""Writing a backup folder: item versions, removals (tombstone, then delete marker), the
conditional writes that never replace a newer state, and the tool's own documents. Every
write goes through the retry policy. The one copy of each; everything that writes a backup
(the stream applier, backfill, verify --repair, replay) writes through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from dynamo_backups.aws.errors import (
    CONDITIONAL_CONFLICT_CODES,
    NOT_FOUND_CODES,
    PRECONDITION_CODES,
    ClientError,
    error_code,
    is_conditional_conflict,
    is_transient,
)
from dynamo_backups.aws.retry import RetryPolicy, call_with_retries
from dynamo_backups.aws.s3objects import BotocoreObjects, ObjectStore
from dynamo_backups.backup.reading import object_versions
from dynamo_backups.core.layout import ITEM_CONTENT_TYPE, TOMBSTONE_CONTENT_TYPE, VersionMetadata
from dynamo_backups.core.pitr import ObjectVersion
from dynamo_backups.core.wording import counted


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

    def _retrying_conditional(
        self, what: str, object_key: str, call: Any, deadline: float | None
    ) -> Any:
        """A conditional request, sent again also after a 409 conflict (a concurrent request
        on the key was in progress: S3 has not judged the condition), so that its condition
        is judged on what that request left; one that outlasts the retries is an error,
        never taken for a refusal."""
        return call_with_retries(
            call,
            self.policy,
            f"{what} s3://{self.bucket}/{object_key}",
            deadline=deadline,
            retryable=_worth_sending_again,
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
            version = self._retrying_conditional(
                "put",
                object_key,
                lambda: self.objects.put_object(
                    object_key, body, ITEM_CONTENT_TYPE, fields, if_none_match=True
                ),
                deadline,
            )
        except ClientError as error:
            if error_code(error) in REFUSED_CODES:
                return None
            raise
        return version or ""

    def item_puts(self, in_flight: int) -> ItemPuts | None:
        """First attempts of ``put_item_if_absent`` for many items at once from the calling
        thread (``aws.curl_puts.CurlPuts``), where the transport offers them; None where it
        does not (put each item with ``put_item_if_absent``)."""
        make = getattr(self.objects, "conditional_puts", None)
        puts = make(in_flight) if make is not None else None
        return ItemPuts(puts) if puts is not None else None

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
    #
    # S3 conditions a write on ETags only (If-Match, If-None-Match: *), never on a version id,
    # and identical bodies share an ETag (every tombstone is the empty body's). So a newer
    # version with the same body as the one seen, written between the look and the write,
    # lets the write through; and If-None-Match lets it through over any delete marker. Each
    # conditional write is therefore confirmed by version id afterwards: the version directly
    # under it must be the one seen. If it is not, the write landed on a newer one, and the
    # state that newer write recorded is put back on top (conditionally, confirmed alike), so
    # a state someone else wrote meanwhile always stays the current one.

    def current_version(self, object_key: str) -> ObjectVersion | None:
        """The object's newest entry (a version or a delete marker); None when it has none."""
        entries = object_versions(self.objects, object_key)
        return entries[0] if entries else None

    def version_metadata(self, object_key: str, version_id: str) -> VersionMetadata | None:
        """What the tool recorded on one version (None for a version it did not write)."""
        head = self._retrying(
            "head",
            object_key,
            lambda: self.s3.head_object(Bucket=self.bucket, Key=object_key, VersionId=version_id),
            None,
        )
        return VersionMetadata.from_s3(head.get("Metadata") or {})

    def put_item_if_current(
        self,
        object_key: str,
        body: bytes,
        metadata: VersionMetadata,
        seen: ObjectVersion | None,
    ) -> bool:
        """Write an item state only directly over ``seen`` (the object's newest entry as it
        was looked at; None: it had none). False when another write came first."""
        return self._write_if_current(object_key, _State(body, metadata.to_s3()), seen)

    def remove_item_if_current(
        self, object_key: str, metadata: VersionMetadata, seen: ObjectVersion | None
    ) -> bool:
        """Record a removal (tombstone, then delete marker) only directly over ``seen``, and
        the marker only on that tombstone: a newer write always wins."""
        return self._write_if_current(object_key, _State(None, metadata.to_s3()), seen)

    def put_state_if_current(
        self, object_key: str, entries: list[ObjectVersion], index: int, seen: ObjectVersion | None
    ) -> bool:
        """Write the state that ``entries[index]`` records (its body and metadata, as they
        are; a removal for a tombstone or delete marker) again, directly over ``seen``."""
        return self._write_if_current(object_key, self._state_of(object_key, entries, index), seen)

    def _write_if_current(self, object_key: str, state: _State, seen: ObjectVersion | None) -> bool:
        written = self._write_over(object_key, state, seen)
        stood = True
        for _ in range(CONFIRM_ATTEMPTS):
            if written is None:
                return False
            entries = object_versions(self.objects, object_key)
            first, on_top = _find_written(entries, written)
            below = entries[first + 1] if first is not None and first + 1 < len(entries) else None
            if first is not None and _same_entry(below, seen):
                return stood
            if first is None or on_top is None:
                return False  # a newer write is on top of ours already: it stands
            # Ours landed on a newer version that shares the seen ETag (or on a newer delete
            # marker): put back the state that newer write recorded.
            stood = False
            state = self._state_of(object_key, entries, first + 1)
            seen = entries[on_top]
            written = self._write_over(object_key, state, seen)
        raise ConditionalWriteError(
            f"s3://{self.bucket}/{object_key} kept changing under a conditional write "
            f"({counted(CONFIRM_ATTEMPTS, 'attempt')} to keep the newest state on top)"
        )

    def _write_over(
        self, object_key: str, state: _State, seen: ObjectVersion | None
    ) -> _Written | None:
        """One conditional write of ``state`` over ``seen``; None when S3 refused it."""
        if state.body is not None:
            version = self._conditional_put(
                object_key, state.body, ITEM_CONTENT_TYPE, state.fields, seen
            )
            return None if version is None else _Written(version[0], removal=False)
        tombstone = self._conditional_put(
            object_key, b"", TOMBSTONE_CONTENT_TYPE, state.fields, seen
        )
        if tombstone is None:
            return None
        try:
            self._retrying_conditional(
                "conditional delete",
                object_key,
                lambda: self.s3.delete_object(
                    Bucket=self.bucket, Key=object_key, IfMatch=tombstone[1]
                ),
                None,
            )
        except ClientError as error:
            if error_code(error) in REFUSED_CODES | NOT_FOUND_CODES:
                # A newer write (or removal) landed on the tombstone and buries it: it stands.
                # (The marker's If-Match passes only on another tombstone: "absent" alike.)
                return None
            raise
        return _Written(tombstone[0], removal=True)

    def _conditional_put(
        self,
        object_key: str,
        body: bytes,
        content_type: str,
        fields: dict[str, str],
        seen: ObjectVersion | None,
    ) -> tuple[str, str] | None:
        """Put only over ``seen``'s ETag (or only where no version is current): the new
        version id and ETag, or None when another write came first."""
        condition: dict[str, str] = {"IfNoneMatch": "*"}
        if seen is not None and not seen.is_delete_marker and seen.etag:
            condition = {"IfMatch": seen.etag}
        try:
            answer = self._retrying_conditional(
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
            refused = REFUSED_CODES
            if "IfMatch" in condition:
                # AWS answers If-Match on a key whose current entry is a delete marker (a
                # removal written meanwhile) 404 NoSuchKey, where other servers answer 412.
                refused = REFUSED_CODES | NOT_FOUND_CODES
            if error_code(error) not in refused:
                raise
            # A put that landed but whose answer was lost (a 5xx, a dropped connection) is
            # refused when sent again: it meets itself. Ours directly above ``seen`` counts.
            return self._own_put_above(object_key, body, fields, seen)
        return str(answer.get("VersionId") or "null"), str(answer["ETag"])

    def _own_put_above(
        self, object_key: str, body: bytes, fields: dict[str, str], seen: ObjectVersion | None
    ) -> tuple[str, str] | None:
        """The version id and ETag of the version directly above ``seen`` when it holds
        exactly this body and metadata (an earlier attempt of this very write); else None."""
        entries = object_versions(self.objects, object_key)
        below = len(entries)
        if seen is not None:
            below = next(
                (at for at, entry in enumerate(entries) if entry.version_id == seen.version_id),
                0,
            )
        above = entries[below - 1] if below > 0 else None
        if above is None or above.is_delete_marker or above.size != len(body):
            return None
        stored, raw = self._retrying(
            "get",
            object_key,
            lambda: self.objects.read_object(object_key, above.version_id),
            None,
        )
        lowered = {name.lower(): value for name, value in raw.items()}
        if stored != body or any(lowered.get(name) != value for name, value in fields.items()):
            return None
        return above.version_id, str(above.etag or "")

    def _state_of(self, object_key: str, entries: list[ObjectVersion], index: int) -> _State:
        """The state ``entries[index]`` records: its body and metadata, or a removal (dated
        by the tombstone under a delete marker, when there is one)."""
        entry = entries[index]
        if entry.is_delete_marker:
            below = entries[index + 1] if index + 1 < len(entries) else None
            if below is None or not below.is_tombstone:
                return _State(None, {})  # a marker of another tool's: dated by S3 alone
            entry = below
        body, raw = self._retrying(
            "get",
            object_key,
            lambda: self.objects.read_object(object_key, entry.version_id),
            None,
        )
        ours = VersionMetadata.from_s3(raw)
        # Marked as a copy, so that no check takes it for an original write of its writer.
        fields = replace(ours, copy_of=entry.version_id).to_s3() if ours is not None else {}
        return _State(None if entry.is_tombstone or not body else body, fields)

    def put_document(
        self, object_key: str, document: Mapping[str, Any], if_match: str | None = None
    ) -> None:
        """Write one of the tool's own JSON documents (manifest, description, checkpoint);
        with ``if_match`` (an ETag), only over that version: S3 refuses it otherwise (412,
        raised; a 409 conflict is sent again)."""
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8")
        condition = {"IfMatch": if_match} if if_match else {}
        retrying = self._retrying_conditional if if_match else self._retrying
        retrying(
            "put",
            object_key,
            lambda: self.s3.put_object(
                Bucket=self.bucket,
                Key=object_key,
                Body=body,
                ContentType="application/json",
                **condition,
            ),
            None,
        )


class ConditionalPuts(Protocol):
    """Many conditional puts (``If-None-Match: *``) in flight from one thread, one attempt
    each (``aws.curl_puts.CurlPuts``): each put's (status, version id), 200 or 412, or None."""

    def put_all(
        self, puts: Sequence[tuple[str, bytes, str, Mapping[str, str]]]
    ) -> list[tuple[int, str] | None]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FirstAttempt:
    """What one item's first attempt settled: when ``settled``, ``version`` is what
    ``put_item_if_absent`` would have returned (the version id, "" without versioning, None
    when something is already there); when not, put it with ``put_item_if_absent``."""

    settled: bool
    version: str | None = None


NOT_SETTLED = FirstAttempt(False)
ALREADY_THERE = FirstAttempt(True, None)
_WRITTEN, _PRECONDITION_FAILED = 200, 412


class ItemPuts:
    """First attempts of ``put_item_if_absent`` for many items, from one thread: the same
    request (content type, metadata, condition), sent once. What it does not settle (any
    answer but 200 or 412, a failed connection, a key it cannot send) is put again with
    ``put_item_if_absent``, its retries and its errors; a put that landed but whose answer was
    lost then meets itself (412) and counts as already there, as a retry of that path does."""

    def __init__(self, puts: ConditionalPuts) -> None:
        self._puts = puts

    def put_items_if_absent(
        self, items: Sequence[tuple[str, bytes]], metadata: VersionMetadata
    ) -> list[FirstAttempt]:
        """``items``: (object key, body); one ``FirstAttempt`` each, in order."""
        fields = metadata.to_s3()
        answers = self._puts.put_all(
            [(object_key, body, ITEM_CONTENT_TYPE, fields) for object_key, body in items]
        )
        return [_first_attempt(answer) for answer in answers]

    def close(self) -> None:
        self._puts.close()


def _first_attempt(answer: tuple[int, str] | None) -> FirstAttempt:
    if answer is None:
        return NOT_SETTLED
    status, version = answer
    if status == _WRITTEN:
        return FirstAttempt(True, version)
    if status == _PRECONDITION_FAILED:
        return ALREADY_THERE
    return NOT_SETTLED


CONFIRM_ATTEMPTS = 10
# A conditional request's condition did not hold: another write came first. (A 409 conflict
# is no such verdict: it is sent again, see _retrying_conditional.)
REFUSED_CODES = PRECONDITION_CODES - CONDITIONAL_CONFLICT_CODES


def _worth_sending_again(error: BaseException) -> bool:
    return is_transient(error) or is_conditional_conflict(error)


class ConditionalWriteError(RuntimeError):
    """An object kept changing under a conditional write."""


@dataclass(frozen=True)
class _State:
    """An item state to write: its body (None: a removal) and its metadata fields."""

    body: bytes | None
    fields: dict[str, str]


@dataclass(frozen=True)
class _Written:
    """What one conditional write added: its (first) version id; a removal adds a delete
    marker on top of that version."""

    version_id: str
    removal: bool


def _find_written(entries: list[ObjectVersion], written: _Written) -> tuple[int | None, int | None]:
    """Where the written version is in ``entries`` (newest first), and which entry is ours on
    top (the version, or the delete marker of a removal) when it is still the newest one."""
    for position, entry in enumerate(entries):
        if entry.version_id == written.version_id and not entry.is_delete_marker:
            if position == 0:
                return position, 0
            above = entries[position - 1]
            on_top = written.removal and position == 1 and above.is_delete_marker
            return position, 0 if on_top else None
    return None, None


def _same_entry(entry: ObjectVersion | None, seen: ObjectVersion | None) -> bool:
    if entry is None or seen is None:
        return entry is None and seen is None
    return entry.version_id == seen.version_id
