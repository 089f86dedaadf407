"""A journal restore reads its base's first partitions while its pin is waited for
(``jobs/journal_prefetch``): what it restores is what it restored before (the states read
ahead are the very ones a unit would read; one that must weigh a late change against the
base's index reads it itself), a read that fails ahead is read again by its unit, and the
wait's errors still come before the table is made. The pure part first, then DynamoDB Local
and SeaweedFS."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from dynamo_backups.jobs import journal_restore
from dynamo_backups.jobs.journal_prefetch import BaseStatesAhead
from tests.helpers import create_table
from tests.jobs.test_journal_compact_restore import (
    History,
    compact,
    deliver,
    restore,
    restored_state,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest


def never_checked() -> None:
    raise AssertionError("no Ctrl-C here")


def test_each_partition_is_read_once_in_order_and_taken_once() -> None:
    calls: list[str] = []
    ahead = BaseStatesAhead(
        lambda partition: calls.append(partition) or {partition: 1}, "abc", depth=3
    )
    assert ahead.take("a", never_checked) in ({"a": 1}, None)  # None: not begun yet
    time.sleep(0.2)
    assert ahead.take("b", never_checked) == {"b": 1}
    assert ahead.take("b", never_checked) is None  # once
    assert ahead.take("z", never_checked) is None  # never asked for
    assert calls in (["a", "b", "c"], ["b", "c"])
    ahead.stop()


def gated(calls: list[str], gate: threading.Event) -> Callable[[str], dict[str, int]]:
    """A partition's read that notes it began, then waits for ``gate``."""

    def states_of(partition: str) -> dict[str, int]:
        calls.append(partition)
        gate.wait(5)
        return {partition: 1}

    return states_of


def test_a_partition_taken_before_it_begins_is_left_to_its_unit() -> None:
    gate = threading.Event()
    calls: list[str] = []
    ahead = BaseStatesAhead(gated(calls, gate), ["a", "b"])
    time.sleep(0.1)  # "a" under way, held at the gate
    assert ahead.take("b", never_checked) is None  # not begun: the unit reads it
    gate.set()
    assert ahead.take("a", never_checked) == {"a": 1}  # under way: waited for
    time.sleep(0.1)
    assert calls == ["a"]  # "b" was not read twice
    ahead.stop()


def test_a_failed_read_ahead_gives_nothing_and_a_unit_waiting_sees_ctrl_c() -> None:
    def failing(partition: str) -> dict[str, int]:
        raise OSError(f"connection reset reading {partition}")

    ahead = BaseStatesAhead(failing, ["a"])
    time.sleep(0.1)
    assert ahead.take("a", never_checked) is None
    ahead.stop()

    gate = threading.Event()
    slow = BaseStatesAhead(lambda partition: gate.wait(5) and {partition: 1}, ["a"])
    time.sleep(0.05)

    class Interrupted(Exception):
        pass

    def ctrl_c() -> None:
        raise Interrupted()

    with pytest.raises(Interrupted):
        slow.take("a", ctrl_c)
    gate.set()
    slow.stop()


def test_stop_begins_nothing_more_and_drops_what_was_not_taken() -> None:
    gate = threading.Event()
    calls: list[str] = []
    ahead = BaseStatesAhead(gated(calls, gate), ["a", "b"])
    time.sleep(0.1)
    ahead.stop()
    gate.set()
    time.sleep(0.2)
    assert calls == ["a"]
    assert ahead.take("a", never_checked) is None


def test_no_more_than_depth_partitions_wait_to_be_taken() -> None:
    calls: list[str] = []
    ahead = BaseStatesAhead(
        lambda partition: calls.append(partition) or {partition: 1}, "abcdef", depth=2
    )
    time.sleep(0.2)
    assert calls == ["a", "b"]  # two read, none taken: the reader waits
    assert ahead.take("a", never_checked) == {"a": 1}
    time.sleep(0.2)
    assert calls == ["a", "b", "c"]
    assert ahead.take("d", never_checked) is None  # taken before it began: its unit reads it
    assert ahead.take("b", never_checked) == {"b": 1}
    time.sleep(0.2)
    assert calls == ["a", "b", "c", "e"]  # "d" skipped, never read
    ahead.stop()
    time.sleep(0.1)
    assert calls == ["a", "b", "c", "e"]


