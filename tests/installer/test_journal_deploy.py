"""deploy and template with --layout journal (docs/journal.md, "Trigger settings and RPO"), on
moto: the trigger's batch size and batching window, BACKUP_LAYOUT, a role that may read its
folder's layout.json and journal objects and nothing more, folders checked before anything is
changed, and the template describing the same resources."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from moto.iam.access_control import IAMPolicy, PermissionResult

from dynamo_backups.backup.layouts import LayoutMismatch
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.installer.deploy import Deployer
from dynamo_backups.installer.naming import CompactionResources, TableResources
from dynamo_backups.installer.package import build_zip
from dynamo_backups.installer.plan import DeployError
from dynamo_backups.installer.template import build_template, to_yaml
from tests.deployment import ACCOUNT, BUCKET, OPTIONS, clients, deploy, make_table, policy_document
from tests.moto_stack import CallRecorder

JOURNAL = replace(OPTIONS, tables=("Users",), folder_layout="journal")
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def role_documents(c: Any, names: TableResources) -> list[dict[str, Any]]:
    """Every policy document attached to the function's role."""
    attached = c.iam.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]
    return [policy_document(c.iam, policy["PolicyName"]) for policy in attached]


def permitted(documents: list[dict[str, Any]], action: str, resource: str) -> bool:
    return any(
        IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)
        == PermissionResult.PERMITTED
        for document in documents
    )


def the_trigger(c: Any, names: TableResources) -> dict[str, Any]:
    (mapping,) = c.lambda_.list_event_source_mappings(FunctionName=names.function)[
        "EventSourceMappings"
    ]
    return mapping


def record_layout(moto: str, table: str, layout: str, prefix: str = "Prod") -> None:
    """A folder recorded in ``layout`` by an earlier writer (stream, an earlier deploy)."""
    c = clients(moto)
    if "Buckets" not in c.s3.list_buckets() or not c.s3.list_buckets()["Buckets"]:
        c.s3.create_bucket(Bucket=BUCKET)
        c.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ensure_manifest(
        BackupWriter(c.s3, BUCKET),
        TableLayout.of(prefix, table),
        [{"AttributeName": "id", "KeyType": "HASH"}],
        {"id": "S"},
        layout,
    )


def manifest_of(c: Any, table: str) -> dict[str, Any]:
    key = f"Prod/.dynamo-backups/{table}/layout.json"
    return json.loads(c.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_deploy_layout_journal_sets_the_trigger_the_layout_and_the_reads(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)
    names = TableResources.of("Users")

    mapping = the_trigger(c, names)
    assert mapping["BatchSize"] == 10000
    assert mapping["MaximumBatchingWindowInSeconds"] == 60
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    variables = c.lambda_.get_function(FunctionName=names.function)["Configuration"]["Environment"][
        "Variables"
    ]
    assert variables == {
        "BACKUP_BUCKET": BUCKET,
        "BACKUP_PREFIX": "Prod",
        "BACKUP_KEY_HASH": "md5",
        "BACKUP_LAYOUT": "journal",
    }
    assert manifest_of(c, "Users")["layout"] == "journal"  # recorded before the first batch

    assert policy_document(c.iam, names.read_policy)["Statement"] == [
        {
            "Sid": "ReadTheFoldersLayout",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:aws:s3:::{BUCKET}/Prod/.dynamo-backups/Users/layout.json",
        },
        {
            "Sid": "ReadBackJournalObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:aws:s3:::{BUCKET}/Prod/Users/journal/*",
        },
    ]
    documents = role_documents(c, names)
    assert len(documents) == 4  # write, stream, logs, read
    objects = f"arn:aws:s3:::{BUCKET}/Prod"
    reads = {
        f"{objects}/.dynamo-backups/Users/layout.json": True,
        f"{objects}/Users/journal/2026/11/27/12/0000-0100-1a2b3c4d-1-9-0123.jsonl.gz": True,
        f"{objects}/Users/0cc175b9c0f1b6a831c399e269772661": False,  # an item object
        f"{objects}/.dynamo-backups/Users/table.json": False,
        f"{objects}/.dynamo-backups/Users/checkpoints/x.json": False,
        f"{objects}/.dynamo-backups/Orders/layout.json": False,  # another table's folder
        f"{objects}/Orders/journal/2026/11/27/12/x.jsonl.gz": False,
        f"{objects}/Users/bases/20261127T000000Z/manifest.json": False,
        f"arn:aws:s3:::{BUCKET}/Other/.dynamo-backups/Users/layout.json": False,
    }
    assert {key: permitted(documents, "s3:GetObject", key) for key in reads} == reads
    assert not permitted(documents, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}")
    assert not permitted(documents, "s3:GetObjectVersion", f"{objects}/Users/journal/x")
    assert not permitted(documents, "kms:Decrypt", KEY)  # no KMS key: nothing to decrypt


def test_batching_window_is_set_and_updated_in_place(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, replace(JOURNAL, batching_window=5, batch_size=2000))
    c = clients(moto)
    names = TableResources.of("Users")
    mapping = the_trigger(c, names)
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]) == (2000, 5)

    again = deploy(moto, replace(JOURNAL, batching_window=5, batch_size=2000))
    trigger = f"trigger Users stream -> {names.function}"
    assert {step.resource: step.outcome for step in again}[trigger] == "unchanged"
    steps = deploy(moto, replace(JOURNAL, batching_window=300))
    assert {step.resource: step.outcome for step in steps}[trigger] == "updated"
    mapping = the_trigger(c, names)
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]) == (10000, 300)


