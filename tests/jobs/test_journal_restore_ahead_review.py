"""Review of f20a49a (a journal restore reads its base's first partitions while its pin is
waited for; ``checked_item``'s fast path; ``canonical_key`` without the ``to_wire`` copy):
reproductions, each failing at f20a49a and passing at its parent d350152.

The naming test is pure (the parent's ``core/keys.py`` and ``core/ddbjson.py`` loaded from
git); the others run the command line against DynamoDB Local and SeaweedFS through a fault
proxy that holds the base's data files' GETs (a stuck connection, under the timeouts)."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import threading
import time
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dynamo_backups.backup.reading import read_document
from dynamo_backups.core import keys as new_keys
from tests import faultproxy, servers
from tests.cli.test_interrupt import cli, environment, interrupt_when
from tests.helpers import create_table, module_at
from tests.jobs.test_journal_compact_restore import History, compact, deliver, start_time
from tests.jobs.test_restore_prefetch import SlowClock, _items_in
from tests.pipeline.test_journal_writes import journal_manifest

REPO = Path(__file__).resolve().parents[2]
PARENT = "d350152"
STALL_SECONDS = 40.0  # a base data file's GET held this long (a stuck connection)


# --- object names ---------------------------------------------------------------------------


def _parent_keys() -> types.ModuleType:
    """``core/keys.py`` as it was at the parent commit, over the parent's ``core/ddbjson``."""
    module_at(PARENT, "ddbjson")
    renames = {"from dynamo_backups.core.ddbjson": "from _parent_ddbjson"}
    return module_at(PARENT, "keys", renames)


def _name_or_error(canonical: Any, key: dict[str, Any]) -> str:
    try:
        return canonical(key).decode()
    except Exception as error:  # the refusal is part of the behaviour compared
        return f"refused: {type(error).__name__}"


ONCE_BROKEN = {"L", "BS", "B"}


def test_object_names_are_byte_identical_to_the_parents_for_every_key() -> None:
    """``canonical_key`` (hence ``object_name``: every object's name, every partition) must
    give the parent's bytes for every key. A one-attribute key is walked by the parent's
    ``to_wire`` as if the key itself were a typed value, so a table whose key attribute is
    named ``L`` or ``BS`` was named from the attribute's *tag* (``{"L":["S"]}``: one name for
    every item), and one named ``B`` was refused; the new fast path names such keys from
    their values. Either way the names of an existing folder's objects and of a new run's
    differ: ``history``/``restore --keys`` look up a name nothing was written under, and a
    journal's routing and bases disagree with what the old code wrote."""
    parent = _parent_keys()
    generator = random.Random(20261205)
    names = ["pk", "sk", "S", "N", "B", "L", "M", "BS", "SS", "NS", "BOOL", "NULL"]
    texts = ["", "a", "é", "x" * 3, "\u2603", '"q"', "\\"]
    numbers = ["0", "1", "-1.5", "1E+3", "12345678901234567890"]
    keys: list[dict[str, Any]] = []
    for count in (1, 2):
        for attributes in itertools.permutations(names, count):
            for _ in range(6):
                keys.append(
                    {
                        attribute: (
                            {"S": generator.choice(texts)}
                            if generator.random() < 0.5
                            else {"N": generator.choice(numbers)}
                        )
                        for attribute in attributes
                    }
                )
    differing = [
        (
            key,
            _name_or_error(parent.canonical_key, key),
            _name_or_error(new_keys.canonical_key, key),
        )
        for key in keys
    ]
    differing = [(key, old, new) for key, old, new in differing if old != new]
    # The one deliberate change: a one-attribute key named L, BS or B, which the parent read
    # as a typed value (all items one name, or refused), is named attribute by attribute.
    once_broken = [case for case in differing if len(case[0]) == 1 and set(case[0]) & ONCE_BROKEN]
    assert len(once_broken) == len(differing), (
        f"{len(differing) - len(once_broken)} of {len(keys)} keys named differently, e.g. "
        + "; ".join(
            f"{key}: parent {old!r}, now {new!r}"
            for key, old, new in differing
            if (key, old, new) not in once_broken
        )
    )
    for key, _, new in once_broken:
        assert new == json.dumps(key, sort_keys=True, separators=(",", ":")), key


# --- a journal folder with a base, through a proxy holding the base's data reads -------------


@pytest.fixture
def journal_with_base(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, journal_env: str
) -> tuple[str, str]:
    """A journal folder with a base of 16 partitions (40 items), then changes after it."""
    table = create_table(dynamodb)
    folder = f"{journal_env}/{table}"
    journal_manifest(s3, bucket, journal_env, table, "journal")
    history = History(dynamodb, streams, table, start_time())
    deliver(history.change([("put", f"k{index:02d}", index) for index in range(40)]))
    moment = history.time(len(history.records) - 1) + timedelta(seconds=30)
    compact(s3, bucket, folder, moment, partitions=16)
    deliver(history.change([("put", "k05", 205), ("delete", "k06", 0)]))
    return table, folder


