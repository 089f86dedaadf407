"""A resumed restore does exactly what one uninterrupted restore does, also in its last phase:
``--into-existing --delete-absent --resume`` deletes only what the backup lacked (the units an
earlier attempt finished count as kept), ``--keys --delete-absent`` still deletes the listed
keys the backup lacked, and TTL is switched on for a table the first attempt created. Units
are failed for real: a fault proxy in front of DynamoDB Local answers their writes with an
error. DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.conftest import unique_table_name
from tests.helpers import create_table, expected_name, make_backfill, scan_all
from tests.jobs.test_restore_details import read_only

pytestmark = pytest.mark.servers

ROWS = 40


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def validation_error(message: str) -> faultproxy.Answer:
    """What DynamoDB answers a request it rejects for good (not retried)."""
    body = {"__type": "com.amazon.coral.validate#ValidationException", "message": message}
    return faultproxy.Answer(
        400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(body).encode()
    )


def writes_of(request: faultproxy.Request) -> list[dict[str, Any]]:
    if not request.headers.get("x-amz-target", "").endswith("BatchWriteItem"):
        return []
    (writes,) = json.loads(request.body)["RequestItems"].values()
    return list(writes)


def fail_puts_in_partition(partition: str) -> tuple[faultproxy.Rule, dict[str, int]]:
    """Every BatchWriteItem putting an item whose object name starts with ``partition`` is
    rejected: that partition's unit ends with unwritten items, the others complete."""
    seen = {"rejected": 0}

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        for write in writes_of(request):
            item = write.get("PutRequest", {}).get("Item")
            if item is not None and expected_name({"pk": item["pk"]}).startswith(partition):
                seen["rejected"] += 1
                return validation_error("injected: this partition's writes fail")
        return faultproxy.FORWARD

    return rule, seen


def fail_deletes(request: faultproxy.Request) -> str | faultproxy.Answer:
    if any("DeleteRequest" in write for write in writes_of(request)):
        return validation_error("injected: deletes fail")
    return faultproxy.FORWARD


def copy_table(dynamodb: Any, table: str) -> str:
    """A second table holding what ``table`` holds now."""
    twin = create_table(dynamodb, view_type=None)
    for item in scan_all(dynamodb, table).values():
        dynamodb.put_item(TableName=twin, Item=item)
    return twin


def backed_up_then_changed(dynamodb: Any, s3: Any, bucket: str, prefix: str) -> tuple[str, dict]:
    """A table of 40 items, backed up; then changed: 3 items the backup lacks, 1 item changed.
    Returns the table and what the backup holds."""
    table = create_table(dynamodb, view_type=None)
    for index in range(ROWS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": str(index)}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    backup = scan_all(dynamodb, table)
    for index in range(3):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"extra{index}"}, "v": {"N": "0"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "k0"}, "v": {"N": "999"}})
    return table, backup


def restore_args(bucket: str, folder: str, table: str, *extra: str) -> list[str]:
    return ["--output", "json", "restore", bucket, folder, table, "--into-existing", *extra]


