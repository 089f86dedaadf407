"""A restore's pin, waited for in the background, and what the restore does meanwhile.

The run's cutoff is known once ``moment.json`` is HEADed (``Restore._pin_moment``); waiting
until S3's clock is past it (``backup/s3_clock.wait_past``, 1-2 s) depends on nothing else and
nothing else depends on it but the units' listings. So the wait runs on a thread (``PinWait``),
and another thread (``Prefetch``) lists the first units' objects and reads the versions
their selection most likely reads into a bounded cache (``backup/prefetch``). The wait is
joined before any unit lists anything; the units list again, and their listing alone decides
what is restored: a cached read is used only for the very version (key, version id, ETag,
size) a unit's selection reads.

The wait is joined before the table is prepared (a failed wait leaves no table), the reads go on
while it is. The wait's error is raised where it is joined, as it was raised before; Ctrl-C (or
any error of the driver meanwhile) stops both threads, without waiting for a request in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from dynamo_backups.backup.prefetch import PrefetchedReads
from dynamo_backups.backup.reader import BackupItems
from dynamo_backups.core.cancel import Cancelled

logger = logging.getLogger("dynamo_backups.jobs.restore")

PREFETCH_BYTES = 64 * 2**20  # of bodies held for the units, at most
JOIN_POLL_SECONDS = 0.2  # a main thread waiting for the pin still sees Ctrl-C at once


class PinWait:
    """``wait(sleep)`` run on its own thread; ``join`` waits for it and raises its error."""

    def __init__(self, wait: Callable[[Callable[[float], None]], None]) -> None:
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(wait,), name="restore-pin", daemon=True
        )
        self._thread.start()

    def _run(self, wait: Callable[[Callable[[float], None]], None]) -> None:
        try:
            wait(self._sleep)
        except BaseException as error:  # handed to the driver by join()
            self._error = error
        finally:
            self._done.set()

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Cancelled()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def join(self) -> None:
        """Wait until S3's clock is past the cutoff; the wait's error, raised here."""
        while not self._done.wait(JOIN_POLL_SECONDS):
            pass
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop waiting (Ctrl-C, or the driver failed): the thread ends after its request."""
        self._stop.set()


class Prefetch:
    """Reads the likely versions of the units of ``partitions``, in order, into ``reads``,
    until ``stop()``, the cache is full, or every one is read. Only a way to save reads: a
    failure here is logged and the units read as usual."""

    def __init__(
        self,
        items_of: Callable[[str], BackupItems],
        partitions: Sequence[str],
        max_bytes: int = PREFETCH_BYTES,
    ) -> None:
        self.reads = PrefetchedReads(max_bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(items_of, list(partitions)),
            name="restore-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _run(self, items_of: Callable[[str], BackupItems], partitions: list[str]) -> None:
        try:
            for partition in partitions:
                if self._stop.is_set() or self.reads.full:
                    return
                items_of(partition).prefetch(self.reads, self._stop)
        except Exception as error:  # the units read whatever is not here
            logger.debug("reading ahead during the pin's wait stopped: %r", error)

    def stop(self) -> PrefetchedReads:
        """Stop reading (what is read is kept); the reads, for the units. Not waited for: a
        request in flight (a listing S3 is slow to answer) must not hold up the units, nor
        Ctrl-C; its read, if it ends, is not kept (``PrefetchedReads.close``)."""
        self._stop.set()
        self.reads.close()
        return self.reads
