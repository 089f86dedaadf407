"""Notices on stderr while a command waits on AWS: after a few seconds without an answer
(DYNAMO_BACKUPS_WAIT_NOTICE), one line naming the call, its address and its attempt, then
again every half minute while it still waits; a hang is never silent."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from dynamo_backups.aws.timeouts import Timeouts
from dynamo_backups.aws.waiting import WATCH
from dynamo_backups.cli.lines import say

REPEAT_EVERY = 30.0
_started: dict[str, threading.Thread] = {}


def start_wait_notices(timeouts: Timeouts, stream: TextIO | None = None) -> None:
    """Start (once per process) the thread that names calls waiting longer than the notice."""
    if "thread" in _started:
        return
    out = stream or sys.stderr

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(min(1.0, timeouts.notice / 2)):
            for call, now in WATCH.overdue(timeouts.notice, max(REPEAT_EVERY, timeouts.notice)):
                try:
                    say(call.describe(now, timeouts), "waiting", stream=out)
                except (OSError, ValueError):  # stderr closed: nobody to tell
                    return

    thread = threading.Thread(target=watch, name="wait-notices", daemon=True)
    _started["thread"] = thread
    thread.start()