def test_resumed_delete_absent_keeps_what_the_finished_units_restored(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, backup = backed_up_then_changed(dynamodb, s3, bucket, prefix)
    twin = copy_table(dynamodb, table)
    folder = f"{prefix}/{table}"
    partition = expected_name({"pk": {"S": "k7"}})[0]
    args = ["--delete-absent", "--unwritten-keys", str(tmp_path / "unwritten.jsonl")]

    rule, seen = fail_puts_in_partition(partition)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, table, *args))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and seen["rejected"] >= 1, first.output
    assert json.loads(first.stdout)["unfinished_units"] == [f"partition-{partition}"]
    assert len(scan_all(dynamodb, table)) == ROWS + 3  # nothing deleted by an incomplete run

    resumed = invoke(*restore_args(bucket, folder, table, *args, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["deleted_absent"] == 3, report  # the three items the backup lacks, no more
    assert report["objects"] == ROWS  # the whole job's count, the first attempt's units too
    assert scan_all(dynamodb, table) == backup

    # One uninterrupted run over the same start gives the same table and the same deletes.
    uninterrupted = invoke(*restore_args(bucket, folder, twin, *args[:1]))
    assert uninterrupted.exit_code == 0, uninterrupted.output
    assert json.loads(uninterrupted.stdout)["deleted_absent"] == 3
    assert scan_all(dynamodb, twin) == scan_all(dynamodb, table)


def test_resume_after_a_failed_delete_pass_deletes_only_what_the_backup_lacks(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every unit finished, the deletes failed: the resumed run runs no unit at all, and its
    delete pass must still know every item the restore kept."""
    table, backup = backed_up_then_changed(dynamodb, s3, bucket, prefix)
    folder = f"{prefix}/{table}"
    with faultproxy.FaultProxy(dynamodb_local.endpoint, fail_deletes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, table, "--delete-absent"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1, first.output
    assert len(json.loads(first.stdout)["not_deleted"]) == 3
    assert len(scan_all(dynamodb, table)) == ROWS + 3

    resumed = invoke(*restore_args(bucket, folder, table, "--delete-absent", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["deleted_absent"] == 3
    assert scan_all(dynamodb, table) == backup


def test_resumed_keys_restore_still_deletes_the_listed_keys_the_backup_lacks(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, _ = backed_up_then_changed(dynamodb, s3, bucket, prefix)
    folder = f"{prefix}/{table}"
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "k0"}\n{"pk": "extra0"}\n{"pk": "extra1"}\n')
    args = ["--delete-absent", "--keys", str(keys)]
    with faultproxy.FaultProxy(dynamodb_local.endpoint, fail_deletes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, table, *args))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and len(json.loads(first.stdout)["not_deleted"]) == 2

    resumed = invoke(*restore_args(bucket, folder, table, *args, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["deleted_absent"] == 2
    names = {json.loads(key)["pk"]["S"] for key in scan_all(dynamodb, table)}
    assert names == {f"k{index}" for index in range(ROWS)} | {"extra2"}  # not listed: kept
    assert scan_all(dynamodb, table)[json.dumps({"pk": {"S": "k0"}})]["v"] == {"N": "0"}


def test_a_resumed_restore_into_the_table_it_created_switches_ttl_on(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create_table(dynamodb, view_type=None)
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}})
    assert make_backfill(dynamodb, s3, bucket, prefix, table).run().complete
    target = unique_table_name("created")
    folder = f"{prefix}/{table}"
    unwritten = ["--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    rule, _ = fail_puts_in_partition(expected_name({"pk": {"S": "k3"}})[0])
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke("--output", "json", "restore", bucket, folder, target, *unwritten)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and json.loads(first.stdout)["created_table"] is True
    ttl = dynamodb.describe_time_to_live(TableName=target)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"  # not before every item is in

    resumed = invoke("--output", "json", "restore", bucket, folder, target, *unwritten, "--resume")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["created_table"] is True and report["ttl_attribute"] == "expires"
    ttl = dynamodb.describe_time_to_live(TableName=target)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    assert scan_all(dynamodb, target) == scan_all(dynamodb, table)


def test_a_run_without_delete_absent_is_not_resumed_with_it(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its finished units recorded no kept names: resuming it with --delete-absent would
    delete what they restored. It is refused, and nothing is deleted."""
    table, _ = backed_up_then_changed(dynamodb, s3, bucket, prefix)
    folder = f"{prefix}/{table}"
    unwritten = ["--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    rule, _ = fail_puts_in_partition(expected_name({"pk": {"S": "k7"}})[0])
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, table, *unwritten))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1, first.output

    refused = invoke(
        *restore_args(bucket, folder, table, *unwritten, "--delete-absent", "--resume")
    )
    assert refused.exit_code == 1
    assert "had other options (delete_absent: None then, True now)" in refused.output
    assert len(scan_all(dynamodb, table)) == ROWS + 3


def test_without_a_ledger_delete_absent_keeps_its_names_in_this_process(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A role that may only read the bucket keeps no ledger and no scratch: on threads the
    names kept stay in this process; another engine is refused before anything is written."""
    table, backup = backed_up_then_changed(dynamodb, s3, bucket, prefix)
    folder = f"{prefix}/{table}"
    with faultproxy.FaultProxy(seaweedfs.endpoint, read_only) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        elsewhere = invoke(
            *restore_args(bucket, folder, table, "--delete-absent", "--engine", "processes")
        )
        assert elsewhere.exit_code == 1 and "use --engine threads" in elsewhere.output
        assert len(scan_all(dynamodb, table)) == ROWS + 3
        here = invoke(*restore_args(bucket, folder, table, "--delete-absent"))
    assert here.exit_code == 0, here.output
    assert "keeps no ledger" in here.stderr
    assert json.loads(here.stdout)["deleted_absent"] == 3
    assert scan_all(dynamodb, table) == backup
