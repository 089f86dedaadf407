"""deploy: create or update everything the checklist sets up by hand, idempotently.

Each resource is reconciled the same way: read what exists, compare with what should be, then
create, update or leave it, and report which. A re-run with the same options changes nothing
and says so; ``dry_run`` reads but never writes; a run that fails half-way is completed by the
next one.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.backup.description import (
    TableReplacedError,
    check_same_table,
    describe_table,
    is_another_table,
    load_description,
    save_description,
)
from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL
from dynamo_backups.backup.manifest import (
    ensure_manifest,
    folder_layout_for,
    key_types_from_description,
)
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.core.retention import (
    RetentionPolicy,
    lifecycle_rules,
    merge_lifecycle_rules,
)
from dynamo_backups.installer import policies
from dynamo_backups.installer.alerting import (
    ensure_alarms,
    ensure_dashboard,
    ensure_failure_queue,
)
from dynamo_backups.installer.bucket import BucketSteps
from dynamo_backups.installer.functions import (
    CompactionSpec,
    FunctionSpec,
    backup_trigger,
    compaction_specs,
    function_specs,
)
from dynamo_backups.installer.iam import IamSteps
from dynamo_backups.installer.lambdas import FunctionSteps
from dynamo_backups.installer.naming import (
    TABLE_TAG,
    TableResources,
    write_policy_name,
)
from dynamo_backups.installer.package import JOURNAL_ENTRIES, build_zip
from dynamo_backups.installer.plan import (
    Clients,
    DeployError,
    DeployOptions,
    Environment,
    Step,
    retention_given,
    retention_policy,
)
from dynamo_backups.installer.policies import canonical
from dynamo_backups.installer.schedule import ScheduleSteps
from dynamo_backups.jobs.compact import RETENTION_NAME
from dynamo_backups.pipeline.stream_source import NEW_IMAGE_VIEWS


@dataclass
class Deployer(BucketSteps, IamSteps, FunctionSteps, ScheduleSteps):
    clients: Clients
    options: DeployOptions
    package: bytes
    region: str
    wait: Callable[[float], None] = time.sleep
    steps: list[Step] = field(default_factory=list)
    kms_key: str | None = None  # --kms-key, or the key a KMS-encrypted bucket already uses
    layouts: dict[str, str | None] = field(default_factory=dict)  # BACKUP_LAYOUT per table
    retention: RetentionPolicy | None = None  # the journal folders' (None: no journal folder)
    # The compaction functions' code (the stream and compaction handlers); None: built when
    # a journal folder needs it (an item deploy never builds it).
    compaction_package: bytes | None = None

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> list[Step]:
        self.kms_key = self.options.kms_key  # or the bucket's own KMS key, when it has one
        self._check_options()
        self.env = self._environment()
        tables = {table: self._check_table(table) for table in self.options.tables}
        if self.options.replica_table:
            self._check_replica()
        # Every folder's layout, and the triggers it implies, are checked before anything is
        # changed: a refusal half-way would leave policies and functions behind.
        self.layouts = self._check_folders() if self.options.bucket else {}
        if self.options.bucket:
            for table, description in tables.items():
                self._check_backup_target(table, description)
                self._check_same_table(table, description)
        for layout in self.layouts.values():
            backup_trigger(self.options, layout)
        self.retention = self._check_retention()
        write_arn = None
        if self.options.bucket:
            self._bucket()
            if self.retention is not None:
                self._journal_lifecycle(self.retention)
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
        specs = function_specs(
            self.options,
            self.env.partition,
            self.region,
            self.env.account,
            self.layouts,
            self.kms_key,
        )
        compactions = self._compaction_specs()
        for table, description in tables.items():
            stream_arn = self._stream(table, description)
            if self.options.bucket:
                self._write_folder_manifest(table)
                if self.layouts.get(table) == LAYOUT_JOURNAL and self.retention is not None:
                    self._retention_document(table, self.retention)
            readers = [spec for spec in specs if spec.table == table]
            siblings = {spec.names.function for spec in readers}
            for spec in readers:
                self._function_of(spec, stream_arn, write_arn, siblings)
            for compaction in (spec for spec in compactions if spec.table == table):
                self._compaction_of(compaction, self._compaction_zip())
        ensure_dashboard(self, specs)
        return self.steps

    def _compaction_specs(self) -> list[CompactionSpec]:
        """The journal folders' compaction functions (none without a bucket or a journal
        folder: an item deploy is exactly what it was)."""
        if not self.options.bucket or self.retention is None:
            return []
        if self.clients.events is None:
            raise DeployError("the scheduled compaction needs an EventBridge client")
        return compaction_specs(
            self.options,
            self.env.partition,
            self.region,
            self.env.account,
            self._journal_tables(),
            self.retention,
            self.kms_key,
        )

    def _compaction_zip(self) -> bytes:
        if self.compaction_package is None:
            self.compaction_package = build_zip(JOURNAL_ENTRIES, self.options.architecture)
        return self.compaction_package

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
                    f"table {table} does not exist in {self.region} (check the name and --region)",
                    bad_input=True,
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

    def _check_backup_target(self, table: str, described: dict[str, Any]) -> None:
        """Refuse to re-point the table's backup function (one per table and region) at
        another folder: the folder it writes would stop receiving changes without a word
        (unless that folder backs up a table of the name deleted since: nothing to stop)."""
        function = TableResources.of(table).function
        current = self._read_or_none(
            lambda: self.clients.lambda_.get_function_configuration(FunctionName=function),
            "ResourceNotFoundException",
        )
        variables = ((current or {}).get("Environment") or {}).get("Variables") or {}
        if "BACKUP_BUCKET" not in variables:
            return
        bucket, prefix = variables["BACKUP_BUCKET"], variables.get("BACKUP_PREFIX", "")
        if (bucket, prefix) == (self.options.bucket, self.options.prefix):
            return
        if self._backs_up_another_table(bucket, prefix, table, described):
            return
        command = ["dynamo-backups", "teardown", table, "--bucket", bucket]
        command += ["--prefix", prefix] if prefix else []
        raise DeployError(
            f"Lambda function {function} already backs table {table} up into "
            f"{_folder_url(bucket, prefix)} (one backup function per table and region): "
            f"deploying it into {_folder_url(str(self.options.bucket), self.options.prefix)} "
            f"would stop those backups. To move them, first run: {shlex.join(command)} (the "
            "backups stay; it also removes the table's replication function, if any), then "
            "deploy again with every option the table needs, --replica-table included "
            "(nothing was changed)",
            bad_input=True,
        )

    def _backs_up_another_table(
        self, bucket: str, prefix: str, table: str, described: dict[str, Any]
    ) -> bool:
        """Whether the folder ``bucket``/``prefix`` holds the backup of a table of this name
        that is not ``described`` (False when it cannot tell)."""
        layout = TableLayout.of(prefix, table, self.options.key_hash)
        try:
            saved = load_description(self.clients.s3, bucket, layout)
        except ClientError:
            return False
        return is_another_table((saved or {}).get("table") or {}, described)

    def _check_same_table(self, table: str, description: dict[str, Any]) -> None:
        """Refuse a table deleted and made again under its name into the old one's folder
        (``check_same_table``), before anything is changed."""
        layout = TableLayout.of(self.options.prefix, table, self.options.key_hash)
        try:
            check_same_table(self.clients.s3, str(self.options.bucket), layout, description)
        except TableReplacedError as error:
            raise DeployError(str(error), bad_input=True) from None
        except ClientError as error:
            if error_code(error) != "NoSuchBucket":  # made by this deploy: no folder yet
                raise

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

    def _check_folders(self) -> dict[str, str | None]:
        """The layout each table's backup function is told (``BACKUP_LAYOUT``): ``--layout``,
        which a folder recorded in the other layout refuses (``LayoutMismatch``, exit 2), or
        else a journal folder's own, so that a deploy run again without ``--layout`` keeps a
        journal function a journal function. An item folder without ``--layout``: None, the
        item layout installed exactly as before the journal layout existed."""
        writer = BackupWriter(self.clients.s3, self.options.bucket)
        layouts: dict[str, str | None] = {}
        for table in self.options.tables:
            layout = TableLayout.of(self.options.prefix, table, self.options.key_hash)
            recorded = folder_layout_for(writer, layout, self.options.folder_layout)
            layouts[table] = self.options.folder_layout or (
                recorded if recorded != LAYOUT_ITEMS else None
            )
        return layouts

    def _journal_tables(self) -> list[str]:
        return [table for table, layout in self.layouts.items() if layout == LAYOUT_JOURNAL]

    def _check_retention(self) -> RetentionPolicy | None:
        """The journal folders' retention policy, checked before anything is changed
        (``RetentionPolicyError``: exit 2); retention options for no journal folder are
        refused."""
        given = retention_given(self.options)
        if not self._journal_tables():
            if given:
                raise DeployError(
                    f"{', '.join(given)} apply to journal folders (--layout journal): no "
                    "folder of this deploy is one"
                )
            return None
        return retention_policy(self.options)

    def _journal_lifecycle(self, policy: RetentionPolicy) -> None:
        """The journal folders' lifecycle rules added to the bucket's (read, merged by ID,
        written back: a rule of anyone else's is never dropped)."""
        bucket = self.options.bucket
        s3 = self.clients.s3
        existing = (
            self._read_bucket(
                lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                "NoSuchLifecycleConfiguration",
            )
            or []
        )
        ours = [
            rule
            for table in self._journal_tables()
            for rule in lifecycle_rules(self._table_layout(table).items_prefix, policy)
        ]
        ids = {rule["ID"] for rule in ours}
        current = sorted((rule for rule in existing if rule.get("ID") in ids), key=_rule_id)
        desired = merge_lifecycle_rules(existing, ours)
        monthly = f", monthly {policy.monthly_days}" if policy.monthly_days else ""
        self.reconcile(
            f"bucket {bucket}: lifecycle of the journal folders",
            current or None,
            sorted(ours, key=_rule_id),
            lambda: s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": desired}
            ),
            compare=canonical,
            document={"Rules": ours},
            detail=(
                f"changes kept {policy.changes_days} days, bases daily {policy.daily_days}, "
                f"weekly {policy.weekly_days}{monthly}; any moment of the last "
                f"{policy.restorable_days} days restorable"
            ),
        )

    def _retention_document(self, table: str, policy: RetentionPolicy) -> None:
        """The policy beside layout.json: compaction reads it to never start from a base or
        a journal the rules may have begun to expire."""
        key = self._table_layout(table).meta_prefix + RETENTION_NAME
        s3, bucket = self.clients.s3, self.options.bucket
        current = self._read_bucket(
            lambda: json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()),
            "NoSuchKey",
            "404",
        )
        self.reconcile(
            f"s3://{bucket}/{key}",
            current,
            policy.to_dict(),
            lambda: BackupWriter(s3, bucket).put_document(key, policy.to_dict()),
            compare=canonical,
            detail=f"compaction every {policy.compact_every_hours} h",
        )

    def _table_layout(self, table: str) -> TableLayout:
        return TableLayout.of(self.options.prefix, table, self.options.key_hash)

    def _write_folder_manifest(self, table: str) -> None:
        """The layout manifest and the table's description, beside the backup: what a
        Lambda-only deployment would otherwise never write."""
        layout = TableLayout.of(self.options.prefix, table, self.options.key_hash)
        if self.options.dry_run:
            self.step(
                f"s3://{self.options.bucket}/{layout.meta_prefix}",
                "updated",
                self._manifest_detail(table),
            )
            return
        writer = BackupWriter(self.clients.s3, self.options.bucket)
        description = describe_table(self.clients.dynamodb, table)
        ensure_manifest(
            writer,
            layout,
            description["table"]["KeySchema"],
            key_types_from_description(description["table"]),
            self.layouts.get(table),
        )
        save_description(writer, layout, description)
        self.step(
            f"s3://{self.options.bucket}/{layout.meta_prefix}",
            "updated",
            self._manifest_detail(table),
        )

    def _manifest_detail(self, table: str) -> str:
        chosen = self.layouts.get(table)
        return "layout.json and table.json" + (f" ({chosen} layout)" if chosen else "")

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


def _rule_id(rule: dict[str, Any]) -> str:
    return str(rule.get("ID", ""))


def _folder_url(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/"
