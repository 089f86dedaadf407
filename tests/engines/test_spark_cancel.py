"""Ctrl-C on the Spark engine: Spark cancels jobs asynchronously (a Python task is killed up to
``spark.python.task.killTimeout`` later), so the engine waits for the cancelled tasks to end
before it returns. Otherwise what follows the stage (a backfill's removal check, a lease
released) starts while cancelled tasks still write. Local Spark, two slots."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_backups.core.cancel import Interrupted
from dynamo_backups.core.progress import NoProgress
from dynamo_backups.core.units import UnitContext, UnitResult, WorkUnit
from dynamo_backups.engines.spark import SparkEngine, wait_for_tasks_to_end


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkEngine]:
    """The engine, started over Python's own SIGINT handler (the one a command starts with):
    an earlier test of this worker process may have left another in place (an in-process
    command's, or Spark's), which the engine keeps."""
    pytest.importorskip("pyspark")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        engine = SparkEngine("local[2]")
        engine.session.sparkContext.setLogLevel("ERROR")
        yield engine
        engine.close()
    finally:
        signal.signal(signal.SIGINT, previous)


def ticking(folder: Path) -> object:
    """A unit that writes a line to its own file every 50 ms for 30 s (a unit still writing)."""

    def task(unit: WorkUnit, context: UnitContext) -> UnitResult:
        end = time.monotonic() + 30
        with (folder / f"{unit.id}.ticks").open("a") as ticks:
            while time.monotonic() < end:
                ticks.write("t\n")
                ticks.flush()
                time.sleep(0.05)
        return UnitResult(unit.id)

    return task


def sizes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in folder.glob("*.ticks")}


def test_ctrl_c_returns_only_once_the_cancelled_tasks_have_stopped_writing(
    spark: SparkEngine, tmp_path: Path
) -> None:
    units = [WorkUnit("partition", name, partition=name) for name in ("a", "b")]

    def ctrl_c_once_both_write() -> None:
        give_up = time.monotonic() + 60
        while len(sizes(tmp_path)) < 2 and time.monotonic() < give_up:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_both_write, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        spark.run(ticking(tmp_path), units, None, NoProgress())  # type: ignore[arg-type]
    assert stopped.value.settled
    at_return = sizes(tmp_path)
    assert len(at_return) == 2, at_return
    time.sleep(3)  # longer than Spark's kill timeout (2 s)
    assert sizes(tmp_path) == at_return, "a cancelled task wrote after the stage returned"


class StuckTracker:
    """A status tracker whose one cancelled job keeps a task running (an executor that does
    not answer the kill)."""

    class Job:
        status = "FAILED"
        stageIds = [7]  # Spark's names

    class Stage:
        numActiveTasks = 1

    def getJobIdsForGroup(self, group: str) -> list[int]:
        return [3]

    def getJobInfo(self, job: int) -> object:
        return self.Job()

    def getStageInfo(self, stage: int) -> object:
        return self.Stage()


def test_tasks_that_outlast_the_wait_are_reported_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert not wait_for_tasks_to_end(StuckTracker(), "g", 5.0, sleep=sleep, clock=lambda: now[0])
    assert 5.0 <= now[0] < 5.5
    assert "1 cancelled task(s) still running 5 s after Ctrl-C" in caplog.text
