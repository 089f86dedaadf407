"""deploy: create or update everything the checklist sets up by hand, idempotently.

Each resource is reconciled the same way: read what exists, compare with what should be, then
create, update or leave it, and report which. A re-run with the same options changes nothing
and says so; ``dry_run`` reads but never writes; a run that fails half-way is completed by the
next one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.errors import ClientError, describe_error, error_code
from dynamo_backups.catalog import ensure_manifest, key_types_from_description
from dynamo_backups.description import describe_table, save_description
from dynamo_backups.installer import policies
from dynamo_backups.installer.alerting import (
    ensure_alarms,
    ensure_dashboard,
    ensure_failure_queue,
)
from dynamo_backups.installer.functions import FunctionSpec, function_specs
from dynamo_backups.installer.monitoring import (
    MAXIMUM_RECORD_AGE_SECONDS,
    MAXIMUM_RETRY_ATTEMPTS,
    trigger_settings,
)
from dynamo_backups.installer.naming import (
    MANAGED_BY_TAG,
    TABLE_TAG,
    TableResources,
    write_policy_name,
)
from dynamo_backups.installer.package import RUNTIME, code_sha256
from dynamo_backups.installer.policies import canonical
from dynamo_backups.layout import TableLayout
from dynamo_backups.s3store import BackupWriter
from dynamo_backups.streams import NEW_IMAGE_VIEWS

STREAM_READER_LIMIT = 2  # DynamoDB Streams: readers per shard before throttling


class DeployError(RuntimeError):
    """Deploy cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class DeployOptions:
    bucket: str | None  # None: replication only
    prefix: str
    tables: tuple[str, ...]
    replica_table: str | None = None
    replica_region: str | None = None
    replica_role_arn: str | None = None
    create_bucket: bool = False
    enable_versioning: bool = False
    kms_key: str | None = None
    protect: bool = False
    admin_roles: tuple[str, ...] = ()
    retain_noncurrent_days: int | None = None
    batch_size: int = 100
    maximum_retry_attempts: int = MAXIMUM_RETRY_ATTEMPTS
    maximum_record_age: int = MAXIMUM_RECORD_AGE_SECONDS
    on_failure: str | None = None  # SQS, SNS or S3 ARN; default: a queue per function
    alarm_topic: str | None = None  # SNS topic the alarms notify
    memory: int = 512
    timeout: int = 120
    architecture: str = "arm64"
    log_retention_days: int = 90
    key_hash: str = "md5"
    dry_run: bool = False


@dataclass
class Step:
    resource: str
    outcome: str  # created, updated, unchanged (or "would create", "would update"), warning
    detail: str = ""
    document: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value not in (None, "")}


@dataclass
class Clients:
    s3: Any
    iam: Any
    lambda_: Any
    dynamodb: Any
    logs: Any
    sts: Any
    replica_dynamodb: Any = None  # a client in the replica table's region, when it differs
    sqs: Any = None
    cloudwatch: Any = None


@dataclass
class Environment:
    account: str
    partition: str
    region: str


