"""How long one AWS request may take, and how many times it is tried: the defaults, and the
environment variables that change them (for a slow link, or a test that must fail fast).

    DYNAMO_BACKUPS_CONNECT_TIMEOUT  seconds to open a connection            (default 10)
    DYNAMO_BACKUPS_READ_TIMEOUT     seconds to wait for an answer's bytes   (default 60)
    DYNAMO_BACKUPS_MAX_ATTEMPTS     tries of one request by the SDK, and at most this many
                                    tries after a timeout in the tool's own retry loops
                                    (default 5)
    DYNAMO_BACKUPS_WAIT_NOTICE      seconds without an answer before the command says what
                                    it is waiting for, on stderr                 (default 5)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

CONNECT_VARIABLE = "DYNAMO_BACKUPS_CONNECT_TIMEOUT"
READ_VARIABLE = "DYNAMO_BACKUPS_READ_TIMEOUT"
ATTEMPTS_VARIABLE = "DYNAMO_BACKUPS_MAX_ATTEMPTS"
NOTICE_VARIABLE = "DYNAMO_BACKUPS_WAIT_NOTICE"


class TimeoutSettingError(ValueError):
    """A timeout variable is not a positive number."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 60.0
    attempts: int = 5
    notice: float = 5.0


def timeouts_from_environment(environ: Mapping[str, str] | None = None) -> Timeouts:
    """The timeouts the environment sets, the defaults for the rest."""
    environ = os.environ if environ is None else environ
    default = Timeouts()
    return Timeouts(
        connect=_positive(environ, CONNECT_VARIABLE, default.connect),
        read=_positive(environ, READ_VARIABLE, default.read),
        attempts=int(_positive(environ, ATTEMPTS_VARIABLE, default.attempts, whole=True)),
        notice=_positive(environ, NOTICE_VARIABLE, default.notice),
    )


def _positive(environ: Mapping[str, str], name: str, default: float, whole: bool = False) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = 0
    if not value > 0:
        kind = "a whole number" if whole else "a number of seconds"
        raise TimeoutSettingError(f"{name} must be {kind} above 0, not {text!r}")
    return value
