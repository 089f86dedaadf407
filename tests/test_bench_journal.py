"""bench/journal.py at a tiny size, so that it cannot rot: its own servers, both layouts
backed up and restored (the benchmark itself requires the two restored tables to be equal,
and the ``--at`` restore to equal the state it computes from its changes), requests counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parent.parent


def test_the_journal_benchmark_runs_and_checks_what_it_measures() -> None:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.journal",
            *("--items", "300", "--changes", "3000", "--at-items", "200"),
            *("--ceiling-items", "300", "--ceiling-objects", "100", "--output", "json"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])

    both = summary["restore_both_layouts"]
    assert both["items"] == 300 and both["changed_after_base"] == 30
    for layout in ("items", "journal"):
        assert both["restore"][layout]["items_per_s"] > 0
    # the item layout reads an object per item, the journal a base and its pieces
    assert both["restore"]["items"]["objects_read"] >= 300
    assert both["restore"]["journal"]["objects_read"] < 10
    assert both["journal_writes"]["records"] == 330
    assert [check["target"] for check in both["targets"]] == [
        "journal restore / item restore",
        "journal restore / ddb_batch_write_items_per_s",
        "journal restore's write phase / ddb_batch_write_items_per_s",
    ]
    assert 0 < both["journal_fixed_seconds"] < both["restore"]["journal"]["seconds"] + 5
    assert both["restore"]["journal"]["write_phase_items_per_s"] > 0

    big = summary["restore_at_journal"]
    assert big["journal_writes"] == {**big["journal_writes"], "records": 3000, "batches": 3}
    assert big["compaction_at_80_percent"]["requests"]["S3 PUT"] > 0
    requests = big["restore_at_95_percent"]["requests"]
    assert requests["DynamoDB BatchWriteItem"] >= 1 and requests["S3 GET"] >= 1
    items_history = summary["history"]["items layout (2 versions)"]
    assert items_history["supported"] and items_history["versions"] == 2
