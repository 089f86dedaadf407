"""What the installer produces, checked by other tools and other environments: the policies
by parliament, the template by cfn-lint and checkov, the Lambda package in a virtual
environment holding only boto3, and test-function against a handler that really runs."""

from __future__ import annotations

import io
import json
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from parliament import analyze_policy_string

from dynamo_backups import handler
from dynamo_backups.installer import policies
from dynamo_backups.installer.package import PackageError, build_zip, check_wheel, code_sha256
from dynamo_backups.installer.plan import Clients, DeployOptions
from dynamo_backups.installer.smoke_test import run_function_test
from dynamo_backups.installer.template import build_template, to_yaml
from tests import servers
from tests.helpers import bodies, create_table, history, lambda_records, object_key

REPO = Path(__file__).resolve().parents[2]
LOCAL_ARCHITECTURE = {"aarch64": "arm64", "x86_64": "x86_64"}[platform.machine()]
ACCOUNT = "123456789012"
KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
RECORDS = tuple(f"Prod/.dynamo-backups/Users/{name}" for name in ("layout.json", "table.json"))


def generated_policies() -> dict[str, dict[str, Any]]:
    return {
        "write": policies.write_policy("aws", "acme-backups", "Prod"),
        "write with KMS": policies.write_policy("aws", "acme-backups", "Prod", KMS_KEY),
        "stream": policies.stream_policy(
            policies.table_streams_arn("aws", "us-east-1", ACCOUNT, "Users"),
            f"arn:aws:sqs:us-east-1:{ACCOUNT}:failures",
        ),
        "read, items layout": policies.folder_read_policy(
            "aws", "acme-backups", "Prod/.dynamo-backups/Users/layout.json", None
        ),
        "read, journal layout, KMS": policies.folder_read_policy(
            "aws",
            "acme-backups",
            "Prod/.dynamo-backups/Users/layout.json",
            "Prod/Users/journal/",
            KMS_KEY,
        ),
        "compaction": policies.compact_policy(
            "aws", "acme-backups", "Prod/Users/", "Prod/.dynamo-backups/Users/", RECORDS
        ),
        "compaction, KMS": policies.compact_policy(
            "aws", "acme-backups", "Prod/Users/", "Prod/.dynamo-backups/Users/", RECORDS, KMS_KEY
        ),
        "logs": policies.logs_policy(
            "aws", "us-east-1", ACCOUNT, "/aws/lambda/dynamo-backups-Users"
        ),
        "bucket": {
            "Version": policies.VERSION,
            "Statement": policies.bucket_statements(
                "aws", "acme-backups", True, [f"arn:aws:iam::{ACCOUNT}:role/BackupAdmin"]
            ),
        },
    }


@pytest.mark.parametrize("name", list(generated_policies()))
def test_generated_policies_pass_parliament(name: str) -> None:
    policy = analyze_policy_string(
        json.dumps(generated_policies()[name]), ignore_private_auditors=True
    )
    assert [(finding.issue, finding.detail) for finding in policy.findings] == []