class HoldBaseData:
    """Forwards everything; a GET of a base's data file is held ``STALL_SECONDS`` first."""

    def __init__(self) -> None:
        self.held = threading.Event()

    def __call__(self, request: faultproxy.Request) -> str:
        path = request.path.partition("?")[0]
        if request.method == "GET" and "/bases/" in path and "/data/" in path:
            self.held.set()
            time.sleep(STALL_SECONDS)
        return faultproxy.FORWARD


def _moment_written(s3: Any, bucket: str, job: str) -> bool:
    """The run's ``moment.json`` is there (a journal restore's holds ``{}``)."""
    run = read_document(s3, bucket, job + "run.json")
    if not run:
        return False
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{job}{run['run_id']}/scratch/moment.json")
    return bool(listed.get("Contents"))


@pytest.mark.servers
def test_ctrl_c_during_the_pins_wait_is_held_by_the_base_read_ahead(
    aws_env: dict[str, str],
    seaweedfs: servers.Server,
    dynamodb: Any,
    s3: Any,
    bucket: str,
    journal_with_base: tuple[str, str],
) -> None:
    """S3's clock 60 s behind (a long pin's wait) and every GET of a base data file held:
    the read-ahead's reads were run by a pool whose workers the interpreter joins at exit
    (concurrent.futures' exit hook), so the first Ctrl-C printed "interrupted" and the
    process went on until the held reads ended; it must end at once, with no table."""
    table, folder = journal_with_base
    target = f"{table}-stopped"
    job = f"{folder.split('/')[0]}/.dynamo-backups/{table}/jobs/restore-into-{target}/"
    rule = HoldBaseData()
    seen: list[float] = []

    def well_inside_the_wait() -> bool:
        if not seen and _moment_written(s3, bucket, job):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 3.0

    with SlowClock(seaweedfs.endpoint, 60.0, rule=rule) as proxy:
        env = {**environment(aws_env), "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        ended, took = interrupt_when(
            cli("restore", bucket, folder, target), env, well_inside_the_wait
        )
    assert ended.returncode == 130, ended.stderr
    assert "Traceback" not in ended.stderr, ended.stderr
    assert took < 10, (
        f"Ctrl-C during the pin's wait took {took:.1f} s to end the restore "
        f"(base data read held: {rule.held.is_set()}): {ended.stderr}"
    )
    assert not _items_in(dynamodb, target)


class HoldBaseDataDenyJournal(HoldBaseData):
    """As ``HoldBaseData``; a GET of a journal piece is answered 403 AccessDenied (a role
    that lost s3:GetObject on the journal, say): the route stage fails, no unit writes."""

    def __call__(self, request: faultproxy.Request) -> str | faultproxy.Answer:  # type: ignore[override]
        path, _, query = request.path.partition("?")
        if request.method == "GET" and "/journal/" in path and "list-type" not in query:
            body = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
            return faultproxy.Answer(403, {"Content-Type": "application/xml"}, body)
        return super().__call__(request)


@pytest.mark.servers
def test_a_failed_restore_exits_only_once_the_base_read_ahead_ends(
    aws_env: dict[str, str], seaweedfs: servers.Server, bucket: str, journal_with_base: Any
) -> None:
    """A restore whose route stage fails (its journal pieces refused) stops before any
    partition unit: the parent had read nothing of the base then and exited at once with its
    error. Now the read-ahead's pool is joined at exit: the failed command stays alive
    (holding its connections and the partitions decoded so far) until every base read it
    began ends, however long S3 takes to answer them."""
    table, folder = journal_with_base
    target = f"{table}-failed"
    rule = HoldBaseDataDenyJournal()
    with faultproxy.FaultProxy(seaweedfs.endpoint, rule) as proxy:
        env = {**environment(aws_env), "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        started = time.monotonic()
        ended = subprocess.run(
            cli("restore", bucket, folder, target),
            env=env,
            capture_output=True,
            text=True,
            timeout=STALL_SECONDS + 30,
        )
        took = time.monotonic() - started
    stderr = ended.stderr
    assert ended.returncode not in (0, None), stderr
    assert "error:" in stderr and "Traceback" not in stderr, stderr
    assert took < STALL_SECONDS / 2, (
        f"the failed restore took {took:.1f} s to exit (base data read held: "
        f"{rule.held.is_set()}): {stderr}"
    )
