"""deploy's functions: each one's log group, its code and configuration, and the stream
trigger that feeds it.
"""

from __future__ import annotations

from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.core.wording import counted
from dynamo_backups.installer.functions import CompactionSpec, FunctionSpec
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
    CompactionResources,
    TableResources,
)
from dynamo_backups.installer.package import RUNTIME, code_sha256
from dynamo_backups.installer.plan import DeployError
from dynamo_backups.installer.policies import canonical

STREAM_READER_LIMIT = 2  # DynamoDB Streams: readers per shard before throttling


class FunctionSteps:
    """The Lambda part of a Deployer."""

    # --- logs, function, trigger ---------------------------------------------------------------

    def _log_group(self, names: TableResources | CompactionResources) -> None:
        logs = self.clients.logs
        found = [
            group
            for group in logs.describe_log_groups(logGroupNamePrefix=names.log_group)["logGroups"]
            if group["logGroupName"] == names.log_group
        ]
        resource = f"log group {names.log_group}"
        days = self.options.log_retention_days
        if not found:
            self.changing(
                logs.create_log_group,
                logGroupName=names.log_group,
                tags={MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1]},
            )
            self.changing(
                logs.put_retention_policy, logGroupName=names.log_group, retentionInDays=days
            )
            self.step(resource, "created", f"kept {days} days")
            return
        self.reconcile(
            resource,
            found[0].get("retentionInDays"),
            days,
            lambda: logs.put_retention_policy(logGroupName=names.log_group, retentionInDays=days),
            detail=f"kept {days} days",
        )

    def _function_settings(
        self, spec: FunctionSpec | CompactionSpec, role_arn: str, memory: int, timeout: int
    ) -> dict[str, Any]:
        return {
            "Runtime": RUNTIME,
            "Handler": spec.handler,
            "Role": role_arn,
            "MemorySize": memory,
            "Timeout": timeout,
            "Environment": {"Variables": dict(spec.environment)},
        }

    def _function(
        self,
        spec: FunctionSpec | CompactionSpec,
        role_arn: str,
        tags: dict[str, str],
        package: bytes | None = None,
    ) -> str:
        """The function, its code (``package``, default deploy's) and configuration; a
        compaction function has its own memory and timeout, a backup one deploy's."""
        names = spec.names
        client = self.clients.lambda_
        package = self.package if package is None else package
        memory, timeout = self.options.memory, self.options.timeout
        if isinstance(spec, CompactionSpec):
            memory, timeout = spec.memory, spec.timeout
        settings = self._function_settings(spec, role_arn, memory, timeout)
        resource = f"Lambda function {names.function}"
        try:
            current = client.get_function(FunctionName=names.function)["Configuration"]
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            if not self.options.dry_run:
                self._retry_while_iam_settles(
                    lambda: client.create_function(
                        FunctionName=names.function,
                        Code={"ZipFile": package},
                        Architectures=[self.options.architecture],
                        Tags={**tags, MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1]},
                        Description=spec.description,
                        **settings,
                    )
                )
                self._wait_for_function(names.function)
            self.step(resource, "created", f"{RUNTIME}, {spec.handler}")
            return (
                f"arn:{self.env.partition}:lambda:{self.region}:{self.env.account}:function:"
                f"{names.function}"
            )
        if current.get("CodeSha256") != code_sha256(package) or current.get(
            "Architectures", ["x86_64"]
        ) != [self.options.architecture]:
            self.changing(
                client.update_function_code,
                FunctionName=names.function,
                ZipFile=package,
                Architectures=[self.options.architecture],
            )
            if not self.options.dry_run:
                self._wait_for_function(names.function)
            self.step(f"{resource}: code", "updated", code_sha256(package))
        else:
            self.step(f"{resource}: code", "unchanged", current.get("CodeSha256", ""))
        actual = {name: current.get(name) for name in settings}
        actual["Environment"] = {
            "Variables": (current.get("Environment") or {}).get("Variables", {})
        }

        def update() -> None:
            client.update_function_configuration(FunctionName=names.function, **settings)
            self._wait_for_function(names.function)

        self.reconcile(
            f"{resource}: configuration",
            actual,
            settings,
            update,
            compare=canonical,
            detail=f"{RUNTIME}, {memory} MB, {timeout} s",
        )
        return current["FunctionArn"]

    def _wait_for_function(self, name: str) -> None:
        for _ in range(120):
            state = self.clients.lambda_.get_function_configuration(FunctionName=name)
            if (
                state.get("State", "Active") != "Pending"
                and state.get("LastUpdateStatus", "Successful") != "InProgress"
            ):
                if state.get("State") == "Failed" or state.get("LastUpdateStatus") == "Failed":
                    reason = state.get("StateReason") or state.get("LastUpdateStatusReason")
                    raise DeployError(f"Lambda function {name} failed to update: {reason}")
                return
            self.wait(1.0)
        raise DeployError(f"Lambda function {name} is still updating after 2 minutes")

    def _mapping_settings(self, spec: FunctionSpec) -> dict[str, Any]:
        return spec.trigger(self.options.maximum_retry_attempts, self.options.maximum_record_age)

    def _mapping(
        self, spec: FunctionSpec, stream_arn: str | None, function_arn: str, siblings: set[str]
    ) -> None:
        """The trigger; ``siblings`` are the functions this deploy sets on the same stream."""
        names = spec.names
        client = self.clients.lambda_
        resource = f"trigger {names.table} stream -> {names.function}"
        settings = self._mapping_settings(spec)
        if stream_arn is None:  # a dry run that would turn the stream on
            self.step(resource, "created", _mapping_detail(settings))
            return

        existing = client.list_event_source_mappings(EventSourceArn=stream_arn)[
            "EventSourceMappings"
        ]
        ours = [m for m in existing if m["FunctionArn"].split(":")[6] == names.function]
        others = sum(m["FunctionArn"].split(":")[6] not in siblings for m in existing)
        if others + len(siblings) > STREAM_READER_LIMIT:
            self.step(
                resource,
                "warning",
                f"the stream will have {others + len(siblings)} readers; DynamoDB Streams serve "
                "two readers per shard before throttling them",
            )
        if not ours:
            if not self.options.dry_run:
                self._retry_while_iam_settles(
                    lambda: client.create_event_source_mapping(
                        EventSourceArn=stream_arn,
                        FunctionName=names.function,
                        StartingPosition="TRIM_HORIZON",
                        **settings,
                    )
                )
            self.step(resource, "created", _mapping_detail(settings))
        else:
            current = {name: ours[0].get(name) for name in settings}
            self.reconcile(
                resource,
                current,
                settings,
                lambda: client.update_event_source_mapping(UUID=ours[0]["UUID"], **settings),
                compare=canonical,
                detail=_mapping_detail(settings),
            )


def _mapping_detail(settings: dict[str, Any]) -> str:
    detail = (
        f"batch {settings['BatchSize']}, TRIM_HORIZON, ReportBatchItemFailures, bisect, "
        f"{counted(settings['MaximumRetryAttempts'], 'retry', 'retries')}, records up to "
        f"{settings['MaximumRecordAgeInSeconds'] // 3600} h old"
    )
    if "MaximumBatchingWindowInSeconds" in settings:
        detail += f", batching window {settings['MaximumBatchingWindowInSeconds']} s"
    if "DestinationConfig" in settings:
        detail += f", failures to {settings['DestinationConfig']['OnFailure']['Destination']}"
    return detail
