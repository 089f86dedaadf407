"""Review of 02b7ade (restore --resume refuses a table with items unless an earlier attempt got
past that check), d84dfc9 (restore --delete-absent --dry-run counts what it would delete) and
f4ca12d (a table restore made, latest, under the folder's own name is recorded as the
folder's table), against the real local servers (moto for a second region). Each test is a
problem found; each failed before its fix."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.cli.test_new_user_review import backed_up_table, invoke
from tests.helpers import create_table
from tests.moto_stack import moto_client

pytestmark = pytest.mark.servers


def report_of(output: str) -> dict[str, Any]:
    """The JSON report of a command run with --output json."""
    start = output.index("{\n")
    return json.loads(output[start : output.rindex("}") + 1])


@pytest.mark.parametrize("layout", ["items", "journal"])
def test_delete_absent_dry_run_on_the_processes_engine_runs_as_the_real_run_does(
    aws_env: dict[str, str], dynamodb: Any, bucket: str, prefix: str, layout: str
) -> None:
    table = create_table(dynamodb)
    for number in range(3):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{number}"}, "v": {"S": "old"}})
    extra = ("--layout", "journal") if layout == "journal" else ()
    backfilled = invoke("backfill", table, "--bucket", bucket, "--prefix", prefix, "-q", *extra)
    assert backfilled.exit_code == 0, backfilled.output
    time.sleep(2.5)  # past the backfill's second (S3 dates to the second)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "extra"}, "v": {"S": "x"}})
    command = ("restore", bucket, f"{prefix}/{table}", table, "--into-existing", "--delete-absent")
    engine = ("--engine", "processes", "--workers", "2")
    dry = invoke("--output", "json", *command, "--dry-run", *engine)
    assert dry.exit_code == 0, dry.output
    # Counted, or said plainly that it is not (the kept names stay in the workers).
    dry_report = report_of(dry.output)
    assert dry_report["would_delete"] == 1 or any(
        "does not count what --delete-absent would delete" in warning
        for warning in dry_report["warnings"]
    ), dry.output
    real = invoke("--output", "json", *command, *engine)
    assert real.exit_code == 0, real.output
    assert report_of(real.output)["deleted_absent"] == 1, real.output


def test_keys_delete_absent_dry_run_into_a_missing_table_would_delete_nothing(
    aws_env: dict[str, str], dynamodb: Any, bucket: str, prefix: str, tmp_path: Any
) -> None:
    table = backed_up_table(dynamodb, bucket, prefix)
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": {"S": "nope1"}}\n{"pk": {"S": "nope2"}}\n{"pk": {"S": "k0"}}\n')
    target = f"{table}-new"
    dry = invoke(
        "--output", "json", "restore", bucket, f"{prefix}/{table}", target,
        "--into-existing", "--delete-absent", "--keys", str(keys), "--dry-run",
    )  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert report_of(dry.output)["would_delete"] == 0, dry.output
    assert "would delete" not in dry.output


def test_a_restore_into_another_region_does_not_take_the_folder_over(
    aws_env: dict[str, str], bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto = aws_env["AWS_ENDPOINT_URL_LAMBDA"]  # moto: one DynamoDB per region
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto)
    east = moto_client(moto, "dynamodb", "us-east-1")
    name = f"Users-{prefix}"
    east.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    east.put_item(TableName=name, Item={"pk": {"S": "a"}, "v": {"S": "east"}})
    folder = ("--bucket", bucket, "--prefix", prefix)
    first = invoke("--region", "us-east-1", "backfill", name, *folder)
    assert first.exit_code == 0, first.output
    drill = invoke("--region", "eu-west-1", "restore", bucket, f"{prefix}/{name}", name)
    assert drill.exit_code == 0, drill.output
    original = invoke("--region", "us-east-1", "backfill", name, *folder)
    copy = invoke("--region", "eu-west-1", "backfill", name, *folder)
    assert original.exit_code == 0, (drill.output, original.output)
    assert copy.exit_code == 2, copy.output
