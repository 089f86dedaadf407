"""What the command line accepts, checked in one place before any command does anything.

Every name, folder, time, file and address a command takes goes through one of the click
types here, so that a bad one is answered the same way everywhere: one ``error:`` line that
names the input and shows the form that works, exit 2, and nothing read or written yet.

The forms people type are accepted where they mean one thing: ``s3://bucket`` as a bucket,
``s3://bucket/Prod/Users`` as a folder (its bucket must be the command's bucket), epoch
milliseconds for a time (said so on stderr).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from dynamo_backups.backup.description import DescriptionError, description_from_key_schema
from dynamo_backups.cli.lines import say
from dynamo_backups.core.keys import KEY_HASHES
from dynamo_backups.core.layout import META_FOLDER, LayoutError, check_table_name, format_time

EXIT_USAGE = 2

# Where a bucket named in an s3:// folder is kept, to be checked against the command's bucket.
_NAMED_BUCKETS = "dynamo_backups.named_buckets"

# A moment more than this far ahead of the clock is refused: it cannot be restored yet.
FUTURE_TOLERANCE = timedelta(minutes=1)
# Epoch numbers: below 1e11 seconds (year 5138), below 1e14 milliseconds; larger is a mistake.
_MILLISECONDS_FROM = Decimal(10) ** 11
_TOO_LARGE_FROM = Decimal(10) ** 14

# S3's rules for bucket names (general purpose buckets), and the looser rule that old
# us-east-1 buckets may still follow (upper case, '_', up to 255): readers accept those.
_NEW_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OLD_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_NEW_BUCKET_FORM = (
    "3-63 lower-case letters, digits, '.' and '-', starting and ending with a letter or "
    "digit, e.g. my-backups"
)


class InputError(click.BadParameter):
    """A bad input: shown as one ``error:`` line naming the input, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        say(f"error: {self.format_message()}")

    def format_message(self) -> str:
        name = self.param_hint if isinstance(self.param_hint, str) else None
        if name is None and self.param is not None:
            if isinstance(self.param, click.Argument):
                name = self.param.human_readable_name
            else:
                name = " / ".join(self.param.opts)
        return f"{name}: {self.message}" if name else self.message


class _InputType(click.ParamType):
    """A click type whose failures are InputErrors."""

    def fail(self, message: str, param: Any = None, ctx: Any = None) -> Any:  # type: ignore[override]
        raise InputError(message, ctx=ctx, param=param)


