"""deploy's IAM: the managed policies (least privilege, one document each) and the functions'
roles, reconciled like the rest.
"""

from __future__ import annotations

import json
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.installer import policies
from dynamo_backups.installer.functions import CompactionSpec, FunctionSpec
from dynamo_backups.installer.plan import resource_tags
from dynamo_backups.installer.policies import canonical


class IamSteps:
    """The IAM part of a Deployer."""

    # --- IAM -----------------------------------------------------------------------------------

    def _managed_policy(self, name: str, document: dict[str, Any], tags: dict[str, str]) -> str:
        arn = f"arn:{self.env.partition}:iam::{self.env.account}:policy/{name}"
        iam = self.clients.iam
        resource = f"IAM policy {name}"
        try:
            policy = iam.get_policy(PolicyArn=arn)["Policy"]
        except ClientError as error:
            if error_code(error) != "NoSuchEntity":
                raise
            self.changing(
                iam.create_policy,
                PolicyName=name,
                PolicyDocument=json.dumps(document),
                Description="dynamo-backups: least privilege for the backup function",
                Tags=resource_tags(tags),
            )
            self.step(resource, "created", document=document)
            return arn
        current = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])[
            "PolicyVersion"
        ]["Document"]
        if isinstance(current, str):
            current = json.loads(current)
        if canonical(current) == canonical(document):
            self.step(resource, "unchanged", document=document)
            return arn
        if not self.options.dry_run:
            versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
            if len(versions) >= 5:  # IAM keeps five: make room by dropping the oldest
                oldest = min(
                    (v for v in versions if not v["IsDefaultVersion"]),
                    key=lambda v: v["CreateDate"],
                )
                iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"])
            iam.create_policy_version(
                PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True
            )
        self.step(resource, "updated", document=document)
        return arn

    def _role(
        self, spec: FunctionSpec | CompactionSpec, policy_arns: list[str], tags: dict[str, str]
    ) -> str:
        names = spec.names
        iam = self.clients.iam
        trust = policies.lambda_trust_policy()
        resource = f"IAM role {names.role}"
        try:
            role = iam.get_role(RoleName=names.role)["Role"]
        except ClientError as error:
            if error_code(error) != "NoSuchEntity":
                raise
            created = self.changing(
                iam.create_role,
                RoleName=names.role,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description=spec.description,
                Tags=resource_tags(tags),
            )
            self.step(resource, "created", "trusted by lambda.amazonaws.com", trust)
            for arn in policy_arns:
                self.changing(iam.attach_role_policy, RoleName=names.role, PolicyArn=arn)
                self.step(f"{resource}: {arn.rsplit('/', 1)[1]}", "created", "attached")
            if created is None:
                return f"arn:{self.env.partition}:iam::{self.env.account}:role/{names.role}"
            return created["Role"]["Arn"]
        current = role["AssumeRolePolicyDocument"]
        if isinstance(current, str):
            current = json.loads(current)
        self.reconcile(
            resource,
            current,
            trust,
            lambda: iam.update_assume_role_policy(
                RoleName=names.role, PolicyDocument=json.dumps(trust)
            ),
            compare=canonical,
            detail="trusted by lambda.amazonaws.com",
        )
        attached = {
            policy["PolicyArn"]
            for policy in iam.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]
        }
        for arn in policy_arns:
            if arn in attached:
                self.step(f"{resource}: {arn.rsplit('/', 1)[1]}", "unchanged", "attached")
            else:
                self.changing(iam.attach_role_policy, RoleName=names.role, PolicyArn=arn)
                self.step(f"{resource}: {arn.rsplit('/', 1)[1]}", "created", "attached")
        return role["Arn"]
