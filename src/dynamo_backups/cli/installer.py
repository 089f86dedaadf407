"""deploy, template, package and teardown: setting the backup up and taking it down."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dynamo_backups.aws.context import AwsContext
from dynamo_backups.aws.errors import ClientError, error_code
from dynamo_backups.backup.layouts import LAYOUT_JOURNAL, LAYOUTS
from dynamo_backups.cli.backfill import tables_with_prefix
from dynamo_backups.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Invocation,
    fail,
    key_hash_option,
    pass_invocation,
    reports_errors,
)
from dynamo_backups.cli.inputs import (
    BUCKET,
    OUTPUT_FILE,
    PREFIX,
    REGION,
    TABLE,
    InputError,
    check_bucket_name,
    check_distinct,
    describe_existing_table,
)
from dynamo_backups.cli.layout_option import layout_option
from dynamo_backups.cli.lines import say
from dynamo_backups.core.retention import RetentionPolicy, RetentionPolicyError
from dynamo_backups.installer.alerting import NOBODY_TOLD
from dynamo_backups.installer.deploy import Deployer
from dynamo_backups.installer.monitoring import (
    MAXIMUM_RECORD_AGE_SECONDS,
    MAXIMUM_RETRY_ATTEMPTS,
)
from dynamo_backups.installer.naming import TableResources
from dynamo_backups.installer.package import (
    ARCHITECTURES,
    HANDLER_MODULE,
    JOURNAL_ENTRIES,
    RUNTIME,
    PackageError,
    build_zip,
    code_sha256,
    handler_modules,
)
from dynamo_backups.installer.plan import (
    Clients,
    DeployError,
    DeployOptions,
    Step,
    describe_failure,
    retention_given,
    retention_policy,
)
from dynamo_backups.installer.teardown import teardown
from dynamo_backups.installer.template import build_template, to_yaml

# The retention periods CloudWatch Logs' PutRetentionPolicy accepts.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827)
LOG_RETENTION_DAYS += (2192, 2557, 2922, 3288, 3653)


def _record_age(_ctx: click.Context, param: click.Parameter, value: int) -> int:
    """Lambda takes -1 (no limit) or 60 to 604800 seconds: refused here, not mid-deploy."""
    if 0 <= value < 60:
        raise InputError(
            f"{value} is below Lambda's minimum of 60 seconds: give 60-604800, or -1 for no limit",
            param=param,
        )
    return value


def clients_of(aws: AwsContext) -> Clients:
    return Clients(
        s3=aws.client("s3"),
        iam=aws.client("iam"),
        lambda_=aws.client("lambda"),
        dynamodb=aws.client("dynamodb"),
        logs=aws.client("logs"),
        sts=aws.client("sts"),
        sqs=aws.client("sqs"),
        cloudwatch=aws.client("cloudwatch"),
        events=aws.client("events"),
    )


_ADMIN_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def _admin_role(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple:
    for arn in value:
        if not _ADMIN_ROLE.match(arn):
            raise InputError(
                f"{arn!r} is not a role ARN: give arn:aws:iam::ACCOUNT:role/NAME", ctx, param
            )
    return value


def deploy_options(template: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options deploy and template share; the template's bucket options apply only to a
    bucket it creates (--create-bucket), and it lists no tables (no --table-prefix)."""
    bucket_note = " (with --create-bucket)" if template else ""
    options = [
        click.option(
            "--bucket", type=BUCKET, help="The backup bucket (without it: replication only)."
        ),
        click.option(
            "--prefix",
            default="",
            type=PREFIX,
            help="Folder for the backups, e.g. Prod "
            "(default: none: the bucket's top level, also written --prefix '').",
        ),
        click.option(
            "--table", "tables", multiple=True, type=TABLE, help="A table to back up (repeatable)."
        ),
        *(
            []
            if template
            else [
                click.option(
                    "--table-prefix", help="Back up every table whose name starts with this."
                )
            ]
        ),
        click.option(
            "--create-bucket",
            is_flag=True,
            help="Create the bucket" + (" in the stack." if template else " if it is missing."),
        ),
        *(
            []
            if template
            else [
                click.option(
                    "--enable-versioning",
                    is_flag=True,
                    help="Turn versioning on for an existing bucket where it is off or suspended.",
                )
            ]
        ),
        click.option("--kms-key", help="Encrypt with this KMS key (SSE-KMS) instead of SSE-S3."),
        click.option(
            "--protect",
            is_flag=True,
            help="Deny deleting versions and changing versioning, lifecycle or the bucket "
            f"policy to everyone but the --admin-role ARNs{bucket_note}.",
        ),
        click.option(
            "--admin-role",
            "admin_roles",
            multiple=True,
            callback=_admin_role,
            help="A role ARN still allowed what --protect denies (repeatable; --protect needs "
            "one).",
        ),
        click.option(
            "--retain-noncurrent-days",
            type=click.IntRange(1),
            help=f"Expire versions this many days after they stop being current{bucket_note}.",
        ),
        layout_option,
        click.option(
            "--batch-size",
            type=click.IntRange(1, 10000),
            default=None,
            help="Records per invocation of the function (the trigger's batch size). "
            "Default: 100 for the items layout; 10000 for the journal layout (Lambda sends at "
            "most 6 MB an invocation, so large items make smaller batches).",
        ),
        click.option(
            "--batching-window",
            type=click.IntRange(0, 300),
            default=None,
            help="Journal layout: seconds Lambda gathers records before invoking the function "
            "(MaximumBatchingWindowInSeconds, 0-300; default 60). A change reaches S3 within "
            "about this window (the RPO); longer windows mean fuller batches, fewer PUTs.",
        ),
        *_retention_options(),
        click.option(
            "--maximum-retry-attempts",
            type=click.IntRange(-1, 10000),
            default=MAXIMUM_RETRY_ATTEMPTS,
            show_default=True,
            help="Retries of a failing batch before its records are given up to the failure "
            "destination (each attempt already retries write failures for minutes).",
        ),
        click.option(
            "--maximum-record-age",
            type=click.IntRange(-1, 604_800),
            callback=_record_age,
            default=MAXIMUM_RECORD_AGE_SECONDS,
            show_default=True,
            help="Seconds after which records not yet written are given up to the failure "
            "destination, while the stream still holds them for replay (it keeps 24 hours).",
        ),
        click.option(
            "--on-failure",
            "on_failure",
            metavar="ARN",
            help="Where the trigger describes records it gives up on: an SQS queue, SNS topic "
            "or S3 bucket ARN (default: a queue per function, created by deploy).",
        ),
        click.option("--dlq-arn", "dlq_arn", hidden=True, help="Old name of --on-failure."),
        click.option(
            "--alarm-topic",
            metavar="ARN",
            help="An SNS topic the alarms (lag, errors, records failed, stopped, records "
            "given up) notify; without it they notify nobody.",
        ),
        click.option(
            "--memory",
            type=click.IntRange(128, 10240),
            default=512,
            show_default=True,
            help="The function's memory, in MB.",
        ),
        click.option(
            "--timeout",
            type=click.IntRange(3, 900),
            default=120,
            show_default=True,
            help="The function's timeout, in seconds.",
        ),
        click.option(
            "--architecture",
            type=click.Choice(["arm64", "x86_64"]),
            default="arm64",
            show_default=True,
            help="The function's architecture.",
        ),
        click.option(
            "--log-retention-days",
            type=click.Choice([str(days) for days in LOG_RETENTION_DAYS]),
            default="90",
            show_default=True,
            callback=lambda _ctx, _param, value: int(value),
            help="Days the function's log group keeps its logs (a value CloudWatch Logs takes).",
        ),
        key_hash_option,
        click.option(
            "--replica-table",
            type=TABLE,
            help="Also (or, without --bucket, only) replicate the "
            "table into this one, with a function of its own.",
        ),
        click.option(
            "--replica-region",
            type=REGION,
            help="The replica table's region (default: the table's).",
        ),
        click.option(
            "--replica-role-arn",
            help="For a replica in another account: the role the "
            "replication function assumes to write it.",
        ),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _retention_options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """A journal folder's retention (docs/journal.md, "Retention"): lifecycle rules and the
    compaction schedule. Defaults: the documented policy (core/retention)."""
    default = RetentionPolicy()
    return [
        click.option(
            "--keep-changes-days",
            type=click.IntRange(1),
            help=f"Journal layout: days every change (journal/ object) is kept (default "
            f"{default.changes_days}: any moment of the last {default.restorable_days} days "
            "restorable).",
        ),
        click.option(
            "--keep-daily-bases-days",
            type=click.IntRange(1),
            help=f"Journal layout: days a daily base is kept (default {default.daily_days}).",
        ),
        click.option(
            "--keep-weekly-bases-days",
            type=click.IntRange(1),
            help="Journal layout: days the first base of each ISO week is kept (default "
            f"{default.weekly_days}).",
        ),
        click.option(
            "--keep-monthly-bases-days",
            type=click.IntRange(0),
            help="Journal layout: days the first base of each month is kept (default "
            f"{default.monthly_days}; 0: no monthly bases).",
        ),
        click.option(
            "--compact-every",
            type=click.IntRange(1, 168),
            metavar="HOURS",
            help="Journal layout: hours between bases made by the compaction function "
            f"(default {default.compact_every_hours}).",
        ),
    ]


def _options(
    aws: AwsContext | None, kwargs: dict[str, Any], dry_run: bool = False
) -> DeployOptions:
    tables = list(kwargs.pop("tables"))
    check_distinct(tables, "--table")
    table_prefix = kwargs.pop("table_prefix", None)
    _check_bucket_options(kwargs, template=aws is None)
    if table_prefix and aws is not None:
        tables += [
            name
            for name in tables_with_prefix(aws.client("dynamodb"), table_prefix)
            if name not in tables
        ]
        if not tables:
            fail(f"--table-prefix: no table's name starts with {table_prefix!r}", EXIT_USAGE)
    if not tables:
        fail("name the tables with --table (or --table-prefix)", EXIT_USAGE)
    if not kwargs.get("bucket") and not kwargs.get("replica_table"):
        fail("give --bucket (backups), --replica-table (replication), or both", EXIT_USAGE)
    if kwargs.get("replica_table") and len(tables) != 1:
        fail("--replica-table keeps one table in step: give exactly one --table", EXIT_USAGE)
    _check_layout_options(kwargs, template=aws is None)
    dlq_arn = kwargs.pop("dlq_arn", None)
    kwargs["on_failure"] = kwargs.get("on_failure") or dlq_arn
    destination = kwargs["on_failure"]
    if destination and destination.split(":")[2:3] not in (["sqs"], ["sns"], ["s3"]):
        fail(f"--on-failure {destination}: give an SQS queue, SNS topic or S3 bucket ARN", 2)
    return DeployOptions(
        tables=tuple(tables),
        admin_roles=tuple(kwargs.pop("admin_roles")),
        prefix=kwargs.pop("prefix").strip("/"),
        dry_run=dry_run,
        **kwargs,
    )


def _check_layout_options(kwargs: dict[str, Any], template: bool) -> None:
    """A batching window is the journal layout's: refused with --layout items, and for the
    template (which cannot read a folder's layout) without --layout journal. deploy without
    --layout takes each folder's recorded layout and refuses the window for an item one."""
    layout = kwargs.get("folder_layout")
    if layout and not kwargs.get("bucket"):
        fail("--layout is the backup folder's layout: give --bucket", EXIT_USAGE)
    probe = DeployOptions(bucket=None, prefix="", tables=(), **_retention_kwargs(kwargs))
    given = retention_given(probe)
    if given and layout != LAYOUT_JOURNAL and (layout or template):
        fail(f"{', '.join(given)} apply to the journal layout: give --layout journal", EXIT_USAGE)
    try:
        retention_policy(probe)
    except RetentionPolicyError as error:
        fail(str(error), EXIT_USAGE)
    if kwargs.get("batching_window") is None or layout == LAYOUT_JOURNAL:
        return
    if layout or template:
        fail(
            "--batching-window applies to the journal layout (an object per batch): give "
            "--layout journal, or drop it",
            EXIT_USAGE,
        )


def _retention_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    names = (
        "keep_changes_days",
        "keep_daily_bases_days",
        "keep_weekly_bases_days",
        "keep_monthly_bases_days",
        "compact_every",
    )
    return {name: kwargs.get(name) for name in names}


def _check_bucket_options(kwargs: dict[str, Any], template: bool) -> None:
    """Refuse bucket options that would do nothing (the template sets up a bucket only when
    it creates it), and a protection nobody could lift; a bucket to create must have a name
    S3 accepts today."""
    bucket = kwargs.get("bucket")
    if kwargs.get("create_bucket"):
        if not bucket:
            fail("--create-bucket needs --bucket", EXIT_USAGE)
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as error:
            fail(f"--bucket: {error}", EXIT_USAGE)
    elif template:
        given = [
            option
            for option, name in (
                ("--protect", "protect"),
                ("--retain-noncurrent-days", "retain_noncurrent_days"),
                ("--admin-role", "admin_roles"),
            )
            if kwargs.get(name)
        ]
        if given:
            fail(
                f"{', '.join(given)} set up the bucket, which the template does only when it "
                "creates it: add --create-bucket, or set them on the existing bucket with "
                "dynamo-backups deploy",
                EXIT_USAGE,
            )
    if (kwargs.get("protect") or kwargs.get("admin_roles")) and not bucket:
        fail("--protect and --admin-role protect the backup bucket: give --bucket", EXIT_USAGE)
    if kwargs.get("protect") and not kwargs.get("admin_roles"):
        fail(
            "--protect needs at least one --admin-role: the roles that may still delete "
            "versions or change the bucket's protection",
            EXIT_USAGE,
        )
    if kwargs.get("admin_roles") and not kwargs.get("protect"):
        fail("--admin-role names who may lift --protect: give --protect too", EXIT_USAGE)
    if kwargs.get("retain_noncurrent_days") and not bucket:
        fail("--retain-noncurrent-days applies to the backup bucket: give --bucket", EXIT_USAGE)


def _show_steps(invocation: Invocation, steps: list[Step], dry_run: bool) -> None:
    lines = []
    for step in steps:
        lines.append(
            f"{step.outcome:<13} {step.resource}" + (f"  ({step.detail})" if step.detail else "")
        )
        if dry_run and step.document is not None:
            lines.extend("    " + line for line in json.dumps(step.document, indent=2).splitlines())
    changed = sum(step.outcome not in ("unchanged", "warning", "kept", "absent") for step in steps)
    lines.append(
        "nothing to change"
        if not changed
        else f"{changed} changes" + (" planned (dry run: nothing was changed)" if dry_run else "")
    )
    invocation.emit(
        {"steps": [step.to_dict() for step in steps], "changes": changed, "dry_run": dry_run},
        "\n".join(lines),
    )


@click.command()
@deploy_options()
@click.option(
    "--dry-run", is_flag=True, help="Show the plan, with every policy document; change nothing."
)
@pass_invocation
@reports_errors
def deploy(invocation: Invocation, dry_run: bool, **kwargs: Any) -> None:
    """Set up continuous backups in an AWS account: the checklist's console steps as one
    idempotent command.

    \b
    Creates or updates, and reports each as created / updated / unchanged:
      1. the bucket: versioning, Block Public Access, default encryption, a TLS-only policy
         (and with --protect, no deleting of versions but by --admin-role)
      2. one S3 write policy for all tables: put and delete under the prefix, nothing else
      3. per table: a stream-read policy, a logging policy, a role, the Lambda function
      4. the table's stream (NEW_AND_OLD_IMAGES) where it is off
      5. per function, its failure queue (encrypted, 14 days) unless --on-failure names one
      6. the trigger: batch 100, TRIM_HORIZON, ReportBatchItemFailures, bisect, 10 retries,
         records up to 6 hours old, records given up on described in the failure destination
      7. alarms (lag, errors, records given up; --alarm-topic notifies) and a dashboard
    Re-running with the same options changes nothing.

    With --layout journal (docs/journal.md) each delivered batch is one object: the trigger
    takes batches of up to 10000 records (6 MB) gathered for up to --batching-window
    seconds (default 60, the RPO), and the function may read its folder's layout.json and
    journal objects. Without --layout, a folder recorded as a journal stays one; every
    folder is checked before anything is changed. A journal table also gets its compaction
    function (dynamo-backups-compact-TABLE: 900 s, one invocation at a time, a role that may
    read the journal and bases and write bases), invoked every hour by an EventBridge rule;
    it makes a base when the newest is --compact-every hours old.

    \b
    Example:
      dynamo-backups deploy --bucket my-backups --create-bucket --prefix Prod --table-prefix Prod
      dynamo-backups deploy --bucket my-backups --prefix Prod --table Users --layout journal
    """
    aws = invocation.aws
    options = _options(aws, kwargs, dry_run)
    region = aws.region_name
    if not region:
        fail("no AWS region: pass --region or set AWS_DEFAULT_REGION", EXIT_USAGE)
    clients = clients_of(aws)
    if options.replica_region and options.replica_region != region:
        clients.replica_dynamodb = aws.client("dynamodb", region=options.replica_region)
    try:
        archive = build_zip(architecture=options.architecture)
    except PackageError as error:
        fail(str(error))
    deployer = Deployer(clients, options, archive, region)
    try:
        steps = deployer.run()
    except RetentionPolicyError as error:
        fail(str(error), EXIT_USAGE)
    except DeployError as error:
        _show_partial(invocation, deployer.steps)
        fail(str(error), EXIT_USAGE if error.bad_input else EXIT_FAILED)
    except ClientError as error:
        _show_partial(invocation, deployer.steps)
        fail(describe_failure(error, "deploy stopped"))
    _show_steps(invocation, steps, dry_run)


def _show_partial(invocation: Invocation, steps: list[Step]) -> None:
    if steps and not invocation.json_output:
        say("\n".join(f"{step.outcome:<13} {step.resource}" for step in steps), "deploy")
        say("deploy stopped; what is above was done. Fix the error and run it again.", "deploy")


@click.command()
@deploy_options(template=True)
@pass_invocation
@reports_errors
def template(invocation: Invocation, **kwargs: Any) -> None:
    """Print a CloudFormation template (YAML; JSON with --output json) of the resources
    deploy creates.

    The function's code location (CodeS3Bucket, CodeS3Key: upload the zip from
    'dynamo-backups package', with --layout journal for a journal stack: its compaction
    functions run from the same zip) and each table's stream ARN are stack parameters.

    \b
    Example:
      dynamo-backups template --bucket my-backups --prefix Prod --table Users > backups.yaml
    """
    options = _options(None, kwargs)
    built = build_template(options)
    # CloudFormation reads either form: JSON when the invocation asks for JSON output.
    click.echo(
        json.dumps(built, indent=2) + "\n" if invocation.json_output else to_yaml(built), nl=False
    )
    if options.folder_layout == LAYOUT_JOURNAL and not options.create_bucket:
        say(
            "warning: the journal folders' lifecycle rules (retention) go on the bucket: the "
            "template sets them only on a bucket it creates (--create-bucket); otherwise run "
            "dynamo-backups deploy --layout journal, which merges them with the bucket's own"
        )
    if options.folder_layout == LAYOUT_JOURNAL and options.bucket:
        say(
            "note: the journal tables' compaction functions run from the stack's package too: "
            "upload the zip of 'dynamo-backups package --layout journal' (it holds both "
            "handlers)"
        )
    if not options.alarm_topic:
        say(f"warning: {NOBODY_TOLD}")


@click.command()
@click.option(
    "--out",
    type=OUTPUT_FILE,
    required=True,
    help="Where to write the zip.",
)
@click.option(
    "--architecture",
    type=click.Choice(sorted(ARCHITECTURES)),
    default="arm64",
    show_default=True,
    help="The function's architecture: the native wheel in the zip is built for it.",
)
@click.option(
    "--wheel-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Take the native wheel (obstore) from this folder instead of downloading it.",
)
@click.option(
    "--layout",
    "folder_layout",
    type=click.Choice(LAYOUTS, case_sensitive=False),
    default=None,
    help="journal: also the compaction function's handler (the stack of 'template "
    "--layout journal' runs both from this one zip). Default: the stream handler alone.",
)
@pass_invocation
@reports_errors
def package(
    invocation: Invocation,
    out: Path,
    architecture: str,
    wheel_dir: Path | None,
    folder_layout: str | None,
) -> None:
    """Write the Lambda deployment package: the handler's modules and the obstore wheel for
    the function's architecture (Python 3.13), as a deterministic zip.

    \b
    Example:
      dynamo-backups package --out handler.zip --architecture arm64
      dynamo-backups package --out journal.zip --layout journal
    """
    entries = JOURNAL_ENTRIES if folder_layout == LAYOUT_JOURNAL else HANDLER_MODULE
    try:
        archive = build_zip(entries, architecture=architecture, wheel_dir=wheel_dir)
    except PackageError as error:
        fail(str(error))
    out.write_bytes(archive)
    invocation.emit(
        {
            "path": str(out),
            "bytes": len(archive),
            "code_sha256": code_sha256(archive),
            "architecture": architecture,
            "runtime": RUNTIME,
            "modules": handler_modules(entries),
        },
        f"{out}: {len(archive):,} bytes for {RUNTIME} on {architecture}, "
        f"CodeSha256 {code_sha256(archive)}",
    )


@click.command("teardown")
@click.argument("tables", nargs=-1, required=True, type=TABLE)
@click.option(
    "--bucket",
    type=BUCKET,
    help="Also remove the shared write policy of this bucket (once no table uses it).",
)
@click.option(
    "--prefix",
    default="",
    type=PREFIX,
    help="The prefix the bucket's write policy was made for "
    "(default: none: the bucket's "
    "top level, also written --prefix '').",
)
@click.option("--delete-bucket", is_flag=True, help="Delete the bucket and EVERY backup in it.")
@click.option("--yes", is_flag=True, help="Confirm --delete-bucket without a prompt.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@pass_invocation
@reports_errors
def teardown_command(
    invocation: Invocation,
    tables: tuple[str, ...],
    bucket: str | None,
    prefix: str,
    delete_bucket: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Remove what deploy created for TABLE(s): triggers, functions, roles, policies.

    Only resources tagged managed-by=dynamo-backups are touched. Streams, log groups and the
    bucket with its backups stay; the bucket goes only with --delete-bucket, confirmed.

    \b
    Example:
      dynamo-backups teardown Users Orders --bucket my-backups --prefix Prod
    """
    if delete_bucket and not bucket:
        fail("--delete-bucket needs --bucket", EXIT_USAGE)
    clients = clients_of(invocation.aws)
    for table in tables:
        require_something_deployed(invocation.aws, clients, table)
    if bucket:
        _require_bucket(clients, bucket)
    if delete_bucket and not dry_run and not yes:
        try:
            typed = click.prompt(
                f"This deletes bucket {bucket} and every backup in it. "
                "Type the bucket's name to confirm",
                default="",
                show_default=False,
            )
        except click.Abort:  # no answer (stdin closed, as in a script)
            fail("not confirmed (no answer): nothing was deleted; --yes confirms in scripts")
        if typed != bucket:
            fail("not confirmed: nothing was deleted")
    steps = teardown(clients, list(tables), bucket, prefix.strip("/"), delete_bucket, dry_run)
    _show_steps(invocation, steps, dry_run)


def require_something_deployed(aws: AwsContext, clients: Clients, table: str) -> None:
    """Exit 2 for a table that neither exists nor has anything deployed for it (a wrong name
    or region), instead of listing resources as if it had."""
    try:
        describe_existing_table(aws, table)
        return
    except InputError:
        pass
    for replica in (False, True):
        try:
            clients.lambda_.get_function(FunctionName=TableResources.of(table, replica).function)
            return  # the table is gone, its function is not: that is what teardown is for
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
    fail(
        f"no table {table} and nothing deployed for it (no function "
        f"{TableResources.of(table).function}): check the name and --region",
        EXIT_USAGE,
    )


def _require_bucket(clients: Clients, bucket: str) -> None:
    try:
        clients.s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
            fail(f"--bucket: there is no bucket {bucket}", EXIT_USAGE)
        raise
