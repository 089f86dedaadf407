"""Every command with wrong, malformed and surprising input, as a new user types it.

Each case runs the command in process (click's CliRunner, the same code path as the console
script) against the local servers and checks what issue 20 asks of every mistake: no
traceback, the documented exit code (2: bad arguments or input), one ``error:`` line that
names the input, and nothing written: the backup bucket's object versions and the list of
tables are the same before and after.

The table grows with the command line: ``test_every_option_is_covered`` fails when a command
gains an option that neither has a case here, nor a generated one (a number out of range, a
choice that is not one), nor a reason in EXEMPT.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from dynamo_backups.cli.restore import restore_backup_main
from dynamo_backups.core.layout import format_time
from tests.conftest import unique_table_name
from tests.helpers import create_table

pytestmark = pytest.mark.servers


@dataclass(frozen=True)
class Case:
    """A command line (``{name}`` placeholders filled from the world), the exit code it must
    end with, and a text its error must contain (the input it names)."""

    args: str
    names: str
    exit_code: int = 2

    @property
    def id(self) -> str:
        return self.args[:70]


# {bucket}: the versioned backup bucket; {unversioned}: a bucket without versioning;
# {folder}: Prod/<table>, a backed-up folder; {table}: the backed-up table; {new}: a table
# name that does not exist; {other_key}: a table with another key; {files}: a folder of
# input files (empty.jsonl, bad.jsonl, keys.jsonl, not-a-report.jsonl, wrong-key.jsonl).
CASES = [
    # times
    Case("restore {bucket} {folder} {new} --at 1e20", "--at"),
    Case("restore {bucket} {folder} {new} --at 99999999999999999", "--at"),
    Case("restore {bucket} {folder} {new} --at 2099-01-01T00:00:00Z", "in the future"),
    Case("restore {bucket} {folder} {new} --at 2026-11-27T12:00:00", "has no zone"),
    Case("restore {bucket} {folder} {new} --at yesterday", "--at"),
    Case("snapshot {bucket} {folder} --to s3://{bucket}/x --at 1e20", "--at"),
    # folders, prefixes and buckets
    Case("restore {bucket} Prod {new}", "no backup at s3://{bucket}/Prod/"),
    Case("restore {bucket} Prod/Nope {new}", "no backup at s3://{bucket}/Prod/Nope/"),
    Case("restore {bucket} ../{table} {new}", "'..'"),
    Case("restore {bucket} s3://other-bucket/{folder} {new}", "bucket other-bucket"),
    Case("restore no-such-bucket-{uid} {folder} {new}", "no bucket no-such-bucket-{uid}"),
    Case("compact no-such-bucket-{uid} {folder}", "no bucket no-such-bucket-{uid}"),
    Case("compact {bucket} Prod/Nope", "no backup at s3://{bucket}/Prod/Nope/"),
    Case("restore s3://{bucket}/Prod {folder} {new}", "SOURCE_BUCKET"),
    Case("restore {bucket} {folder} ab", "'ab' is not a DynamoDB table name"),
    Case("restore {bucket} {folder} {new} --key-schema id", "--key-schema"),
    Case("restore {bucket} {folder} {new} --key-schema id:S", "--key-schema id:S does not apply"),
    Case("restore {bucket} {folder} {new} --staging s3://{bucket}/s", "--staging"),
    Case("restore {bucket} {folder} {new} --native-import --staging foo", "--staging"),
    Case("restore {bucket} {folder} {new} --keys {files}/empty.jsonl", "holds no key"),
    Case("restore {bucket} {folder} {new} --keys {files}/bad.jsonl", "bad.jsonl line 1"),
    Case("restore {bucket} {folder} {new} --keys {files}/wrong-key.jsonl", "--keys"),
    Case("restore {bucket} {folder} {new} --keys {files}/missing.jsonl", "no such file"),
    Case("restore {bucket} {folder} {new} --keys {files}", "is a folder"),
    Case("restore {bucket} {folder} {new} --unwritten-keys /no/such/dir/k", "/no/such/dir"),
    Case("restore {bucket} {folder} {new} --delete-absent", "--into-existing"),
    Case("restore {bucket} {folder} {table}", "already has items"),
    Case("restore {bucket} {folder} {other_key} --into-existing", "is keyed by"),
    Case("snapshot {bucket} {folder} --to s3://no-such-bucket-{uid}/x", "no bucket"),
    Case("backfill {table} --bucket {bucket} --from-export s3://{bucket}/none/", "no export at"),
    Case("diff-tables {table} {table}", "both the primary and the replica"),
    Case("restore {bucket} {folder} {new} --native-import --dry-run", "--native-import"),
    Case("snapshot {bucket} {folder} --to foo", "--to"),
    Case("snapshot {bucket} {folder} --to s3://{bucket}/{folder}/x", "inside the backup"),
    Case("snapshot {bucket} Prod/Nope --to s3://{bucket}/x", "no backup at"),
    Case("adopt {bucket} Prod/Nope", "no backup at"),
    Case("adopt {bucket} {folder} --key-schema id:S", "--key-schema id:S does not apply"),
    Case("adopt {bucket} {folder} --key-schema id", "--key-schema"),
    Case('history {table} \'{{"id": "a"}}\' --bucket {bucket} --prefix Nope', "no backup at"),
    Case("history {table} notjson --bucket {bucket} --prefix Prod", "not valid JSON"),
    Case('history {table} \'{{"id": "a"}}\' --bucket s3://{bucket}/Prod', "--bucket"),
    Case('history {table} \'{{"id": "a"}}\' --bucket {bucket} --prefix /./', "'.'"),
    Case("verify {table} --bucket {bucket} --prefix Nope", "no backup at"),
    Case("verify {new} --bucket {bucket} --prefix Prod", "{new}"),
    Case("verify {table} --bucket {unversioned} --prefix Prod --repair", "no backup at", 2),
    # backfill
    Case("backfill {table} --bucket {bucket} --prefix ..", "--prefix"),
    Case("backfill {table} --bucket {bucket} --prefix a//b", "--prefix"),
    Case("backfill {table} --bucket {bucket} --prefix Prod/.dynamo-backups", ".dynamo-backups"),
    Case("backfill {table} --bucket {bucket} --from-export foo", "--from-export"),
    Case("backfill {table} --bucket {unversioned}", "versioning", 1),
    Case("backfill --table-prefix zzz-none --bucket {bucket}", "--table-prefix"),
    Case("backfill {new} --bucket {bucket}", "{new}"),
    Case("backfill --bucket {bucket}", "name the tables"),
    Case("backfill {table} --bucket Bad/Bucket", "--bucket"),
    Case("backfill {table} --bucket {bucket} --segment 1", "--total-segments"),
    Case("backfill {table} --bucket {bucket} --segment 4 --total-segments 4", "--segment"),
    # stream and replication
    Case("stream {table} --bucket {bucket} --replica-table {new} --once", "--replica-table"),
    Case("stream {table} --replica-table {other_key} --once", "another key"),
    Case("stream {table} --replica-table {table} --once", "source table itself"),
    Case("stream {new} --bucket {bucket} --once", "{new}"),
    Case("stream {table} --once", "--bucket"),
    Case("stream {table} --replica-table {replica} --prefix P --once", "--prefix"),
    Case(
        "restore {bucket} {folder} {replica} --into-existing --billing-mode PROVISIONED",
        "exists already",
    ),
    Case("stream {table} --bucket {bucket} --prefix '../x' --once", "--prefix"),
    Case("stream {table} --bucket {unversioned} --once", "versioning", 1),
    Case("diff-tables {table} {new}", "{new}"),
    Case("diff-tables {table} {other_key}", "different keys"),
    Case("diff-tables {table} EU/{table}", "REGION/TABLE"),
    Case("diff-tables {table} {table} --repair --backfill", "--backfill"),
    Case("diff-record {table} {replica} notjson", "not valid JSON"),
    Case('replicate-record {table} {new} \'{{"id": "a"}}\'', "{new}"),
    # replay
    Case("replay {table} --file {files}/bad.jsonl --bucket {bucket} --prefix Prod", "bad.jsonl"),
    Case(
        "replay {table} --file {files}/not-a-report.jsonl --bucket {bucket} --prefix Prod",
        "not-a-report.jsonl report 1",
    ),
    Case("replay {table} --file {files}/empty.jsonl --bucket {bucket} --prefix Prod", "no report"),
    Case("replay {table} --file {files}/none.jsonl --bucket {bucket}", "no such file"),
    Case("replay {table} --key-hash foo --bucket {bucket} --prefix Prod", "--key-hash"),
    Case("replay {table} --queue q --file {files}/bad.jsonl --bucket {bucket}", "--queue"),
    Case(
        "replay {table} --file {files}/report.jsonl --bucket {bucket} --prefix Nope",
        "no backup at",
    ),
    # installer
    Case("template --table {table} --bucket {bucket} --protect", "--create-bucket"),
    Case("template --table {table} --bucket {bucket} --retain-noncurrent-days 3", "--create"),
    Case("template --table {table} --bucket {bucket} --enable-versioning", "--enable-versioning"),
    Case("template --table {table} --bucket {bucket} --table-prefix x", "--table-prefix"),
    Case("template --table {table} --bucket {bucket} --create-bucket --protect", "--admin-role"),
    Case("template --table {table} --bucket Bad_Bucket --create-bucket", "Bad_Bucket"),
    Case("template --table ab --bucket {bucket}", "--table"),
    Case("template --table {table}", "--bucket"),
    Case("template --table {table} --bucket {bucket} --admin-role x", "--admin-role"),
    Case("template --table {table} --bucket {bucket} --on-failure arn:aws:x", "--on-failure"),
    Case(
        "template --table {table} --replica-table {other_key} --table t2-table",
        "--replica-table",
    ),
    Case("deploy --table {table} --bucket {bucket} --protect --dry-run", "--admin-role"),
    Case("deploy --table {table} --bucket Bad_Bucket --create-bucket --dry-run", "Bad_Bucket"),
    Case("deploy --table-prefix zzz-none --bucket {bucket} --dry-run", "--table-prefix"),
    Case("deploy --table ab --bucket {bucket} --dry-run", "--table"),
    Case("package --out /no/such/dir/handler.zip", "/no/such/dir"),
    Case("package --out {files}", "is a folder"),
    Case("package --wheel-dir /no/such/dir --out {files}/h.zip", "--wheel-dir"),
    Case("teardown {new} --dry-run", "no table {new}"),
    Case("teardown {table} --bucket no-such-bucket-{uid} --dry-run", "no bucket"),
    Case("teardown {table} --delete-bucket --dry-run", "--delete-bucket"),
    Case("status {new}", "no table {new}"),
    Case("status --table-prefix zzz-none", "--table-prefix"),
    Case("status", "name the tables"),
    Case("test-function ab", "'ab'"),
    Case("demo --region eu-west-1", "--region"),
    Case("demo --endpoint-url http://127.0.0.1:1", "--endpoint-url"),
    Case("demo --profile p", "--profile"),
    # found by review: odd values, conflicting options, the wrong place for a file
    Case("restore {bucket} {folder} {new} --at -5", "before 1970"),
    Case("restore {bucket} {folder} {new} --at 0 --dry-run", "its earliest change: 20"),
    Case("--region 'us east 1' verify {table} --bucket {bucket} --prefix Prod", "--region"),
    Case("verify {table} --bucket {bucket} --prefix Prod --region ''", "--region"),
    Case("--endpoint-url not-a-url verify {table} --bucket {bucket}", "--endpoint-url"),
    Case("verify {table} --bucket {bucket} --endpoint-url ftp://127.0.0.1:1", "--endpoint-url"),
    Case("backfill {table} {table} --bucket {bucket} --prefix Prod", "named twice"),
    Case("stream {table} {table} --bucket {bucket} --prefix Prod --once", "named twice"),
    Case("template --table {table} --table {table} --bucket {bucket}", "named twice"),
    Case(
        "stream {table} --bucket {bucket} --prefix Prod --once --replica-region eu-west-1",
        "--replica-region",
    ),
    Case("stream {table} --replica-table {replica} --replica-region 'eu west'", "--replica-r"),
    Case("stream {table} --bucket {bucket} --once --consumer-name a/../b", "--consumer-name"),
    Case("backfill {table} --bucket {bucket} --segments 5 --segment 1 --total-segments 4", "--seg"),
    Case("diff-tables {table} {replica} --segments 2 --segment 0 --total-segments 4", "--seg"),
    Case("backfill {table} --bucket {bucket} --spark-master 'local[2]'", "--spark-master"),
    Case("backfill {table} --bucket {bucket} --engine spark --spark-master x://y", "--spark-m"),
    Case("diff-tables {table} us-east-1/{table}", "both the primary and the replica"),
    Case('history {table} \'{{"PK": "k1"}}\' --bucket {bucket} --prefix Prod', "'PK' is not"),
    Case("snapshot {bucket} {folder} --to s3://{bucket}/Prod/exports", "backups' prefix"),
    Case("snapshot {bucket} {folder} --to s3://{bucket}/Prod", "backups' prefix"),
    Case("snapshot {bucket} {folder} --to s3://{bucket}/full", "already holds files"),
    Case("package --out /proc/handler.zip", "/proc/handler.zip", 1),
    Case("stream {table} --bucket {bucket} --once --checkpoint-dir /proc/no", "--checkpoint-dir"),
    Case("teardown {table} --bucket {unversioned} --delete-bucket", "not confirmed (no answer)", 1),
    Case("template --table {table} --bucket {bucket} --log-retention-days 2", "--log-retention"),
    Case("deploy --table {table} --bucket {bucket} --dry-run --maximum-record-age 30", "60"),
    # global
    Case("restore {bucket} {folder}", "TABLE"),
    Case("no-such-command", "no-such-command"),
    # empty values are mistakes, not "not given" (every option: empty_cases below)
    Case("restore {bucket} {folder} ''", "TABLE: '' is empty"),
    Case("restore {bucket} '' {new}", "SOURCE_PREFIX: '' is empty"),
    Case("restore '' {folder} {new}", "SOURCE_BUCKET: '' is empty"),
    Case("backfill '' --bucket {bucket}", "TABLES: '' is empty"),
    Case("backfill --table-prefix '' --bucket {bucket}", "--table-prefix: '' is empty"),
    Case("restore {bucket} {folder} {new} --at ' '", "--at: ' ' is empty"),
    Case("--profile '' verify {table} --bucket {bucket}", "--profile: '' is empty"),
    Case("--region '' verify {table} --bucket {bucket}", "--region: '' is empty"),
    Case("template --table {table} --bucket {bucket} --kms-key ''", "--kms-key"),
    Case("stream {table} --bucket {bucket} --once --checkpoint-dir ''", "--checkpoint-dir"),
    # an empty prefix is a value: the bucket's top level (docs/layout.md)
    Case("verify {table} --bucket {bucket} --prefix ''", "no backup at s3://{bucket}/{table}/"),
    # a table whose changes cannot reach a backup: the user's to fix
    Case("stream {replica} --bucket {bucket} --prefix Prod --once", "has no stream"),
    Case("stream {replica} --replica-table {table} --once", "{replica} has no stream"),
]

# Options no case here needs to exercise, with the reason.
EXEMPT = {
    "--help": "click's own",
    "--region": "global: any text is a region name to the SDK",
    "--profile": "global: checked by the SDK (ProfileNotFound: exit 2)",
    "--endpoint-url": "global",
    "-v": "global: logging only",
    "-q": "global: logging only",
    "--quiet": "global: logging only",
    "--verbose": "global: logging only",
    "--output": "global: a Choice (generated case)",
    "--dry-run": "a flag",
    "--into-existing": "a flag",
    "--skip-invalid": "a flag",
    "--native-import": "a flag (cases above)",
    "--no-ttl": "a flag",
    "--resume": "a flag",
    "--once": "a flag",
    "--repair": "a flag",
    "--history": "a flag (its refusals: tests/jobs/test_convert_history.py)",
    "--backfill": "a flag",
    "--rewrite": "a flag",
    "--create-bucket": "a flag",
    "--allow-second-writer": "a flag",
    "--allow-incomplete-backfill": "a flag",
    "--yes": "a flag",
    "--kms-key": "a KMS key id or ARN or alias: AWS checks it",
    "--alarm-topic": "an SNS ARN: AWS checks it",
    "--replica-role-arn": "AWS checks it when assuming it",
    "--checkpoint-dir": "created when missing",
    "--queue": "a queue name or URL: looked up (no queue: says so)",
    "--dlq-arn": "hidden old name of --on-failure",
    "--prefix": "cases above (folders)",
}


def every_option() -> dict[str, set[str]]:
    """Every option of every command: command -> its option names."""
    found: dict[str, set[str]] = {}
    for name, command in main.commands.items():
        found[name] = {
            opt for param in command.params if isinstance(param, click.Option) for opt in param.opts
        }
    found[""] = {opt for param in main.params for opt in getattr(param, "opts", [])}
    return found


def generated_cases() -> list[Case]:
    """A value out of range for every number option, and one that is no choice for every
    choice option, of every command."""
    cases = []
    for name, command in main.commands.items():
        base = BASE.get(name)
        if base is None:
            continue
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.is_flag or param.count:
                continue
            kind = param.type
            bad = None
            if isinstance(kind, click.IntRange | click.FloatRange) and kind.min is not None:
                bad = str(kind.min - 1)
            elif isinstance(kind, click.Choice):
                bad = "no-such-choice"
            if bad is not None:
                cases.append(Case(f"{name} {base} {param.opts[0]} {bad}", param.opts[0]))
    return cases


def empty_cases() -> list[Case]:
    """An empty value for every option that takes one, of every command: exit 2 naming the
    option, unless its type says empty means something (a prefix)."""
    cases = []
    for name, command in main.commands.items():
        base = BASE.get(name)
        if base is None:
            continue
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.is_flag or param.count:
                continue
            if getattr(param.type, "empty_allowed", False):
                continue
            cases.append(Case(f"{name} {base} {param.opts[0]} ''", f"{param.opts[0]}: '' is empty"))
    return cases


# A complete command line per command, that generated cases add one bad option to.
BASE = {
    "restore": "{bucket} {folder} {new}",
    "snapshot": "{bucket} {folder} --to s3://{bucket}/exports/x",
    "adopt": "{bucket} {folder}",
    "backfill": "{table} --bucket {bucket} --prefix Prod",
    "verify": "{table} --bucket {bucket} --prefix Prod",
    "history": '{table} \'{{"id": "a"}}\' --bucket {bucket} --prefix Prod',
    "stream": "{table} --bucket {bucket} --prefix Prod --once",
    "replay": "{table} --file {files}/report.jsonl --bucket {bucket} --prefix Prod",
    "diff-tables": "{table} {table}-copy",
    "deploy": "--table {table} --bucket {bucket} --dry-run",
    "template": "--table {table} --bucket {bucket}",
    "package": "--out {files}/handler.zip",
}


@pytest.fixture(scope="module")
def world(
    dynamodb_local: Any,
    seaweedfs: Any,
    moto_session: str,
    dynamodb: Any,
    s3: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """A backed-up table in a bucket of its own, an unversioned bucket, a table with another
    key, and input files; the CLI pointed at the local servers (moto for the rest)."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("LAMBDA", "IAM", "STS", "SQS", "CLOUDWATCH", "LOGS"):
            patch.setenv(f"AWS_ENDPOINT_URL_{variable}", moto_session)
        patch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
        patch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
        uid = uuid.uuid4().hex[:8]
        bucket, unversioned = f"bad-inputs-{uid}", f"bad-inputs-unversioned-{uid}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.create_bucket(Bucket=unversioned)
        table = create_table(dynamodb)
        for number in range(3):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{number}"}})
        replica = create_table(dynamodb, view_type=None)
        other_key = unique_table_name("other-key")
        dynamodb.create_table(
            TableName=other_key,
            KeySchema=[{"AttributeName": "other", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "other", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
        )
        result = run(f"backfill {table} --bucket {bucket} --prefix Prod -q")
        assert result.exit_code == 0, result.output
        s3.put_object(Bucket=bucket, Key="full/data/part-0.json.gz", Body=b"x")
        files = tmp_path_factory.mktemp("inputs")
        (files / "empty.jsonl").write_text("\n")
        (files / "bad.jsonl").write_text("not json\n")
        (files / "keys.jsonl").write_text('{"pk": "k1"}\n')
        (files / "wrong-key.jsonl").write_text('{"nope": "k1"}\n')
        (files / "not-a-report.jsonl").write_text('{"x": 1}\n')
        (files / "report.jsonl").write_text(json.dumps(_report(table)) + "\n")
        yield {
            "bucket": bucket,
            "unversioned": unversioned,
            "table": table,
            "folder": f"Prod/{table}",
            "new": unique_table_name("absent"),
            "other_key": other_key,
            "replica": replica,
            "files": str(files),
            "uid": uid,
            "s3": s3,
            "dynamodb": dynamodb,
        }


def _report(table: str) -> dict[str, Any]:
    """A report of records given up on, as Lambda writes it to the failure destination."""
    arn = f"arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2026-01-01T00:00:00.000"
    return {
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "DDBStreamBatchInfo": {
            "shardId": "shardId-00000001",
            "startSequenceNumber": "100",
            "endSequenceNumber": "200",
            "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
            "approximateArrivalOfLastRecord": "2026-01-01T00:00:01Z",
            "batchSize": 1,
            "streamArn": arn,
        },
    }


def run(command: str) -> Any:
    import shlex

    return CliRunner().invoke(main, shlex.split(command))


def state(world: dict[str, Any]) -> tuple[Any, ...]:
    """What a command could have written: every object version and delete marker in both
    buckets, and the list of tables."""
    listing = []
    for bucket in (world["bucket"], world["unversioned"]):
        pages = world["s3"].get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            for entry in (*page.get("Versions", []), *page.get("DeleteMarkers", [])):
                listing.append((bucket, entry["Key"], entry["VersionId"]))
    tables = []
    for page in world["dynamodb"].get_paginator("list_tables").paginate():
        tables.extend(page["TableNames"])
    return sorted(listing), sorted(tables)


def check(case: Case, world: dict[str, Any]) -> None:
    values = {name: value for name, value in world.items() if isinstance(value, str)}
    before = state(world)
    result = run(case.args.format(**values))
    after = state(world)
    shown = result.output
    assert "Traceback" not in shown and not (
        result.exception and not isinstance(result.exception, SystemExit)
    ), f"{case.args}: {shown}\n{result.exception!r}"
    assert result.exit_code == case.exit_code, f"{case.args}: exit {result.exit_code}\n{shown}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors, f"{case.args}: no error: line\n{shown}"
    assert case.names.format(**values) in result.stderr, f"{case.args}: {result.stderr}"
    assert before == after, f"{case.args} wrote something"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input(case: Case, world: dict[str, Any]) -> None:
    check(case, world)


@pytest.mark.parametrize("case", generated_cases(), ids=lambda case: case.id)
def test_out_of_range_or_no_choice(case: Case, world: dict[str, Any]) -> None:
    check(case, world)


@pytest.mark.parametrize("case", empty_cases(), ids=lambda case: case.id)
def test_empty_value(case: Case, world: dict[str, Any]) -> None:
    check(case, world)


def test_every_option_is_covered() -> None:
    """A new option needs a case above, a generated one, or a reason in EXEMPT."""
    mentioned = " ".join(case.args for case in [*CASES, *generated_cases()]).split()
    missing = []
    for command, options in every_option().items():
        for option in sorted(options):
            if option.startswith("--") or option in ("-v", "-q", "-h"):
                if option in EXEMPT or option in mentioned or option in ("-h", "--version"):
                    continue
                if any(alias in mentioned for alias in _aliases(command, option)):
                    continue
                missing.append(f"{command or 'dynamo-backups'} {option}")
    assert not missing, f"options without a bad-input case or an exemption: {missing}"


def _aliases(command: str, option: str) -> list[str]:
    group = main.commands.get(command, main)
    for param in group.params:
        if option in getattr(param, "opts", []):
            return [*param.opts, *param.secondary_opts]
    return []


def test_output_json_prints_an_error_object(world: dict[str, Any]) -> None:
    result = run(f"--output json restore {world['bucket']} Prod/Nope {world['new']}")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "no backup at" in document["error"]


def test_epoch_milliseconds_are_read_and_said(world: dict[str, Any]) -> None:
    now = int(time.time()) * 1000
    result = run(f"restore {world['bucket']} {world['folder']} {world['new']} --dry-run --at {now}")
    assert result.exit_code == 0, result.output
    moment = format_time(datetime.fromtimestamp(now / 1000, UTC))
    assert f"--at {now} read as epoch milliseconds: {moment}" in result.stderr


def test_s3_forms_are_accepted(world: dict[str, Any]) -> None:
    bucket, folder = world["bucket"], world["folder"]
    result = run(f"restore s3://{bucket} s3://{bucket}/{folder} {world['new']} --dry-run -q")
    assert result.exit_code == 0, result.output
    result = run(
        f'history {world["table"]} \'{{"pk": "k1"}}\' --bucket s3://{bucket} '
        f"--prefix s3://{bucket}/Prod"
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("moment", ["2020-01-01T00:00:00Z", "0"])
def test_restore_at_before_the_first_backup_is_refused(world: dict[str, Any], moment: str) -> None:
    """A moment before the folder's first backup (epoch 0 among them) is exit 2, naming the
    earliest change there is, and leaves no empty table behind."""
    target = unique_table_name("early")
    tables_before = state(world)[1]
    result = run(f"restore {world['bucket']} {world['folder']} {target} --at {moment} -q")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--at: the backup held no item at" in errors[0], result.stderr
    assert "before the first backup of" in errors[0] and "its earliest change: 20" in errors[0]
    assert "was deleted again" in errors[0]
    assert state(world)[1] == tables_before


def test_snapshot_at_before_the_first_backup_is_refused(world: dict[str, Any]) -> None:
    """A snapshot --at 0 was exit 0 with an empty export: now exit 2, naming the earliest
    change, as restore says it."""
    destination = f"s3://{world['bucket']}/early-{uuid.uuid4().hex[:8]}"
    result = run(f"snapshot {world['bucket']} {world['folder']} --to {destination} --at 0 -q")
    assert result.exit_code == 2, result.output
    # Refused as a moment before the folder's first whole backfill ended (an export stands for
    # the whole table), or, where no backfill says so, as one before its first change.
    whole = "before the first backfill that copied the whole table" in result.stderr
    first = "before the first backup of" in result.stderr and "its earliest change" in result.stderr
    assert whole or (first and "holds no item" in result.stderr), result.stderr


def test_restore_delete_absent_before_the_first_backup_deletes_nothing(
    world: dict[str, Any],
) -> None:
    """--into-existing --delete-absent --at 0 emptied the table: every item was "absent"
    at a moment the backup knows nothing of. Now nothing is deleted, exit 2."""
    target = unique_table_name("keep")
    made = run(f"restore {world['bucket']} {world['folder']} {target} -q")
    assert made.exit_code == 0, made.output
    dynamodb = world["dynamodb"]
    count = dynamodb.scan(TableName=target, Select="COUNT", ConsistentRead=True)["Count"]
    assert count == 3
    result = run(
        f"restore {world['bucket']} {world['folder']} {target} --into-existing --delete-absent "
        "--at 0 -q"
    )
    assert result.exit_code == 2, result.output
    assert (
        "--delete-absent deleted nothing" in result.stderr
        or "before the first backfill that copied the whole table" in result.stderr
    ), result.stderr
    after = dynamodb.scan(TableName=target, Select="COUNT", ConsistentRead=True)["Count"]
    assert after == 3


def test_restore_reports_the_stream_setting(world: dict[str, Any]) -> None:
    target = unique_table_name("restored")
    result = run(f"--output json restore {world['bucket']} {world['folder']} {target} -q")
    assert result.exit_code == 0, result.output
    stream = json.loads(result.stdout)["stream"]
    assert stream["source"]["StreamEnabled"] is True and stream["restored"] is None
    assert "has no stream; the source had one" in stream["note"]


def test_verbose_log_lines_are_json(world: dict[str, Any]) -> None:
    result = run(f"stream {world['table']} --bucket {world['bucket']} --prefix Prod --once -v")
    assert result.exit_code == 0, result.output
    logged = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert logged and all(json.loads(line)["message"] for line in logged)


def test_restore_backup_checks_its_arguments_and_advises_restore(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(world)
    with pytest.raises(SystemExit) as exited:
        restore_backup_main([world["bucket"], "Prod/Nope", world["new"]])
    assert exited.value.code == 2
    assert "no backup at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        restore_backup_main([world["bucket"], world["folder"], "ab"])
    assert exited.value.code == 2 and "tablename" in capsys.readouterr().err
    assert state(world) == before


def test_a_folder_of_the_original_lambda_is_a_backup(world: dict[str, Any]) -> None:
    """Objects without the tool's documents (what dynamodb-replicator wrote) are a backup:
    adopt and the readers take the folder; only an empty folder is 'no backup'."""
    from dynamo_backups.backup.folder import NoBackupError, open_backup

    s3 = world["s3"]
    s3.put_object(Bucket=world["bucket"], Key="Old/Users/0123abcd", Body=b'{"id":{"S":"a"}}')
    assert open_backup(s3, world["bucket"], "Old", "Users").manifest is None
    with pytest.raises(NoBackupError):
        open_backup(s3, world["bucket"], "Old", "Orders")


def test_template_honours_the_bucket_options_it_accepts(world: dict[str, Any]) -> None:
    result = run(
        f"template --table {world['table']} --bucket {world['bucket']} --create-bucket "
        "--protect --admin-role arn:aws:iam::123456789012:role/Admin --retain-noncurrent-days 30"
    )
    assert result.exit_code == 0, result.output
    assert "NoncurrentDays: 30" in result.stdout
    assert "arn:aws:iam::123456789012:role/Admin" in result.stdout


def test_wrong_credentials_are_one_line_naming_them(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS checks SigV4: a wrong secret is exit 1, one line naming the call and where
    credentials come from, nothing written."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    result = run(f"restore {world['bucket']} {world['folder']} {world['new']} --dry-run")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "SignatureDoesNotMatch" in result.stderr and "check the credentials" in result.stderr


def test_missing_credentials_are_bad_input_like_a_missing_region(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No credentials anywhere is the caller's setting missing, as a region or a profile
    can be: exit 2, one line saying where credentials come from, nothing written."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    before = state(world)
    result = run(f"restore {world['bucket']} {world['folder']} {world['new']} --dry-run")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: no AWS credentials found"), result.stderr
    assert state(world) == before


def test_a_malformed_endpoint_variable_is_one_error_line(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore refuses AWS_ENDPOINT_URL_S3=not-a-url with a ValueError deep in client
    creation: still one ``error:`` line (and the JSON error object), never a traceback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not-a-url")
    before = state(world)
    result = run(
        f'--output json history {world["table"]} \'{{"pk": "k1"}}\' '
        f"--bucket {world['bucket']} --prefix Prod"
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "not-a-url" in json.loads(result.stdout)["error"]
    assert state(world) == before


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([], "the following arguments are required"),
        (["--bogus", "a-bucket", "Prod/Users", "Users"], "unrecognized arguments: --bogus"),
        (["a-bucket", "Prod/Users"], "required: tablename"),
        (["--region", "", "a-bucket", "Prod/Users", "Users"], "--region"),
    ],
)
def test_restore_backup_usage_errors_are_one_error_line(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The legacy command's usage mistakes follow every command's rule: one ``error:``
    line naming the mistake, exit 2 (not argparse's usage block)."""
    with pytest.raises(SystemExit) as exited:
        restore_backup_main(argv)
    assert exited.value.code == 2
    shown = capsys.readouterr()
    lines = shown.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], shown.err
    assert "usage:" not in shown.err and not shown.out


def test_verbose_every_stderr_line_is_json(world: dict[str, Any]) -> None:
    """With -v, the note on how --at was read, the progress line and the error are JSON
    objects too, like the log lines: a program can read every stderr line."""
    now = int(time.time()) * 1000
    result = run(
        f"-v restore {world['bucket']} {world['folder']} {world['new']} --dry-run --at {now}"
    )
    assert result.exit_code == 0, result.output
    failed = run(f"-v --output json restore {world['bucket']} Prod/Nope {world['new']}")
    assert failed.exit_code == 2
    for shown in (result.stderr, failed.stderr):
        lines = [json.loads(line) for line in shown.splitlines() if line.strip()]
        assert lines and all(line["message"] and line["level"] for line in lines), shown
    levels = {line["level"] for line in map(json.loads, result.stderr.splitlines())}
    messages = " ".join(json.loads(line)["message"] for line in result.stderr.splitlines())
    assert "read as epoch milliseconds" in messages and "partitions" in messages, messages
    assert "info" in levels
    error = json.loads(failed.stderr.splitlines()[-1])
    assert error["level"] == "error" and "no backup at" in error["message"]
    assert json.loads(failed.stdout)["exit_code"] == 2


def test_backfill_warns_about_a_table_without_a_stream(world: dict[str, Any]) -> None:
    """A backfill of a table without a stream copies its rows once; the changes after it
    are not backed up: said on one stderr line naming how to turn the stream on."""
    result = run(f"backfill {world['replica']} --bucket {world['bucket']} --prefix NoStream -q")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert f"table {world['replica']} has no stream" in warnings[0]
    assert "not backed up until" in warnings[0] and "dynamo-backups deploy" in warnings[0]
    quiet = run(f"backfill {world['table']} --bucket {world['bucket']} --prefix Prod -q")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.output


def test_restore_backup_refuses_a_malformed_region(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        restore_backup_main(["--region", "us east 1", world["bucket"], world["folder"], "x-new"])
    assert exited.value.code == 2
    assert "--region: 'us east 1' is not a region name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        "--output json --region 'us east 1' verify T --bucket b",
        "--output=json no-such-command",
        "--output json --endpoint-url x verify T --bucket b",
    ],
)
def test_output_json_error_object_for_group_level_mistakes(command: str) -> None:
    """Mistakes found before any command runs (a global option, the command's name) give
    the JSON error object too."""
    result = run(command)
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["exit_code"] == 2
    assert result.stderr.startswith("error: ")


def test_billing_mode_is_taken_in_any_case(world: dict[str, Any]) -> None:
    """DynamoDB's own words, as people type them: provisioned is PROVISIONED."""
    result = run(
        f"restore {world['bucket']} {world['folder']} {world['new']} --dry-run -q "
        "--billing-mode provisioned"
    )
    assert result.exit_code == 0, result.output


def test_an_earlier_verbose_invocation_does_not_make_a_later_mistake_json() -> None:
    """In one process (an embedding program, this suite), a mistake found before the
    options are read is written as text whatever an earlier invocation's -v chose."""
    verbose = run("-v --region us-east-1 --endpoint-url http://127.0.0.1:9 history T x --bucket b")
    assert verbose.exit_code != 0
    mistake = run("--region 'us east 1' verify T --bucket b")
    assert mistake.exit_code == 2, mistake.output
    assert mistake.stderr.startswith("error: --region"), mistake.stderr
