"""Hostile review of ``restore --into-existing --delete-absent --resume`` (resume-absent).

The invariant: a resumed run ends exactly as one uninterrupted run would, and
``--delete-absent`` never deletes an item the backup held at the restore's moment. Each test
below interrupts a real run (a fault proxy in front of DynamoDB Local or SeaweedFS), changes
something between the attempts, resumes, and checks the table against what one uninterrupted
run gives. DynamoDB Local and SeaweedFS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.cli import main
from tests import faultproxy, servers
from tests.helpers import consumer_for, create_table, expected_name, scan_all
from tests.jobs.test_restore_resume import copy_table, fail_puts_in_partition, restore_args

pytestmark = pytest.mark.servers

ROWS = 40


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def pk_names(dynamodb: Any, table: str) -> set[str]:
    return {json.loads(key)["pk"]["S"] for key in scan_all(dynamodb, table)}


def name_of(pk: str) -> str:
    return expected_name({"pk": {"S": pk}})


def pk_in_partition(partition: str, stem: str, avoid: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """A fresh key whose object name falls in ``partition`` (one hex digit)."""
    for number in range(10_000):
        pk = f"{stem}{number}"
        if name_of(pk).startswith(partition) and pk not in avoid:
            return pk
    raise AssertionError("no key found")


def streamed_source(dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> str:
    """A table of ROWS items k0..k39, backed up from its stream."""
    table = create_table(dynamodb)
    for index in range(ROWS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    return table


def test_latest_resume_mixes_two_moments_and_deletes_backed_up_items(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A latest restore (no --at) is resumed after the backup moved on. The units the first
    attempt finished keep the names they read then; the unit done again reads the backup as
    it is now. The delete pass then deletes ``gone`` (in the backup at the first attempt) AND
    ``born`` (in the backup at the resume): whichever moment is "the restore's moment", an
    item the backup held at that moment is deleted, and the table matches the backup at no
    moment at all. One uninterrupted run (at either start) deletes only one of them."""
    source = streamed_source(dynamodb, streams, s3, bucket, prefix)
    folder = f"{prefix}/{source}"
    failing = name_of("k7")[0]
    gone = next(f"k{i}" for i in range(ROWS) if name_of(f"k{i}")[0] == failing)
    finished = next(d for d in "0123456789abcdef" if d != failing)
    born = pk_in_partition(finished, "born")

    # The existing table: what the source holds, plus ``born`` (someone else wrote it).
    target = copy_table(dynamodb, source)
    dynamodb.put_item(TableName=target, Item={"pk": {"S": born}, "v": {"N": "1"}})
    at_first = {f"k{i}" for i in range(ROWS)}

    args = ["--delete-absent", "--key-schema", "pk:S"]
    args += ["--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    rule, seen = fail_puts_in_partition(failing)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, target, *args))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and seen["rejected"] >= 1, first.output
    assert json.loads(first.stdout)["unfinished_units"] == [f"partition-{failing}"]

    # Between the attempts the source changes, and its stream reaches the backup.
    dynamodb.delete_item(TableName=source, Key={"pk": {"S": gone}})
    dynamodb.put_item(TableName=source, Item={"pk": {"S": born}, "v": {"N": "1"}})
    consumer_for(dynamodb, streams, s3, bucket, prefix, source).run(once=True)
    at_resume = (at_first - {gone}) | {born}

    resumed = invoke(*restore_args(bucket, folder, target, *args, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    final = pk_names(dynamodb, target)
    report = json.loads(resumed.stdout)
    assert final in (at_first, at_resume), (
        f"the resumed run deleted {sorted((at_first | at_resume) - final)} "
        f"(deleted_absent={report['deleted_absent']}); the backup held {gone!r} at the first "
        f"attempt and {born!r} at the resume: the table is the backup at no moment"
    )


def backed_up_source(dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> str:
    """The streamed source, and an existing table holding it plus x0, x1 (not backed up)
    and k5 changed since the backup."""
    source = streamed_source(dynamodb, streams, s3, bucket, prefix)
    target = copy_table(dynamodb, source)
    for extra in ("x0", "x1"):
        dynamodb.put_item(TableName=target, Item={"pk": {"S": extra}, "v": {"N": "0"}})
    dynamodb.put_item(TableName=target, Item={"pk": {"S": "k5"}, "v": {"N": "999"}})
    return source, target  # type: ignore[return-value]


def test_a_keys_file_changed_between_attempts_is_not_what_the_resume_restores(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--keys`` is recorded as a path, not as what the file held. The first attempt's one
    unit (``keys``) finished and its deletes failed; the user corrects the file (x1 and k5,
    not x0) and resumes with the same command. The resumed run restores nothing the new file
    lists and deletes x0, which the file no longer lists; one uninterrupted run with the file
    as it is deletes x1, restores k5 and leaves x0 alone."""
    from tests.jobs.test_restore_resume import fail_deletes

    source, target = backed_up_source(dynamodb, streams, s3, bucket, prefix)
    twin = copy_table(dynamodb, target)
    folder = f"{prefix}/{source}"
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"pk": "x0"}\n')
    args = ["--delete-absent", "--key-schema", "pk:S", "--keys", str(keys)]
    with faultproxy.FaultProxy(dynamodb_local.endpoint, fail_deletes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, target, *args))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and len(json.loads(first.stdout)["not_deleted"]) == 1

    keys.write_text('{"pk": "x1"}\n{"pk": "k5"}\n')
    resumed = invoke(*restore_args(bucket, folder, target, *args, "--resume"))
    uninterrupted = invoke(*restore_args(bucket, folder, twin, *args))
    assert uninterrupted.exit_code == 0, uninterrupted.output
    assert "x0" in pk_names(dynamodb, twin) and "x1" not in pk_names(dynamodb, twin)
    assert resumed.exit_code != 0 or scan_all(dynamodb, target) == scan_all(dynamodb, twin), (
        f"resumed with the corrected keys file: exit {resumed.exit_code}, deleted "
        f"{sorted(pk_names(dynamodb, twin) - pk_names(dynamodb, target))}, left "
        f"{sorted(pk_names(dynamodb, target) - pk_names(dynamodb, twin))}, k5 = "
        f"{scan_all(dynamodb, target)[json.dumps({'pk': {'S': 'k5'}})]['v']} "
        "(one uninterrupted run with this file: x0 kept, x1 deleted, k5 = 1)"
    )


def test_kept_names_removed_by_a_lifecycle_rule_stop_the_resume_with_one_clear_error(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every unit finished, the delete pass failed; then a lifecycle rule expires the run's
    scratch (a delete marker on each chunk, as expiration in a versioned bucket leaves). The
    resume must delete nothing and end with one ``error:`` line saying what to do (start
    over without --resume), never a traceback."""
    from tests.jobs.test_restore_resume import fail_deletes

    source, target = backed_up_source(dynamodb, streams, s3, bucket, prefix)
    folder = f"{prefix}/{source}"
    args = ["--delete-absent", "--key-schema", "pk:S"]
    with faultproxy.FaultProxy(dynamodb_local.endpoint, fail_deletes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke(*restore_args(bucket, folder, target, *args))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1, first.output
    before = scan_all(dynamodb, target)

    chunks = [
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for entry in page.get("Contents", [])
        if "/scratch/kept-names/" in entry["Key"]
    ]
    assert chunks
    for key in chunks:
        s3.delete_object(Bucket=bucket, Key=key)

    resumed = invoke(*restore_args(bucket, folder, target, *args, "--resume"))
    assert scan_all(dynamodb, target) == before  # nothing deleted against missing names
    assert resumed.exit_code == 1
    assert resumed.exception is None or isinstance(resumed.exception, SystemExit), (
        f"a traceback, not an error line: {resumed.exception!r}"
    )
    assert "error:" in resumed.output and "--resume" in resumed.output, resumed.output


def in_process_restore(
    dynamodb_endpoint: str,
    s3: Any,
    reader_s3: Any,
    bucket: str,
    folder: str,
    table: str,
    **options: Any,
) -> Any:
    """A restore in this process, as the CLI builds one, with the S3 clients given (so that
    a fault proxy can stand in front of one run only)."""
    from botocore.credentials import Credentials

    from dynamo_backups.aws.dynamodb import RawDynamoDB
    from dynamo_backups.aws.s3objects import BotocoreObjects
    from dynamo_backups.jobs.restore import Restore, RestoreOptions
    from tests.servers import make_client

    dynamodb = make_client("dynamodb", dynamodb_endpoint)
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    return Restore(
        s3,
        BotocoreObjects(reader_s3, bucket),
        dynamodb,
        lambda request: api.call("BatchWriteItem", request),
        bucket,
        folder,
        table,
        RestoreOptions(**options),
        call=api.call,
    )


def test_a_concurrent_resume_of_the_same_run_mixes_kept_name_chunks_and_deletes_backed_up_items(
    dynamodb_local: servers.Server,
    seaweedfs: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run A is slow writing its kept-name chunks (its chunk 1 is held up); meanwhile the
    operator starts ``--resume`` (run B), which takes A's unfinished run, does the unit again,
    overwrites chunk 0 with the names it read first, records the unit and finishes. A then
    goes on: its chunks 1.. overwrite B's, its record says as many chunks, and its delete pass
    reads B's chunk 0 with A's others: the names only A's chunk 0 held are read nowhere, and
    those items, which the backup holds, are deleted. Chunks are named per unit, not per
    attempt (the ``lines`` a record states are never checked, and would match here anyway:
    every full chunk holds CHUNK_LINES names). CHUNK_LINES is lowered to 4 so 40 items make
    10 chunks, as 2,000,000 items do with the real 200,000.

    (resume-fix) A live attempt holds a lease on its run and B would be refused (the next
    test); here A's lease lapses at once, as a hung attempt's does, so B takes the run over
    while A still goes on: chunks named per attempt keep their names apart."""
    import threading
    from urllib.parse import urlsplit

    from dynamo_backups.backup import run_lease
    from dynamo_backups.core.parallel import ThreadEngine
    from dynamo_backups.jobs import restore_absent
    from tests.servers import make_client

    monkeypatch.setattr(restore_absent, "CHUNK_LINES", 4)
    monkeypatch.setattr(run_lease, "RUN_LEASE_SECONDS", -5.0)  # lapsed as soon as written
    source = streamed_source(dynamodb, streams, s3, bucket, prefix)
    target = copy_table(dynamodb, source)
    dynamodb.put_item(TableName=target, Item={"pk": {"S": "x0"}, "v": {"N": "0"}})
    folder = f"{prefix}/{source}"
    options = {"key_schema": "pk:S", "into_existing": True, "delete_absent": True}
    options["partitions"] = 1
    first_names = sorted(name_of(f"k{i}") for i in range(ROWS))[:8]

    a_blocked, b_done = threading.Event(), threading.Event()

    def hold_chunks_after_the_first(request: faultproxy.Request) -> str:
        path = urlsplit(request.path).path
        later_chunk = "/scratch/kept-names/" in path and not path.endswith("/000000.txt.gz")
        if request.method == "PUT" and later_chunk:
            a_blocked.set()
            b_done.wait(60)
        return faultproxy.FORWARD

    def slow_first_objects(request: faultproxy.Request) -> str:
        path = urlsplit(request.path).path
        if request.method == "GET" and any(path.endswith(name) for name in first_names):
            threading.Event().wait(1.0)  # B reads these last
        return faultproxy.FORWARD

    outcome: dict[str, Any] = {}
    with (
        faultproxy.FaultProxy(seaweedfs.endpoint, hold_chunks_after_the_first) as slow_put,
        faultproxy.FaultProxy(seaweedfs.endpoint, slow_first_objects) as slow_get,
    ):
        a_s3 = make_client("s3", slow_put.endpoint)
        run_a = in_process_restore(
            dynamodb_local.endpoint, a_s3, s3, bucket, folder, target, read_concurrency=1, **options
        )

        def attempt_a() -> None:
            outcome["a"] = run_a.run(ThreadEngine(1))

        thread = threading.Thread(target=attempt_a)
        thread.start()
        assert a_blocked.wait(60)
        b_s3 = make_client("s3", slow_get.endpoint)
        run_b = in_process_restore(
            dynamodb_local.endpoint, s3, b_s3, bucket, folder, target, resume=True, **options
        )
        report_b = run_b.run(ThreadEngine(1))
        assert report_b.complete and report_b.deleted_absent == 1, report_b
        assert pk_names(dynamodb, target) == {f"k{i}" for i in range(ROWS)}  # B alone: right
        b_done.set()
        thread.join(120)

    report_a = outcome["a"]
    final = pk_names(dynamodb, target)
    missing = sorted({f"k{i}" for i in range(ROWS)} - final)
    assert not missing, (
        f"run A (complete={report_a.complete}, deleted_absent={report_a.deleted_absent}) "
        f"deleted {missing}, which the backup holds"
    )


def test_a_resume_while_an_attempt_of_the_run_is_live_is_refused(
    dynamodb_local: servers.Server,
    seaweedfs: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """(resume-fix) Run A is held up writing its kept names; ``--resume`` (run B) meanwhile
    finds A's lease live and stops with a clear error, touching nothing; A then ends the
    table as one uninterrupted run does."""
    import threading
    from urllib.parse import urlsplit

    from dynamo_backups.backup.ledger import LedgerError
    from dynamo_backups.core.parallel import ThreadEngine
    from tests.servers import make_client

    source = streamed_source(dynamodb, streams, s3, bucket, prefix)
    target = copy_table(dynamodb, source)
    dynamodb.put_item(TableName=target, Item={"pk": {"S": "x0"}, "v": {"N": "0"}})
    folder = f"{prefix}/{source}"
    options = {"key_schema": "pk:S", "into_existing": True, "delete_absent": True}
    a_blocked, b_done = threading.Event(), threading.Event()

    def hold_kept_names(request: faultproxy.Request) -> str:
        if request.method == "PUT" and "/scratch/kept-names/" in urlsplit(request.path).path:
            a_blocked.set()
            b_done.wait(60)
        return faultproxy.FORWARD

    outcome: dict[str, Any] = {}
    with faultproxy.FaultProxy(seaweedfs.endpoint, hold_kept_names) as slow_put:
        a_s3 = make_client("s3", slow_put.endpoint)
        run_a = in_process_restore(
            dynamodb_local.endpoint, a_s3, s3, bucket, folder, target, partitions=1, **options
        )
        thread = threading.Thread(target=lambda: outcome.update(a=run_a.run(ThreadEngine(1))))
        thread.start()
        assert a_blocked.wait(60)
        before = scan_all(dynamodb, target)
        run_b = in_process_restore(
            dynamodb_local.endpoint,
            s3,
            s3,
            bucket,
            folder,
            target,
            partitions=1,
            resume=True,
            **options,
        )
        try:
            with pytest.raises(LedgerError, match=r"another attempt of run .* is running"):
                run_b.run(ThreadEngine(1))
            assert scan_all(dynamodb, target) == before
        finally:
            b_done.set()
            thread.join(120)
    assert outcome["a"].complete and outcome["a"].deleted_absent == 1, outcome["a"]
    assert pk_names(dynamodb, target) == {f"k{i}" for i in range(ROWS)}


def test_a_resume_that_creates_the_table_again_skips_what_the_lost_table_held(
    aws_env: dict[str, str],
    dynamodb_local: servers.Server,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first attempt created the table and restored 15 of 16 partitions; the half-done
    table is then deleted (an operator tidying up, a stack rollback). The resume finds no
    table, creates it again, and yet skips the 15 recorded units, whose writes went with the
    old table: it reports a complete restore of a table holding one partition's items."""
    from tests.conftest import unique_table_name

    source = streamed_source(dynamodb, streams, s3, bucket, prefix)
    folder = f"{prefix}/{source}"
    target = unique_table_name("recreated")
    failing = name_of("k7")[0]
    args = ["--key-schema", "pk:S", "--unwritten-keys", str(tmp_path / "unwritten.jsonl")]
    rule, _ = fail_puts_in_partition(failing)
    with faultproxy.FaultProxy(dynamodb_local.endpoint, rule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        first = invoke("--output", "json", "restore", bucket, folder, target, *args)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint)
    assert first.exit_code == 1 and json.loads(first.stdout)["created_table"] is True

    dynamodb.delete_table(TableName=target)
    dynamodb.get_waiter("table_not_exists").wait(TableName=target)

    resumed = invoke("--output", "json", "restore", bucket, folder, target, *args, "--resume")
    report = json.loads(resumed.stdout) if resumed.stdout.strip() else {}
    final = pk_names(dynamodb, target) if resumed.exit_code == 0 else set()
    assert resumed.exit_code != 0 or final == {f"k{i}" for i in range(ROWS)}, (
        f"exit {resumed.exit_code}, created_table={report.get('created_table')}, "
        f"complete report, but the new table holds {len(final)} of {ROWS} items"
    )


def test_a_folder_adopted_between_attempts_loses_an_item_whose_names_straddle_units(
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """The workflow the tool itself prescribes: a restore stops at an object under the
    replicator's name ("run dynamo-backups adopt on this folder"), the user adopts the
    folder and resumes. Item X sits under its replicator name in partition F (that unit
    failed) while its own name falls in partition R (that unit finished before adoption,
    finding nothing under X's own name). On resume, F skips X's replicator name ("read with
    the item's own name") and R is not run again: X is never restored, and the delete pass,
    which never saw X kept, deletes it from the table although the backup holds it."""
    from tests.jobs.test_adopt import adopt

    replicated, rows, x, replicator_name = straddling_folder(dynamodb, streams, s3, bucket, prefix)
    target = copy_table_with_range(dynamodb, replicated.table)
    dynamodb.put_item(TableName=target, Item={"pk": {"S": "extra"}, "sk": {"N": "0"}})
    command = restore_args(bucket, replicated.folder, target, "--delete-absent")
    command += ["--key-schema", "pk:S,sk:N"]
    first = invoke(*command)
    assert first.exit_code == 1 and "dynamo-backups adopt" in first.output, first.output
    report = json.loads(first.stdout)
    assert report["unfinished_units"] == [f"partition-{replicator_name(*x)[0]}"], report

    adopt(bucket, replicated.folder)
    # One uninterrupted run after adoption keeps X (and deletes only the extra item).
    twin = copy_table_with_range(dynamodb, replicated.table)
    dynamodb.put_item(TableName=twin, Item={"pk": {"S": "extra"}, "sk": {"N": "0"}})
    whole = invoke(*restore_args(bucket, replicated.folder, twin, *command[7:]))
    assert whole.exit_code == 0 and json.loads(whole.stdout)["deleted_absent"] == 1, whole.output
    assert len(scan_all(dynamodb, twin)) == len(rows)

    resumed = invoke(*command, "--resume")
    final = {(k["pk"]["S"], int(k["sk"]["N"])) for k in map(json.loads, scan_all(dynamodb, target))}
    assert resumed.exit_code != 0 or final == set(rows), (
        f"resumed after adopt: exit {resumed.exit_code}, "
        f"deleted_absent={json.loads(resumed.stdout).get('deleted_absent')}, "
        f"lost {sorted(set(rows) - final)} (in the backup), left {sorted(final - set(rows))}"
    )


def copy_table_with_range(dynamodb: Any, table: str) -> str:
    twin = create_table(dynamodb, [("pk", "S"), ("sk", "N")], view_type=None)
    for found in scan_all(dynamodb, table).values():
        dynamodb.put_item(TableName=twin, Item=found)
    return twin


def straddling_folder(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> tuple[Any, list[tuple[str, int]], tuple[str, int], Any]:
    """A folder written by the replicator's Lambda: 12 items, one of them (X) under a name
    in another partition than its own."""
    import hashlib

    from tests.jobs.test_adopt import HASH_FIRST, RANGE_FIRST, Replicated

    def replicator_name(pk: str, sk: int) -> str:
        text = json.dumps({"sk": {"N": str(sk)}, "pk": {"S": pk}}, separators=(",", ":"))
        return hashlib.md5(text.encode()).hexdigest()

    def own_name(pk: str, sk: int) -> str:
        return expected_name({"pk": {"S": pk}, "sk": {"N": str(sk)}})

    replicated = Replicated(dynamodb, streams, s3, bucket, prefix)
    rows = [(f"x{i}", i) for i in range(12)]
    x = next(r for r in rows if own_name(*r)[0] != replicator_name(*r)[0])
    for pk, sk in rows:
        dynamodb.put_item(
            TableName=replicated.table,
            Item={"pk": {"S": pk}, "sk": {"N": str(sk)}, "v": {"S": "1"}},
        )
    replicated.replicate({r: RANGE_FIRST if r == x else HASH_FIRST for r in rows})

    return replicated, rows, x, replicator_name


def test_a_folder_adopted_between_attempts_restores_a_new_table_without_an_item(
    aws_env: dict[str, str],
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> None:
    """The same straddling item without --delete-absent: the resumed restore into a new
    table reports success, and the table lacks X."""
    from tests.conftest import unique_table_name
    from tests.jobs.test_adopt import adopt

    replicated, rows, _, _ = straddling_folder(dynamodb, streams, s3, bucket, prefix)
    target = unique_table_name("adopted-resume")
    command = ["--output", "json", "restore", bucket, replicated.folder, target]
    command += ["--key-schema", "pk:S,sk:N"]
    first = invoke(*command)
    assert first.exit_code == 1 and "dynamo-backups adopt" in first.output, first.output
    adopt(bucket, replicated.folder)
    resumed = invoke(*command, "--resume")
    final = {(k["pk"]["S"], int(k["sk"]["N"])) for k in map(json.loads, scan_all(dynamodb, target))}
    assert resumed.exit_code != 0 or final == set(rows), (
        f"resumed after adopt: exit {resumed.exit_code}, "
        f"the table lacks {sorted(set(rows) - final)}"
    )
