"""deploy and template of a journal folder's retention (docs/journal.md, "Retention"), on
moto: the exact lifecycle rules, merged with the rules a bucket already has (never dropping
one), the policy recorded beside layout.json for compaction, a re-run changing nothing, and
a policy that would expire what compaction needs refused (exit 2) before any change."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.core.retention import RETENTION_TAG, RetentionPolicy, lifecycle_rules
from dynamo_backups.installer.template import build_template, to_yaml
from tests.deployment import BUCKET, OPTIONS, clients, deploy, make_table
from tests.moto_stack import CallRecorder

JOURNAL = replace(OPTIONS, tables=("Users",), folder_layout="journal")
THEIRS = {
    "ID": "their-logs",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 7},
}


def rules_of(c: Any) -> list[dict[str, Any]]:
    return c.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]


def outcomes(steps: list[Any]) -> dict[str, str]:
    return {step.resource: step.outcome for step in steps}


def existing_bucket(moto: str) -> Any:
    c = clients(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    c.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    c.s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [THEIRS]}
    )
    return c


def test_deploy_adds_the_journal_rules_to_the_buckets_own_and_records_the_policy(
    moto: str,
) -> None:
    make_table(moto, "Users")
    c = existing_bucket(moto)
    deploy(moto, replace(JOURNAL, create_bucket=False))

    rules = rules_of(c)
    assert [rule["ID"] for rule in rules] == [
        "their-logs",
        "dynamo-backups Prod/Users journal",
        "dynamo-backups Prod/Users bases daily",
        "dynamo-backups Prod/Users bases weekly",
        "dynamo-backups Prod/Users bases monthly",
        "dynamo-backups Prod/Users journal markers",
        "dynamo-backups Prod/Users bases markers",
    ]
    assert rules[0] == THEIRS
    assert rules[1] == {
        "ID": "dynamo-backups Prod/Users journal",
        "Status": "Enabled",
        "Filter": {"Prefix": "Prod/Users/journal/"},
        "Expiration": {"Days": 43},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    assert rules[2] == {
        "ID": "dynamo-backups Prod/Users bases daily",
        "Status": "Enabled",
        "Filter": {
            "And": {
                "Prefix": "Prod/Users/bases/",
                "Tags": [{"Key": RETENTION_TAG, "Value": "daily"}],
            }
        },
        "Expiration": {"Days": 2},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    assert [rule["Expiration"] for rule in rules[3:]] == [
        {"Days": 43},
        {"Days": 366},
        {"ExpiredObjectDeleteMarker": True},
        {"ExpiredObjectDeleteMarker": True},
    ]
    assert [rule["Filter"] for rule in rules[5:]] == [
        {"Prefix": "Prod/Users/journal/"},
        {"Prefix": "Prod/Users/bases/"},
    ]
    key = "Prod/.dynamo-backups/Users/retention.json"
    document = json.loads(c.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert RetentionPolicy.from_dict(document) == RetentionPolicy()

    again = outcomes(deploy(moto, replace(JOURNAL, create_bucket=False)))
    assert again[f"bucket {BUCKET}: lifecycle of the journal folders"] == "unchanged"
    assert again[f"s3://{BUCKET}/{key}"] == "unchanged"

    changed = replace(JOURNAL, create_bucket=False, keep_changes_days=60, keep_weekly_bases_days=61)
    steps = outcomes(deploy(moto, changed))
    assert steps[f"bucket {BUCKET}: lifecycle of the journal folders"] == "updated"
    rules = rules_of(c)
    assert rules[0] == THEIRS and len(rules) == 7  # replaced by ID, theirs kept
    assert rules[1]["Expiration"] == {"Days": 60} and rules[3]["Expiration"] == {"Days": 61}
    document = json.loads(c.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert (document["changes_days"], document["weekly_days"]) == (60, 61)


def test_two_journal_tables_each_get_their_rules_and_an_item_table_none(moto: str) -> None:
    for table in ("Users", "Orders", "Carts"):
        make_table(moto, table)
    c = existing_bucket(moto)
    deploy(moto, replace(JOURNAL, tables=("Users",), create_bucket=False))
    deploy(moto, replace(OPTIONS, tables=("Orders",), create_bucket=False))  # items
    folders = {rule["ID"].split(" ")[1] for rule in rules_of(c) if rule["ID"] != "their-logs"}
    assert folders == {"Prod/Users"}
    # Without --layout: Users stays a journal (its rules unchanged), Carts is added as one.
    steps = outcomes(deploy(moto, replace(JOURNAL, tables=("Users", "Carts"), create_bucket=False)))
    assert steps[f"bucket {BUCKET}: lifecycle of the journal folders"] == "updated"
    ids = [rule["ID"] for rule in rules_of(c)]
    assert ids[0] == "their-logs" and len(ids) == 13  # theirs, and six for each folder
    assert {rule_id.split(" ")[1] for rule_id in ids[1:]} == {"Prod/Users", "Prod/Carts"}


def test_a_policy_that_would_expire_what_compaction_needs_is_refused_before_any_change(
    moto: str,
) -> None:
    make_table(moto, "Users")
    c = existing_bucket(moto)
    recorder = CallRecorder(c.s3, c.iam, c.lambda_, c.dynamodb, c.logs, c.sts)
    base = ["--endpoint-url", moto, "--region", "us-east-1", "deploy", "--bucket", BUCKET]
    base += ["--prefix", "Prod", "--table", "Users", "--layout", "journal"]
    for extra, message in (
        (["--keep-daily-bases-days", "1"], "--keep-daily-bases-days 1: a daily base"),
        (["--compact-every", "48", "--keep-daily-bases-days", "2"], "at least 3"),
        (["--keep-changes-days", "8"], "--keep-changes-days 8"),
        (["--keep-monthly-bases-days", "10"], "--keep-monthly-bases-days 10"),
    ):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    items = CliRunner().invoke(main, [*base[:-1], "items", "--keep-changes-days", "50"])
    assert items.exit_code == 2 and "apply to the journal layout" in items.output
    assert recorder.changing() == []
    assert rules_of(c) == [THEIRS]


def test_the_template_of_a_new_bucket_holds_the_journal_rules_and_passes_cfn_lint(
    tmp_path: Path,
) -> None:
    options = replace(JOURNAL, create_bucket=True, retain_noncurrent_days=400)
    template = build_template(options)
    rules = template["Resources"]["BackupBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    ours = lifecycle_rules("Prod/Users/", RetentionPolicy())
    assert [rule["Id"] for rule in rules] == [
        "dynamo-backups-noncurrent-versions",
        *(rule["ID"] for rule in ours),
    ]
    assert rules[1] == {
        "Id": "dynamo-backups Prod/Users journal",
        "Status": "Enabled",
        "Prefix": "Prod/Users/journal/",
        "ExpirationInDays": 43,
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    assert rules[2] == {
        "Id": "dynamo-backups Prod/Users bases daily",
        "Status": "Enabled",
        "Prefix": "Prod/Users/bases/",
        "TagFilters": [{"Key": RETENTION_TAG, "Value": "daily"}],
        "ExpirationInDays": 2,
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    assert rules[5] == {
        "Id": "dynamo-backups Prod/Users journal markers",
        "Status": "Enabled",
        "Prefix": "Prod/Users/journal/",
        "ExpiredObjectDeleteMarker": True,
    }
    path = tmp_path / "journal.yaml"
    path.write_text(to_yaml(template))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    completed = subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_template_of_an_existing_bucket_says_deploy_sets_the_rules() -> None:
    result = CliRunner().invoke(
        main, ["template", "--bucket", BUCKET, "--table", "Users", "--layout", "journal"]
    )
    assert result.exit_code == 0
    assert "the template sets them only on a bucket it creates" in result.stderr
    refused = CliRunner().invoke(
        main, ["template", "--bucket", BUCKET, "--table", "Users", "--keep-changes-days", "50"]
    )
    assert refused.exit_code == 2 and "give --layout journal" in refused.output
