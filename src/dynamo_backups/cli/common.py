"""Shared pieces of the command line: the invocation context, errors, output and logging."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from dynamo_backups.aws.context import AwsContext, TransportSettingError
from dynamo_backups.aws.errors import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    describe_error,
)
from dynamo_backups.aws.retry import RetriesExhausted
from dynamo_backups.backup.bucket import BucketError, NoSuchBucketError
from dynamo_backups.backup.checkpoints import CheckpointError
from dynamo_backups.backup.ledger import LedgerError
from dynamo_backups.cli import inputs
from dynamo_backups.cli.interrupt import EXIT_INTERRUPTED, interruption_message
from dynamo_backups.cli.lines import say, use_json_lines
from dynamo_backups.core.ddbjson import InvalidDynamoJSON
from dynamo_backups.core.keys import DEFAULT_KEY_HASH
from dynamo_backups.core.layout import LayoutError
from dynamo_backups.engines import ENGINES, Engine, make_engine
from dynamo_backups.engines.spark import SparkUnavailable
from dynamo_backups.jobs.export_source import ExportError
from dynamo_backups.pipeline.stream_source import StreamError

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_FAILED = 1  # the work could not be done completely, or a check found differences
EXIT_USAGE = 2  # bad arguments or input (click uses 2 for usage errors as well)
# 130: stopped by Ctrl-C (cli.interrupt), what finished recorded for --resume

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """A failure to report as ``error: ...`` with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        say(f"error: {self.format_message()}")


@dataclass
class Invocation:
    """What every command gets: AWS settings and output preferences."""

    aws: AwsContext
    output: str = "text"
    verbose: int = 0
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    emitted: bool = False  # a report is on stdout: a failure after it adds no JSON of its own

    @property
    def json_output(self) -> bool:
        return self.output == "json"

    def emit(self, summary: dict[str, Any], text: str) -> None:
        """The final result: JSON for scripts, or text for people, on stdout."""
        self.emitted = True
        if self.json_output:
            click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        else:
            click.echo(text)


pass_invocation = click.make_pass_decorator(Invocation)


def emit_error(ctx: click.Context, error: click.ClickException) -> bool:
    """With --output json, a command that fails before its report says so on stdout too, as
    a JSON object (the ``error:`` line still goes to stderr); after its report, the report's
    own errors and the exit code say it."""
    invocation = ctx.find_object(Invocation)
    if invocation is not None and invocation.json_output and not invocation.emitted:
        message = error.format_message()
        click.echo(json.dumps({"error": message, "exit_code": error.exit_code}, indent=2))
        return True
    return False


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    raise CommandError(message, exit_code)


