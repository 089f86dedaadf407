"""Where a job's units run (``--engine``): ``threads`` in this process; ``processes``, one
worker process per core on this host (no interpreter lock to share); ``spark``, each unit a
Spark task, locally (``local[N]``) or on any cluster (spark-submit, EMR Serverless, AWS Glue).
Engines know nothing of the jobs: they run a picklable task over a list of units, with the
job's items-per-second budget shared by all workers, and hand back every unit's result.
"""

from __future__ import annotations

from dynamo_backups.engines.base import ENGINES, Engine, make_engine

__all__ = ["ENGINES", "Engine", "make_engine"]