def _strip_scheme(value: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://`` address, or None when it is not one."""
    if not value.lower().startswith("s3://"):
        return None
    parts = urlsplit(value)
    return parts.netloc, parts.path.lstrip("/")


def check_bucket_name(name: str, strict: bool = False) -> str:
    """``name`` if it can be an S3 bucket's name (``strict``: one S3 lets you create now)."""
    pattern = _NEW_BUCKET if strict else _OLD_BUCKET
    if not pattern.match(name) or ".." in name or _IP_ADDRESS.match(name):
        form = _NEW_BUCKET_FORM if strict else "3-63 letters, digits, '.', '-', e.g. my-backups"
        raise ValueError(f"{name!r} is not a bucket name: {form}")
    return name


class BucketName(_InputType):
    """A bucket: ``my-backups`` or ``s3://my-backups``; ``strict`` for one to be created."""

    name = "BUCKET"

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip()
        address = _strip_scheme(text)
        if address is not None:
            bucket, key = address
            if key.strip("/"):
                self.fail(
                    f"{text!r} names a folder: give the bucket alone ({bucket}) and the folder "
                    f"as the prefix ({key.strip('/')})",
                    param,
                    ctx,
                )
            text = bucket
        try:
            return check_bucket_name(text, self.strict)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def check_prefix(text: str) -> str:
    """A folder path in a bucket, without slashes at its ends; refuses forms S3 or the layout
    cannot hold (``..``, ``.``, empty segments, the tool's own folder, control characters)."""
    cleaned = text.strip("/")
    if text != text.strip():
        raise ValueError(f"{text!r} starts or ends with a space")
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        raise ValueError(f"{text!r} holds a control character")
    if not cleaned:
        return ""
    for segment in cleaned.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(
                f"{text!r} has a {segment or 'empty'!r} segment: give a plain path such as Prod "
                "or Prod/Users"
            )
        if segment == META_FOLDER:
            raise ValueError(f"{text!r}: {META_FOLDER} is the tool's own folder")
    if len(cleaned.encode("utf-8")) > 512:
        raise ValueError(f"{text[:40]!r}... is too long for an S3 folder")
    return cleaned


class FolderPath(_InputType):
    """A folder in the backup bucket: ``Prod``, ``Prod/Users``, or ``s3://bucket/Prod``
    (whose bucket must be the command's bucket). ``table_folder``: it must end in a table's
    name (the form restore, snapshot and adopt take)."""

    def __init__(self, table_folder: bool = False) -> None:
        self.table_folder = table_folder
        self.name = "PREFIX/TABLE" if table_folder else "PREFIX"
        # An empty prefix is the bucket's top level (docs/layout.md): a value, not a slip.
        self.empty_allowed = not table_folder

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        address = _strip_scheme(text.strip())
        if address is not None:
            bucket, text = address
            if ctx is not None:
                ctx.meta.setdefault(_NAMED_BUCKETS, []).append((param, bucket))
        try:
            cleaned = check_prefix(text)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if self.table_folder:
            if not cleaned:
                self.fail("name the table's folder, e.g. Prod/Users", param, ctx)
            table = cleaned.rpartition("/")[2]
            try:
                check_table_name(table)
            except LayoutError as error:
                self.fail(
                    f"{cleaned!r} must end in the table's folder, e.g. Prod/Users ({error})",
                    param,
                    ctx,
                )
        return cleaned


class TableName(_InputType):
    """A DynamoDB table name (3-255 of letters, digits, '_', '-', '.')."""

    name = "TABLE"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            return check_table_name(str(value))
        except LayoutError as error:
            self.fail(str(error), param, ctx)


class RegionTable(_InputType):
    """A table in a region: TABLE or REGION/TABLE (diff-tables and friends)."""

    name = "[REGION/]TABLE"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        region, _, table = text.rpartition("/")
        if region and not re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$|^[a-z0-9-]+$", region):
            self.fail(f"{text!r}: give TABLE or REGION/TABLE, e.g. eu-west-1/Users", param, ctx)
        try:
            check_table_name(table)
        except LayoutError as error:
            self.fail(str(error), param, ctx)
        return text


class S3Address(_InputType):
    """``s3://BUCKET/KEY``: where a command writes (or, for an export, reads)."""

    name = "s3://BUCKET/KEY"

    def __init__(self, key_required: bool = False) -> None:
        self.key_required = key_required

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip()
        address = _strip_scheme(text)
        if address is None or not address[0]:
            self.fail(f"{text!r} is not an S3 address: give s3://BUCKET/KEY", param, ctx)
        bucket, key = address
        try:
            check_bucket_name(bucket)
            key = check_prefix(key)
        except ValueError as error:
            self.fail(f"{text!r}: {error}", param, ctx)
        if self.key_required and not key:
            self.fail(f"{text!r} names no folder: give s3://{bucket}/KEY", param, ctx)
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


class ExportSource(S3Address):
    """``new`` or the folder of an existing DynamoDB export."""

    name = "new|s3://BUCKET/PREFIX/AWSDynamoDB/ID/"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if str(value) == "new":
            return "new"
        text = str(value).strip()
        if _strip_scheme(text) is None:
            self.fail(
                f"{text!r}: give 'new' or an export's folder, s3://BUCKET/PREFIX/AWSDynamoDB/ID/",
                param,
                ctx,
            )
        checked = super().convert(value, param, ctx)
        return checked + ("/" if text.endswith("/") else "")


def _note(ctx: Any, message: str) -> None:
    """A line on stderr about how an input was read (not with --quiet)."""
    invocation = ctx.find_root().obj if ctx is not None else None
    if not getattr(invocation, "quiet", False):
        say(f"note: {message}")


def parse_moment(text: str) -> tuple[datetime, str | None]:
    """A moment from ISO 8601 with a zone, or epoch seconds or milliseconds (by magnitude),
    with a note when it was read as milliseconds. Raises ValueError naming the form that
    works."""
    cleaned = text.strip()
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite() or abs(number) >= _TOO_LARGE_FROM:
            raise ValueError(
                f"{text!r} is out of range: give epoch seconds (e.g. 1764892800), epoch "
                "milliseconds (1764892800000) or ISO 8601 (2026-11-27T12:00:00Z)"
            )
        if number < 0:
            raise ValueError(
                f"{text!r} is before 1970: give epoch seconds (e.g. 1764892800), epoch "
                "milliseconds or ISO 8601 (2026-11-27T12:00:00Z)"
            )
        note = None
        if abs(number) >= _MILLISECONDS_FROM:
            number = number / 1000
            note = "read as epoch milliseconds"
        try:
            return datetime(1970, 1, 1, tzinfo=UTC) + _exact(number), note
        except OverflowError:
            raise ValueError(f"{text!r} is out of range: give a moment after 1970") from None
    try:
        moment = datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: give ISO 8601 with a zone (2026-11-27T12:00:00Z), "
            "epoch seconds or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        # A date alone takes no zone ("2026-12-05Z" is not ISO 8601): suggest its midnight.
        example = moment.isoformat() if "T" not in cleaned.upper() else cleaned
        raise ValueError(f"time {text!r} has no zone: add Z or an offset, e.g. {example}Z")
    return moment.astimezone(UTC), None


def _exact(seconds: Decimal) -> timedelta:
    """Epoch seconds as a timedelta, to the microsecond, without going through float."""
    micros = int((seconds * 1_000_000).to_integral_value())
    return timedelta(microseconds=micros)


class Moment(_InputType):
    """A moment (``--at``): ISO 8601 with a zone, epoch seconds or epoch milliseconds.

    A moment more than a minute ahead of this host's clock is an error: nothing has been
    backed up then yet, and a restore "as of" it would silently be the latest state."""

    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment, note = parse_moment(str(value))
        except (ValueError, OverflowError) as error:
            self.fail(str(error), param, ctx)
        if note:
            name = param.opts[0] if param else "time"
            _note(ctx, f"{name} {value} {note}: {format_time(moment)}")
        now = datetime.now(UTC)
        if moment > now + FUTURE_TOLERANCE:
            self.fail(
                f"{format_time(moment)} is in the future (now: {format_time(now)}): leave it out "
                "for the latest state",
                param,
                ctx,
            )
        return moment


@dataclass(frozen=True)
class KeysFile:
    """A ``--keys`` file that was read and checked: its path and how many keys it holds."""

    path: str
    keys: int


class KeysFileType(_InputType):
    """A file of item keys, one JSON object per line: it must exist, be readable, and hold
    at least one key; every line must be a JSON object (the command checks each against the
    backup's key before it writes anything)."""

    name = "FILE"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        path = str(value)
        count = 0
        try:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        parsed = json.loads(line)
                    except ValueError as error:
                        self.fail(f"{path} line {number} is not JSON ({error})", param, ctx)
                    if not isinstance(parsed, dict) or not parsed:
                        self.fail(
                            f'{path} line {number}: a key is a JSON object, e.g. {{"id": "abc"}}',
                            param,
                            ctx,
                        )
                    count += 1
        except FileNotFoundError:
            self.fail(f"{path}: no such file", param, ctx)
        except IsADirectoryError:
            self.fail(f"{path} is a folder: give a file with one key per line", param, ctx)
        except PermissionError:
            self.fail(f"{path}: cannot read it (permission denied)", param, ctx)
        except UnicodeDecodeError:
            self.fail(f"{path} is not UTF-8 text: one JSON key per line", param, ctx)
        if not count:
            self.fail(
                f'{path} holds no key: one JSON key per line, e.g. {{"id": "abc"}}', param, ctx
            )
        return path


class ReadableFile(_InputType):
    """A file that exists and can be read."""

    name = "FILE"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path:
        path = Path(str(value))
        if path.is_dir():
            self.fail(f"{path} is a folder, not a file", param, ctx)
        if not path.exists():
            self.fail(f"{path}: no such file", param, ctx)
        if not os.access(path, os.R_OK):
            self.fail(f"{path}: cannot read it (permission denied)", param, ctx)
        return path


class OutputFile(_InputType):
    """A file to write: its folder must exist and be writable; not a folder itself."""

    name = "FILE"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path:
        path = Path(str(value))
        if path.is_dir():
            self.fail(f"{path} is a folder: give a file name in it, e.g. {path}/out", param, ctx)
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            self.fail(f"folder {folder} does not exist: create it first", param, ctx)
        if not os.access(folder, os.W_OK):
            self.fail(f"cannot write in folder {folder} (permission denied)", param, ctx)
        return path


class KeySchemaType(_InputType):
    """``pk:S`` or ``pk:S,sk:N``: a table's key, hash key first."""

    name = "pk:S[,sk:N]"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            description_from_key_schema(str(value))
        except DescriptionError as error:
            message = str(error).replace("--key-schema ", "")
            self.fail(f"{message}; e.g. id:S or pk:S,sk:N", param, ctx)
        return str(value)


# botocore's own rule for a region name (InvalidRegionError otherwise), checked up front.
_REGION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


class _Pattern(_InputType):
    """A value of one form, checked with ``pattern``; refused as ``'value'`` + ``hint``."""

    pattern: re.Pattern[str]
    hint: str

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        if not self.pattern.match(text):
            self.fail(f"{text!r}{self.hint}", param, ctx)
        return text


class Region(_Pattern):
    """An AWS region name, e.g. eu-west-1 (any name botocore accepts: new regions work)."""

    name = "REGION"
    pattern = _REGION
    hint = " is not a region name: give one like eu-west-1"


class EndpointUrl(_InputType):
    """An endpoint: http(s)://HOST[:PORT][/PATH]."""

    name = "URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018  (a port that is not a number raises here)
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.fail(
                f"{text!r} is not an endpoint URL: give http(s)://HOST[:PORT], e.g. "
                "http://localhost:8000",
                param,
                ctx,
            )
        return text


class ConsumerName(_Pattern):
    """A stream consumer's name: it names a checkpoint object, so one plain word."""

    name = "NAME"
    pattern = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
    hint = (
        ": give 1-100 letters, digits, '_', '-' or '.' (no '/', not starting with '.'), "
        "e.g. dr-site"
    )


class SparkMaster(_Pattern):
    """A Spark master URL: local, local[N], local[*], yarn, spark://..., k8s://..."""

    name = "URL"
    pattern = re.compile(r"^(local(\[(\*|\d+)(,\d+)?\])?|yarn|(spark|k8s|mesos)://\S+)$")
    hint = " is not a Spark master: give local[N], local[*], yarn, spark://HOST:PORT or k8s://URL"


BUCKET = BucketName()
NEW_BUCKET = BucketName(strict=True)
PREFIX = FolderPath()
TABLE_FOLDER = FolderPath(table_folder=True)
TABLE = TableName()
REGION_TABLE = RegionTable()
S3_ADDRESS = S3Address(key_required=True)
EXPORT_SOURCE = ExportSource()
TIME = Moment()
KEYS_FILE = KeysFileType()
READABLE_FILE = ReadableFile()
OUTPUT_FILE = OutputFile()
KEY_SCHEMA = KeySchemaType()
KEY_HASH = click.Choice(sorted(KEY_HASHES))
REGION = Region()
ENDPOINT_URL = EndpointUrl()
CONSUMER_NAME = ConsumerName()
SPARK_MASTER = SparkMaster()


def check(kind: click.ParamType, value: Any, name: str) -> Any:
    """``value`` converted by ``kind`` outside click (restore-backup's argparse), its error
    naming ``name``."""
    try:
        return kind.convert(value, None, None)
    except InputError as error:
        error.param_hint = name
        raise


# --- checks across inputs, after all are parsed ---------------------------------------------

_BUCKET_PARAMETERS = ("bucket", "source_bucket")


def check_named_buckets(ctx: click.Context) -> None:
    """A folder given as ``s3://bucket/...`` must be in the command's bucket."""
    named = ctx.meta.get(_NAMED_BUCKETS, [])
    bucket = next((ctx.params[name] for name in _BUCKET_PARAMETERS if ctx.params.get(name)), None)
    for param, other in named:
        if bucket is None:
            raise InputError(
                f"{other!r} is named in an s3:// folder: give the bucket as --bucket {other}",
                ctx=ctx,
                param=param,
            )
        if other != bucket:
            raise InputError(
                f"the folder is in bucket {other}, the command's bucket is {bucket}: "
                "give the folder without s3://BUCKET, or the same bucket",
                ctx=ctx,
                param=param,
            )


def check_distinct(names: Any, what: str) -> None:
    """Each name once: a table named twice would be worked on twice at the same time."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{name} is named twice: name each table once", param_hint=what)
        seen.add(name)


def not_applicable(ctx: click.Context, option: str, reason: str) -> None:
    """Refuse ``option`` when it was given where it does nothing, saying why."""
    param = next((p for p in ctx.command.params if p.name == option), None)
    if param is None:
        return
    source = ctx.get_parameter_source(option)
    if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
        raise InputError(f"does not apply here: {reason}", ctx=ctx, param=param)


def refuse_empty_values(command: click.Command) -> click.Command:
    """An empty value (``--region ''``, a table named '') is an error naming the input, for
    every option and argument that takes a value, instead of passing for "not given"; a
    type whose empty value means something (a prefix: the bucket's top level) says so with
    ``empty_allowed``."""
    for param in command.params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if getattr(param.type, "empty_allowed", False):
            continue
        _guard_empty(param)
    return command


def _guard_empty(param: click.Parameter) -> None:
    convert = param.type_cast_value

    def type_cast_value(ctx: click.Context, value: Any) -> Any:
        values = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(item, str) and not item.strip() for item in values):
            required = param.required or isinstance(param, click.Argument)
            raise InputError(
                f"{shown_value(values)} is empty: give a value"
                + ("" if required else ", or leave the option out for its default"),
                ctx=ctx,
                param=param,
            )
        return convert(ctx, value)

    param.type_cast_value = type_cast_value  # type: ignore[method-assign]


def shown_value(values: Any) -> str:
    empty = next(item for item in values if isinstance(item, str) and not item.strip())
    return repr(empty)


def validated(command: click.Command) -> click.Command:
    """Run the checks across inputs before the command's own code."""
    callback = command.callback
    if callback is None:
        return command

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_named_buckets(click.get_current_context())
        return callback(*args, **kwargs)

    command.callback = checked
    return command


# --- checks against AWS, before anything is written ------------------------------------------


def describe_existing_table(aws: Any, table: str, region: str | None = None) -> dict[str, Any]:
    """The table's description; exit 2 naming it when there is no such table."""
    from dynamo_backups.aws.retry import RetryPolicy, call_with_retries

    client = aws.client("dynamodb", region=region)
    try:
        return call_with_retries(
            lambda: client.describe_table(TableName=table)["Table"],
            RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=2),
            f"describe table {table}",
        )
    except client.exceptions.ResourceNotFoundException:
        where = f" in {region}" if region else ""
        raise InputError(f"no table {table}{where} (check the name and --region)") from None


def stream_problem(description: dict[str, Any]) -> str | None:
    """What keeps the table's changes from reaching a backup, from its description: no
    stream, or one whose records carry no new image. None when the stream is fit."""
    from dynamo_backups.pipeline.stream_source import NEW_IMAGE_VIEWS

    specification = description.get("StreamSpecification") or {}
    if not specification.get("StreamEnabled") or not description.get("LatestStreamArn"):
        return "has no stream"
    view = specification.get("StreamViewType")
    if view not in NEW_IMAGE_VIEWS:
        return f"has a stream of view type {view}, whose records carry no new image"
    return None


def how_to_enable_stream(table: str, bucket: str | None, prefix: str = "") -> str:
    """The commands that turn a table's stream on (and back it up from it)."""
    update = (
        f"'aws dynamodb update-table --table-name {table} --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES'"
    )
    if not bucket:
        return f"turn it on with {update} (deploy turns it on too), then run this again"
    where = f" --bucket {bucket}" + (f" --prefix {prefix}" if prefix else "")
    return (
        f"'dynamo-backups deploy --table {table}{where}' turns it on (NEW_AND_OLD_IMAGES) "
        "with its Lambda trigger; or 'aws dynamodb update-table --table-name "
        f"{table} --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES' "
        f"and then 'dynamo-backups stream {table}{where}'"
    )


def check_replica(aws: Any, table: str, replica: str, region: str | None) -> None:
    """A replica must exist and have the source's key: a permanent mistake is said at once,
    not retried."""
    if replica == table and (region is None or region == aws.region_name):
        raise InputError(f"{replica} is the source table itself", param_hint="--replica-table")
    source = describe_existing_table(aws, table)
    try:
        target = describe_existing_table(aws, replica, region)
    except InputError as error:
        raise InputError(
            f"{error.format_message()}: create the replica with the key of {table} first",
            param_hint="--replica-table",
        ) from None
    if source["KeySchema"] != target["KeySchema"]:
        raise InputError(
            f"{replica} has another key than {table} ({_key_text(target)} vs "
            f"{_key_text(source)}): a replica needs the same key",
            param_hint="--replica-table",
        )


def _key_text(description: dict[str, Any]) -> str:
    types = {d["AttributeName"]: d["AttributeType"] for d in description["AttributeDefinitions"]}
    return ",".join(
        f"{element['AttributeName']}:{types.get(element['AttributeName'], '?')}"
        for element in description["KeySchema"]
    )


def nothing_at_moment(
    s3: Any,
    folder: Any,
    moment: str | None,
    earliest_change: Callable[[Any, Any], tuple[datetime, bool] | None],
) -> str:
    """The error for an --at that found no item: before the folder's first backup, with
    the earliest change found there (``earliest_change``: the folder's layout's)."""
    message = f"--at: the backup held no item at {moment}: it is before the first backup of "
    message += folder.where
    earliest = earliest_change(s3, folder)
    if earliest is not None:
        found, sampled = earliest
        message += (
            f"; its earliest change{' found' if sampled else ''}: {format_time(found)} "
            "(give --at from then on)"
        )
    return message