def reports_errors(command: F) -> F:
    """Turn the errors an operator can act on into one clear line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as error:
            fail(interruption_message(error), EXIT_INTERRUPTED)
        except (LayoutError, InvalidDynamoJSON, TransportSettingError, NoSuchBucketError) as error:
            fail(str(error), EXIT_USAGE)
        except (StreamError, BucketError, CheckpointError, LedgerError, ExportError) as error:
            fail(str(error))
        except SparkUnavailable as error:
            fail(str(error), EXIT_USAGE)
        except NoCredentialsError:  # input missing, as a region or a profile can be
            fail(
                "no AWS credentials found: configure a profile (--profile) or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                EXIT_USAGE,
            )
        except NoRegionError:
            fail(
                "no AWS region: pass --region or set AWS_DEFAULT_REGION (or AWS_REGION)", EXIT_USAGE
            )
        except ProfileNotFound as error:
            fail(f"{error} (check --profile or AWS_PROFILE)", EXIT_USAGE)
        except InvalidRegionError as error:
            fail(f"{error} (check --region or AWS_REGION)", EXIT_USAGE)
        except EndpointConnectionError as error:
            fail(
                f"cannot reach {error.kwargs.get('endpoint_url', 'the endpoint')}: is the "
                "endpoint right and the service running?"
            )
        except ClientError as error:
            fail(_client_error_line(describe_error(error), error))
        except RetriesExhausted as error:
            fail(str(error))
        except BotoCoreError as error:  # connection resets, timeouts, bad answers
            fail(describe_error(error))
        except OSError as error:  # a local file: cannot be written, read, ...
            where = f"{error.filename}: " if error.filename else ""
            fail(f"{where}{error.strerror or error}")

    return wrapper  # type: ignore[return-value]


# Answers that mean the credentials (not the request) are wrong.
_CREDENTIAL_ERRORS = {
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
}


def _client_error_line(message: str, error: ClientError) -> str:
    """The service's error, naming the call and what it was for (the note
    ``call_with_retries`` adds: "read s3://bucket/key", "describe table T"), and for a
    credentials error where they come from."""
    code = error.response.get("Error", {}).get("Code")
    operation = getattr(error, "operation_name", None)
    if operation and operation not in message:
        message = f"{operation}: {message}"
    notes = getattr(error, "__notes__", None)
    if notes and str(notes[0]) not in message:
        message = f"{notes[0]}: {message}"
    if code in _CREDENTIAL_ERRORS:
        message += (
            " (check the credentials: --profile, AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)"
        )
    return message


class JsonLines(logging.Formatter):
    """One JSON object per log line (-v): time, level, logger, message, and the record's
    ``fields`` (``logger.debug(..., extra={"fields": {...}})``) as members of their own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Progress and warnings on stderr as text; with -v every line is a JSON object, one
    per batch among them."""
    level = logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    use_json_lines(bool(verbose))  # the other stderr lines (progress, notes, errors) too
    package = logging.getLogger("dynamo_backups")
    package.handlers[:] = [handler]
    package.propagate = False
    package.setLevel(logging.DEBUG if verbose else level)


@dataclass(frozen=True)
class SegmentPlan:
    """How a scan is split: ``total`` segments, all of them or ``only`` one (for one host)."""

    total: int
    only: int | None = None


@dataclass(frozen=True)
class EngineChoice:
    """Where the units of a bulk command run (--engine, --workers, --spark-master)."""

    name: str = "threads"
    workers: int | None = None
    spark_master: str | None = None

    def make(self, default_workers: int | None = None) -> Engine:
        """The engine; ``default_workers`` is the job's own choice for threads."""
        threads = default_workers if self.name == "threads" else None
        return make_engine(self.name, self.workers or threads, self.spark_master)

    def close(self) -> None:
        """Stop what the engine started (a Spark session), once the command's work is done."""
        if self.name == "spark":
            from dynamo_backups.engines.spark import stop_spark

            stop_spark()


def engine_given() -> bool:
    """Whether --engine was on this command's line (not from DYNAMO_BACKUPS_ENGINE)."""
    source = click.get_current_context().get_parameter_source("engine")
    return source == click.core.ParameterSource.COMMANDLINE


