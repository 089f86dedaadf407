"""test-function: the checklist's "Test function" step: invoke the deployed function with
the console's "DynamoDB Update" sample, then look for its objects in the bucket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dynamo_backups.core.layout import TableLayout
from dynamo_backups.installer.naming import (
    TableResources,
)
from dynamo_backups.installer.plan import Clients
from dynamo_backups.installer.samples import CONSOLE_SAMPLE_CURRENT, SAMPLE_KEY, SAMPLE_TABLE


@dataclass
class FunctionTest:
    function: str
    status_code: int
    function_error: str | None
    response: Any
    folder: str | None
    versions_found: int
    delete_markers_found: int

    @property
    def passed(self) -> bool:
        return (
            self.function_error is None
            and self.versions_found >= 2
            and self.delete_markers_found >= 1
        )


def run_function_test(clients: Clients, table: str) -> FunctionTest:
    """The checklist's "Test function": invoke the deployed function with the console's
    "DynamoDB Update" sample, then look for its objects in the bucket."""
    names = TableResources.of(table)
    config = clients.lambda_.get_function_configuration(FunctionName=names.function)
    variables = (config.get("Environment") or {}).get("Variables", {})
    answer = clients.lambda_.invoke(
        FunctionName=names.function,
        InvocationType="RequestResponse",
        Payload=json.dumps(CONSOLE_SAMPLE_CURRENT).encode("utf-8"),
    )
    raw = answer["Payload"].read()
    try:
        response: Any = json.loads(raw)
    except ValueError:
        response = raw.decode("utf-8", "replace")
    folder, versions, markers = None, 0, 0
    bucket = variables.get("BACKUP_BUCKET")
    if bucket and not answer.get("FunctionError"):
        layout = TableLayout.of(
            variables.get("BACKUP_PREFIX", ""),
            SAMPLE_TABLE,
            variables.get("BACKUP_KEY_HASH") or "md5",
        )
        object_key = layout.item_object_key(SAMPLE_KEY)
        folder = f"s3://{bucket}/{layout.items_prefix}"
        listed = clients.s3.list_object_versions(Bucket=bucket, Prefix=object_key)
        versions = sum(1 for entry in listed.get("Versions", []) if entry["Key"] == object_key)
        markers = sum(1 for entry in listed.get("DeleteMarkers", []) if entry["Key"] == object_key)
    return FunctionTest(
        names.function,
        answer.get("StatusCode", 0),
        answer.get("FunctionError"),
        response,
        folder,
        versions,
        markers,
    )
