"""deploy's bucket: it exists (or is created), keeps every version, blocks public access, is
encrypted (a KMS-encrypted bucket stays so), allows TLS only, and, when asked, protects its
history and expires old versions.
"""

from __future__ import annotations

import json
from typing import Any

from dynamo_backups.aws.errors import ACCESS_DENIED_CODES, ClientError, error_code
from dynamo_backups.installer import policies
from dynamo_backups.installer.plan import DeployError
from dynamo_backups.installer.policies import canonical


class BucketSteps:
    """The bucket's part of a Deployer."""

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
            if code in ACCESS_DENIED_CODES:
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