def engine_options(command: F) -> F:
    """--engine, --workers, --spark-master; the command receives one ``engine`` argument,
    an EngineChoice, and --resume."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["engine"] = EngineChoice(
            kwargs.pop("engine"), kwargs.pop("workers"), kwargs.pop("spark_master")
        )
        if kwargs["engine"].name != "spark":
            inputs.not_applicable(
                click.get_current_context(), "spark_master", "it is for --engine spark"
            )
        return command(*args, **kwargs)

    options = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="threads",
            show_default=True,
            envvar="DYNAMO_BACKUPS_ENGINE",
            help="Where the work units run: threads in this process, one process per core "
            "of this host, or Spark tasks (local[N] or a cluster; see docs/scale.md).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(1, 10_000),
            help="Units at once (default: threads 4 or one per segment, processes one per "
            "core, spark local[*] or the cluster's).",
        ),
        click.option(
            "--spark-master",
            type=inputs.SPARK_MASTER,
            help="Spark master URL for --engine spark (default: spark-submit's, else local).",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the last unfinished run with the same options: units it finished "
            "are skipped, and their results count in the report.",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def partitions_option(default: int) -> Callable[[F], F]:
    """--partitions: how many units a backup folder is split into (by leading hex digits)."""
    return click.option(
        "--partitions",
        type=click.Choice(["1", "16", "256", "4096"]),
        default=str(default),
        show_default=True,
        callback=lambda _ctx, _param, value: int(value),
        help="Units the backup folder is split into by the first hex digits of the object "
        "names, each listed and done on its own (1: the whole folder as one unit).",
    )


def key_hash_option(command: F) -> F:
    """--key-hash: how object names are derived from item keys."""
    return click.option(
        "--key-hash",
        type=inputs.KEY_HASH,
        default=DEFAULT_KEY_HASH,
        show_default=True,
        help="How object names are derived from item keys.",
    )(command)


def concurrency_option(default: int, meaning: str, maximum: int = 512) -> Callable[[F], F]:
    """--concurrency: how many requests run at once, and what they are."""
    return click.option(
        "--concurrency",
        type=click.IntRange(1, maximum),
        default=default,
        show_default=True,
        help=meaning,
    )


def segments_option(command: F) -> F:
    """--segments: how many parallel scan segments read the table."""
    return click.option(
        "--segments",
        type=click.IntRange(1, 1000),
        default=8,
        show_default=True,
        help="Parallel scan segments.",
    )(command)


def segment_options(command: F) -> F:
    """--segments N, or --segment i --total-segments n to spread the work over hosts; the
    command receives one ``segments`` argument, a SegmentPlan."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        segment, total = kwargs.pop("segment"), kwargs.pop("total_segments")
        if (segment is None) != (total is None):
            fail("--segment and --total-segments go together", EXIT_USAGE)
        if segment is not None and segment >= total:
            fail(f"--segment must be below --total-segments ({total})", EXIT_USAGE)
        if segment is not None:
            inputs.not_applicable(
                click.get_current_context(),
                "segments",
                "--total-segments gives the number of segments with --segment",
            )
        kwargs["segments"] = SegmentPlan(total or kwargs["segments"], segment)
        return command(*args, **kwargs)

    options = [
        segments_option,
        click.option(
            "--segment", type=click.IntRange(0), help="Run only this segment (0-based) ..."
        ),
        click.option(
            "--total-segments",
            type=click.IntRange(1, 1_000_000),
            help="... of this many, to spread the work over several hosts.",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


# --- global options, accepted after the command name too (as the AWS CLI does) -------------


def _set_on_invocation(field_name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False or value == 0:
            return  # not given here: what the group saw stands
        invocation = ctx.find_object(Invocation)
        if invocation is None:
            return
        if field_name in ("region", "profile", "endpoint_url"):
            setattr(invocation.aws, field_name, value)
            invocation.aws._session = None  # made again with the new setting
        elif field_name == "verbose":
            invocation.verbose = value
            configure_logging(invocation.verbose, invocation.quiet)
        elif field_name == "quiet":
            invocation.quiet = True
            configure_logging(invocation.verbose, invocation.quiet)
        else:
            setattr(invocation, field_name, value)

    return callback


_GLOBAL_OPTIONS: list[tuple[list[str], str, dict[str, Any]]] = [
    (
        ["--region"],
        "region",
        {"type": inputs.REGION, "help": "AWS region (also before the command)."},
    ),
    (["--profile"], "profile", {"help": "Named profile (also before the command)."}),
    (
        ["--endpoint-url"],
        "endpoint_url",
        {"type": inputs.ENDPOINT_URL, "help": "Send every AWS call to this URL."},
    ),
    (
        ["--output"],
        "output",
        {"type": click.Choice(["text", "json"]), "help": "Final report as text or JSON."},
    ),
    (["-v", "--verbose"], "verbose", {"count": True, "help": "More logging, as JSON lines."}),
    (["-q", "--quiet"], "quiet", {"is_flag": True, "help": "Only warnings and errors."}),
]


def global_options() -> list[click.Option]:
    """--region, --profile, --endpoint-url, --output, -v, -q for a command's own options."""
    return [
        click.Option(
            flags,
            callback=_set_on_invocation(field_name),
            expose_value=False,
            is_eager=True,
            **settings,
        )
        for flags, field_name, settings in _GLOBAL_OPTIONS
    ]


def with_global_options(command: click.Command) -> click.Command:
    taken = {name for param in command.params for name in getattr(param, "opts", [])}
    for option in global_options():
        if not taken & set(option.opts):
            command.params.append(option)
    return command


TIME = inputs.TIME  # kept here too: commands import it with the rest of common