@dataclass
class Deployer:
    clients: Clients
    options: DeployOptions
    package: bytes
    region: str
    wait: Callable[[float], None] = time.sleep
    steps: list[Step] = field(default_factory=list)
    kms_key: str | None = None  # --kms-key, or the key a KMS-encrypted bucket already uses

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> list[Step]:
        self.kms_key = self.options.kms_key  # or the bucket's own KMS key, when it has one
        self._check_options()
        self.env = self._environment()
        tables = {table: self._check_table(table) for table in self.options.tables}
        if self.options.replica_table:
            self._check_replica()
        write_arn = None
        if self.options.bucket:
            self._bucket()
            write_arn = self._managed_policy(
                write_policy_name(self.options.bucket, self.options.prefix),
                policies.write_policy(
                    self.env.partition,
                    self.options.bucket,
                    self.options.prefix,
                    self.kms_key,
                ),
                tags={},
            )
        specs = function_specs(self.options, self.env.partition, self.region, self.env.account)
        for table, description in tables.items():
            stream_arn = self._stream(table, description)
            if self.options.bucket:
                self._catalog(table)
            readers = [spec for spec in specs if spec.table == table]
            siblings = {spec.names.function for spec in readers}
            for spec in readers:
                self._function_of(spec, stream_arn, write_arn, siblings)
        ensure_dashboard(self, specs)
        return self.steps

    def step(
        self, resource: str, outcome: str, detail: str = "", document: dict[str, Any] | None = None
    ) -> None:
        if self.options.dry_run and outcome in ("created", "updated"):
            outcome = "would " + outcome.removesuffix("d")
        self.steps.append(Step(resource, outcome, detail, document))

    def changing(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        """A call that changes something: skipped on a dry run."""
        if self.options.dry_run:
            return None
        return call(**kwargs)

    def _check_options(self) -> None:
        if not self.options.bucket and not self.options.replica_table:
            raise DeployError("give --bucket (backups), --replica-table (replication), or both")
        if self.options.protect and not self.options.admin_roles:
            raise DeployError(
                "--protect needs at least one --admin-role: the roles that may "
                "still delete versions or change the bucket's protection"
            )

    def _environment(self) -> Environment:
        identity = self.clients.sts.get_caller_identity()
        return Environment(identity["Account"], identity["Arn"].split(":")[1], self.region)

    # --- tables --------------------------------------------------------------------------------

    def _check_table(self, table: str) -> dict[str, Any]:
        try:
            description = self.clients.dynamodb.describe_table(TableName=table)["Table"]
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise DeployError(
                    f"table {table} does not exist in {self.region} (check the name and --region)"
                ) from None
            raise
        specification = description.get("StreamSpecification") or {}
        view = specification.get("StreamViewType")
        if specification.get("StreamEnabled") and view not in NEW_IMAGE_VIEWS:
            raise DeployError(
                f"table {table} has a stream with view type {view}, whose records carry no new "
                "image: turn it off and on again with NEW_AND_OLD_IMAGES (other readers of that "
                "stream will have to follow the new one)"
            )
        return description

    def _function_of(
        self, spec: FunctionSpec, stream_arn: str | None, write_arn: str | None, siblings: set[str]
    ) -> None:
        """One function with its log group, policies, role and trigger."""
        self._log_group(spec.names)
        tags = {TABLE_TAG: spec.table}
        arns = [self._managed_policy(name, document, tags) for name, document in spec.policies]
        if spec.uses_write_policy and write_arn:
            arns.insert(0, write_arn)
        role_arn = self._role(spec, arns, tags)
        function_arn = self._function(spec, role_arn, tags)
        if spec.creates_queue:
            ensure_failure_queue(self, spec, role_arn)
        self._mapping(spec, stream_arn, function_arn, siblings)
        ensure_alarms(self, spec)

    def _check_replica(self) -> None:
        if len(self.options.tables) != 1:
            raise DeployError("--replica-table keeps one table in step: give exactly one --table")
        if self.options.replica_role_arn:
            return  # the replica is in another account: this one cannot look at it
        client = self.clients.replica_dynamodb or self.clients.dynamodb
        try:
            client.describe_table(TableName=self.options.replica_table)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                where = self.options.replica_region or self.region
                raise DeployError(
                    f"replica table {self.options.replica_table} does not exist in "
                    f"{where}: create it (same keys) and seed it with "
                    "diff-tables --backfill"
                ) from None
            raise

    def _stream(self, table: str, description: dict[str, Any]) -> str | None:
        resource = f"stream of table {table}"
        if (description.get("StreamSpecification") or {}).get("StreamEnabled"):
            arn = description["LatestStreamArn"]
            self.step(resource, "unchanged", arn)
            return arn
        self.changing(
            self.clients.dynamodb.update_table,
            TableName=table,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        if self.options.dry_run:
            self.step(resource, "created", "NEW_AND_OLD_IMAGES")
            return None
        arn = self._wait_for_stream(table)
        self.step(resource, "created", f"NEW_AND_OLD_IMAGES: {arn}")
        return arn

    def _wait_for_stream(self, table: str) -> str:
        for _ in range(120):
            described = self.clients.dynamodb.describe_table(TableName=table)["Table"]
            if described.get("LatestStreamArn") and described.get("TableStatus") == "ACTIVE":
                return described["LatestStreamArn"]
            self.wait(1.0)
        raise DeployError(f"the stream of table {table} did not become active in 2 minutes")

    def _catalog(self, table: str) -> None:
        """The layout manifest and the table's description, beside the backup: what a
        Lambda-only deployment would otherwise never write."""
        layout = TableLayout.of(self.options.prefix, table, self.options.key_hash)
        if self.options.dry_run:
            self.step(
                f"s3://{self.options.bucket}/{layout.meta_prefix}",
                "updated",
                "layout.json and table.json",
            )
            return
        writer = BackupWriter(self.clients.s3, self.options.bucket)
        description = describe_table(self.clients.dynamodb, table)
        ensure_manifest(
            writer,
            layout,
            description["table"]["KeySchema"],
            key_types_from_description(description["table"]),
        )
        save_description(writer, layout, description)
        self.step(
            f"s3://{self.options.bucket}/{layout.meta_prefix}",
            "updated",
            "layout.json and table.json",
        )

    # --- bucket --------------------------------------------------------------------------------

    def _bucket(self) -> None:
        bucket = self.options.bucket
        created = self._bucket_exists()
        # A dry run cannot read the settings of a bucket it has not created.
        self._planned_bucket = created and self.options.dry_run
        self._versioning(created)
        desired_block = dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
            True,
        )
        current_block = self._read_bucket(
            lambda: self.clients.s3.get_public_access_block(Bucket=bucket)[
                "PublicAccessBlockConfiguration"
            ],
            "NoSuchPublicAccessBlockConfiguration",
        )
        self.reconcile(
            f"bucket {bucket}: block public access",
            current_block,
            desired_block,
            lambda: self.clients.s3.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=desired_block
            ),
        )
        self._encryption()
        self._bucket_policy()
        self._lifecycle()

    def _bucket_exists(self) -> bool:
        bucket = self.options.bucket
        try:
            self.clients.s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            code = error_code(error)
            if code in ("403", "AccessDenied"):
                raise DeployError(
                    f"no access to bucket {bucket}: it may belong to another "
                    "account, or your credentials lack s3:ListBucket"
                ) from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
            if not self.options.create_bucket:
                raise DeployError(
                    f"bucket {bucket} does not exist: pass --create-bucket to create it"
                ) from None
            arguments: dict[str, Any] = {"Bucket": bucket}
            if self.region != "us-east-1":
                arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.changing(self.clients.s3.create_bucket, **arguments)
            self.step(f"bucket {bucket}", "created", self.region)
            return True
        location = self.clients.s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        bucket_region = location or "us-east-1"
        if bucket_region != self.region:
            raise DeployError(
                f"bucket {bucket} is in {bucket_region}, the functions would be in "
                f"{self.region}: deploy with --region {bucket_region}, or use a "
                f"bucket in {self.region}"
            )
        self.step(f"bucket {bucket}", "unchanged", bucket_region)
        return False

    def _versioning(self, created: bool) -> None:
        bucket = self.options.bucket
        status = (
            "Off"
            if created
            else (self.clients.s3.get_bucket_versioning(Bucket=bucket).get("Status") or "Off")
        )
        resource = f"bucket {bucket}: versioning"
        if status == "Enabled":
            self.step(resource, "unchanged", "Enabled")
            return
        if not created and not self.options.enable_versioning:
            raise DeployError(
                f"bucket {bucket} has versioning {status}: backups need every version kept. "
                "Pass --enable-versioning to turn it on (it cannot be turned off again, only "
                "suspended)"
            )
        self.changing(
            self.clients.s3.put_bucket_versioning,
            Bucket=bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )
        self.step(resource, "created" if created else "updated", "Enabled")

    def _encryption(self) -> None:
        bucket = self.options.bucket
        rule: dict[str, Any] = {"SSEAlgorithm": "AES256"}
        if self.options.kms_key:
            rule = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": self.options.kms_key}
        desired = {
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": rule,
                    "BucketKeyEnabled": bool(self.options.kms_key),
                }
            ]
        }
        current = self._read_bucket(
            lambda: self.clients.s3.get_bucket_encryption(Bucket=bucket)[
                "ServerSideEncryptionConfiguration"
            ],
            "ServerSideEncryptionConfigurationNotFoundError",
        )
        current_rule = ((current or {}).get("Rules") or [{}])[0].get(
            "ApplyServerSideEncryptionByDefault"
        )
        if not self.options.kms_key and (current_rule or {}).get("SSEAlgorithm") in (
            "aws:kms",
            "aws:kms:dsse",
        ):
            # Never downgrade: a bucket encrypted with KMS stays so, and the functions get
            # the permission that key needs.
            self.kms_key = current_rule.get("KMSMasterKeyID") or None
            self.step(
                f"bucket {bucket}: default encryption",
                "unchanged",
                f"{current_rule['SSEAlgorithm']} kept"
                + (f" (key {self.kms_key})" if self.kms_key else "")
                + ": deploy never replaces KMS encryption; pass --kms-key to change the key",
            )
            return
        self.reconcile(
            f"bucket {bucket}: default encryption",
            current_rule,
            rule,
            lambda: self.clients.s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration=desired
            ),
            detail=rule["SSEAlgorithm"],
        )

    def _bucket_policy(self) -> None:
        bucket = self.options.bucket
        text = self._read_bucket(
            lambda: self.clients.s3.get_bucket_policy(Bucket=bucket)["Policy"], "NoSuchBucketPolicy"
        )
        existing = json.loads(text) if text else None
        desired = policies.merge_bucket_policy(
            existing,
            policies.bucket_statements(
                self.env.partition, bucket, self.options.protect, list(self.options.admin_roles)
            ),
        )
        self.reconcile(
            f"bucket {bucket}: policy",
            existing,
            desired,
            lambda: self.clients.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(desired)),
            compare=canonical,
            document=desired,
            detail="TLS only" + (", history protected" if self.options.protect else ""),
        )

    def _lifecycle(self) -> None:
        if self.options.retain_noncurrent_days is None:
            return
        bucket = self.options.bucket
        rules = (
            self._read_bucket(
                lambda: self.clients.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                "NoSuchLifecycleConfiguration",
            )
            or []
        )
        ours = policies.lifecycle_rule(self.options.prefix, self.options.retain_noncurrent_days)
        current = next((rule for rule in rules if rule.get("ID") == ours["ID"]), None)
        desired = [rule for rule in rules if rule.get("ID") != ours["ID"]] + [ours]
        self.reconcile(
            f"bucket {bucket}: lifecycle",
            current,
            ours,
            lambda: self.clients.s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": desired}
            ),
            compare=canonical,
            detail=f"old versions expire after {self.options.retain_noncurrent_days} days",
        )

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
                Tags=_tags(tags),
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

    def _role(self, spec: FunctionSpec, policy_arns: list[str], tags: dict[str, str]) -> str:
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
                Tags=_tags(tags),
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

    # --- logs, function, trigger ---------------------------------------------------------------

    def _log_group(self, names: TableResources) -> None:
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

    def _function_settings(self, spec: FunctionSpec, role_arn: str) -> dict[str, Any]:
        return {
            "Runtime": RUNTIME,
            "Handler": spec.handler,
            "Role": role_arn,
            "MemorySize": self.options.memory,
            "Timeout": self.options.timeout,
            "Environment": {"Variables": dict(spec.environment)},
        }

    def _function(self, spec: FunctionSpec, role_arn: str, tags: dict[str, str]) -> str:
        names = spec.names
        client = self.clients.lambda_
        settings = self._function_settings(spec, role_arn)
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
                        Code={"ZipFile": self.package},
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
        if current.get("CodeSha256") != code_sha256(self.package) or current.get(
            "Architectures", ["x86_64"]
        ) != [self.options.architecture]:
            self.changing(
                client.update_function_code,
                FunctionName=names.function,
                ZipFile=self.package,
                Architectures=[self.options.architecture],
            )
            if not self.options.dry_run:
                self._wait_for_function(names.function)
            self.step(f"{resource}: code", "updated", code_sha256(self.package))
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
            detail=f"{RUNTIME}, {self.options.memory} MB, {self.options.timeout} s",
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
        return trigger_settings(
            self.options.batch_size,
            self.options.maximum_retry_attempts,
            self.options.maximum_record_age,
            spec.destination_arn,
        )

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

    # --- helpers -------------------------------------------------------------------------------

    def reconcile(
        self,
        resource: str,
        current: Any,
        desired: Any,
        apply: Callable[[], Any],
        compare: Callable[[Any], Any] = lambda value: value,
        document: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        if current is not None and compare(current) == compare(desired):
            self.step(resource, "unchanged", detail, document)
            return
        if not self.options.dry_run:
            apply()
        self.step(resource, "created" if current is None else "updated", detail, document)

    def _read_bucket(self, read: Callable[[], Any], *missing_codes: str) -> Any:
        if getattr(self, "_planned_bucket", False):
            return None
        return self._read_or_none(read, *missing_codes)

    def _read_or_none(self, read: Callable[[], Any], *missing_codes: str) -> Any:
        try:
            return read()
        except ClientError as error:
            if error_code(error) in missing_codes:
                return None
            raise

    def _retry_while_iam_settles(self, call: Callable[[], Any]) -> Any:
        """A new role can take seconds to be usable by Lambda: retry for a while."""
        for attempt in range(12):
            try:
                return call()
            except ClientError as error:
                settling = error_code(error) == "InvalidParameterValueException" and any(
                    text in str(error) for text in ("cannot be assumed", "role", "permission")
                )
                if not settling or attempt == 11:
                    raise
                self.wait(min(2.0 * (attempt + 1), 10.0))
        raise AssertionError("unreachable")


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"Key": key, "Value": value}
        for key, value in sorted({**tags, MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1]}.items())
    ]


def _mapping_detail(settings: dict[str, Any]) -> str:
    detail = (
        f"batch {settings['BatchSize']}, TRIM_HORIZON, ReportBatchItemFailures, bisect, "
        f"{settings['MaximumRetryAttempts']} retries, records up to "
        f"{settings['MaximumRecordAgeInSeconds'] // 3600} h old"
    )
    if "DestinationConfig" in settings:
        detail += f", failures to {settings['DestinationConfig']['OnFailure']['Destination']}"
    return detail


def describe_failure(error: ClientError, what: str) -> str:
    """An AWS refusal, with the hint an operator needs."""
    code = error_code(error)
    hint = ""
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"):
        hint = " (see 'Permissions for deploy' in the README)"
    return f"{what}: {describe_error(error)}{hint}"
