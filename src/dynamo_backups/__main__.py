"""``python -m dynamo_backups``: the ``dynamo-backups`` command, where the console script is not
on PATH (a virtual environment not activated, a Lambda layer, a container's entry point)."""

from dynamo_backups.console import main

if __name__ == "__main__":
    main()
