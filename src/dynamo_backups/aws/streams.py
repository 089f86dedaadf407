"""The DynamoDB Streams API as Lambda sees it: GetRecords answers carry the records as the
service sent them (epoch numbers, base64 text), beside boto3's parsed copy.
"""

from __future__ import annotations

import json
from typing import Any


def enable_raw_records(streams: Any) -> None:
    """Make GetRecords responses carry ``RawRecords``: the records as the service sent them
    (epoch numbers, base64 text), which is what Lambda delivers; boto3's parsed copy has
    datetimes and bytes instead."""
    streams.meta.events.register(
        "after-call.dynamodbstreams.GetRecords",
        _attach_raw_records,
        unique_id="dynamo-backups-raw-records",
    )


def _attach_raw_records(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
    if isinstance(parsed, dict) and http_response.status_code == 200:
        parsed["RawRecords"] = json.loads(http_response.content).get("Records", [])
