"""The bulk jobs: backfill, restore (and its target table, ``--delete-absent``), native
import, snapshot, verify, history, diff-tables, replay, and table creation (``tables``); with
the one copy of the parallel-scan segment loop they share (``scan_segments``). Jobs take
clients and adapters as arguments, write through ``backup``, and report progress through
``core.progress``.
"""
