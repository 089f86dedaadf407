"""An endpoint that accepts connections and never answers: every command must end with one
``error:`` line naming the endpoint and the timeout, a non-zero exit, within a bounded time,
and say on stderr what it is waiting for meanwhile (never a silent hang)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from dynamo_backups.aws.timeouts import TimeoutSettingError, timeouts_from_environment

SHORT = {
    "DYNAMO_BACKUPS_CONNECT_TIMEOUT": "1",
    "DYNAMO_BACKUPS_READ_TIMEOUT": "1.5",
    "DYNAMO_BACKUPS_MAX_ATTEMPTS": "2",
    "DYNAMO_BACKUPS_WAIT_NOTICE": "0.5",
}


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


COMMANDS = {
    "history": ["history", "Users", '{"id": "a"}', "--bucket", "backups"],
    "restore": ["restore", "backups", "Prod/Users", "UsersRestored"],
    "backfill": ["backfill", "Users", "--bucket", "backups"],
    "verify": ["verify", "Users", "--bucket", "backups"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_silent_endpoint_ends_in_a_clear_error_within_bounded_time(
    silent_endpoint: str, command: str
) -> None:
    env = {
        **os.environ,
        **SHORT,
        "AWS_ENDPOINT_URL": silent_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "dynamo_backups.cli.entry", *COMMANDS[command]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert completed.returncode == 1, completed.stderr
    assert took < 60, f"{took:.0f} s"
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, completed.stderr
    assert silent_endpoint.removeprefix("http://") in errors[0]
    assert "timeout 1.5 s" in errors[0] and "DYNAMO_BACKUPS_READ_TIMEOUT" in errors[0]
    assert "waiting for " in completed.stderr and " on http://127.0.0.1:" in completed.stderr


def test_timeouts_come_from_the_environment_and_bad_values_are_refused() -> None:
    assert timeouts_from_environment({}).read == 60.0
    chosen = timeouts_from_environment(SHORT)
    assert (chosen.connect, chosen.read, chosen.attempts, chosen.notice) == (1, 1.5, 2, 0.5)
    for name, text in [("DYNAMO_BACKUPS_READ_TIMEOUT", "0"), ("DYNAMO_BACKUPS_MAX_ATTEMPTS", "x")]:
        with pytest.raises(TimeoutSettingError, match=name):
            timeouts_from_environment({name: text})


def test_a_bad_timeout_variable_is_a_usage_error() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "dynamo_backups.cli.entry", "history", "T1", "{}", "--bucket", "b"],
        env={**os.environ, "DYNAMO_BACKUPS_READ_TIMEOUT": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "error: DYNAMO_BACKUPS_READ_TIMEOUT must be a number of seconds" in completed.stderr
