"""Ctrl-C on the command line: the first press stops the work in progress (the engines stop
their units between pages, the ledger keeps what finished) and the command exits with 130
after saying what was done and how to resume; a second press quits at once."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from typing import Any

import click

from dynamo_backups.cli.lines import raw_say
from dynamo_backups.core.cancel import Interrupted

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C

_presses = {"count": 0}


def _on_interrupt(signum: int, frame: Any) -> None:
    _presses["count"] += 1
    if _presses["count"] > 1:
        raw_say(
            "\ninterrupted again: quitting at once (work in progress is not recorded; "
            "--resume redoes it)"
        )
        os._exit(EXIT_INTERRUPTED)
    raw_say(
        "\ninterrupted: stopping the work in progress and recording what finished "
        "(Ctrl-C again to quit at once)"
    )
    raise KeyboardInterrupt


def note_interrupt() -> None:
    """A command's own first-press handler (``stream``) counts its press: the next one, back
    on this handler, quits at once."""
    _presses["count"] += 1


def install_interrupt_handler() -> None:
    """Take over SIGINT for this command (only from the main thread, and only over Python's
    default handler: a host program's own handler stays)."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler or current is _on_interrupt:
        _presses["count"] = 0
        signal.signal(signal.SIGINT, _on_interrupt)


def interruption_message(error: KeyboardInterrupt) -> str:
    """What the stopped command did, and the command line that continues it."""
    lines = ["interrupted"]
    resumable = _takes_resume()
    if isinstance(error, Interrupted):
        lines[0] += f": {error.summary()}"
        if error.run_id is None:
            resumable = False
            lines.append("  this run kept no ledger: running it again starts over")
    if resumable:
        lines.append(f"  to continue: {resume_command()}")
    return "\n".join(lines)


def resume_command(argv: list[str] | None = None) -> str:
    """This command line with --resume (once)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in arguments:
        arguments.append("--resume")
    return shlex.join(["dynamo-backups", *arguments])


def _takes_resume() -> bool:
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    return any(parameter.name == "resume" for parameter in context.command.params)