def test_no_wildcard_beyond_the_tables_streams_and_the_bucket_prefix() -> None:
    resources = [
        resource
        for document in generated_policies().values()
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for resource in (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
    ]
    wildcards = sorted({resource for resource in resources if "*" in resource})
    assert wildcards == [
        "*",  # dynamodb:ListStreams alone: IAM has no resource-level permission for it
        "arn:aws:dynamodb:us-east-1:123456789012:table/Users/stream/*",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/dynamo-backups-Users:*",
        "arn:aws:s3:::acme-backups/Prod/*",
        # compaction's: the table's own records, its runs, the bases and the journal
        "arn:aws:s3:::acme-backups/Prod/.dynamo-backups/Users/*",
        "arn:aws:s3:::acme-backups/Prod/.dynamo-backups/Users/jobs/compact/*",
        "arn:aws:s3:::acme-backups/Prod/Users/bases/*",
        "arn:aws:s3:::acme-backups/Prod/Users/journal/*",  # the journal's own objects
    ]
    (list_streams,) = [
        statement
        for document in generated_policies().values()
        for statement in document["Statement"]
        if statement["Resource"] == "*"
    ]
    assert list_streams["Action"] == ["dynamodb:ListStreams"]


TEMPLATE_OPTIONS = [
    DeployOptions(
        bucket="acme-backups",
        prefix="Prod",
        tables=("Users", "Orders.v2"),
        create_bucket=True,
        protect=True,
        admin_roles=(f"arn:aws:iam::{ACCOUNT}:role/BackupAdmin",),
        retain_noncurrent_days=365,
        on_failure=f"arn:aws:sqs:us-east-1:{ACCOUNT}:failures",
    ),
    DeployOptions(bucket="acme-backups", prefix="", tables=("Users",), kms_key=KMS_KEY),
    DeployOptions(
        bucket="acme-backups",
        prefix="Prod",
        tables=("Users",),
        kms_key=KMS_KEY,
        folder_layout="journal",
        batching_window=120,
        replica_table="UsersReplica",
    ),
    DeployOptions(
        bucket="acme-backups",
        prefix="Prod",
        tables=("Users",),
        create_bucket=True,
        folder_layout="journal",
        keep_changes_days=60,
    ),
]


@pytest.fixture(
    params=range(len(TEMPLATE_OPTIONS)),
    ids=[
        "new-bucket-protected",
        "kms-existing-bucket",
        "journal-kms-with-replica",
        "journal-new-bucket-retention",
    ],
)
def template_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "backups.yaml"
    path.write_text(to_yaml(build_template(TEMPLATE_OPTIONS[request.param])))
    return path


def test_template_passes_cfn_lint(template_file: Path) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    completed = subprocess.run([str(cfn_lint), str(template_file)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_checkov_finding_is_explained_in_the_security_notes(template_file: Path) -> None:
    checkov = _checkov_binary()
    completed = subprocess.run(
        [
            str(checkov),
            "-f",
            str(template_file),
            "--framework",
            "cloudformation",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    report = json.loads(completed.stdout)
    failed = sorted({check["check_id"] for check in report["results"]["failed_checks"]})
    explained = set(
        re.findall(r"^\| (CKV2?_AWS_\d+) \|", (REPO / "docs" / "security.md").read_text(), re.M)
    )
    assert report["summary"]["passed"] > 20
    assert set(failed) <= explained, f"unexplained checkov findings: {set(failed) - explained}"


def _checkov_binary() -> Path:
    """checkov pins versions of boto3 and packaging that clash with the project's, so it lives
    in a virtual environment of its own (scripts/test makes it; made here if missing)."""
    venv = REPO / ".cache" / "checkov-venv"
    binary = venv / "bin" / "checkov"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "checkov==3.3.30"], check=True
        )
    return binary


ELF_MACHINES = {"arm64": 183, "x86_64": 62}  # e_machine of an ELF header


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_package_is_deterministic_and_holds_the_handler_and_its_native_wheel(
    architecture: str,
) -> None:
    archive = build_zip(architecture=architecture)
    assert code_sha256(archive) == code_sha256(build_zip.__wrapped__(architecture=architecture))
    unpacked = zipfile.ZipFile(io.BytesIO(archive))
    names = unpacked.namelist()
    assert "dynamo_backups/handler.py" in names
    assert "dynamo_backups/aws/s3objects.py" in names
    assert not [
        name
        for name in names
        if name.startswith("dynamo_backups/")
        and (
            "/cli/" in name
            or "/installer/" in name
            or name.endswith(("demo.py", "restore.py", "backfill.py"))
        )
    ]
    (native,) = [name for name in names if name.endswith(".so")]
    assert native == "obstore/_obstore.abi3.so"  # abi3: loads on Python 3.13
    header = unpacked.read(native)[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINES[architecture]
    assert unpacked.getinfo(native).external_attr >> 16 == 0o755


def test_wheels_that_would_not_load_on_the_runtime_are_refused(tmp_path: Path) -> None:
    good = "obstore-0.12.1-cp311-abi3-manylinux_2_24_aarch64.whl"
    assert check_wheel(Path(good), "arm64").abi == "abi3"
    assert check_wheel(
        Path("obstore-0.12.1-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        "x86_64",
    )
    refused = {
        good: "x86_64",  # the other architecture
        "obstore-0.12.1-cp311-abi3-musllinux_1_2_aarch64.whl": "arm64",  # not glibc
        "obstore-0.12.1-cp311-abi3-manylinux_2_39_aarch64.whl": "arm64",  # newer glibc
        "obstore-0.12.1-cp312-cp312-manylinux_2_17_x86_64.whl": "x86_64",  # other Python
        "obstore-0.12.1-cp314-abi3-manylinux_2_17_x86_64.whl": "x86_64",  # needs 3.14
    }
    for name, architecture in refused.items():
        with pytest.raises(PackageError):
            check_wheel(Path(name), architecture)
    with pytest.raises(PackageError, match="no obstore=="):
        build_zip.__wrapped__(architecture="x86_64", wheel_dir=tmp_path)


def _boto3_only_python() -> Path:
    """A virtual environment holding boto3 and nothing else (made once, kept in .cache/)."""
    venv = REPO / ".cache" / "boto3-only-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "boto3"], check=True)
    return python


@pytest.mark.servers
def test_package_backs_up_a_real_batch_with_only_boto3(
    dynamodb: Any, streams: Any, seaweedfs: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    function_dir = tmp_path / "function"
    zipfile.ZipFile(io.BytesIO(build_zip(architecture=LOCAL_ARCHITECTURE))).extractall(function_dir)
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "0.1"}})
    dynamodb.put_item(
        TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "0.2"}, "b": {"B": b"\x01"}}
    )
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"Records": lambda_records(dynamodb, streams, table)}))
    python = _boto3_only_python()
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not {package["name"].lower() for package in json.loads(installed.stdout)} & {
        "click",
        "rich",
        "moto",
        "dynamo-backups",
        "orjson",  # json_text's fallback, the standard library, is what runs
    }
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from dynamo_backups import handler; "
        "print(json.dumps(handler.backup(json.load(open(sys.argv[2])), None))); "
        "print(sys.modules['obstore'].__file__)"
    )
    completed = subprocess.run(
        [str(python), "-I", "-c", program, str(function_dir), str(event)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "BACKUP_BUCKET": bucket,
            "BACKUP_PREFIX": prefix,
            "AWS_ACCESS_KEY_ID": servers.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": servers.SECRET_KEY,
            "AWS_DEFAULT_REGION": servers.REGION,
            "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": "dynamo-backups-test",
        },
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[-1].startswith(str(function_dir))  # the fast transport, from the zip
    assert json.loads(lines[-2]) == {"batchItemFailures": []}
    assert json.loads(lines[0])["applied"] == {"INSERT": 1, "MODIFY": 1, "REMOVE": 1}
    assert bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "a"}}))) == [
        "DM",
        None,
        {"pk": {"S": "a"}, "n": {"N": "0.2"}, "b": {"B": "AQ=="}},
        {"pk": {"S": "a"}, "n": {"N": "0.1"}},
    ]


class SimulatedLambda:
    """Lambda's Invoke, running the real handler in this process (Lambda itself needs Docker
    in moto): what test-function sees when the deployed function works."""

    def __init__(self, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.environment = environment
        self.monkeypatch = monkeypatch

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:
        return {"FunctionName": FunctionName, "Environment": {"Variables": self.environment}}

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        for name, value in self.environment.items():
            self.monkeypatch.setenv(name, value)
        answer = handler.backup(json.loads(Payload), None)
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


@pytest.mark.servers
def test_test_function_confirms_the_sample_objects(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    fake = SimulatedLambda({"BACKUP_BUCKET": bucket, "BACKUP_PREFIX": prefix}, monkeypatch)
    clients = Clients(s3=s3, iam=None, lambda_=fake, dynamodb=None, logs=None, sts=None)
    result = run_function_test(clients, "Users")
    assert result.passed
    assert result.response == {"batchItemFailures": []}
    assert result.folder == f"s3://{bucket}/{prefix}/ExampleTableWithStream/"
    assert (result.versions_found, result.delete_markers_found) == (3, 1)