def test_a_kms_bucket_gives_the_reads_a_decrypt_of_its_key(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, replace(JOURNAL, kms_key=KEY))
    c = clients(moto)
    names = TableResources.of("Users")
    statements = policy_document(c.iam, names.read_policy)["Statement"]
    assert statements[-1] == {
        "Sid": "DecryptWithTheBucketKey",
        "Effect": "Allow",
        "Action": ["kms:Decrypt"],
        "Resource": KEY,
    }
    assert permitted(role_documents(c, names), "kms:Decrypt", KEY)


def test_a_deploy_without_layout_keeps_a_journal_folder_a_journal(moto: str) -> None:
    """Run again without --layout (to add a table, say): the journal folder's function stays
    a journal function, and the new table's is installed as before (items, no reads)."""
    make_table(moto, "Users")
    make_table(moto, "Orders")
    deploy(moto, JOURNAL)
    deploy(moto, replace(OPTIONS, tables=("Users", "Orders")))
    c = clients(moto)
    users, orders = TableResources.of("Users"), TableResources.of("Orders")
    assert the_trigger(c, users)["BatchSize"] == 10000
    assert the_trigger(c, users)["MaximumBatchingWindowInSeconds"] == 60
    configuration = c.lambda_.get_function(FunctionName=users.function)["Configuration"]
    assert configuration["Environment"]["Variables"]["BACKUP_LAYOUT"] == "journal"
    assert the_trigger(c, orders)["BatchSize"] == 100
    configuration = c.lambda_.get_function(FunctionName=orders.function)["Configuration"]
    assert "BACKUP_LAYOUT" not in configuration["Environment"]["Variables"]
    assert len(role_documents(c, orders)) == 3  # write, stream, logs: as before
    assert "layout" not in manifest_of(c, "Orders")


@pytest.mark.parametrize(("recorded", "asked"), [("items", "journal"), ("journal", "items")])
def test_a_folder_recorded_in_the_other_layout_refuses_before_any_change(
    moto: str, recorded: str, asked: str
) -> None:
    make_table(moto, "Users")
    make_table(moto, "Orders")
    record_layout(moto, "Orders", recorded)
    c = clients(moto)
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts, c.sqs, c.cloudwatch)
    options = replace(OPTIONS, tables=("Users", "Orders"), folder_layout=asked)

    with pytest.raises(LayoutMismatch, match=f"holds a backup in the {recorded} layout"):
        Deployer(c, options, build_zip(), "us-east-1", wait=lambda _: None).run()

    assert recorder.calls and recorder.changing() == []  # not even Users' resources
    assert c.iam.list_policies(Scope="Local")["Policies"] == []


