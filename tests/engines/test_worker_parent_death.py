"""Worker processes (``--engine processes``) die with their driver: a driver killed outright
(SIGKILL, the OOM killer) leaves no worker that finishes its unit and records it while a
``--resume`` runs the same unit. No servers: the units only write marker files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dynamo_backups
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit

DRIVER = """
import sys
from functools import partial

from dynamo_backups.core.progress import NoProgress
from dynamo_backups.core.units import WorkUnit
from dynamo_backups.engines.processes import ProcessEngine
from tests.engines.test_worker_parent_death import slow_unit

{patch}

if __name__ == "__main__":
    units = [WorkUnit("partition", digit, partition=digit) for digit in "01"]
    ProcessEngine(2).run(partial(slow_unit, sys.argv[1]), units, None, NoProgress())
"""

UNIT_SECONDS = 3.0


def slow_unit(folder: str, unit: WorkUnit, context: UnitContext) -> UnitResult:
    """A unit that takes a while, then "records" itself (a marker file)."""
    Path(folder, f"{unit.name}.started").write_text(str(os.getpid()))
    time.sleep(UNIT_SECONDS)
    Path(folder, f"{unit.name}.recorded").write_text("")
    return UnitResult(unit.id, complete=True)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


NO_PRCTL = """
import dynamo_backups.engines.processes as processes

processes.PR_SET_PDEATHSIG = 0  # an invalid prctl: only the parent-watching thread is left
"""


@pytest.mark.parametrize("patch", ["", NO_PRCTL], ids=["prctl", "parent-check"])
def test_workers_die_with_a_killed_driver_and_record_nothing(tmp_path: Path, patch: str) -> None:
    """With Linux's parent-death signal, and without it (the portable parent check; spawned
    workers run the driver script's top level too, so the patch reaches them)."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.replace("{patch}", patch))
    root = Path(__file__).resolve().parents[2]
    sources = Path(dynamo_backups.__file__).resolve().parents[1]  # the code under test
    environment = {**os.environ, "PYTHONPATH": f"{sources}{os.pathsep}{root}"}
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=environment)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.started"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [int(path.read_text()) for path in tmp_path.glob("*.started")]
        assert len(workers) == 2, "the units never started"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        time.sleep(UNIT_SECONDS + 2)
        survivors = [pid for pid in workers if alive(pid)]
        recorded = sorted(path.name for path in tmp_path.glob("*.recorded"))
    finally:
        for pid in workers:  # only the workers this test's driver started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not recorded and not survivors, (
        f"after the driver was killed, workers {survivors} still ran and recorded {recorded}"
    )
