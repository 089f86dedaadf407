"""What deploy sets up so that no change is ever skipped unnoticed (pure; shared by deploy and
the template): the trigger's retry policy and failure destination, five alarms per function,
and a dashboard with a row per table.

The trigger's policy, and why (docs/operations.md says more):

- ``BisectBatchOnFunctionError``: a failing batch is split until the record that fails is
  alone, so one bad record holds back nothing else. Splitting costs no retry.
- ``MaximumRetryAttempts`` 10: a record that can never be written (a poison record) is given
  up on after ten attempts, minutes, not a day. Each attempt already retries transient write
  failures inside the function until close to its timeout, so ten attempts ride out about
  twenty minutes of a sustained fault before anything is given up on.
- ``MaximumRecordAgeInSeconds`` 21,600 (6 hours): records Lambda could not even deliver (the
  function throttled, say) are given up on while the stream still holds them for 18 more
  hours.
- ``DestinationConfig.OnFailure``: every record given up on is described in the failure
  destination (by default an encrypted SQS queue that keeps messages 14 days), the "records
  given up" alarm fires, ``status`` turns unhealthy, and ``replay`` re-applies the described
  range from the stream while it still holds it (24 hours), so an outage of up to the
  stream's retention loses nothing. Older ranges are named with the command to repair them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo_backups.core.metrics import NAMESPACE, RECORDS_FAILED, RECORDS_WRITTEN, REMOVALS
from dynamo_backups.installer.naming import CompactionResources, TableResources
from dynamo_backups.installer.policies import arn_resource, arn_service

MAXIMUM_RETRY_ATTEMPTS = 10
MAXIMUM_RECORD_AGE_SECONDS = 6 * 3600
FAILURE_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's longest
LAG_ALARM_MINUTES = 10


def trigger_settings(
    batch_size: int,
    retries: int,
    record_age: int,
    destination_arn: str | None,
    batching_window: int | None = None,
) -> dict[str, Any]:
    """The event source mapping's settings (beyond the stream and the function); a batching
    window only when one is asked for (the journal layout's), so the item layout's trigger is
    set as it always was."""
    settings: dict[str, Any] = {
        "BatchSize": batch_size,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": retries,
        "MaximumRecordAgeInSeconds": record_age,
    }
    if batching_window is not None:
        settings["MaximumBatchingWindowInSeconds"] = batching_window
    if destination_arn:
        settings["DestinationConfig"] = {"OnFailure": {"Destination": destination_arn}}
    return settings


def failure_queue_attributes() -> dict[str, str]:
    """Encrypted (SQS-managed keys), messages kept 14 days."""
    return {
        "SqsManagedSseEnabled": "true",
        "MessageRetentionPeriod": str(FAILURE_RETENTION_SECONDS),
    }


@dataclass(frozen=True)
class MetricQuery:
    """One metric an expression alarm reads (a MetricDataQuery with a MetricStat)."""

    id: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str

    def request(self, period: int) -> dict[str, Any]:
        return {
            "Id": self.id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric,
                    "Dimensions": _dimensions(self.dimensions),
                },
                "Period": period,
                "Stat": self.statistic,
            },
            "ReturnData": False,
        }


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm, as PutMetricAlarm (and CloudFormation) takes it: on one metric,
    or, with ``expression``, on a metric math expression over ``queries``."""

    name: str
    description: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    period: int
    evaluation_periods: int
    threshold: float
    comparison: str
    expression: str = ""
    queries: tuple[MetricQuery, ...] = ()

    def request(self, topic_arn: str | None) -> dict[str, Any]:
        actions = [topic_arn] if topic_arn else []
        request: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.evaluation_periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": "notBreaching",
            "AlarmActions": actions,
            "OKActions": actions,
            "ActionsEnabled": True,
        }
        if self.expression:
            request["Metrics"] = [
                *(query.request(self.period) for query in self.queries),
                {"Id": "e1", "Expression": self.expression, "Label": self.metric},
            ]
            return request
        return {
            **request,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Dimensions": _dimensions(self.dimensions),
            "Statistic": self.statistic,
            "Period": self.period,
        }


