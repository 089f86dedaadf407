"""The function's own metrics, as CloudWatch Embedded Metric Format (pure).

One JSON line per batch carries both the structured summary and the metrics, so CloudWatch
Logs turns it into metrics by itself: no PutMetricData call, no extra permission, nothing
that can fail the batch. Namespace ``DynamoBackups``, dimensions ``Function`` kind (backup or
replicate) and ``Table``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dynamo_backups.core.stream_records import BatchResult

NAMESPACE = "DynamoBackups"
RECORDS_WRITTEN = "RecordsWritten"
REMOVALS = "Removals"
RECORDS_FAILED = "RecordsFailed"
OLDEST_RECORD_AGE = "OldestRecordAgeMs"


def batch_metrics(kind: str, result: BatchResult, now: datetime) -> dict[str, Any]:
    """The EMF members of one batch's log line."""
    table = min(result.tables) if result.tables else "unknown"
    age_ms = 0.0
    if result.oldest_change is not None:
        age_ms = max(0.0, (now - result.oldest_change).total_seconds() * 1000)
    return {
        "_aws": {
            "Timestamp": int(now.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Kind", "Table"]],
                    "Metrics": [
                        {"Name": RECORDS_WRITTEN, "Unit": "Count"},
                        {"Name": REMOVALS, "Unit": "Count"},
                        {"Name": RECORDS_FAILED, "Unit": "Count"},
                        {"Name": OLDEST_RECORD_AGE, "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "Kind": kind,
        "Table": table,
        RECORDS_WRITTEN: result.applied_count,
        REMOVALS: result.applied.get("REMOVE", 0),
        RECORDS_FAILED: result.record_count - result.applied_count,
        OLDEST_RECORD_AGE: round(age_ms, 1),
    }
