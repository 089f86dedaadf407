"""deploy, status, teardown and template of a journal folder's scheduled compaction
(docs/journal.md, "Compaction, scheduled"), on moto: the compaction function (handler,
900 s, 1,024 MB, reserved concurrency 1, its environment, the journal package), the hourly
EventBridge rule and its one target, the function's permission for that rule only, the
role's exact least-privilege policy, a re-run changing nothing, an item deploy getting none
of it, status showing the schedule and the newest base, teardown removing it all."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from moto.iam.access_control import IAMPolicy, PermissionResult

from dynamo_backups.cli import main
from dynamo_backups.core.base import BaseManifest, BasePaths
from dynamo_backups.core.retention import DAILY, RetentionPolicy
from dynamo_backups.installer.deploy import Deployer
from dynamo_backups.installer.functions import compaction_specs
from dynamo_backups.installer.naming import CompactionResources, TableResources
from dynamo_backups.installer.package import JOURNAL_ENTRIES, build_zip, code_sha256
from dynamo_backups.installer.plan import Step
from dynamo_backups.installer.schedule import SCHEDULE_STATEMENT_ID, TARGET_ID
from dynamo_backups.installer.status import table_status
from dynamo_backups.installer.teardown import teardown
from dynamo_backups.installer.template import build_template
from tests.deployment import ACCOUNT, BUCKET, OPTIONS, clients, deploy, make_table, policy_document
from tests.moto_stack import CallRecorder

JOURNAL = replace(OPTIONS, tables=("Users",), folder_layout="journal")
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NAMES = CompactionResources.of("Users")
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dynamo-backups-compact-Users"
RULE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/dynamo-backups-compact-Users"
OBJECTS = f"arn:aws:s3:::{BUCKET}/Prod"

ACCESS_STATEMENTS = [
    {
        "Sid": "ListTheJournalBasesAndRuns",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": f"arn:aws:s3:::{BUCKET}",
        "Condition": {
            "StringLike": {
                "s3:prefix": [
                    "Prod/Users/journal/*",
                    "Prod/Users/bases/*",
                    "Prod/.dynamo-backups/Users/jobs/compact/*",
                    "Prod/.dynamo-backups/Users/layout.json",
                    "Prod/.dynamo-backups/Users/table.json",
                    "Prod/.dynamo-backups/Users/retention.json",
                ]
            }
        },
    },
    {
        "Sid": "ReadTheJournalBasesAndTableRecords",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [
            f"{OBJECTS}/Users/journal/*",
            f"{OBJECTS}/Users/bases/*",
            f"{OBJECTS}/.dynamo-backups/Users/*",
        ],
    },
    {
        "Sid": "WriteBasesWithTheirRetentionTag",
        "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:PutObjectTagging"],
        "Resource": f"{OBJECTS}/Users/bases/*",
    },
    {
        "Sid": "RecordTheCompactionRuns",
        "Effect": "Allow",
        "Action": ["s3:PutObject"],
        "Resource": f"{OBJECTS}/.dynamo-backups/Users/jobs/compact/*",
    },
]


def outcomes(steps: list[Step]) -> dict[str, str]:
    return {step.resource: step.outcome for step in steps}


def permitted(documents: list[dict[str, Any]], action: str, resource: str) -> bool:
    return any(
        IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)
        == PermissionResult.PERMITTED
        for document in documents
    )


def role_documents(c: Any, role: str) -> dict[str, dict[str, Any]]:
    attached = c.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return {
        policy["PolicyName"]: policy_document(c.iam, policy["PolicyName"]) for policy in attached
    }


def compaction_steps(steps: list[Step]) -> dict[str, str]:
    return {step.resource: step.outcome for step in steps if "compact" in step.resource.lower()}


def test_deploy_installs_the_compaction_function_its_hourly_rule_and_its_role(moto: str) -> None:
    make_table(moto, "Users")
    steps = deploy(moto, JOURNAL)
    c = clients(moto)

    assert compaction_steps(steps) == {
        f"log group {NAMES.log_group}": "created",
        f"IAM policy {NAMES.access_policy}": "created",
        f"IAM policy {NAMES.logs_policy}": "created",
        f"IAM role {NAMES.role}": "created",
        f"IAM role {NAMES.role}: {NAMES.access_policy}": "created",
        f"IAM role {NAMES.role}: {NAMES.logs_policy}": "created",
        f"Lambda function {NAMES.function}": "created",
        f"Lambda function {NAMES.function}: reserved concurrency": "created",
        f"EventBridge rule {NAMES.rule}": "created",
        f"Lambda function {NAMES.function}: permission for {NAMES.rule}": "created",
        f"EventBridge rule {NAMES.rule}: target": "created",
        f"alarm {NAMES.errors_alarm}": "created",
    }
    alarm = c.cloudwatch.describe_alarms(AlarmNames=[NAMES.errors_alarm])["MetricAlarms"][0]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/Lambda",
        "Errors",
        "Sum",
    )
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": NAMES.function}]
    assert (alarm["Period"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        3600,
        0.0,
        "GreaterThanThreshold",
    )
    configuration = c.lambda_.get_function(FunctionName=NAMES.function)["Configuration"]
    assert (configuration["Handler"], configuration["Runtime"]) == (
        "dynamo_backups.jobs.compact_lambda.handler",
        "python3.13",
    )
    assert (configuration["Timeout"], configuration["MemorySize"]) == (900, 1024)
    assert configuration["Environment"]["Variables"] == {
        "BACKUP_BUCKET": BUCKET,
        "BACKUP_PREFIX": "Prod",
        "BACKUP_KEY_HASH": "md5",
        "COMPACT_TABLE": "Users",
        "COMPACT_EVERY_HOURS": "24",
        "COMPACT_PARTITIONS": "16",
    }
    # The compaction function runs the journal package; the stream function's is as before.
    assert configuration["CodeSha256"] == code_sha256(build_zip(JOURNAL_ENTRIES))
    backup = c.lambda_.get_function(FunctionName=TableResources.of("Users").function)
    assert backup["Configuration"]["CodeSha256"] == code_sha256(build_zip())
    concurrency = c.lambda_.get_function_concurrency(FunctionName=NAMES.function)
    assert concurrency["ReservedConcurrentExecutions"] == 1

    rule = c.events.describe_rule(Name=NAMES.rule)
    assert (rule["Arn"], rule["ScheduleExpression"], rule["State"]) == (
        RULE_ARN,
        "rate(1 hour)",
        "ENABLED",
    )
    tags = c.events.list_tags_for_resource(ResourceARN=RULE_ARN)["Tags"]
    assert {"Key": "managed-by", "Value": "dynamo-backups"} in tags
    targets = c.events.list_targets_by_rule(Rule=NAMES.rule)["Targets"]
    assert [(target["Id"], target["Arn"]) for target in targets] == [(TARGET_ID, FUNCTION_ARN)]
    (statement,) = json.loads(c.lambda_.get_policy(FunctionName=NAMES.function)["Policy"])[
        "Statement"
    ]
    assert statement["Sid"] == SCHEDULE_STATEMENT_ID
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Condition"] == {"ArnLike": {"AWS:SourceArn": RULE_ARN}}

    role = c.iam.get_role(RoleName=NAMES.role)["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }
    documents = role_documents(c, NAMES.role)
    assert sorted(documents) == [NAMES.access_policy, NAMES.logs_policy]  # nothing shared
    assert documents[NAMES.access_policy]["Statement"] == ACCESS_STATEMENTS
    assert documents[NAMES.logs_policy]["Statement"] == [
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{NAMES.log_group}:*",
        }
    ]
    granted = list(documents.values())
    allowed = {
        ("s3:GetObject", "Users/journal/2026/11/27/12/0000-0100-1a2b3c4d-1-9-0123.jsonl.gz"),
        ("s3:GetObject", "Users/bases/20261127T000000Z/data/00-00000.json.gz"),
        ("s3:GetObject", ".dynamo-backups/Users/layout.json"),
        ("s3:GetObject", ".dynamo-backups/Users/retention.json"),
        ("s3:GetObject", ".dynamo-backups/Users/jobs/compact/r1/scratch/moment.json"),
        ("s3:PutObject", "Users/bases/20261127T000000Z/manifest.json"),
        ("s3:PutObjectTagging", "Users/bases/20261127T000000Z/cutoff.json"),
        ("s3:PutObject", ".dynamo-backups/Users/jobs/compact/run.json"),
        ("s3:PutObject", ".dynamo-backups/Users/jobs/compact/r1/lease.json"),
    }
    refused = {
        ("s3:GetObject", "Users/0cc175b9c0f1b6a831c399e269772661"),  # an item object
        ("s3:GetObject", "Orders/journal/2026/11/27/12/x.jsonl.gz"),  # another table
        ("s3:GetObject", ".dynamo-backups/Orders/layout.json"),
        ("s3:PutObject", "Users/journal/2026/11/27/12/x.jsonl.gz"),  # never writes the journal
        ("s3:PutObject", ".dynamo-backups/Users/layout.json"),
        ("s3:PutObject", ".dynamo-backups/Users/retention.json"),
        ("s3:PutObjectTagging", ".dynamo-backups/Users/jobs/compact/run.json"),
        ("s3:PutObjectTagging", "Users/journal/2026/11/27/12/x.jsonl.gz"),
        ("s3:DeleteObject", "Users/bases/20261127T000000Z/manifest.json"),  # deletes nothing
        ("s3:DeleteObject", "Users/journal/2026/11/27/12/x.jsonl.gz"),
        ("s3:GetObjectVersion", "Users/bases/20261127T000000Z/manifest.json"),
    }
    assert {
        (action, key)
        for action, key in allowed | refused
        if permitted(granted, action, f"{OBJECTS}/{key}")
    } == allowed
    assert not permitted(granted, "kms:Decrypt", KEY)  # no KMS key: nothing to decrypt


def test_a_rerun_changes_nothing_and_a_new_interval_only_the_environment(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)
    recorder = CallRecorder(c.iam, c.lambda_, c.events, c.logs)
    again = compaction_steps(deploy(moto, JOURNAL))
    assert set(again.values()) == {"unchanged"}, again
    assert f"Lambda function {NAMES.function}: code" in again

    # The deploy helper's clients are its own: watch the calls through a Deployer of these.
    Deployer(c, JOURNAL, build_zip(), "us-east-1", wait=lambda _: None).run()
    assert recorder.calls and recorder.changing() == []

    steps = compaction_steps(deploy(moto, replace(JOURNAL, compact_every=6)))
    changed = {resource for resource, outcome in steps.items() if outcome != "unchanged"}
    assert changed == {f"Lambda function {NAMES.function}: configuration"}
    configuration = c.lambda_.get_function(FunctionName=NAMES.function)["Configuration"]
    assert configuration["Environment"]["Variables"]["COMPACT_EVERY_HOURS"] == "6"
    assert c.events.describe_rule(Name=NAMES.rule)["ScheduleExpression"] == "rate(1 hour)"


def test_a_changed_rule_target_or_permission_is_put_back(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)
    c.events.put_rule(Name=NAMES.rule, ScheduleExpression="rate(7 days)", State="DISABLED")
    c.events.put_targets(Rule=NAMES.rule, Targets=[{"Id": "stranger", "Arn": FUNCTION_ARN}])
    c.lambda_.remove_permission(FunctionName=NAMES.function, StatementId=SCHEDULE_STATEMENT_ID)
    c.lambda_.add_permission(
        FunctionName=NAMES.function,
        StatementId=SCHEDULE_STATEMENT_ID,
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=f"arn:aws:events:us-east-1:{ACCOUNT}:rule/another",
    )
    c.lambda_.put_function_concurrency(FunctionName=NAMES.function, ReservedConcurrentExecutions=5)

    steps = compaction_steps(deploy(moto, JOURNAL))
    assert {resource for resource, outcome in steps.items() if outcome == "updated"} == {
        f"EventBridge rule {NAMES.rule}",
        f"EventBridge rule {NAMES.rule}: target",
        f"Lambda function {NAMES.function}: permission for {NAMES.rule}",
        f"Lambda function {NAMES.function}: reserved concurrency",
    }
    rule = c.events.describe_rule(Name=NAMES.rule)
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 hour)", "ENABLED")
    targets = c.events.list_targets_by_rule(Rule=NAMES.rule)["Targets"]
    assert [(target["Id"], target["Arn"]) for target in targets] == [(TARGET_ID, FUNCTION_ARN)]
    (statement,) = json.loads(c.lambda_.get_policy(FunctionName=NAMES.function)["Policy"])[
        "Statement"
    ]
    assert statement["Condition"] == {"ArnLike": {"AWS:SourceArn": RULE_ARN}}
    concurrency = c.lambda_.get_function_concurrency(FunctionName=NAMES.function)
    assert concurrency["ReservedConcurrentExecutions"] == 1


def test_an_item_deploy_gets_no_compaction(moto: str) -> None:
    for table in ("Users", "Orders"):
        make_table(moto, table)
    steps = deploy(moto, OPTIONS)
    c = clients(moto)
    assert compaction_steps(steps) == {}
    assert c.events.list_rules()["Rules"] == []
    names = [f["FunctionName"] for f in c.lambda_.list_functions()["Functions"]]
    assert sorted(names) == ["dynamo-backups-Orders", "dynamo-backups-Users"]
    removed = teardown(c, ["Users", "Orders"], BUCKET, "Prod", False, False)
    assert compaction_steps(removed) == {}


def test_a_kms_bucket_gives_compaction_decrypt_and_encrypt_with_its_key() -> None:
    (spec,) = compaction_specs(
        replace(JOURNAL, kms_key=KEY), "aws", "us-east-1", ACCOUNT, ["Users"], RetentionPolicy()
    )
    access = dict(spec.policies)[NAMES.access_policy]
    assert access["Statement"][:-1] == ACCESS_STATEMENTS
    assert access["Statement"][-1] == {
        "Sid": "UseTheBucketKey",
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": KEY,
    }


def put_base(c: Any, moment: datetime, items: int, retention: str) -> BaseManifest:
    manifest = BaseManifest(
        table="Users",
        moment=moment,
        cutoff=moment,
        late_horizon=moment - timedelta(days=15),
        item_count=items,
        retention=retention,
    )
    key = BasePaths("Prod/Users/", moment).manifest_key
    c.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest.to_dict()).encode())
    return manifest


def test_status_shows_the_schedule_and_the_newest_base(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)

    report = table_status(c, c.cloudwatch, "Users")
    assert report.compaction.pop("alarm") in ("OK", "INSUFFICIENT_DATA")  # a new alarm's
    assert report.compaction == {
        "function": NAMES.function,
        "every_hours": 24,
        "schedule": "rate(1 hour)",
        "rule_state": "ENABLED",
        "newest_base": None,
    }
    assert not [problem for problem in report.problems if "compact" in problem]

    now = datetime.now(UTC).replace(microsecond=0)
    put_base(c, now - timedelta(hours=60), 10, "monthly")
    newest = put_base(c, now - timedelta(hours=6), 1234, DAILY)
    report = table_status(c, c.cloudwatch, "Users")
    assert report.compaction["newest_base"] == {
        "id": newest.id,
        "moment": newest.moment.isoformat(),
        "retention": DAILY,
        "items": 1234,
    }
    assert report.to_dict()["compaction"] == report.compaction

    # A schedule switched off, a failed invocation, a newest base two intervals late: each
    # is a problem.
    c.events.disable_rule(Name=NAMES.rule)
    c.cloudwatch.set_alarm_state(
        AlarmName=NAMES.errors_alarm, StateValue="ALARM", StateReason="an invocation failed"
    )
    c.s3.delete_object(Bucket=BUCKET, Key=BasePaths("Prod/Users/", newest.moment).manifest_key)
    report = table_status(c, c.cloudwatch, "Users")
    assert report.compaction["rule_state"] == "DISABLED"
    problems = " | ".join(report.problems)
    assert f"the compaction schedule {NAMES.rule} is DISABLED" in problems
    assert "is 60 hours old, with a compaction due every 24" in problems
    assert f"alarm {NAMES.errors_alarm} is in ALARM: an invocation failed" in problems
    assert report.compaction["alarm"] == "ALARM"

    # An item folder's report has no compaction entry at all (its output as before).
    make_table(moto, "Orders")
    deploy(moto, replace(OPTIONS, tables=("Orders",)))
    assert "compaction" not in table_status(c, c.cloudwatch, "Orders").to_dict()


def test_teardown_removes_the_schedule_the_function_its_role_and_policies(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)

    planned = teardown(c, ["Users"], BUCKET, "Prod", False, True)
    assert compaction_steps(planned)[f"EventBridge rule {NAMES.rule}"] == "would delete"
    assert c.events.describe_rule(Name=NAMES.rule)["State"] == "ENABLED"  # dry run

    steps = compaction_steps(teardown(c, ["Users"], BUCKET, "Prod", False, False))
    assert steps == {
        f"EventBridge rule {NAMES.rule}": "deleted",
        f"Lambda function {NAMES.function}": "deleted",
        f"IAM role {NAMES.role}": "deleted",
        f"IAM policy {NAMES.access_policy}": "deleted",
        f"IAM policy {NAMES.logs_policy}": "deleted",
        f"alarm {NAMES.errors_alarm}": "deleted",
        f"log group {NAMES.log_group}": "kept",
    }
    assert c.cloudwatch.describe_alarms(AlarmNames=[NAMES.errors_alarm])["MetricAlarms"] == []
    assert c.events.list_rules()["Rules"] == []
    assert c.lambda_.list_functions()["Functions"] == []
    assert c.iam.list_roles()["Roles"] == []
    assert c.iam.list_policies(Scope="Local")["Policies"] == []
    assert compaction_steps(teardown(c, ["Users"], BUCKET, "Prod", False, False)) == {}


def test_teardown_keeps_a_rule_that_is_not_ours(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, JOURNAL)
    c = clients(moto)
    c.events.untag_resource(ResourceARN=RULE_ARN, TagKeys=["managed-by"])
    steps = compaction_steps(teardown(c, ["Users"], BUCKET, "Prod", False, False))
    assert steps[f"EventBridge rule {NAMES.rule}"] == "kept"
    assert c.events.describe_rule(Name=NAMES.rule)["Name"] == NAMES.rule


def test_the_template_holds_the_same_schedule() -> None:
    options = replace(JOURNAL, create_bucket=False, kms_key=KEY)
    resources = build_template(options)["Resources"]
    compaction = {name: value for name, value in resources.items() if "Compact" in name}
    assert sorted(compaction) == [
        "UsersCompactAlarm0",
        "UsersCompactFunction",
        "UsersCompactLogGroup",
        "UsersCompactPermission",
        "UsersCompactPolicy0",
        "UsersCompactPolicy1",
        "UsersCompactRole",
        "UsersCompactSchedule",
    ]
    function = compaction["UsersCompactFunction"]["Properties"]
    assert function["Handler"] == "dynamo_backups.jobs.compact_lambda.handler"
    assert (function["Timeout"], function["MemorySize"]) == (900, 1024)
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Environment"]["Variables"]["COMPACT_EVERY_HOURS"] == "24"
    assert compaction["UsersCompactSchedule"]["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert compaction["UsersCompactSchedule"]["Properties"]["Targets"] == [
        {"Id": TARGET_ID, "Arn": {"Fn::GetAtt": ["UsersCompactFunction", "Arn"]}}
    ]
    assert compaction["UsersCompactPermission"]["Properties"] == {
        "FunctionName": {"Ref": "UsersCompactFunction"},
        "Action": "lambda:InvokeFunction",
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": ["UsersCompactSchedule", "Arn"]},
    }
    access = compaction["UsersCompactPolicy0"]["Properties"]["PolicyDocument"]["Statement"]
    assert access[-1]["Resource"] == KEY
    assert access[0]["Resource"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{BUCKET}"}
    items = build_template(replace(OPTIONS, create_bucket=False))["Resources"]
    assert not [name for name in items if "Compact" in name]


def test_cli_deploy_dry_run_status_and_teardown_of_the_schedule(moto: str) -> None:
    make_table(moto, "Users")
    base = ["--endpoint-url", moto, "--region", "us-east-1"]
    arguments = ["deploy", "--bucket", BUCKET, "--create-bucket", "--prefix", "Prod"]
    arguments += ["--table", "Users", "--layout", "journal", "--compact-every", "12"]
    dry = CliRunner().invoke(main, [*base, *arguments, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would create  EventBridge rule {NAMES.rule}  (rate(1 hour)" in dry.output
    assert f"would create  Lambda function {NAMES.function}: reserved concurrency" in dry.output
    assert '"s3:PutObjectTagging"' in dry.output  # the compaction role's document is shown
    c = clients(moto)
    assert c.events.list_rules()["Rules"] == []

    first = CliRunner().invoke(main, [*base, *arguments])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, [*base, "--output", "json", *arguments])
    steps = json.loads(again.stdout)["steps"]
    assert [s["resource"] for s in steps if s["outcome"] not in ("unchanged", "warning")] == [
        f"s3://{BUCKET}/Prod/.dynamo-backups/Users/"
    ]

    status = CliRunner().invoke(main, [*base, "status", "Users"])
    assert status.exit_code == 0, status.output
    assert (
        f"  compact:  {NAMES.function} rate(1 hour) ENABLED, a base every 12 h; no base yet"
        in status.output
    )
    report = CliRunner().invoke(main, [*base, "--output", "json", "status", "Users"])
    (table,) = json.loads(report.stdout)["tables"]
    assert table["compaction"]["schedule"] == "rate(1 hour)"

    removed = CliRunner().invoke(main, [*base, "teardown", "Users", "--bucket", BUCKET])
    assert removed.exit_code == 0, removed.output
    assert f"deleted       EventBridge rule {NAMES.rule}" in removed.output
    assert c.events.list_rules()["Rules"] == []


def test_cli_template_and_package_of_the_journal_layout(tmp_path: Any) -> None:
    template = CliRunner().invoke(
        main, ["template", "--bucket", BUCKET, "--table", "Users", "--layout", "journal"]
    )
    assert template.exit_code == 0, template.output
    assert '"dynamo_backups.jobs.compact_lambda.handler"' in template.stdout
    assert "package --layout journal" in template.stderr
    items = CliRunner().invoke(main, ["template", "--bucket", BUCKET, "--table", "Users"])
    assert "compact" not in items.stdout and "package --layout journal" not in items.stderr

    out = tmp_path / "journal.zip"
    packaged = CliRunner().invoke(
        main, ["--output", "json", "package", "--out", str(out), "--layout", "journal"]
    )
    assert packaged.exit_code == 0, packaged.output
    assert "dynamo_backups.jobs.compact_lambda" in json.loads(packaged.stdout)["modules"]
    assert out.read_bytes() == build_zip(JOURNAL_ENTRIES)
    plain = CliRunner().invoke(main, ["package", "--out", str(tmp_path / "handler.zip")])
    assert plain.exit_code == 0, plain.output
    assert (tmp_path / "handler.zip").read_bytes() == build_zip()