def _dimensions(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in pairs]


def destination_metric(destination_arn: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(namespace, metric, dimensions) that counts what reaches a failure destination; an S3
    destination has no such metric (status reads the bucket instead)."""
    service, name = arn_service(destination_arn), arn_resource(destination_arn)
    if service == "sqs":
        return "AWS/SQS", "ApproximateNumberOfMessagesVisible", (("QueueName", name),)
    if service == "sns":
        return "AWS/SNS", "NumberOfMessagesPublished", (("TopicName", name),)
    raise ValueError(f"no CloudWatch metric counts what reaches {destination_arn}")


def metric_kind(kind: str) -> str:
    """The ``Kind`` dimension of the function's own metrics (core/metrics)."""
    return "backup" if kind == "backup" else "replicate"


# Written to but not invoked: the expression is 1 in a period in which the table took writes
# and the function ran not once. Lambda polls the stream every second, so a healthy trigger
# never shows this for long; a disabled trigger, a deleted mapping or a function that cannot
# start shows it in every period with writes, whereas an idle table (no writes) never does.
STOPPED_EXPRESSION = "IF(FILL(writes, 0) > 0 AND FILL(invocations, 0) == 0, 1, 0)"
STOPPED_PERIODS = 3


def compaction_alarm(names: CompactionResources, table: str) -> AlarmSpec:
    """A failed compaction invocation (Errors in an hour: one invocation an hour): the
    function logs why as one JSON line; the next invocation resumes the same run."""
    return AlarmSpec(
        names.errors_alarm,
        f"dynamo-backups: the compaction of {table}'s journal failed (Errors): see the "
        f"log group {names.log_group}; no new base is made until it is fixed",
        "AWS/Lambda",
        "Errors",
        (("FunctionName", names.function),),
        "Sum",
        3600,
        1,
        0.0,
        "GreaterThanThreshold",
    )


def alarm_specs(
    names: TableResources, table: str, destination_arn: str | None, kind: str = "backup"
) -> list[AlarmSpec]:
    """Lag, errors, records failed, backups stopped, and records given up on, for one
    function."""
    function = (("FunctionName", names.function),)
    specs = [
        AlarmSpec(
            names.lag_alarm,
            f"dynamo-backups: the backup of {table} is more than {LAG_ALARM_MINUTES} minutes "
            "behind its stream (IteratorAge); records older than 24 hours are lost",
            "AWS/Lambda",
            "IteratorAge",
            function,
            "Maximum",
            60,
            LAG_ALARM_MINUTES,
            LAG_ALARM_MINUTES * 60 * 1000.0,
            "GreaterThanThreshold",
        ),
        AlarmSpec(
            names.errors_alarm,
            f"dynamo-backups: the function backing up {table} fails (Errors): see its log "
            "group; the trigger retries, then gives records up to the failure destination",
            "AWS/Lambda",
            "Errors",
            function,
            "Sum",
            300,
            1,
            0.0,
            "GreaterThanThreshold",
        ),
        AlarmSpec(
            names.failed_records_alarm,
            f"dynamo-backups: records of {table} could not be written and were reported back "
            "to the trigger (batchItemFailures, which Lambda does not count as Errors): see "
            "the function's log group; the trigger retries them",
            NAMESPACE,
            RECORDS_FAILED,
            (("Kind", metric_kind(kind)), ("Table", table)),
            "Sum",
            300,
            1,
            0.0,
            "GreaterThanThreshold",
        ),
        stopped_alarm(names, table),
    ]
    if destination_arn and arn_service(destination_arn) in ("sqs", "sns"):
        namespace, metric, dimensions = destination_metric(destination_arn)
        specs.append(
            AlarmSpec(
                names.discarded_alarm,
                f"dynamo-backups: the trigger of {table} gave records up: run "
                f"dynamo-backups replay {table} while the stream still holds them (24 hours)",
                namespace,
                metric,
                dimensions,
                "Maximum" if namespace == "AWS/SQS" else "Sum",
                300,
                1,
                0.0,
                "GreaterThanThreshold",
            )
        )
    return specs


def stopped_alarm(names: TableResources, table: str) -> AlarmSpec:
    """Fires when the table is written to while its function is not invoked: the trigger is
    disabled or gone, or the function cannot run. The lag alarm cannot see this (a trigger
    that reads nothing reports no IteratorAge, and missing data must stay fine for idle
    tables)."""
    minutes = STOPPED_PERIODS * 5
    return AlarmSpec(
        names.stopped_alarm,
        f"dynamo-backups: {table} took writes for {minutes} minutes while its function "
        f"{names.function} was not invoked once: backups have stopped (trigger disabled or "
        "deleted, or the function cannot start); run dynamo-backups status",
        "",
        "WritesWithoutInvocations",
        (),
        "",
        300,
        STOPPED_PERIODS,
        0.0,
        "GreaterThanThreshold",
        expression=STOPPED_EXPRESSION,
        queries=(
            MetricQuery(
                "writes",
                "AWS/DynamoDB",
                "ConsumedWriteCapacityUnits",
                (("TableName", table),),
                "Sum",
            ),
            MetricQuery(
                "invocations",
                "AWS/Lambda",
                "Invocations",
                (("FunctionName", names.function),),
                "Sum",
            ),
        ),
    )


# --- the dashboard ------------------------------------------------------------------------------

WIDGET_WIDTH, WIDGET_HEIGHT = 6, 6


def row_title(table: str, kind: str) -> str:
    return table + (" (replica)" if kind == "replica" else "")


def table_widgets(
    table: str, kind: str, names: TableResources, region: str, destination_arn: str | None
) -> list[dict[str, Any]]:
    """One row of the dashboard: lag, errors, records written, records failed or given up
    (``merge_dashboard`` places it)."""
    function = ["FunctionName", names.function]
    ours = ["Kind", metric_kind(kind), "Table", table]
    failed: list[list[Any]] = [[NAMESPACE, RECORDS_FAILED, *ours, {"stat": "Sum"}]]
    if destination_arn and arn_service(destination_arn) in ("sqs", "sns"):
        namespace, metric, dimensions = destination_metric(destination_arn)
        failed.append(
            [namespace, metric, *[part for pair in dimensions for part in pair], {"stat": "Max"}]
        )
    panels = [
        ("lag (IteratorAge, ms)", [["AWS/Lambda", "IteratorAge", *function, {"stat": "Maximum"}]]),
        ("errors", [["AWS/Lambda", "Errors", *function, {"stat": "Sum"}]]),
        (
            "records written",
            [
                [NAMESPACE, RECORDS_WRITTEN, *ours, {"stat": "Sum"}],
                [NAMESPACE, REMOVALS, *ours, {"stat": "Sum"}],
            ],
        ),
        ("records failed, given up", failed),
    ]
    return [
        {
            "type": "metric",
            "x": column * WIDGET_WIDTH,
            "y": 0,
            "width": WIDGET_WIDTH,
            "height": WIDGET_HEIGHT,
            "properties": {
                "title": f"{row_title(table, kind)}: {title}",
                "region": region,
                "metrics": metrics,
                "view": "timeSeries",
                "period": 60,
            },
        }
        for column, (title, metrics) in enumerate(panels)
    ]


def widget_table(widget: dict[str, Any]) -> str:
    return str(widget.get("properties", {}).get("title", "")).split(": ", 1)[0]


def merge_dashboard(
    existing: dict[str, Any] | None, rows: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The dashboard with these tables' rows replaced and other tables' rows kept, every row
    laid out again in table order."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for widget in (existing or {}).get("widgets", []):
        kept.setdefault(widget_table(widget), []).append(widget)
    kept.update(rows)
    widgets = []
    for row, table in enumerate(sorted(kept)):
        for widget in kept[table]:
            widgets.append({**widget, "y": row * WIDGET_HEIGHT})
    return {"widgets": widgets}


def without_tables(existing: dict[str, Any], tables: set[str]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for widget in existing.get("widgets", []):
        if widget_table(widget) not in tables:
            rows.setdefault(widget_table(widget), []).append(widget)
    return merge_dashboard(None, rows)
