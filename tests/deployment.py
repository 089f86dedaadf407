"""The installer against moto: clients for every service it calls, a standard deploy, and
the policy documents it wrote."""

from __future__ import annotations

import json
from typing import Any

from dynamo_backups.installer.deploy import Deployer
from dynamo_backups.installer.package import build_zip
from dynamo_backups.installer.plan import Clients, DeployOptions
from tests.moto_stack import moto_client

ACCOUNT = "123456789012"


BUCKET = "acme-backups"


def clients(endpoint: str, region: str = "us-east-1") -> Clients:
    return Clients(
        **{
            name: moto_client(endpoint, service, region)
            for name, service in (
                ("s3", "s3"),
                ("iam", "iam"),
                ("lambda_", "lambda"),
                ("dynamodb", "dynamodb"),
                ("logs", "logs"),
                ("sts", "sts"),
                ("sqs", "sqs"),
                ("cloudwatch", "cloudwatch"),
                ("events", "events"),
            )
        }
    )


def make_table(
    endpoint: str, name: str, view_type: str | None = None, region: str = "us-east-1"
) -> None:
    arguments: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if view_type:
        arguments["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view_type}
    moto_client(endpoint, "dynamodb", region).create_table(**arguments)


OPTIONS = DeployOptions(
    bucket=BUCKET, prefix="Prod", tables=("Users", "Orders"), create_bucket=True
)


def deploy(endpoint: str, options: DeployOptions = OPTIONS, region: str = "us-east-1") -> Any:
    return Deployer(
        clients(endpoint, region), options, build_zip(), region, wait=lambda _: None
    ).run()


def policy_document(iam: Any, name: str) -> dict[str, Any]:
    arn = f"arn:aws:iam::{ACCOUNT}:policy/{name}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return json.loads(document) if isinstance(document, str) else document
