"""A journal restore's base, read ahead of the units that write it.

The base a run reads depends on its moment only, not on what S3 receives while the run waits
for S3's clock to pass its cutoff (only the journal's listings must come after), and a base's
files never change once its manifest is written. So a thread reads and decodes the base's
states partition by partition, in the units' order (``BaseStatesAhead``): the first ones during
the pin's wait, then each next one while the units before it write, so that a wave of units
does not stop writing to read its partitions all at once. Each unit takes its partition's
states once. At most ``depth`` partitions (and, past the first, ``held_items`` items) wait,
read and not taken, so memory stays bounded whatever the table's size.

Only a way to save time: a unit whose partition must weigh a late change against the base's
index reads the base itself, and so does one whose partition failed here (the unit then meets
the failure and reports it) or was not begun when the unit took it. The reading thread is a
daemon and reads in itself, one file at a time (no pool, whose workers the interpreter would
join at exit): a Ctrl-C or a failed run ends at once, not when its reads ahead end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence, Sized
from typing import Generic, TypeVar

logger = logging.getLogger("dynamo_backups.jobs.restore")

States = TypeVar("States", bound=Sized)
POLL_SECONDS = 0.2  # a unit waiting for its partition still sees Ctrl-C this soon
# Items read ahead and not yet taken, past the first partition waiting. A bound in items, not
# bytes: ~100-200 MB for items of a few hundred bytes (1-2 KB each, decoded); with larger
# items, reading ahead can about double what the units themselves hold (a partition each).
HELD_ITEMS = 100_000


class _Slot(Generic[States]):
    """One partition's read: not begun, under way, or ended (``states``: None if it failed)."""

    def __init__(self) -> None:
        self.begun = False
        self.ended = threading.Event()
        self.states: States | None = None


class BaseStatesAhead(Generic[States]):
    """``states_of(partition)`` for each of ``partitions``, in order, on one thread, each
    taken once by ``take``; a partition not begun when taken, or after ``stop``, is left to
    its unit. A read begins only while fewer than ``depth`` partitions (and fewer than
    ``held_items`` items, unless none) wait to be taken."""

    def __init__(
        self,
        states_of: Callable[[str], States],
        partitions: Sequence[str],
        depth: int = 1,
        held_items: int = HELD_ITEMS,
    ) -> None:
        self._room = threading.Condition()
        self._slots: dict[str, _Slot[States]] = {partition: _Slot() for partition in partitions}
        self._stopped = False
        self._depth = max(1, depth)
        self._held_items = held_items
        self.read = self.taken = 0
        self._thread = threading.Thread(
            target=self._run,
            args=(states_of, list(self._slots.items())),
            name="restore-base-ahead",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self, states_of: Callable[[str], States], slots: list[tuple[str, _Slot[States]]]
    ) -> None:
        for partition, slot in slots:
            with self._room:
                while not (self._stopped or self._may_begin(partition)):
                    self._room.wait()
                if self._stopped or partition not in self._slots:
                    continue
                slot.begun = True
            try:
                slot.states = states_of(partition)
                self.read += 1
            except Exception as error:  # the unit reads the base itself and meets it
                logger.debug("reading base partition %r ahead failed: %r", partition, error)
            finally:
                slot.ended.set()

    def _may_begin(self, partition: str) -> bool:
        """Whether there is room to read ``partition`` (taken already: nothing to wait for)."""
        if partition not in self._slots:
            return True
        waiting = [
            slot.states for slot in self._slots.values() if slot.ended.is_set() and slot.states
        ]
        if not waiting:
            return True
        held = sum(len(states) for states in waiting)
        return len(waiting) < self._depth and held < self._held_items

    def take(self, partition: str, check: Callable[[], None]) -> States | None:
        """The partition's states once read (waiting for a read under way, calling
        ``check`` meanwhile: a Ctrl-C), or None: the unit reads them itself."""
        with self._room:
            slot = self._slots.pop(partition, None)
            self._room.notify_all()
            if slot is None or not slot.begun:
                return None
        while not slot.ended.wait(POLL_SECONDS):
            check()
        with self._room:  # units take from several threads
            states, slot.states = slot.states, None
            if states is not None:
                self.taken += 1
        return states

    def stop(self) -> None:
        """Begin no other partition; drop what no unit took (a read under way ends alone)."""
        with self._room:
            self._stopped = True
            slots, self._slots = self._slots, {}
            self._room.notify_all()
        for slot in slots.values():
            slot.states = None
        logger.debug("base partitions read ahead: %d, %d taken by the units", self.read, self.taken)
