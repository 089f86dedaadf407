"""The installer on moto (IAM, Lambda, S3, DynamoDB, Logs, STS): exactly the expected
resources and policy documents, idempotency, dry runs that change nothing, teardown, errors."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.installer.deploy import Deployer
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.installer.package import build_zip
from dynamo_backups.installer.plan import DeployError
from dynamo_backups.installer.teardown import teardown
from tests.deployment import ACCOUNT, BUCKET, OPTIONS, clients, deploy, make_table, policy_document
from tests.moto_stack import CallRecorder, moto_client


def test_deploy_creates_exactly_the_expected_resources(moto: str) -> None:  # noqa: PLR0915
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    make_table(moto, "Orders")  # no stream yet: deploy turns it on
    steps = deploy(moto)
    assert {step.outcome for step in steps} <= {"created", "updated", "unchanged", "warning"}
    c = clients(moto)

    assert c.s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert all(
        c.s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values()
    )
    rule = c.s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][
        0
    ]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (tls,) = json.loads(c.s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }

    ours = sorted(p["PolicyName"] for p in c.iam.list_policies(Scope="Local")["Policies"])
    assert ours == sorted(
        [
            "dynamo-backups-write-acme-backups-Prod",
            "dynamo-backups-Users-stream",
            "dynamo-backups-Users-logs",
            "dynamo-backups-Orders-stream",
            "dynamo-backups-Orders-logs",
        ]
    )
    assert policy_document(c.iam, "dynamo-backups-write-acme-backups-Prod")["Statement"] == [
        {
            "Sid": "WriteBackupObjects",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{BUCKET}/Prod/*",
        }
    ]

    for table in ("Users", "Orders"):
        names = TableResources.of(table)
        stream_arn = c.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        assert (
            c.dynamodb.describe_table(TableName=table)["Table"]["StreamSpecification"][
                "StreamViewType"
            ]
            == "NEW_AND_OLD_IMAGES"
        )
        stream = policy_document(c.iam, names.stream_policy)["Statement"]
        assert stream[0]["Action"] == [
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
        ]
        # That table's streams (the label changes when a stream is turned off and on):
        assert (
            stream[0]["Resource"] == f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}/stream/*"
        )
        assert stream[1] == {
            "Sid": "ListStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:ListStreams"],
            "Resource": "*",
        }
        queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:dynamo-backups-{table}-failures"
        # Lambda reports records it gives up on with the function's role: to its queue only.
        assert stream[2] == {
            "Sid": "ReportRecordsThatFailed",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": queue_arn,
        }
        assert len(stream) == 3
        (logs,) = policy_document(c.iam, names.logs_policy)["Statement"]
        assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
        assert logs["Resource"] == (
            f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/dynamo-backups-{table}:*"
        )

        role = c.iam.get_role(RoleName=names.role)["Role"]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
        attached = {
            p["PolicyName"]
            for p in c.iam.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]
        }
        assert attached == {
            "dynamo-backups-write-acme-backups-Prod",
            names.stream_policy,
            names.logs_policy,
        }

        function = c.lambda_.get_function(FunctionName=names.function)["Configuration"]
        assert (function["Runtime"], function["Handler"]) == (
            "python3.13",
            "dynamo_backups.handler.backup",
        )
        assert function["Role"] == role["Arn"]
        assert function["Environment"]["Variables"] == {
            "BACKUP_BUCKET": BUCKET,
            "BACKUP_PREFIX": "Prod",
            "BACKUP_KEY_HASH": "md5",
        }
        (mapping,) = c.lambda_.list_event_source_mappings(FunctionName=names.function)[
            "EventSourceMappings"
        ]
        assert mapping["EventSourceArn"] == stream_arn
        assert mapping["BatchSize"] == 100
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["BisectBatchOnFunctionError"] is True
        assert mapping["MaximumRetryAttempts"] == 10
        assert mapping["MaximumRecordAgeInSeconds"] == 6 * 3600
        assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}

        url = c.sqs.get_queue_url(QueueName=names.failure_queue)["QueueUrl"]
        attributes = c.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["QueueArn"] == queue_arn
        assert attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)
        assert attributes["SqsManagedSseEnabled"].lower() == "true"
        tls, senders = json.loads(attributes["Policy"])["Statement"]
        assert tls["Effect"] == "Deny"
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert (senders["Effect"], senders["Action"]) == ("Deny", "sqs:SendMessage")
        assert senders["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [role["Arn"]]}}

        alarms = {
            alarm["AlarmName"]: alarm
            for alarm in c.cloudwatch.describe_alarms(AlarmNames=list(names.alarms))["MetricAlarms"]
        }
        assert set(alarms) == set(names.alarms)
        lag = alarms[names.lag_alarm]
        assert (lag["Namespace"], lag["MetricName"], lag["Statistic"]) == (
            "AWS/Lambda",
            "IteratorAge",
            "Maximum",
        )
        assert lag["Dimensions"] == [{"Name": "FunctionName", "Value": names.function}]
        assert lag["TreatMissingData"] == "notBreaching"
        assert alarms[names.errors_alarm]["MetricName"] == "Errors"
        given_up = alarms[names.discarded_alarm]
        assert (given_up["Namespace"], given_up["MetricName"]) == (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
        )
        assert given_up["Dimensions"] == [{"Name": "QueueName", "Value": names.failure_queue}]
        assert given_up["Threshold"] == 0.0
        assert given_up["ComparisonOperator"] == "GreaterThanThreshold"
        (group,) = c.logs.describe_log_groups(logGroupNamePrefix=names.log_group)["logGroups"]
        assert group["retentionInDays"] == 90
        manifest = json.loads(
            c.s3.get_object(Bucket=BUCKET, Key=f"Prod/.dynamo-backups/{table}/layout.json")[
                "Body"
            ].read()
        )
        assert manifest["key_hash"] == "md5" and manifest["key_types"] == {"id": "S"}
    body = json.loads(
        c.cloudwatch.get_dashboard(DashboardName="dynamo-backups-acme-backups-Prod")[
            "DashboardBody"
        ]
    )
    titles = [widget["properties"]["title"] for widget in body["widgets"]]
    assert titles == [
        f"{table}: {panel}"
        for table in ("Orders", "Users")
        for panel in (
            "lag (IteratorAge, ms)",
            "errors",
            "records written",
            "records failed, given up",
        )
    ]


def test_second_deploy_changes_nothing(moto: str) -> None:
    make_table(moto, "Users")
    make_table(moto, "Orders")
    deploy(moto)
    again = deploy(moto)
    changed = [step for step in again if step.outcome not in ("unchanged", "warning")]
    # The table's description is saved on every run (it may have changed); nothing else.
    assert [step.resource for step in changed] == [
        f"s3://{BUCKET}/Prod/.dynamo-backups/Users/",
        f"s3://{BUCKET}/Prod/.dynamo-backups/Orders/",
    ]


def test_changed_options_update_in_place(moto: str) -> None:
    make_table(moto, "Users")
    options = replace(OPTIONS, tables=("Users",))
    deploy(moto, options)
    steps = deploy(moto, replace(options, memory=1024, batch_size=50, retain_noncurrent_days=30))
    outcomes = {step.resource: step.outcome for step in steps if step.outcome != "warning"}
    assert outcomes["Lambda function dynamo-backups-Users: configuration"] == "updated"
    assert outcomes["trigger Users stream -> dynamo-backups-Users"] == "updated"
    assert outcomes[f"bucket {BUCKET}: lifecycle"] == "created"
    assert outcomes["Lambda function dynamo-backups-Users: code"] == "unchanged"
    c = clients(moto)
    assert (
        c.lambda_.get_function(FunctionName="dynamo-backups-Users")["Configuration"]["MemorySize"]
        == 1024
    )
    rules = c.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30


def test_dry_run_makes_no_changing_call(moto: str) -> None:
    make_table(moto, "Users")
    c = clients(moto)
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)
    steps = Deployer(
        c, replace(OPTIONS, tables=("Users",), dry_run=True), build_zip(), "us-east-1"
    ).run()
    assert recorder.calls and recorder.changing() == []
    assert {step.outcome for step in steps} <= {"would create", "would update", "warning"}
    documents = [step.document for step in steps if step.document]
    assert any(
        statement.get("Action") == ["s3:PutObject", "s3:DeleteObject"]
        for document in documents
        for statement in document["Statement"]
    )
    assert c.iam.list_policies(Scope="Local")["Policies"] == []
    assert "Buckets" not in c.s3.list_buckets() or c.s3.list_buckets()["Buckets"] == []


def test_teardown_leaves_nothing_but_the_bucket(moto: str) -> None:
    make_table(moto, "Users")
    make_table(moto, "Orders")
    deploy(moto)
    c = clients(moto)
    c.s3.put_object(Bucket=BUCKET, Key="Prod/Users/abc", Body=b"{}")
    dry = teardown(c, ["Users", "Orders"], BUCKET, "Prod", delete_bucket=False, dry_run=True)
    assert any(step.outcome == "would delete" for step in dry)
    assert c.lambda_.list_functions()["Functions"]
    steps = teardown(c, ["Users", "Orders"], BUCKET, "Prod", delete_bucket=False, dry_run=False)
    assert c.lambda_.list_functions()["Functions"] == []
    assert c.lambda_.list_event_source_mappings()["EventSourceMappings"] == []
    assert c.iam.list_policies(Scope="Local")["Policies"] == []
    assert [
        role["RoleName"]
        for role in c.iam.list_roles()["Roles"]
        if role["RoleName"].startswith("dynamo-backups")
    ] == []
    assert c.s3.get_object(Bucket=BUCKET, Key="Prod/Users/abc")["Body"].read() == b"{}"
    assert {step.outcome for step in steps} >= {"deleted", "kept"}
    again = teardown(c, ["Users", "Orders"], BUCKET, "Prod", delete_bucket=False, dry_run=False)
    assert "deleted" not in {step.outcome for step in again}


def test_teardown_keeps_resources_it_did_not_create(moto: str) -> None:
    c = clients(moto)
    c.iam.create_role(RoleName="dynamo-backups-Users", AssumeRolePolicyDocument="{}")
    steps = teardown(c, ["Users"], None, "", delete_bucket=False, dry_run=False)
    assert any(
        step.resource == "IAM role dynamo-backups-Users" and step.outcome == "kept"
        for step in steps
    )
    assert c.iam.get_role(RoleName="dynamo-backups-Users")


def test_errors_say_what_to_fix(moto: str) -> None:
    with pytest.raises(DeployError, match="table Users does not exist in us-east-1"):
        deploy(moto, replace(OPTIONS, tables=("Users",)))
    make_table(moto, "Users")
    c = clients(moto)
    c.s3.create_bucket(Bucket="suspended-bucket")
    c.s3.put_bucket_versioning(
        Bucket="suspended-bucket", VersioningConfiguration={"Status": "Suspended"}
    )
    options = replace(OPTIONS, tables=("Users",), bucket="suspended-bucket", create_bucket=False)
    with pytest.raises(DeployError, match=r"versioning Suspended.*--enable-versioning"):
        deploy(moto, options)
    steps = deploy(moto, replace(options, enable_versioning=True))
    assert ("bucket suspended-bucket: versioning", "updated") in [
        (s.resource, s.outcome) for s in steps
    ]
    make_table(moto, "Fresh")  # Users is backed up into suspended-bucket now: refused first
    with pytest.raises(
        DeployError, match="bucket missing-bucket does not exist: pass --create-bucket"
    ):
        deploy(moto, replace(options, bucket="missing-bucket", tables=("Fresh",)))
    with pytest.raises(DeployError, match="--protect needs at least one --admin-role"):
        deploy(moto, replace(OPTIONS, protect=True))
    make_table(moto, "KeysOnly", "KEYS_ONLY")
    with pytest.raises(DeployError, match="view type KEYS_ONLY"):
        deploy(moto, replace(OPTIONS, tables=("KeysOnly",)))


def test_bucket_in_another_region_is_refused(moto: str) -> None:
    make_table(moto, "Users", region="eu-west-1")
    moto_client(moto, "s3", "us-east-1").create_bucket(Bucket="east-bucket")
    with pytest.raises(DeployError, match=r"east-bucket is in us-east-1.*--region us-east-1"):
        deploy(
            moto,
            replace(OPTIONS, tables=("Users",), bucket="east-bucket", create_bucket=False),
            region="eu-west-1",
        )


def test_protect_and_kms_shape_the_policies(moto: str) -> None:
    make_table(moto, "Users")
    admin = f"arn:aws:iam::{ACCOUNT}:role/BackupAdmin"
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    deploy(
        moto,
        replace(
            OPTIONS,
            tables=("Users",),
            protect=True,
            admin_roles=(admin,),
            kms_key=key,
            on_failure=f"arn:aws:sns:us-east-1:{ACCOUNT}:backup-failures",
        ),
    )
    c = clients(moto)
    statements = json.loads(c.s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    protect = next(s for s in statements if s["Sid"] == "DynamoBackupsProtectHistory")
    assert (
        "s3:DeleteObjectVersion" in protect["Action"]
        and "s3:PutBucketVersioning" in protect["Action"]
    )
    assert protect["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [admin]}}
    write = policy_document(c.iam, "dynamo-backups-write-acme-backups-Prod")["Statement"]
    assert write[1] == {
        "Sid": "EncryptWithTheBucketKey",
        "Effect": "Allow",
        "Action": ["kms:GenerateDataKey"],
        "Resource": key,
    }
    stream = policy_document(c.iam, "dynamo-backups-Users-stream")["Statement"]
    assert stream[2]["Action"] == ["sns:Publish"]
    (mapping,) = c.lambda_.list_event_source_mappings()["EventSourceMappings"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(":backup-failures")


def test_existing_bucket_policy_statements_are_kept(moto: str) -> None:
    make_table(moto, "Users")
    c = clients(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    c.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    theirs = {
        "Sid": "AuditorsRead",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
    }
    c.s3.put_bucket_policy(
        Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]})
    )
    deploy(moto, replace(OPTIONS, tables=("Users",), create_bucket=False))
    sids = [
        s["Sid"] for s in json.loads(c.s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    ]
    assert sids == ["AuditorsRead", "DynamoBackupsDenyInsecureTransport"]


def test_cli_deploy_dry_run_and_idempotent_rerun(moto: str) -> None:
    make_table(moto, "Users")
    base = ["--endpoint-url", moto, "--region", "us-east-1"]
    arguments = [
        "deploy",
        "--bucket",
        BUCKET,
        "--create-bucket",
        "--prefix",
        "Prod",
        "--table",
        "Users",
    ]
    dry = CliRunner().invoke(main, [*base, *arguments, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would create  IAM role dynamo-backups-Users" in dry.output
    assert '"s3:PutObject"' in dry.output  # the policy documents are shown
    assert "dry run: nothing was changed" in dry.output
    first = CliRunner().invoke(main, [*base, *arguments])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, [*base, "--output", "json", *arguments])
    steps = json.loads(second.stdout)["steps"]
    assert [s["resource"] for s in steps if s["outcome"] not in ("unchanged", "warning")] == [
        f"s3://{BUCKET}/Prod/.dynamo-backups/Users/"
    ]

    status = CliRunner().invoke(main, [*base, "--output", "json", "status", "Users"])
    assert status.exit_code == 0, status.output
    (report,) = json.loads(status.stdout)["tables"]
    assert report["stream"]["enabled"] and report["function"]["Runtime"] == "python3.13"
    assert report["triggers"][0]["BatchSize"] == 100
    assert report["backup"]["folder"] == f"s3://{BUCKET}/Prod/Users/"

    missing = CliRunner().invoke(main, [*base, "deploy", "--bucket", BUCKET, "--table", "Nope"])
    assert missing.exit_code == 2 and "table Nope does not exist" in missing.output


def test_test_function_reports_an_invoke_failure(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    # moto's Lambda cannot run code (it needs Docker): the command must say the test failed.
    result = CliRunner().invoke(
        main, ["--endpoint-url", moto, "--region", "us-east-1", "test-function", "Users"]
    )
    assert result.exit_code == 1
    assert (
        "invoked dynamo-backups-Users" in result.output and "the function failed" in result.output
    )


def test_teardown_deletes_the_bucket_only_when_confirmed(moto: str) -> None:
    make_table(moto, "Users")
    deploy(moto, replace(OPTIONS, tables=("Users",)))
    c = clients(moto)
    for version in range(3):
        c.s3.put_object(Bucket=BUCKET, Key="Prod/Users/abc", Body=str(version).encode())
    c.s3.delete_object(Bucket=BUCKET, Key="Prod/Users/abc")
    base = [
        "--endpoint-url",
        moto,
        "--region",
        "us-east-1",
        "teardown",
        "Users",
        "--bucket",
        BUCKET,
        "--prefix",
        "Prod",
        "--delete-bucket",
    ]
    refused = CliRunner().invoke(main, base, input="not-the-name\n")
    assert refused.exit_code == 1 and "not confirmed: nothing was deleted" in refused.output
    assert c.s3.head_bucket(Bucket=BUCKET)
    assert c.lambda_.list_functions()["Functions"]  # nothing at all was removed
    done = CliRunner().invoke(main, [*base, "--yes"])
    assert done.exit_code == 0, done.output
    assert "deleted       bucket acme-backups" in done.output
    assert BUCKET not in [bucket["Name"] for bucket in c.s3.list_buckets().get("Buckets", [])]


def test_a_refused_call_is_explained_and_a_rerun_completes_the_deploy(moto: str) -> None:
    from botocore.exceptions import ClientError

    from dynamo_backups.installer.plan import describe_failure

    make_table(moto, "Users")
    c = clients(moto)

    def refuse(**_: Any) -> None:
        raise ClientError(
            {
                "Error": {
                    "Code": "AccessDenied",
                    "Message": "User: arn:aws:iam::123456789012:user/ops is not authorized "
                    "to perform: iam:CreateRole",
                }
            },
            "CreateRole",
        )

    c.iam.meta.events.register("before-call.iam.CreateRole", refuse)
    deployer = Deployer(c, replace(OPTIONS, tables=("Users",)), build_zip(), "us-east-1")
    with pytest.raises(ClientError) as refused:
        deployer.run()
    message = describe_failure(refused.value, "deploy stopped")
    assert "iam:CreateRole" in message and "Permissions for deploy" in message
    assert any(step.resource.startswith("IAM policy") for step in deployer.steps)  # done so far

    c.iam.meta.events.unregister("before-call.iam.CreateRole", refuse)
    steps = deploy(moto, replace(OPTIONS, tables=("Users",)))
    outcomes = {step.resource: step.outcome for step in steps if step.outcome != "warning"}
    assert outcomes["IAM role dynamo-backups-Users"] == "created"
    assert outcomes["IAM policy dynamo-backups-Users-stream"] == "unchanged"  # from the first run
    assert c.lambda_.get_function(FunctionName="dynamo-backups-Users")


def test_deploy_never_downgrades_a_buckets_kms_encryption(moto: str) -> None:
    make_table(moto, "Users")
    c = clients(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    c.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    c.s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    steps = deploy(moto, replace(OPTIONS, tables=("Users",), create_bucket=False))
    (encryption,) = [s for s in steps if s.resource == f"bucket {BUCKET}: default encryption"]
    assert encryption.outcome == "unchanged" and "aws:kms kept" in encryption.detail
    rule = c.s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": key,
    }
    # The functions can write with that key.
    write = policy_document(c.iam, "dynamo-backups-write-acme-backups-Prod")["Statement"]
    assert write[1]["Action"] == ["kms:GenerateDataKey"] and write[1]["Resource"] == key


@pytest.mark.parametrize("elsewhere", [{"prefix": "Staging"}, {"bucket": "other-backups"}])
def test_a_deploy_into_another_folder_never_moves_a_tables_backups_in_silence(
    moto: str, elsewhere: dict[str, str]
) -> None:
    """One backup function per table and region: a second deploy of the table into another
    bucket or prefix would re-point it, and the first folder would stop receiving changes
    with no word. It is refused before anything is changed, naming both folders."""
    make_table(moto, "Users")
    options = replace(OPTIONS, tables=("Users",))
    deploy(moto, options)
    c = clients(moto)
    if "bucket" in elsewhere:
        c.s3.create_bucket(Bucket=elsewhere["bucket"])
        c.s3.put_bucket_versioning(
            Bucket=elsewhere["bucket"], VersioningConfiguration={"Status": "Enabled"}
        )
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)
    with pytest.raises(DeployError) as refused:
        Deployer(c, replace(options, **elsewhere), build_zip(), "us-east-1").run()
    message = str(refused.value)
    assert "dynamo-backups-Users" in message and f"s3://{BUCKET}/Prod/" in message
    assert "teardown" in message
    assert recorder.changing() == []
    variables = c.lambda_.get_function(FunctionName="dynamo-backups-Users")["Configuration"][
        "Environment"
    ]["Variables"]
    assert (variables["BACKUP_BUCKET"], variables["BACKUP_PREFIX"]) == (BUCKET, "Prod")


def test_a_re_created_table_is_not_deployed_into_the_old_ones_folder(moto: str) -> None:
    """Deleted and made again under its name, the table is not the one the folder backs up
    (its saved description's creation time, moto giving no TableId): refused before anything
    is changed, and deployed into another prefix as the message says."""
    make_table(moto, "Users")
    options = replace(OPTIONS, tables=("Users",))
    deploy(moto, options)
    c = clients(moto)
    time.sleep(1.1)  # a creation time of another second
    c.dynamodb.delete_table(TableName="Users")
    make_table(moto, "Users")
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)
    with pytest.raises(DeployError, match=r"a table Users .* deleted since") as refused:
        Deployer(c, options, build_zip(), "us-east-1").run()
    assert "another --prefix" in str(refused.value)
    assert recorder.changing() == []
    teardown(c, ["Users"], BUCKET, "Prod", delete_bucket=False, dry_run=False)
    deploy(moto, replace(options, prefix="Prod2"))
    variables = c.lambda_.get_function(FunctionName="dynamo-backups-Users")["Configuration"][
        "Environment"
    ]["Variables"]
    assert variables["BACKUP_PREFIX"] == "Prod2"
