"""The scheduled compaction as deploy installs it, run for real against DynamoDB Local and
SeaweedFS (moto's Lambda runs no code without Docker):

- the journal package (``build_zip(JOURNAL_ENTRIES)``) holds everything the compaction
  handler imports: extracted, with only the zip and boto3 (what the Lambda runtime brings)
  on the path, it compacts a journal folder into a base equal to the table, with the
  environment deploy gives the function, and its ``handler`` answers the next invocation;
- every S3 request a scheduled compaction makes is one its deployed role allows
  (``policies.compact_policy``, the ``s3:prefix`` condition of its listings included)."""

from __future__ import annotations

import fnmatch
import io
import json
import subprocess
import zipfile
from dataclasses import replace
from typing import Any

import pytest

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.core.retention import RetentionPolicy
from dynamo_backups.installer.functions import compaction_specs
from dynamo_backups.installer.package import JOURNAL_ENTRIES, build_zip
from dynamo_backups.jobs.compact_lambda import CompactConfig, run_scheduled
from tests import servers
from tests.deployment import OPTIONS
from tests.installer.test_artifacts import LOCAL_ARCHITECTURE, _boto3_only_python
from tests.jobs.test_journal_compact_restore import (
    base_items,
    base_manifest,
)
from tests.jobs.test_journal_retention import changed_table

ACCOUNT = "123456789012"


def deployed_environment(bucket: str, prefix: str, table: str, **policy: Any) -> dict[str, str]:
    """The environment deploy --layout journal gives the table's compaction function."""
    options = replace(OPTIONS, bucket=bucket, prefix=prefix, tables=(table,))
    (spec,) = compaction_specs(
        options, "aws", servers.REGION, ACCOUNT, [table], RetentionPolicy(**policy)
    )
    return spec.environment


def test_the_journal_package_holds_both_handlers_and_the_item_package_is_unchanged() -> None:
    journal = zipfile.ZipFile(io.BytesIO(build_zip(JOURNAL_ENTRIES))).namelist()
    items = zipfile.ZipFile(io.BytesIO(build_zip())).namelist()
    assert "dynamo_backups/jobs/compact_lambda.py" in journal
    assert "dynamo_backups/jobs/compact.py" in journal
    assert set(items) < set(journal)  # the stream handler's modules, and more
    assert not [name for name in items if "/jobs/" in name]
    assert not [name for name in journal if "/cli/" in name or "/installer/" in name]


PROGRAM = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from dynamo_backups.aws.context import AwsContext
from dynamo_backups.jobs import compact_lambda

class Context:  # what Lambda passes the handler
    def get_remaining_time_in_millis(self):
        return 900_000

