"""The engine interface, and choosing one by name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from dynamo_backups.core.parallel import ThreadEngine
from dynamo_backups.core.progress import ProgressSink
from dynamo_backups.core.units import UnitResult, UnitTask, WorkUnit

ENGINES = ("threads", "processes", "spark")


class Engine(Protocol):
    name: str
    local: bool  # every unit runs on this host (it may share files with the driver)

    @property
    def slots(self) -> int:
        """How many units run at once."""
        ...

    def run(
        self,
        task: UnitTask,
        units: Sequence[WorkUnit],
        rate: float | None,
        progress: ProgressSink,
    ) -> list[UnitResult]:
        """Run ``task`` for every unit; every unit's result, in any order. Units that raised
        are reported together (``UnitFailed``) once the others have ended."""
        ...


def make_engine(name: str, workers: int | None = None, spark_master: str | None = None) -> Engine:
    """The engine called ``name``; ``workers`` bounds its units at once (default: per
    engine), ``spark_master`` is Spark's master URL (default: spark-submit's, else local)."""
    if name == "threads":
        return ThreadEngine(workers or 4)
    if name == "processes":
        from dynamo_backups.engines.processes import ProcessEngine

        return ProcessEngine(workers or os.cpu_count() or 2)
    if name == "spark":
        from dynamo_backups.engines.spark import SparkEngine

        return SparkEngine(spark_master, workers)
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
