"""Units as Spark tasks: one task per unit, locally (``local[N]``) or on whatever cluster
spark-submit, EMR Serverless or AWS Glue gives. The job travels to the executors as settings
(cloudpickle); executors make their own clients, with the credentials of their role. Spark
shares no memory between executors, so with a rate budget the stage runs a fixed number of
tasks, each with an even share (``SparkEngine.rate_plan``), whatever executors appear.

PySpark is an optional dependency: ``pip install 'dynamo-backups[spark]'``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from dynamo_backups.core.cancel import Interrupted
from dynamo_backups.core.progress import NoProgress, ProgressSink
from dynamo_backups.core.ratelimit import RateLimiter
from dynamo_backups.core.units import (
    UnitContext,
    UnitFailed,
    UnitResult,
    UnitTask,
    WorkUnit,
    failure_text,
    rate_per_slot,
)

logger = logging.getLogger("dynamo_backups.engines.spark")

PROGRESS_INTERVAL = 5.0
# After Ctrl-C: how long to wait for the cancelled tasks to end (Spark cancels asynchronously;
# a Python task is killed within spark.python.task.killTimeout, 2 s by default) ...
CANCEL_WAIT_SECONDS = 60.0
# ... looking this often.
CANCEL_POLL_SECONDS = 0.2


class SparkUnavailable(RuntimeError):
    pass


def spark_session(master: str | None = None, workers: int | None = None) -> Any:
    """The active Spark session, or a new one: on ``master``, else spark-submit's, else
    ``local[workers]`` on this host."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "--engine spark needs PySpark: pip install 'dynamo-backups[spark]'"
        ) from None
    builder = SparkSession.builder.appName("dynamo-backups")
    if master is None and not SparkConf().contains("spark.master"):
        master = f"local[{workers or '*'}]"
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            # Executors are this host's Python workers: the interpreter that has this package
            # (PySpark reads PYSPARK_PYTHON when it starts the context, not the conf).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    # PySpark replaces the SIGINT handler when it starts a context; the command's own one
    # (a second Ctrl-C quits at once) stays, and the engine cancels the jobs itself.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    try:
        session = builder.getOrCreate()
    except Exception as error:  # Spark's own errors: no gateway, a master it cannot reach
        where = master or "its default master"
        raise SparkUnavailable(f"cannot start Spark on {where}: {error}") from error
    if in_main and previous is not None:
        signal.signal(signal.SIGINT, previous)
    return session


def stop_spark() -> None:
    """Stop this process's Spark session, if one was started."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


class SparkEngine:
    name = "spark"
    local = False  # executors may be other hosts: what they share goes through S3

    def __init__(self, master: str | None = None, workers: int | None = None) -> None:
        self.master = master
        self.workers = workers
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = spark_session(self.master, self.workers)
        return self._session

    @property
    def slots(self) -> int:
        return int(self.session.sparkContext.defaultParallelism)

    def run(
        self,
        task: UnitTask,
        units: Sequence[WorkUnit],
        rate: float | None,
        progress: ProgressSink,
    ) -> list[UnitResult]:
        if not units:
            return []
        context = self.session.sparkContext
        tasks, per_task = self.rate_plan(len(units), rate)

        def run_units(chosen: Iterator[WorkUnit]) -> Iterator[tuple[str, Any, str]]:
            unit_context = UnitContext(RateLimiter(per_task), NoProgress())
            for unit in chosen:
                try:
                    yield ("done", task(unit, unit_context).to_dict(), unit.id)
                except Exception as error:  # reported like the other engines do
                    yield ("failed", failure_text(error), unit.id)

        group = f"dynamo-backups-{uuid.uuid4().hex}"
        context.setJobGroup(group, "dynamo-backups units", interruptOnCancel=True)
        watcher = _ProgressLog(context, len(units))
        watcher.start()
        try:
            answers = context.parallelize(list(units), tasks).mapPartitions(run_units)
            collected = answers.collect()
        except KeyboardInterrupt:
            # Tasks running are killed (their units are not recorded: --resume redoes them);
            # units that ended were recorded by their executors. Spark cancels asynchronously:
            # the stage returns only once its tasks have ended, so that what follows (a
            # backfill's removal check) sees all they wrote.
            context.cancelJobGroup(group)
            stop = Interrupted([], len(units))
            stop.settled = wait_for_tasks_to_end(context.statusTracker(), group)
            raise stop from None
        finally:
            watcher.stop()
        results = [UnitResult.from_dict(value) for state, value, _ in collected if state == "done"]
        failures = [(unit_id, value) for state, value, unit_id in collected if state == "failed"]
        if failures:
            raise UnitFailed(failures, results)
        return results

    def rate_plan(self, units: int, rate: float | None) -> tuple[int, float | None]:
        """How many tasks run the stage's units, and each task's share of the budget.

        Executors share no memory, and dynamic allocation adds them while a stage runs, so
        the budget cannot be split by the executors present at the start. Instead the stage
        has at most ``workers`` tasks (default: the slots when it starts), each running its
        units one after another with ``rate / tasks``: however many executors appear, no
        more than ``tasks`` tasks run at once, so together they stay within ``rate``.
        Without a budget every unit is its own task, spread over whatever slots exist."""
        if rate is None:
            return units, None
        tasks = max(1, min(units, self.workers or self.slots))
        return tasks, rate_per_slot(rate, tasks)

    def close(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None


def running_tasks(tracker: Any, group: str) -> int:
    """Tasks of the jobs of ``group`` that have not ended (a job not yet ended counts one)."""
    running = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        running += 1 if str(job.status) == "RUNNING" else 0
        for stage_id in job.stageIds:
            stage = tracker.getStageInfo(stage_id)
            running += stage.numActiveTasks if stage is not None else 0
    return running


def wait_for_tasks_to_end(
    tracker: Any,
    group: str,
    timeout: float | None = None,
    sleep: Any = time.sleep,
    clock: Any = time.monotonic,
) -> bool:
    """Wait (at most ``timeout``, default ``CANCEL_WAIT_SECONDS``) until the cancelled jobs
    of ``group`` have no task running; False when some still ran at the end (said in an
    error line: they may still write)."""
    timeout = CANCEL_WAIT_SECONDS if timeout is None else timeout
    deadline = clock() + timeout
    running = running_tasks(tracker, group)
    while running:
        if clock() >= deadline:
            logger.error(
                "spark: %d cancelled task(s) still running %.0f s after Ctrl-C: they may "
                "still write; the run is left unfinished, its removal check pending",
                running,
                timeout,
            )
            return False
        sleep(CANCEL_POLL_SECONDS)
        running = running_tasks(tracker, group)
    return True


class _ProgressLog:
    """Logs how many units Spark has finished, every few seconds."""

    def __init__(self, context: Any, total: int) -> None:
        self.context = context
        self.total = total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        tracker = self.context.statusTracker()
        while not self._stop.wait(PROGRESS_INTERVAL):
            done = 0
            for stage in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage)
                if info is not None:
                    done += info.numCompletedTasks
            logger.info("spark: %d of %d units done", done, self.total)
