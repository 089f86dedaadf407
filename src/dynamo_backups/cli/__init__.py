"""The ``dynamo-backups`` command line: one module per command group (``backfill``,
``stream``, ``restore``, ``snapshot``, ``history``, ``verify``, ``replication``, ``replay``,
``installer``, ``status``, ``demo``), each turning options into a job's inputs and its report
into text or JSON; ``common`` holds what every command shares (global AWS options, errors and
exit codes, output, logging, time arguments) and ``progress`` the progress lines on stderr.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

from dynamo_backups import __version__
from dynamo_backups.aws.context import AwsContext, TransportSettingError, chosen_transport
from dynamo_backups.aws.timeouts import TimeoutSettingError, timeouts_from_environment
from dynamo_backups.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandError,
    Invocation,
    configure_logging,
    emit_error,
    fail,
    with_global_options,
)
from dynamo_backups.cli.inputs import (
    ENDPOINT_URL,
    REGION,
    InputError,
    refuse_empty_values,
    validated,
)
from dynamo_backups.cli.interrupt import EXIT_INTERRUPTED, install_interrupt_handler
from dynamo_backups.cli.lines import say, use_json_lines
from dynamo_backups.cli.notices import start_wait_notices

EPILOG = """\b
Exit codes: 0 done; 1 failed or found differences; 2 bad arguments or input;
130 stopped by Ctrl-C (what finished is recorded: --resume continues).
AWS settings follow the AWS CLI: --region/--profile/--endpoint-url, else AWS_REGION,
AWS_PROFILE and the per-service endpoint variables (AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_DYNAMODB_STREAMS), AWS_CA_BUNDLE,
HTTPS_PROXY/NO_PROXY. DYNAMO_BACKUPS_TRANSPORT=botocore sends every request through botocore.
Each request: DYNAMO_BACKUPS_CONNECT_TIMEOUT (10 s), DYNAMO_BACKUPS_READ_TIMEOUT (60 s),
DYNAMO_BACKUPS_MAX_ATTEMPTS (5) tries; a call waiting over DYNAMO_BACKUPS_WAIT_NOTICE (5 s)
is named on stderr.
Docs: README.md and docs/ (layout, operations, performance)."""


class CommandGroup(click.Group):
    """The commands; a failure is also a JSON object on stdout with --output json."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            error.json_shown = emit_error(ctx, error)  # type: ignore[attr-defined]
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:  # a bug: one error line, never a traceback
            unexpected = CommandError(_unexpected_message(error), EXIT_FAILED)
            unexpected.json_shown = emit_error(ctx, unexpected)  # type: ignore[attr-defined]
            raise unexpected from error

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's usage errors as one ``error:`` line too (exit 2), like every other."""
        standalone = kwargs.get("standalone_mode", True)
        # Text lines until this invocation's options say otherwise: an earlier invocation in
        # the same process (-v) must not decide how a mistake found before the options are
        # read is written.
        use_json_lines(False)
        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.UsageError as error:
            if not standalone:
                raise
            if not getattr(error, "json_shown", False) and _wants_json(args, kwargs):
                # Refused before any command ran (a group option, no such command): the
                # JSON error object all the same.
                message = error.format_message()
                click.echo(json.dumps({"error": message, "exit_code": error.exit_code}, indent=2))
            _show_usage_error(error)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            if not standalone:
                raise
            error.show()
            sys.exit(error.exit_code)
        except click.Abort as error:
            if not standalone:
                raise
            if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):
                # Ctrl-C while click was still building the command (its module is imported
                # when it is used): stopped before anything ran, as a Ctrl-C is reported.
                say("interrupted before the command started")
                sys.exit(EXIT_INTERRUPTED)
            say("Aborted!")
            sys.exit(1)
        except Exception as error:  # a bug: one error line, never a traceback
            if not standalone:
                raise
            _show_unexpected(error)
            sys.exit(EXIT_FAILED)
        if not standalone:
            return result
        sys.exit(result if isinstance(result, int) else 0)  # click.exceptions.Exit's code


