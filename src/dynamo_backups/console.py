"""The console scripts ``dynamo-backups`` and ``restore-backup``: the command line, loaded
inside a guard so that Ctrl-C while its libraries are still loading exits 130 quietly, as it
does once a command runs (not with a traceback from deep inside an import)."""

from __future__ import annotations

import sys
from typing import Any

EXIT_INTERRUPTED = 130


def main() -> Any:
    """``dynamo-backups``."""
    try:
        from dynamo_backups.cli import main as command_line
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    return command_line()


def restore_backup() -> Any:
    """``restore-backup``, the checklist's original command."""
    try:
        from dynamo_backups.cli.restore import restore_backup_main
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    return restore_backup_main()


if __name__ == "__main__":
    main()
