"""deploy's scheduled compaction of a journal folder (docs/journal.md, "Compaction,
scheduled"): per journal table a function running ``jobs/compact_lambda.handler`` with its
least-privilege role, one invocation at a time (reserved concurrency 1), and an EventBridge
rule invoking it every hour, allowed to (and only it) by the function's resource policy.
"""

from __future__ import annotations

import json
from typing import Any

from dynamo_backups.installer.alerting import ensure_alarm_specs
from dynamo_backups.installer.functions import CompactionSpec
from dynamo_backups.installer.monitoring import compaction_alarm
from dynamo_backups.installer.naming import TABLE_TAG
from dynamo_backups.installer.plan import DeployError, resource_tags
from dynamo_backups.installer.policies import canonical, events_invoke_permission

SCHEDULE_STATEMENT_ID = "dynamo-backups-schedule"  # the function's resource policy statement
TARGET_ID = "dynamo-backups-compact"  # the rule's one target


class ScheduleSteps:
    """The scheduled compaction part of a Deployer."""

    def _compaction_of(self, spec: CompactionSpec, package: bytes) -> None:
        """One journal table's compaction: log group, policies, role, function, its
        concurrency, the rule, the rule's permission to invoke it, the rule's target (after
        the permission: the rule never fires at a function it may not invoke), and an
        alarm on its failures."""
        self._log_group(spec.names)
        tags = {TABLE_TAG: spec.table}
        arns = [self._managed_policy(name, document, tags) for name, document in spec.policies]
        role_arn = self._role(spec, arns, tags)
        function_arn = self._function(spec, role_arn, tags, package)
        self._reserved_concurrency(spec)
        rule_arn = self._rule(spec, tags)
        self._invoke_permission(spec, function_arn, rule_arn)
        self._rule_target(spec, function_arn)
        ensure_alarm_specs(self, [compaction_alarm(spec.names, spec.table)])

    def _reserved_concurrency(self, spec: CompactionSpec) -> None:
        client = self.clients.lambda_
        name = spec.names.function
        current = self._read_or_none(
            lambda: client.get_function_concurrency(FunctionName=name).get(
                "ReservedConcurrentExecutions"
            ),
            "ResourceNotFoundException",
        )
        self.reconcile(
            f"Lambda function {name}: reserved concurrency",
            current,
            spec.concurrency,
            lambda: client.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=spec.concurrency
            ),
            detail=f"{spec.concurrency} invocation at a time",
        )

    def _rule_arn(self, name: str) -> str:
        return f"arn:{self.env.partition}:events:{self.region}:{self.env.account}:rule/{name}"

    def _rule(self, spec: CompactionSpec, tags: dict[str, str]) -> str:
        events = self.clients.events
        name = spec.names.rule
        desired = {
            "ScheduleExpression": spec.schedule,
            "State": "ENABLED",
            "Description": f"dynamo-backups: compacts the journal of table {spec.table}",
        }
        found = self._read_or_none(
            lambda: events.describe_rule(Name=name), "ResourceNotFoundException"
        )
        current = None if found is None else {key: found.get(key) for key in desired}
        extra = {"Tags": resource_tags(tags)} if found is None else {}
        self.reconcile(
            f"EventBridge rule {name}",
            current,
            desired,
            lambda: events.put_rule(Name=name, **desired, **extra),
            compare=canonical,
            detail=f"{spec.schedule}: the function compacts when the newest base is "
            f"{spec.environment['COMPACT_EVERY_HOURS']} hours old",
        )
        return found["Arn"] if found is not None else self._rule_arn(name)

    def _invoke_permission(self, spec: CompactionSpec, function_arn: str, rule_arn: str) -> None:
        """Only this rule may invoke the function (``lambda:AddPermission`` with the rule's
        ARN as ``SourceArn``); a statement of ours that differs is replaced."""
        client = self.clients.lambda_
        name = spec.names.function
        policy = self._read_or_none(
            lambda: json.loads(client.get_policy(FunctionName=name)["Policy"]),
            "ResourceNotFoundException",
        )
        statements = [
            statement
            for statement in (policy or {}).get("Statement", [])
            if statement.get("Sid") == SCHEDULE_STATEMENT_ID
        ]
        desired = events_invoke_permission(rule_arn)
        current = _permission_of(statements[0]) if statements else None

        def apply() -> None:
            if statements:
                client.remove_permission(FunctionName=name, StatementId=SCHEDULE_STATEMENT_ID)
            client.add_permission(FunctionName=name, StatementId=SCHEDULE_STATEMENT_ID, **desired)

        self.reconcile(
            f"Lambda function {name}: permission for {spec.names.rule}",
            current,
            desired,
            apply,
            compare=canonical,
            detail=f"{desired['Principal']} may invoke it from {rule_arn} only",
        )

    def _rule_target(self, spec: CompactionSpec, function_arn: str) -> None:
        events = self.clients.events
        name = spec.names.rule
        targets = (
            self._read_or_none(
                lambda: events.list_targets_by_rule(Rule=name)["Targets"],
                "ResourceNotFoundException",
            )
            or []
        )
        desired = [{"Id": TARGET_ID, "Arn": function_arn}]
        current = [{"Id": target["Id"], "Arn": target["Arn"]} for target in targets] or None
        others = [target["Id"] for target in targets if target["Id"] != TARGET_ID]

        def apply() -> None:
            if others:
                events.remove_targets(Rule=name, Ids=others)
            answer = events.put_targets(Rule=name, Targets=desired)
            if answer.get("FailedEntryCount"):
                raise DeployError(
                    f"EventBridge rule {name}: its target was refused: {answer['FailedEntries']}"
                )

        self.reconcile(
            f"EventBridge rule {name}: target",
            current,
            desired,
            apply,
            compare=canonical,
            detail=f"invokes {spec.names.function}",
        )


def _permission_of(statement: dict[str, Any]) -> dict[str, Any]:
    """A statement of the function's policy (as GetPolicy returns it) in AddPermission's
    terms, to compare with what deploy would add."""
    principal = statement.get("Principal")
    service = principal.get("Service") if isinstance(principal, dict) else principal
    condition = (statement.get("Condition") or {}).get("ArnLike") or {}
    return {
        "Action": statement.get("Action"),
        "Principal": service,
        "SourceArn": condition.get("AWS:SourceArn"),
    }