def _wants_json(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the command line asks for ``--output json`` (read from the words, since
    parsing it is what failed)."""
    words = list(kwargs.get("args") or (args[0] if args else None) or sys.argv[1:])
    for index, word in enumerate(words):
        if word == "--output=json" or (
            word == "--output" and index + 1 < len(words) and words[index + 1] == "json"
        ):
            return True
    return False


def _unexpected_message(error: Exception) -> str:
    """An error no command expected, as one line; the traceback goes to the log (-v)."""
    logging.getLogger("dynamo_backups").debug("unexpected error", exc_info=error)
    return f"unexpected {type(error).__name__}: {error} (please report it; -v shows where)"


def _show_unexpected(error: Exception) -> None:
    say(f"error: {_unexpected_message(error)}")


def tune_garbage_collection() -> None:
    """Fewer garbage collections in a bulk command. Its objects are freed by reference
    counting as each item is done; the cycle collector ran some 700 times in a restore of
    20,000 items, five of them full ones through every object the libraries loaded: 20 µs
    of CPU per item. What is loaded by now stays out of every collection (``freeze``), and
    a collection waits for 20,000 new objects instead of 700 (a few MB at most)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _show_usage_error(error: click.UsageError) -> None:
    if isinstance(error, InputError):
        error.show()
        return
    where = error.ctx.command_path if error.ctx is not None else "dynamo-backups"
    say(f"error: {error.format_message()} (see: {where} --help)")


@click.group(
    cls=CommandGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="dynamo-backups")
@click.option(
    "--region", type=REGION, envvar=None, help="AWS region (default: AWS_REGION or the profile's)."
)
@click.option("--profile", help="Named profile from ~/.aws/config.")
@click.option(
    "--endpoint-url",
    type=ENDPOINT_URL,
    help="Send every AWS call to this URL (e.g. a local emulator).",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Final report as text or JSON (for scripts).",
)
@click.option(
    "-v", "--verbose", count=True, help="More logging, as JSON lines (one per batch among them)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.pass_context
def main(
    ctx: click.Context,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    output: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Continuous, point-in-time backups of DynamoDB tables in a versioned S3 bucket.

    Every insert, update and delete on a table's stream becomes a version of one S3 object
    per item, <prefix>/<table>/<md5 of the item key>; a delete leaves the old versions behind a
    delete marker. Run the stream handler in AWS Lambda (deploy) or on any host (stream).
    """
    configure_logging(verbose, quiet)
    install_interrupt_handler()
    tune_garbage_collection()
    try:
        chosen_transport()
        timeouts = timeouts_from_environment()
    except (TransportSettingError, TimeoutSettingError) as error:
        fail(str(error), EXIT_USAGE)
    if not quiet:
        start_wait_notices(timeouts)
    ctx.obj = Invocation(AwsContext(region, profile, endpoint_url), output, verbose, quiet)


# Each command's module, imported when the command is used: a command's start-up pays only
# for its own modules (a restore never imports the installer's), some 0.2 CPU-seconds less.
COMMANDS: dict[str, tuple[str, str]] = {
    "stream": ("stream", "stream"),
    "backfill": ("backfill", "backfill"),
    "compact": ("compact", "compact"),
    "convert": ("convert", "convert"),
    "restore": ("restore", "restore"),
    "history": ("history", "history"),
    "verify": ("verify", "verify"),
    "snapshot": ("snapshot", "snapshot"),
    "deploy": ("installer", "deploy"),
    "template": ("installer", "template"),
    "package": ("installer", "package"),
    "test-function": ("status", "test_function_command"),
    "status": ("status", "status"),
    "teardown": ("installer", "teardown_command"),
    "replay": ("replay", "replay"),
    "diff-tables": ("replication", "diff_tables"),
    "diff-record": ("replication", "diff_record"),
    "replicate-record": ("replication", "replicate_record"),
    "demo": ("demo", "demo"),
    "adopt": ("adopt", "adopt"),
}


class LazyCommands(Mapping[str, click.Command]):
    """The group's commands by name, each imported (and given the global options) on first
    use; ``--help`` lists them all, and so imports them all."""

    def __init__(
        self, where: dict[str, tuple[str, str]], prepare: Callable[[click.Command], click.Command]
    ) -> None:
        self._where = where
        self._prepare = prepare
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attribute = self._where[name]
            command = getattr(importlib.import_module(f"dynamo_backups.cli.{module}"), attribute)
            self._loaded[name] = self._prepare(command)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


main.commands = LazyCommands(  # type: ignore[assignment]
    COMMANDS, lambda command: refuse_empty_values(with_global_options(validated(command)))
)
refuse_empty_values(main)