def test_a_journal_claim_on_a_folder_of_item_objects_refuses_before_any_change(moto: str) -> None:
    make_table(moto, "Users")
    c = clients(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    c.s3.put_object(Bucket=BUCKET, Key="Prod/Users/0cc175b9c0f1b6a831c399e269772661", Body=b"{}")
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)

    with pytest.raises(LayoutMismatch):
        Deployer(c, JOURNAL, build_zip(), "us-east-1", wait=lambda _: None).run()

    assert recorder.changing() == []


def test_a_batching_window_for_an_item_folder_refuses_before_any_change(moto: str) -> None:
    make_table(moto, "Users")
    c = clients(moto)
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)
    options = replace(OPTIONS, tables=("Users",), batching_window=30)
    with pytest.raises(DeployError, match="--batching-window applies to the journal layout"):
        Deployer(c, options, build_zip(), "us-east-1", wait=lambda _: None).run()
    assert recorder.changing() == []


def test_layout_items_given_sets_it_and_grants_the_layout_read_only(moto: str) -> None:
    """--layout items: the function is told its layout and may read layout.json, so a folder
    recorded as a journal is refused by the function too; it reads no objects."""
    make_table(moto, "Users")
    deploy(moto, replace(OPTIONS, tables=("Users",), folder_layout="items"))
    c = clients(moto)
    names = TableResources.of("Users")
    variables = c.lambda_.get_function(FunctionName=names.function)["Configuration"]["Environment"][
        "Variables"
    ]
    assert variables["BACKUP_LAYOUT"] == "items"
    ((statement),) = policy_document(c.iam, names.read_policy)["Statement"]
    assert statement["Resource"] == f"arn:aws:s3:::{BUCKET}/Prod/.dynamo-backups/Users/layout.json"
    assert (
        the_trigger(c, names)["BatchSize"],
        the_trigger(c, names).get("MaximumBatchingWindowInSeconds", 0),
    ) == (100, 0)
    assert "layout" not in manifest_of(c, "Users")


def test_status_of_a_journal_deploy(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)
    c.s3.put_object(Bucket=BUCKET, Key="Prod/Users/journal/2026/11/27/12/a.jsonl.gz", Body=b"x")
    base = ["--endpoint-url", moto, "--region", "us-east-1"]
    status = CliRunner().invoke(main, [*base, "--output", "json", "status", "Users"])
    assert status.exit_code == 0, status.output
    (report,) = json.loads(status.stdout)["tables"]
    assert report["triggers"][0]["BatchSize"] == 10000
    assert report["triggers"][0]["MaximumBatchingWindowInSeconds"] == 60
    assert report["function"]["Environment"]["BACKUP_LAYOUT"] == "journal"
    assert report["backup"] == {
        "folder": f"s3://{BUCKET}/Prod/Users/journal/",
        "journal_objects": 1,
        "at_least": False,
    }
    assert set(report["alarms"]) == set(TableResources.of("Users").alarms)
    text = CliRunner().invoke(main, [*base, "status", "Users"])
    assert "batch 10000, window 60 s" in text.output
    assert f"1 journal objects in s3://{BUCKET}/Prod/Users/journal/" in text.output


