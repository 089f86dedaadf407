"""Review of 9687dcf (deploy refuses to re-point a table's backup function at another bucket
or prefix, naming the teardown that moves it): following the refusal's own instructions, on
moto, through the command line as a user types them."""

from __future__ import annotations

import re
import shlex
from typing import Any

from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.installer.naming import TableResources
from tests.deployment import BUCKET, clients, make_table

OTHER = "other-backups"


def cli(moto: str, *arguments: str) -> Any:
    return CliRunner().invoke(main, ["--endpoint-url", moto, "--region", "us-east-1", *arguments])


def versioned_bucket(moto: str, name: str) -> None:
    s3 = clients(moto).s3
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def teardown_named_by(refusal: str) -> list[str]:
    """The teardown command the refusal tells the user to run first, as its arguments."""
    text = " ".join(refusal.split())  # undo any wrapping of the message
    found = re.search(r"first run: dynamo-backups (teardown .*?) \(the backups stay", text)
    assert found, refusal
    return shlex.split(found.group(1))


def backup_folder(moto: str) -> tuple[str, str]:
    function = TableResources.of("Users").function
    configuration = clients(moto).lambda_.get_function_configuration(FunctionName=function)
    variables = configuration["Environment"]["Variables"]
    return variables["BACKUP_BUCKET"], variables.get("BACKUP_PREFIX", "")


def test_the_teardown_named_for_a_top_level_folder_runs(moto: str) -> None:
    """Users backed up at the top level of a bucket (no --prefix: the default), then deployed
    into another bucket: refused, and told 'first run: dynamo-backups teardown Users --bucket
    acme-backups --prefix  (the backups stay)'. That command, typed as written, is refused
    by the command line ("Option '--prefix' requires an argument"): the way out the message
    gives does not run (the message also names the folder s3://acme-backups//)."""
    make_table(moto, "Users")
    first = cli(moto, "deploy", "--bucket", BUCKET, "--create-bucket", "--table", "Users")
    assert first.exit_code == 0, first.output
    versioned_bucket(moto, OTHER)
    move = ["deploy", "--bucket", OTHER, "--table", "Users"]
    refused = cli(moto, *move)
    assert refused.exit_code != 0, refused.output
    assert backup_folder(moto) == (BUCKET, "")  # nothing changed
    torn = cli(moto, *teardown_named_by(refused.output))
    assert torn.exit_code == 0, (
        f"the message's own teardown fails:\n{refused.output}\n{torn.output}"
    )
    moved = cli(moto, *move)
    assert moved.exit_code == 0, moved.output
    assert backup_folder(moto) == (OTHER, "")


def test_moving_backups_as_told_keeps_the_tables_replication(moto: str) -> None:
    """Users is backed up into s3://acme-backups/Prod/ and replicated into UsersReplica (one
    deploy, --replica-table). The user moves the backups to prefix Staging: refused, told to
    run 'teardown Users --bucket acme-backups --prefix Prod (the backups stay), then deploy
    again'. Doing exactly that moves the backups, but teardown removed the replication
    function too (teardown removes both of a table's functions) and the deploy again, the
    one that was refused, has no --replica-table: UsersReplica stops receiving changes. The
    refusal says nothing of replication."""
    make_table(moto, "Users")
    make_table(moto, "UsersReplica")
    both = [
        "deploy", "--bucket", BUCKET, "--create-bucket", "--prefix", "Prod", "--table", "Users",
        "--replica-table", "UsersReplica",
    ]  # fmt: skip
    first = cli(moto, *both)
    assert first.exit_code == 0, first.output
    replica = TableResources.of("Users", replica=True).function
    assert clients(moto).lambda_.get_function(FunctionName=replica)
    move = ["deploy", "--bucket", BUCKET, "--prefix", "Staging", "--table", "Users"]
    refused = cli(moto, *move)
    assert refused.exit_code != 0, refused.output
    torn = cli(moto, *teardown_named_by(refused.output))
    assert torn.exit_code == 0, torn.output
    moved = cli(moto, *move)
    assert moved.exit_code == 0, moved.output
    assert backup_folder(moto) == (BUCKET, "Staging")
    names = [f["FunctionName"] for f in clients(moto).lambda_.list_functions()["Functions"]]
    assert replica in names or "replica" in refused.output.lower(), (
        f"replication removed by the teardown the refusal named, without a word of it:\n"
        f"{refused.output}\n{torn.output}"
    )