config = compact_lambda.CompactConfig.from_environ(os.environ)
aws = AwsContext(connect_timeout=5.0, read_timeout=60.0)
# The handler with a settle of one second: the test's writers are done before it starts.
print(json.dumps(compact_lambda.run_scheduled(config, aws, 900, settle_seconds=1), default=str))
print(json.dumps(compact_lambda.handler({"source": "aws.events"}, Context()), default=str))
loaded = {
    name: module.__file__
    for name, module in sys.modules.items()
    if name.split(".")[0] in ("dynamo_backups", "obstore") and getattr(module, "__file__", None)
}
print(json.dumps(loaded))
"""


@pytest.mark.servers
def test_the_packaged_compaction_handler_compacts_with_only_the_zip_and_boto3(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    seaweedfs: Any,
    bucket: str,
    journal_env: str,
    tmp_path: Any,
) -> None:
    history = changed_table(dynamodb, streams, s3, bucket, journal_env)
    folder = f"{journal_env}/{history.table}"
    function_dir = tmp_path / "function"
    archive = build_zip(JOURNAL_ENTRIES, architecture=LOCAL_ARCHITECTURE)
    zipfile.ZipFile(io.BytesIO(archive)).extractall(function_dir)
    completed = subprocess.run(
        [str(_boto3_only_python()), "-I", "-c", PROGRAM, str(function_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={
            "PATH": "/usr/bin:/bin",
            **deployed_environment(bucket, journal_env, history.table),
            "AWS_ACCESS_KEY_ID": servers.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": servers.SECRET_KEY,
            "AWS_DEFAULT_REGION": servers.REGION,
            "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": "dynamo-backups-compact-test",
        },
    )
    assert completed.returncode == 0, completed.stderr
    summaries = [json.loads(line) for line in completed.stdout.splitlines() if line[:1] == "{"]
    first, second, loaded = summaries[0], summaries[2], summaries[-1]
    assert first["state"] == "complete" and first["why"] == "no base yet", first
    assert second["state"] == "not due" and "is recent" in second["why"], second
    # Every module of ours and the fast transport came from the zip, nothing else.
    assert loaded and all(path.startswith(str(function_dir)) for path in loaded.values()), loaded
    assert "obstore" in loaded
    moment = base_manifest(s3, bucket, folder, _parse(first["moment"])).moment
    assert {item["pk"]["S"]: item for item in base_items(s3, bucket, folder, moment)} == (
        history.state_at(None)
    )


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class S3Requests:
    """Every S3 request of the clients an AwsContext makes: (action, bucket, key or
    prefix), in IAM's terms."""

    ACTIONS = {
        "GetObject": "s3:GetObject",
        "HeadObject": "s3:GetObject",
        "PutObject": "s3:PutObject",
        "ListObjectsV2": "s3:ListBucket",
        "ListObjects": "s3:ListBucket",
    }

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.missing: list[tuple[str, str]] = []  # (bucket, key) a read found absent (404)

    def watch(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.s3.*", self._record)
        client.meta.events.register("after-call.s3.*", self._answered)
        return client

    def _answered(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in ("GetObject", "HeadObject") and http_response.status_code == 404:
            self.missing.append(context["recorded"])

    def _record(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        context["recorded"] = (params.get("Bucket", ""), params.get("Key", ""))
        action = self.ACTIONS.get(model.name, f"unexpected {model.name}")
        if action == "s3:ListBucket":
            self.requests.append((action, params["Bucket"], params.get("Prefix", "")))
            return
        self.requests.append((action, params.get("Bucket", ""), params.get("Key", "")))
        if model.name == "PutObject" and params.get("Tagging"):
            self.requests.append(("s3:PutObjectTagging", params["Bucket"], params["Key"]))


def allowed(document: dict[str, Any], action: str, bucket: str, name: str) -> bool:
    """IAM's answer for one request under ``document`` (Allow statements; the StringLike
    condition on ``s3:prefix`` for a listing)."""
    for statement in document["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        if action not in actions:
            continue
        if action == "s3:ListBucket":
            patterns = statement["Condition"]["StringLike"]["s3:prefix"]
            if f"arn:aws:s3:::{bucket}" in resources and any(
                fnmatch.fnmatchcase(name, pattern) for pattern in patterns
            ):
                return True
        elif any(fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}/{name}", r) for r in resources):
            return True
    return False


@pytest.mark.servers
def test_every_request_of_a_scheduled_compaction_is_one_its_role_allows(
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    journal_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = changed_table(dynamodb, streams, s3, bucket, journal_env)
    recorder = S3Requests()
    original = AwsContext.client
    monkeypatch.setattr(
        AwsContext,
        "client",
        lambda self, service, **kwargs: recorder.watch(original(self, service, **kwargs)),
    )
    monkeypatch.setenv("DYNAMO_BACKUPS_TRANSPORT", "botocore")  # every request via botocore
    config = CompactConfig(bucket, journal_env, history.table, partitions=16, unit_seconds=0)
    first = run_scheduled(config, AwsContext(), 900, settle_seconds=1)
    assert first["state"] == "complete", first
    assert run_scheduled(config, AwsContext(), 900, settle_seconds=1)["state"] == "not due"

    options = replace(OPTIONS, bucket=bucket, prefix=journal_env, tables=(history.table,))
    (spec,) = compaction_specs(
        options, "aws", servers.REGION, ACCOUNT, [history.table], RetentionPolicy()
    )
    document = dict(spec.policies)[spec.names.access_policy]
    refused = [request for request in recorder.requests if not allowed(document, *request)]
    assert refused == []
    # A read of a key that is not there (the first run.json, a base's cutoff.json and
    # manifest.json before they are written) is "none" only if S3 answers 404, which it
    # does only for a role that may list that key: else 403, and the compaction fails.
    assert recorder.missing, "the run read no missing key: the check below checks nothing"
    unlisted = [
        (bucket_name, key)
        for bucket_name, key in recorder.missing
        if not allowed(document, "s3:ListBucket", bucket_name, key)
    ]
    assert unlisted == []
    seen = {action for action, _, _ in recorder.requests}
    assert seen == {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging"}
    # The evaluator refuses what the role does not grant (a check that can fail).
    assert not allowed(document, "s3:GetObject", bucket, f"{journal_env}/{history.table}/k1")
    assert not allowed(document, "s3:ListBucket", bucket, f"{journal_env}/{history.table}/")
    assert not allowed(
        document, "s3:PutObject", bucket, f"{journal_env}/.dynamo-backups/{history.table}/x"
    )
