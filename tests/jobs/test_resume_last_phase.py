"""Every job whose last phase depends on what its units saw, resumed: the last phase of a
resumed run gives what one uninterrupted run gives. Restore's own cases are in
test_restore_resume.py; here snapshot's manifests (after its files), backfill's removal check
(after its copy), adopt's alias index (after its classification) and verify's differences
(after its scan). Units are failed for real (an invalid object, a fault proxy, a killed
worker). DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.helpers import (
    bodies,
    consumer_for,
    create_table,
    history,
    lean_scan,
    make_backfill,
    object_key,
    scan_all,
)
from tests.jobs.test_adopt import Replicated, checklist_era
from tests.servers import make_client

pytestmark = pytest.mark.servers


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def backed_up(dynamodb: Any, s3: Any, bucket: str, prefix: str, rows: int) -> str:
    table = create_table(dynamodb, view_type=None)
    for index in range(rows):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    return table


def listed_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for entry in page.get("Contents", [])
    )


# --- snapshot: the manifests after the files ----------------------------------------------


def test_a_resumed_snapshot_is_dated_by_its_first_attempt_and_holds_only_its_files(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = backed_up(dynamodb, s3, bucket, prefix, rows=40)
    broken = object_key(prefix, table, {"pk": {"S": "k5"}})
    s3.put_object(Bucket=bucket, Key=broken, Body=b'{"pk": {"S": "k5"}, "v": {"N": 5.0}}')
    partition = broken.rsplit("/", 1)[1][0]
    to = f"s3://{bucket}/{prefix}-snap"
    folder = f"{prefix}/{table}"
    first = invoke("--output", "json", "snapshot", bucket, folder, "--to", to)
    read_by = datetime.now(UTC)  # every finished unit read the backup before this
    assert first.exit_code == 1, first.output
    assert json.loads(first.stdout)["unfinished_units"] == [f"partition-{partition}"]
    # What an attempt killed half-way through a big partition leaves: more files than one
    # listing page holds.
    for number in range(1000, 2010):
        stale = f"{prefix}-snap/data/{partition}-{number:05d}.json.gz"
        s3.put_object(Bucket=bucket, Key=stale, Body=b"stale")
    time.sleep(1.5)

    resumed = invoke(
        "--output", "json", "snapshot", bucket, folder, "--to", to, "--resume", "--skip-invalid"
    )
    assert resumed.exit_code == 1, resumed.output  # complete but for the invalid object
    report = json.loads(resumed.stdout)
    assert report["items"] == 39 and report["invalid"] == 1 and not report["unfinished_units"]
    summary = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}-snap/manifest-summary.json")["Body"].read()
    )
    # "As of" its start: the first attempt's, whose units' files it holds.
    assert datetime.fromisoformat(summary["exportTime"]) <= read_by, summary
    assert summary["startTime"] == summary["exportTime"]
    # ImportTable loads every file under data/: only the run's own may be there.
    files = sorted(entry["key"] for entry in report["files"])
    assert listed_keys(s3, bucket, f"{prefix}-snap/data/") == files


# --- backfill: the removal check after the copy ---------------------------------------------


def reject_segment(segment: int) -> faultproxy.Rule:
    """DynamoDB rejects (for good) every Scan of one parallel-scan segment."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        scan = request.headers.get("x-amz-target", "").endswith(".Scan")
        if scan and json.loads(request.body).get("Segment") == segment:
            body = {
                "__type": "com.amazon.coral.validate#ValidationException",
                "message": "injected: this segment's scans fail",
            }
            return faultproxy.Answer(
                400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(body).encode()
            )
        return faultproxy.FORWARD

    return rule


def test_a_resumed_backfill_checks_its_writes_against_deletions_again(
    dynamodb_local: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """The first attempt checked every partition (its removal units are recorded); the resumed
    one writes an item the stream deleted meanwhile, in a partition already checked: the check
    runs again in full, and the deletion stands."""
    table = create_table(dynamodb)
    for index in range(21):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    in_segment_1 = dynamodb.scan(TableName=table, Segment=1, TotalSegments=2)["Items"]
    doomed = {"pk": in_segment_1[0]["pk"]}

    with faultproxy.FaultProxy(dynamodb_local.endpoint, reject_segment(1)) as proxy:
        rejecting = lean_scan(make_client("dynamodb", proxy.endpoint))
        first = make_backfill(
            dynamodb, s3, bucket, prefix, table, scan=rejecting, total_segments=2
        ).run()
    assert first.unfinished_units == ["segment-1-of-2"], first.failures

    scan = lean_scan(dynamodb)

    def scan_then_delete(request: dict[str, Any]) -> dict[str, Any]:
        page = scan(request)  # the image of "doomed" is read ...
        if any(item["pk"] == doomed["pk"] for item in page.get("Items", [])):
            dynamodb.delete_item(TableName=table, Key=doomed)
            consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
        return page  # ... and the stream deletes it before the backfill writes it

    resumed = make_backfill(
        dynamodb, s3, bucket, prefix, table, scan=scan_then_delete, total_segments=2, resume=True
    ).run()
    assert resumed.complete and resumed.removals_restored == 1, resumed
    assert bodies(history(s3, bucket, object_key(prefix, table, doomed)))[0] == "DM"


# --- adopt: the alias index after the classification ----------------------------------------

ACCESS_DENIED = faultproxy.Answer(
    403,
    {"Content-Type": "application/xml"},
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Access Denied</Message></Error>",
)


def refuse_listing(prefix: str) -> faultproxy.Rule:
    """S3 refuses (for good) every listing of ``prefix``."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        query = parse_qs(urlsplit(request.path).query)
        if request.method == "GET" and query.get("prefix") == [prefix]:
            return ACCESS_DENIED
        return faultproxy.FORWARD

    return rule


def test_a_resumed_adopt_indexes_the_aliases_every_attempt_found(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replicated = Replicated(dynamodb, streams, s3, bucket, prefix)
    checklist_era(replicated)
    items_prefix = f"{replicated.folder}/"
    names = [key[len(items_prefix) :] for key in listed_keys(s3, bucket, items_prefix)]
    partition = names[0][0]
    assert any(not name.startswith(partition) for name in names)  # others done at first
    command = ["--output", "json", "adopt", bucket, replicated.folder, "--key-schema", "pk:S,sk:N"]

    with faultproxy.FaultProxy(seaweedfs.endpoint, refuse_listing(items_prefix + partition)) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        first = invoke(*command)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    assert first.exit_code == 1, first.output
    assert json.loads(first.stdout)["unfinished_units"] == [f"classify-{partition}"]

    resumed = invoke(*command, "--resume")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    # What one uninterrupted adopt of this folder reports (test_adopt.py).
    assert report["objects"] == 6
    assert (report["replicator"], report["both"], report["ours"], report["unknown"]) == (
        4,
        1,
        0,
        0,
    )
    assert (report["deletes_only"], report["deletes_matched"]) == (1, 1)
    assert report["aliases"] == 4 and report["items_with_aliases"] == 3
    target = unique_table_name("adopted")
    restored = invoke("restore", bucket, replicated.folder, target, "--key-schema", "pk:S,sk:N")
    assert restored.exit_code == 0, restored.output
    assert scan_all(dynamodb, target) == scan_all(dynamodb, replicated.table)
