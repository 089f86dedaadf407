"""Versions read before a restore's units list them: while a latest restore waits out its pin
(``jobs/restore_pin``), the first units' likely reads are done into this bounded cache, and a
unit takes a body from it instead of reading it again.

What a unit restores is decided by its own listing, after the wait, exactly as without the
cache: only where the bytes of a version it chose come from changes. A version in S3 is
immutable by (object key, version id); an entry is also taken only when the ETag and size the
unit's listing gives are the ones listed when it was read. Each entry is taken once (the unit
that reads the object), and the cache holds at most ``max_bytes``: bodies, metadata and a
fixed cost per entry (a HEAD's read has no body, but is no free lunch either).
"""

from __future__ import annotations

import threading

from dynamo_backups.core.pitr import ObjectVersion

Read = tuple[bytes, dict[str, str]]  # a version's body and user metadata (as BackupItems')

# (object key, version id, read by a HEAD: metadata only)
_Where = tuple[str, str, bool]
ENTRY_BYTES = 1024  # what an entry's Python objects hold besides its body and metadata


def _cost(entry: ObjectVersion, read: Read) -> int:
    """The bytes an entry holds, roughly: what the bound counts."""
    body, metadata = read
    named = sum(len(name) + len(value) for name, value in metadata.items())
    return ENTRY_BYTES + len(body) + named + len(entry.key) + len(entry.version_id)


class PrefetchedReads:
    """Reads of versions done ahead of the listing that decides them; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes held (``_cost``)
        self.stored = 0
        self.taken = 0
        self.full = False  # a read was refused for want of room
        self.closed = False  # the units list now: a read ending later is not kept
        self._reads: dict[_Where, tuple[str, int, Read]] = {}
        self._lock = threading.Lock()

    def put(self, entry: ObjectVersion, head: bool, read: Read) -> bool:
        """Keep ``read`` of ``entry`` (as listed when it was read); False once full."""
        with self._lock:
            if self.closed:
                return False
            if self.size + _cost(entry, read) > self.max_bytes:
                self.full = True
                return False
            where = (entry.key, entry.version_id, head)
            self._reads[where] = (entry.etag or "", entry.size, read)
            self.size += _cost(entry, read)
            self.stored += 1
            return True

    def take(self, entry: ObjectVersion, head: bool) -> Read | None:
        """The read of this very version (its key, version id, listed ETag and size), or None:
        read it as usual."""
        with self._lock:
            held = self._reads.pop((entry.key, entry.version_id, head), None)
            if held is None:
                return None
            self.size -= _cost(entry, held[2])
            etag, size, read = held
            if etag != (entry.etag or "") or size != entry.size:
                return None
            self.taken += 1
            return read

    def close(self) -> None:
        """Keep no more reads: the units list from now on, and one may already have read for
        itself what a read still in flight would bring."""
        with self._lock:
            self.closed = True

    def clear(self) -> None:
        with self._lock:
            self._reads.clear()
            self.size = 0