def test_the_cli_takes_layout_and_batching_window_within_lambdas_limits(moto: str) -> None:
    make_table(moto, "Users")
    base = ["--endpoint-url", moto, "--region", "us-east-1"]
    arguments = ["deploy", "--bucket", BUCKET, "--create-bucket", "--prefix", "Prod"]
    arguments += ["--table", "Users", "--layout", "journal"]
    too_long = CliRunner().invoke(main, [*base, *arguments, "--batching-window", "301"])
    assert too_long.exit_code == 2 and "0<=x<=300" in too_long.output
    items = CliRunner().invoke(main, [*base, *arguments[:-1], "items", "--batching-window", "10"])
    assert items.exit_code == 2 and "applies to the journal layout" in items.output
    done = CliRunner().invoke(main, [*base, *arguments, "--batching-window", "0"])
    assert done.exit_code == 0, done.output
    mapping = the_trigger(clients(moto), TableResources.of("Users"))
    assert mapping["MaximumBatchingWindowInSeconds"] == 0
    refused = CliRunner().invoke(
        main,
        [
            *base,
            "deploy",
            "--bucket",
            BUCKET,
            "--prefix",
            "Prod",
            "--table",
            "Users",
            "--layout",
            "items",
        ],
    )
    assert refused.exit_code == 2
    assert "holds a backup in the journal layout" in refused.output
    assert "Traceback" not in refused.output


# --- the template ---------------------------------------------------------------------------


def test_template_without_layout_refuses_a_batching_window() -> None:
    result = CliRunner().invoke(
        main, ["template", "--bucket", BUCKET, "--table", "Users", "--batching-window", "30"]
    )
    assert result.exit_code == 2 and "give --layout journal" in result.output


def _substituted(value: Any) -> Any:
    """The template's documents as deploy writes them in us-east-1 of the test account."""
    text = json.dumps(value)
    for name, actual in (("Partition", "aws"), ("Region", "us-east-1"), ("AccountId", ACCOUNT)):
        text = text.replace("${AWS::" + name + "}", actual)
    document = json.loads(text)

    def unwrap(member: Any) -> Any:
        if isinstance(member, dict):
            if set(member) == {"Fn::Sub"}:
                return member["Fn::Sub"]
            return {key: unwrap(inner) for key, inner in member.items()}
        if isinstance(member, list):
            return [unwrap(inner) for inner in member]
        return member

    return unwrap(document)


def test_template_layout_journal_validates_and_matches_deploy(moto: str, tmp_path: Path) -> None:
    options = replace(JOURNAL, create_bucket=False, kms_key=KEY)
    template = build_template(options)
    path = tmp_path / "journal.yaml"
    path.write_text(to_yaml(template))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    completed = subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    make_table(moto, "Users")
    c = clients(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    c.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    deploy(moto, options)
    names = TableResources.of("Users")
    resources = template["Resources"]
    policies = {
        resource["Properties"]["ManagedPolicyName"]: _substituted(
            resource["Properties"]["PolicyDocument"]
        )
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::ManagedPolicy"
    }
    compaction = CompactionResources.of("Users")
    attached = {
        policy["PolicyName"]
        for role in (names.role, compaction.role)  # the stream function's and compaction's
        for policy in c.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    }
    assert set(policies) == attached
    compact = resources["UsersCompactFunction"]["Properties"]
    deployed = c.lambda_.get_function(FunctionName=compaction.function)["Configuration"]
    for setting in ("Handler", "Runtime", "MemorySize", "Timeout", "Environment"):
        assert compact[setting] == deployed[setting], setting
    for name, document in policies.items():
        assert document == policy_document(c.iam, name), name
    function = resources["UsersFunction"]["Properties"]
    configuration = c.lambda_.get_function(FunctionName=names.function)["Configuration"]
    assert function["Environment"]["Variables"] == configuration["Environment"]["Variables"]
    trigger = resources["UsersTrigger"]["Properties"]
    mapping = the_trigger(c, names)
    for setting in (
        "BatchSize",
        "MaximumBatchingWindowInSeconds",
        "BisectBatchOnFunctionError",
        "MaximumRetryAttempts",
        "MaximumRecordAgeInSeconds",
        "FunctionResponseTypes",
    ):
        assert trigger[setting] == mapping[setting], setting