def test_past_the_first_partition_waiting_no_more_than_held_items_are_read_ahead() -> None:
    calls: list[str] = []

    def big(partition: str) -> dict[str, int]:
        calls.append(partition)
        return {f"{partition}{index}": index for index in range(10)}

    ahead = BaseStatesAhead(big, "abc", depth=3, held_items=15)
    time.sleep(0.2)
    assert calls == ["a", "b"]  # 10 held, under 15: "b" begun; 20 held: "c" waits
    assert ahead.take("a", never_checked) is not None
    time.sleep(0.2)
    assert calls == ["a", "b", "c"]
    ahead.stop()


# --- against the servers -------------------------------------------------------------------


@pytest.fixture
def backed_up_journal(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> tuple[str, str, History]:
    """A journal folder with a base of 16 partitions, then changes after it, one of them late
    (received after the base, dated before its moment: its partition weighs the index)."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    keys = [f"k{index:02d}" for index in range(40)]
    first = history.change([("put", key, index) for index, key in enumerate(keys)])
    held_back = history.change([("put", "k03", 103), ("delete", "k04", 0)])
    deliver(first)
    moment = history.time(len(history.records) - 1) + timedelta(seconds=30)
    compact(s3, bucket, folder, moment, partitions=16)
    deliver(held_back)
    later = history.change([("put", "k05", 205), ("delete", "k06", 0), ("put", "new", 207)])
    deliver(later)
    return table, folder, history


def reads_ahead(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """(read, taken) from the restore's debug line."""
    lines = [
        r.getMessage() for r in caplog.records if "base partitions read ahead" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    read, taken = (int(part.split()[0]) for part in lines[0].split(": ")[1].split(", "))
    return read, taken


@pytest.mark.servers
@pytest.mark.parametrize("reads_ahead_fail", [False, True], ids=["read-ahead", "failed-ahead"])
def test_a_restore_takes_the_base_read_during_the_wait_or_reads_it_again(
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    dynamodb_local: Any,
    s3: Any,
    bucket: str,
    backed_up_journal: tuple[str, str, History],
    caplog: pytest.LogCaptureFixture,
    reads_ahead_fail: bool,
) -> None:
    """The same tables either way: latest (one partition weighs a late change against the
    index: read again) and --at a moment between two changes after the base."""
    table, folder, history = backed_up_journal
    real = journal_restore.base_states
    failed: list[str] = []

    def failing_ahead(*arguments: Any, **options: Any) -> Any:
        if threading.current_thread().name == "restore-base-ahead":
            failed.append(arguments[2])
            raise ConnectionResetError("the base file's read was cut")
        return real(*arguments, **options)

    if reads_ahead_fail:
        monkeypatch.setattr(journal_restore, "base_states", failing_ahead)
    caplog.set_level(logging.DEBUG, logger="dynamo_backups.jobs.restore")
    target, report = restore(dynamodb_local, s3, bucket, folder, None)
    assert restored_state(dynamodb, target) == history.state_at(None)
    assert restored_state(dynamodb, target) == restored_state(dynamodb, table)
    assert report.written == len(history.state_at(None))
    read, taken = reads_ahead(caplog)
    if reads_ahead_fail:
        assert failed and (read, taken) == (0, 0)
    else:
        assert read >= 1 and 1 <= taken <= read  # 4 at once, 16 partitions

    caplog.clear()
    at = history.time(43) + timedelta(seconds=30)
    target, _ = restore(dynamodb_local, s3, bucket, folder, at)
    assert restored_state(dynamodb, target) == history.state_at(at)
    assert reads_ahead(caplog)[1] == (0 if reads_ahead_fail else reads_ahead(caplog)[0])
