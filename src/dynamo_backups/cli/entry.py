"""``python -m dynamo_backups.cli.entry``: the console script without an installed wrapper."""

from dynamo_backups.cli import main

if __name__ == "__main__":
    main()
