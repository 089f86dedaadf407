"""backfill --from-export: a new ExportTableToPointInTime on moto (which serves it), and an
existing export in S3 (a snapshot, which has the export's format) on the local servers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.core.layout import parse_time
from tests.deployment import make_table
from tests.helpers import EDGE_ITEM, create_table, history, object_key, scan_all
from tests.moto_stack import moto_client


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_a_new_export_is_requested_and_each_of_its_files_backed_up(
    moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    dynamodb, s3 = moto_client(moto, "dynamodb"), moto_client(moto, "s3")
    s3.create_bucket(Bucket="backups")
    s3.put_bucket_versioning(Bucket="backups", VersioningConfiguration={"Status": "Enabled"})
    make_table(moto, "Users")
    items = [
        {"id": {"S": "edge"}, **{k: v for k, v in EDGE_ITEM.items() if k != "pk"}},
        {"id": {"S": "n"}, "n": {"N": "-0.000000000000000000000000000000000001"}},
        {"id": {"S": "b"}, "b": {"B": b"\x00\xff"}, "bs": {"BS": [b"\x01", b"\x02"]}},
    ]
    for item in items:
        dynamodb.put_item(TableName="Users", Item=item)

    refused = invoke("backfill", "Users", "--bucket", "backups", "--from-export", "new")
    assert refused.exit_code == 1
    assert "needs point-in-time recovery on table Users" in refused.output

    dynamodb.update_continuous_backups(
        TableName="Users",
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    result = invoke(
        "--output",
        "json",
        "backfill",
        "Users",
        "--bucket",
        "backups",
        "--prefix",
        "Prod",
        "--from-export",
        "new",
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["tables"]
    assert (report["scanned"], report["written"], report["failed"]) == (3, 3, 0)
    export_time = parse_time(report["export"]["export_time"])
    for item in items:
        (entry,) = history(s3, "backups", object_key("Prod", "Users", {"id": to_wire(item)["id"]}))
        assert json.loads(entry["body"]) == to_wire(item)
        assert parse_time(entry["metadata"]["change-time"]) == export_time
        assert entry["metadata"]["writer"] == "backfill"


@pytest.mark.servers
def test_an_existing_export_folder_is_a_source(
    aws_env: dict[str, str], dynamodb: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb, view_type=None)
    for index in range(25):
        dynamodb.put_item(
            TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": f"{index}.5"}}
        )
    assert invoke("backfill", table, "--bucket", bucket, "--prefix", prefix).exit_code == 0
    export = f"s3://{bucket}/{prefix}-export"
    snapped = invoke("snapshot", bucket, f"{prefix}/{table}", "--to", export)
    assert snapped.exit_code == 0, snapped.output

    copied = invoke(
        "--output",
        "json",
        "backfill",
        table,
        "--bucket",
        bucket,
        "--prefix",
        f"{prefix}-copy",
        "--from-export",
        export,
    )
    assert copied.exit_code == 0, copied.output
    (report,) = json.loads(copied.stdout)["tables"]
    assert report["written"] == 25 and report["units"] >= 1
    restored = invoke("restore", bucket, f"{prefix}-copy/{table}", f"{table}-copy")
    assert restored.exit_code == 0, restored.output
    assert scan_all(dynamodb, f"{table}-copy") == scan_all(dynamodb, table)

    missing = invoke(
        "backfill", table, "--bucket", bucket, "--from-export", f"s3://{bucket}/no-such-export"
    )
    assert missing.exit_code == 2 and "no export at" in missing.output
