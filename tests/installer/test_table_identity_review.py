"""Review of 92e4411 on moto: what deploy and status say about a table made again under its
name (or another region's table of the name), followed literally. Each test failed on 92e4411;
status's still does (strict xfail)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dynamo_backups.installer.plan import DeployError
from dynamo_backups.installer.status import table_status
from tests.deployment import OPTIONS, clients, deploy, make_table

USERS = replace(OPTIONS, tables=("Users",))


def deployed_then_re_created(moto: str) -> None:
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, USERS)
    c = clients(moto)
    c.dynamodb.delete_table(TableName="Users")
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")


def test_deploys_advice_for_a_re_created_table_followed_literally_deploys_it(moto: str) -> None:
    """Refused into Prod ("Back the new table up into another folder (another --prefix)"),
    the user deploys with --prefix Prod2: refused again, "already backs table Users up into
    s3://acme-backups/Prod/ ... first run: dynamo-backups teardown". Two refusals where one
    could name both steps (the old function backs up a table that no longer exists)."""
    deployed_then_re_created(moto)
    with pytest.raises(DeployError, match="another --prefix"):
        deploy(moto, USERS)
    deploy(moto, replace(USERS, prefix="Prod2", create_bucket=False))


def test_status_of_a_re_created_table_does_not_advise_a_refused_deploy(moto: str) -> None:
    """After the table is made again, status said "the trigger reads an old stream of the
    table: run deploy" (README's table: deploy again); that deploy is refused ("Users made
    again"). status reads the folder's saved description and says what deploy will, and
    its advice (another --prefix) is followed by a deploy that works."""
    deployed_then_re_created(moto)
    c = clients(moto)
    problems = table_status(c, c.cloudwatch, "Users").problems
    with pytest.raises(DeployError, match="deleted since"):
        deploy(moto, USERS)
    assert not any(problem.endswith("run deploy") for problem in problems), problems
    assert any("deleted since" in problem and "--prefix" in problem for problem in problems), (
        problems
    )
    deploy(moto, replace(USERS, prefix="Prod2", create_bucket=False))
    after = table_status(c, c.cloudwatch, "Users").problems
    assert not any("deleted since" in problem for problem in after), after


def test_status_of_a_table_still_in_its_folder_says_nothing_of_another_table(moto: str) -> None:
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, USERS)
    c = clients(moto)
    problems = table_status(c, c.cloudwatch, "Users").problems
    assert not any("deleted since" in problem or "other table" in problem for problem in problems)


def test_another_regions_table_of_the_name_is_not_said_to_be_deleted(moto: str) -> None:
    """Users in us-east-1 is deployed into s3://acme-backups/Prod; Users in eu-west-1 is
    deployed into the same bucket and prefix (one function per table *and region*, so
    nothing else stops it). Refusing is right (two tables in one folder), but the message
    says the us-east-1 table "was deleted and Users made again": it was not, and the saved
    description's TableArn says which region it is in."""
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES")
    deploy(moto, USERS)
    make_table(moto, "Users", "NEW_AND_OLD_IMAGES", region="eu-west-1")
    with pytest.raises(DeployError) as refused:
        deploy(moto, replace(USERS, create_bucket=False), region="eu-west-1")
    message = str(refused.value)
    assert "deleted" not in message and "us-east-1" in message, message
