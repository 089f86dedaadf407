"""restore's options on both layouts (issue 22): ``--keys``, ``--into-existing``,
``--delete-absent`` (also resumed after a kill), the file of keys not written; against
DynamoDB Local and SeaweedFS. Each test that can run on either layout is parametrized over
both: the same changes, written by the Lambda handler in the folder's layout, give the same
table, report and exit code. The journal folder has a base in the middle of its changes, so
that its restores read a base and the journal after it."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials

from dynamo_backups.aws.dynamodb import RawDynamoDB
from dynamo_backups.aws.retry import RetriesExhausted, RetryPolicy
from dynamo_backups.aws.s3objects import BotocoreObjects
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.base import BasePaths
from dynamo_backups.core.ddbjson import to_wire
from dynamo_backups.core.journal import (
    JournalRecord,
    encode_piece,
    format_change_time,
    piece_name,
)
from dynamo_backups.core.keys import object_name
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.layouts import layout_named
from dynamo_backups.jobs.restore import RestoreOptions
from tests import servers
from tests.helpers import create_table, kill_when
from tests.jobs.test_inspect import moto_endpoint  # noqa: F401 (a fixture)
from tests.jobs.test_journal_compact_restore import (
    History,
    cli,
    compact,
    deliver,
    invoke,
    recorded_units,
    restored_state,
    start_time,
)
from tests.pipeline.test_journal_writes import journal_manifest
from tests.servers import make_client

pytestmark = pytest.mark.servers

LAYOUTS = ["items", "journal"]


class Folder:
    """A backup folder of one layout holding a table's changes (and the tracked history)."""

    def __init__(self, table: str, folder: str, history: History, layout: str) -> None:
        self.table, self.folder, self.history, self.layout = table, folder, history, layout

    def at(self, index: int) -> datetime:
        """A moment half a minute after the change ``index``."""
        return self.history.time(index) + timedelta(seconds=30)


@pytest.fixture
def make_folder(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: Any,
    dynamodb: Any,
    streams: Any,
    s3: Any,
    bucket: str,
    prefix: str,
) -> Any:
    """make(layout, operations, batch): a folder of ``layout`` holding the operations'
    changes, delivered by the handler in batches of ``batch``; a journal folder gets a base
    at the middle change (the rest after it is journal only)."""
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)

    def make(layout: str, operations: list[tuple[str, str, int]], batch: int = 5) -> Folder:
        monkeypatch.setenv("BACKUP_LAYOUT", layout)
        table = create_table(dynamodb)
        folder = f"{prefix}/{table}"
        journal_manifest(s3, bucket, prefix, table, layout)
        history = History(dynamodb, streams, table, start_time())
        records = history.change(operations)
        middle = len(records) // 2
        batches = [records[start : start + batch] for start in range(0, len(records), batch)]
        if layout == "journal":  # a base in the middle (the fixture's, not the code's, branch)
            first = [b for b in batches if records.index(b[0]) < middle]
            deliver(*first)
            compact(s3, bucket, folder, history.time(middle - 1) + timedelta(seconds=30))
            deliver(*[b for b in batches if b not in first])
        else:
            deliver(*batches)
        return Folder(table, folder, history, layout)

    return make


def target_table(dynamodb: Any, items: dict[str, dict[str, Any]]) -> str:
    """A table keyed as the source, holding ``items`` (DynamoDB JSON as the wire has it)."""
    table = create_table(dynamodb, view_type=None)
    api = RawDynamoDB(dynamodb, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    for item in items.values():
        api.call("PutItem", {"TableName": table, "Item": item})
    return table


def stranger(key: str) -> dict[str, Any]:
    return {"pk": {"S": key}, "v": {"S": "not in the backup"}}


def write_keys(keys: list[str]) -> str:
    path = f"{os.environ.get('TMPDIR', '/tmp')}/keys-{os.urandom(4).hex()}.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"pk": key}) + "\n" for key in keys)
    return path


def changes(count: int) -> list[tuple[str, str, int]]:
    """``count`` puts of k000..., with some deleted and some changed again at the end."""
    operations = [("put", f"k{i:03d}", i % 250) for i in range(count)]
    operations += [("delete", f"k{i:03d}", 0) for i in range(0, count, 7)]
    operations += [("put", f"k{i:03d}", 7) for i in range(3, count, 11)]
    return operations


# --- --keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keys_restores_only_the_listed_items(
    layout: str, make_folder: Any, dynamodb: Any, bucket: str, aws_env: Any
) -> None:
    made = make_folder(layout, changes(24))
    at = made.at(27)
    state = made.history.state_at(at)
    # Present then; deleted then (k007; k021 after the base); never there.
    listed = ["k001", "k007", "k021", "k022", "zzz"]
    target = f"{made.table}-keys"
    result = invoke("--output", "json", "-q", "restore", bucket, made.folder, target,
                    "--keys", write_keys(listed), "--at", at.isoformat())  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    wanted = {key: state[key] for key in listed if key in state}
    assert restored_state(dynamodb, target) == wanted
    assert (report["written"], report["absent"]) == (len(wanted), len(listed) - len(wanted))


def test_keys_on_a_journal_folder_reads_only_the_partitions_holding_them(
    make_folder: Any, dynamodb: Any, s3: Any, bucket: str, aws_env: Any
) -> None:
    made = make_folder("journal", changes(40))
    listed = ["k005", "k017"]
    target = f"{made.table}-keys"
    result = invoke("restore", bucket, made.folder, target, "--keys", write_keys(listed),
                    "--partitions", "256")  # fmt: skip
    assert result.exit_code == 0, result.output
    latest = made.history.state_at(None)
    assert restored_state(dynamodb, target) == {key: latest[key] for key in listed}
    # One partition unit per key's partition (the base's: 16), not the folder's 256.
    job = f"restore-into-{target}"
    parts = {object_name({"pk": {"S": key}}, "md5")[:1] for key in listed}
    assert recorded_units(s3, bucket, made.folder, "partition", job) == len(parts)


# --- --into-existing and --delete-absent ----------------------------------------------------


def run_record(s3: Any, bucket: str, folder: str, job: str) -> dict[str, Any]:
    layout = TableLayout.from_folder(folder)
    key = f"{layout.meta_prefix}jobs/{job}/run.json"
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_restore_refused_for_items_leaves_no_run_to_resume(
    layout: str, make_folder: Any, dynamodb: Any, s3: Any, bucket: str, aws_env: Any
) -> None:
    """With --resume (the command's refusals and Ctrl-C advise it), a restore into a table
    with items begins a run, which the job refuses: it wrote nothing, but it stayed
    "running". The next run was told "the run of ... has not ended", and --resume took it
    over, with the moment it had pinned (a latest restore as of then, not now)."""
    made = make_folder(layout, changes(8))
    target = target_table(dynamodb, {"x1": stranger("x1")})
    job = f"restore-into-{target}"
    refused = invoke("restore", bucket, made.folder, target, "--resume")
    assert refused.exit_code == 2 and "already has items" in refused.output, refused.output
    record = run_record(s3, bucket, made.folder, job)
    assert record["state"] == "refused" and "already has items" in record["error"], record
    dynamodb.delete_item(TableName=target, Key={"pk": {"S": "x1"}})  # the user empties it
    resumed = invoke("restore", bucket, made.folder, target, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "has not ended" not in resumed.output, resumed.output
    after = run_record(s3, bucket, made.folder, job)
    assert after["run_id"] != record["run_id"] and after["state"] == "complete", after
    assert restored_state(dynamodb, target) == made.history.state_at(None)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_refusal_the_ledger_cannot_record_is_still_the_refusal(
    layout: str,
    make_folder: Any,
    dynamodb: Any,
    bucket: str,
    aws_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording the refused run is bookkeeping on the refusal's way out: when S3 will not
    take it, the user still reads the refusal and its exit code (2), not the ledger's error
    (exit 1, "gave up after 10 attempts"), and the table is left untouched."""
    made = make_folder(layout, changes(4))
    target = target_table(dynamodb, {"x1": stranger("x1")})
    real_put = BackupWriter.put_document

    def put(writer: BackupWriter, key: str, document: Any) -> None:
        if document.get("state") == "refused":  # S3 answers SlowDown until retries end
            raise RetriesExhausted(f"put s3://{writer.bucket}/{key}", 10, RuntimeError("SlowDown"))
        real_put(writer, key, document)

    monkeypatch.setattr(BackupWriter, "put_document", put)
    result = invoke("restore", bucket, made.folder, target, "--resume")
    assert result.exit_code == 2, result.output
    assert "already has items" in result.output, result.output
    assert "could not record the refused run" in result.output, result.output
    assert restored_state(dynamodb, target) == {"x1": stranger("x1")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_into_existing_keeps_what_the_backup_lacks_and_delete_absent_removes_it(
    layout: str, make_folder: Any, dynamodb: Any, bucket: str, aws_env: Any
) -> None:
    made = make_folder(layout, changes(24))
    at = made.at(26)
    state = made.history.state_at(at)
    later = made.history.state_at(None)
    extra = {"x1": stranger("x1"), "x2": stranger("x2")}
    target = target_table(dynamodb, {**later, **extra})  # the table now, and two strangers

    refused = invoke("restore", bucket, made.folder, target, "--at", at.isoformat())
    assert refused.exit_code == 2 and "already has items" in refused.output, refused.output
    kept = invoke("restore", bucket, made.folder, target, "--at", at.isoformat(),
                  "--into-existing")  # fmt: skip
    assert kept.exit_code == 0, kept.output
    # Every item as it was then; what the backup lacked then (later items, strangers) stays.
    assert restored_state(dynamodb, target) == {**later, **extra, **state}

    alone = invoke("restore", bucket, made.folder, target, "--delete-absent")
    assert alone.exit_code == 2 and "--into-existing" in alone.output, alone.output
    result = invoke("--output", "json", "-q", "restore", bucket, made.folder, target,
                    "--at", at.isoformat(), "--into-existing", "--delete-absent")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert restored_state(dynamodb, target) == state
    deleted = set(later) | set(extra)
    deleted -= set(state)
    assert json.loads(result.stdout)["deleted_absent"] == len(deleted)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keys_with_delete_absent_deletes_only_listed_keys_absent_then(
    layout: str, make_folder: Any, dynamodb: Any, bucket: str, aws_env: Any
) -> None:
    made = make_folder(layout, changes(24))
    at = made.at(27)
    state = made.history.state_at(at)
    assert "k007" not in state and "k014" not in state  # deleted by then
    now = {**made.history.state_at(None), "k007": stranger("k007"), "k014": stranger("k014")}
    target = target_table(dynamodb, now)
    keys = write_keys(["k001", "k007"])
    result = invoke("restore", bucket, made.folder, target, "--keys", keys, "--at",
                    at.isoformat(), "--into-existing", "--delete-absent")  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {**now, "k001": state["k001"]}
    del expected["k007"]  # listed and absent then: deleted; k014 not listed: kept
    assert restored_state(dynamodb, target) == expected


@pytest.mark.parametrize("layout", LAYOUTS)
def test_delete_absent_resumed_after_a_kill_keeps_every_item_the_backup_holds(
    layout: str, make_folder: Any, dynamodb: Any, s3: Any, bucket: str, aws_env: Any
) -> None:
    """The data-loss case: the killed attempt's finished units restored items that the
    resumed attempt does not read again; its last phase must still count them as kept."""
    made = make_folder(layout, changes(120), batch=20)
    at = made.at(125)
    state = made.history.state_at(at)
    extra = {f"x{i}": stranger(f"x{i}") for i in range(5)}
    target = target_table(dynamodb, {**made.history.state_at(None), **extra})
    arguments = ["restore", bucket, made.folder, target, "--at", at.isoformat(),
                 "--into-existing", "--delete-absent", "--partitions", "256", "--workers",
                 "1"]  # fmt: skip
    env = {**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cli(*arguments), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    job = f"restore-into-{target}"
    kill_when(
        process,
        lambda: recorded_units(s3, bucket, made.folder, "partition", job) >= 40,
        timeout=180,
    )
    assert 40 <= recorded_units(s3, bucket, made.folder, "partition", job) < 256
    resumed = invoke("--output", "json", "-q", *arguments, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert restored_state(dynamodb, target) == state  # every item then; strangers deleted


# --- keys not written -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keys_not_written_go_to_a_file_that_keys_takes(
    layout: str, make_folder: Any, dynamodb: Any, dynamodb_local: Any, s3: Any, bucket: str,
    aws_env: Any, tmp_path: Any,
) -> None:  # fmt: skip
    made = make_folder(layout, changes(12))
    client = make_client("dynamodb", dynamodb_local.endpoint)
    api = RawDynamoDB(client, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    refused = {"k002", "k005"}

    def batch_write(request: dict[str, Any]) -> dict[str, Any]:
        """DynamoDB leaving two items unprocessed, every time."""
        (table, writes), = request["RequestItems"].items()  # fmt: skip
        keep = [w for w in writes if w["PutRequest"]["Item"]["pk"]["S"] in refused]
        rest = [w for w in writes if w not in keep]
        if rest:
            api.call("BatchWriteItem", {"RequestItems": {table: rest}})
        return {"UnprocessedItems": {table: keep} if keep else {}}

    target = f"{made.table}-unwritten"
    path = tmp_path / "unwritten.jsonl"
    job = layout_named(layout).restore(
        s3, BotocoreObjects(s3, bucket), client, batch_write, bucket, made.folder,
        target, RestoreOptions(unwritten_keys_file=str(path)),
        retry_policy=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02),
    )  # fmt: skip
    report = job.run()
    latest = made.history.state_at(None)
    assert not report.complete and report.unwritten == 2
    assert report.unwritten_keys_file == str(path)
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(key["pk"]["S"] for key in written) == sorted(refused)
    assert restored_state(dynamodb, target) == {k: v for k, v in latest.items() if k not in refused}
    # The file as --keys takes it: the rest comes back.
    again = invoke("restore", bucket, made.folder, target, "--keys", str(path), "--into-existing")
    assert again.exit_code == 0, again.output
    assert restored_state(dynamodb, target) == latest


# --- --native-import (ImportTable: moto implements it, DynamoDB Local does not) ---------------


def journal_piece(s3: Any, bucket: str, folder: str, records: list[JournalRecord]) -> None:
    """One journal object holding ``records``, as a writer puts it."""
    key = f"{folder}/journal/{piece_name(records)}"
    s3.put_object(Bucket=bucket, Key=key, Body=encode_piece(records))


def change(number: int, moment: datetime, key: str, value: int | None) -> JournalRecord:
    """Change ``number`` (its sequence number) of item ``key``: a put of ``value``, or a
    removal (None)."""
    image = None if value is None else {"pk": {"S": key}, "v": {"N": f"{value}.25"},
                                        "b": {"B": "AAE="}}  # fmt: skip
    return JournalRecord(
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/Source/stream/1",
        sequence_number=str(1000 + number),
        event_name="REMOVE" if value is None else ("INSERT" if number < 20 else "MODIFY"),
        change_time=moment,
        keys={"pk": {"S": key}},
        image=image,
        event_id=f"event-{number}",
    )


def test_native_import_of_a_journal_folder_imports_the_base_and_applies_the_journal(
    moto_endpoint: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Any,
) -> None:
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

    dynamodb, s3 = client("dynamodb"), client("s3")
    bucket = "journal-backups"  # moto's state is one per process: names of its own
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    folder = "Prod/JournalSource"
    journal_manifest(s3, bucket, "Prod", "JournalSource", "journal")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    first = [change(n, t0 + timedelta(seconds=n), f"k{n:02d}", n) for n in range(12)]
    journal_piece(s3, bucket, folder, first)
    moment = t0 + timedelta(minutes=5)  # every change of the first piece is before it
    compact(s3, bucket, folder, moment)
    # After the base: k01 changed, k02 removed, k20 new; and a late change dated before
    # the base's moment (k03 removed) that reached the journal after the base was made.
    after = t0 + timedelta(minutes=10)
    changed = [change(30, after, "k01", 99), change(31, after, "k02", None)]
    journal_piece(s3, bucket, folder, [*changed, change(32, after, "k20", 20)])
    late = change(33, t0 + timedelta(minutes=4), "k03", None)
    journal_piece(s3, bucket, folder, [late])

    base = ["--endpoint-url", moto_endpoint, "--region", "us-east-1", "--output", "json"]
    expected = {record.keys["pk"]["S"]: record.image for record in first}
    del expected["k03"]  # the late removal counts at the base's own moment too
    for target, at in (("AtBase", moment), ("Latest", None)):
        if at is None:
            expected["k01"] = change(30, after, "k01", 99).image
            del expected["k02"]
            expected["k20"] = change(32, after, "k20", 20).image
        moment_given = ["--at", at.isoformat()] if at else []
        result = invoke(*base, "restore", bucket, folder, target, "--native-import",
                        *moment_given)  # fmt: skip
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["import"]["status"] == "COMPLETED" and summary["import"]["imported"] == 12
        restored = {
            item["pk"]["S"]: to_wire(item)
            for item in dynamodb.scan(TableName=target, ConsistentRead=True)["Items"]
        }
        assert restored == expected, target
    # Latest wrote k01 and k20 and deleted k02 and k03 (the base held them).
    assert (summary["journal"]["written"], summary["journal"]["deleted_absent"]) == (2, 2)

    exists = invoke(*base, "restore", bucket, folder, "Latest", "--native-import")
    assert exists.exit_code == 1 and "table Latest exists" in exists.output
    before = invoke(*base, "restore", bucket, folder, "Early", "--native-import", "--at",
                    (t0 + timedelta(minutes=1)).isoformat())  # fmt: skip
    assert before.exit_code == 2 and "no base at or before" in before.output, before.output


def test_native_import_refuses_a_moment_before_a_journal_begun_mid_way_before_importing(
    moto_endpoint: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """Fixed: ImportTable ran before the "journal began mid-way" check, so the refusal (exit
    2) left the imported table behind; now it is refused before the import."""

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

    dynamodb, s3 = client("dynamodb"), client("s3")
    bucket = "journal-midway"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    folder = "Prod/MidWay"
    journal_manifest(s3, bucket, "Prod", "MidWay", "journal")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    journal_piece(s3, bucket, folder, [change(n, t0 + timedelta(seconds=n), f"k{n}", n)
                                       for n in range(3)])  # fmt: skip
    early = t0 + timedelta(minutes=5)
    compact(s3, bucket, folder, early)  # from the journal alone
    # A later base from the table (a backfill's: reflects_before set): the journal began
    # mid-way, and the early base holds only the items it changed.
    early_key = BasePaths(f"{folder}/", early).manifest_key
    document = json.loads(s3.get_object(Bucket=bucket, Key=early_key)["Body"].read())
    later = t0 + timedelta(minutes=30)
    document.update(moment=format_change_time(later), cutoff=None,
                    reflects_before=format_change_time(later - timedelta(minutes=1)))  # fmt: skip
    later_key = BasePaths(f"{folder}/", later).manifest_key
    s3.put_object(Bucket=bucket, Key=later_key, Body=json.dumps(document).encode())
    tables = dynamodb.list_tables()["TableNames"]
    base = ["--endpoint-url", moto_endpoint, "--region", "us-east-1"]
    refused = invoke(*base, "restore", bucket, folder, "MidWayEarly", "--native-import",
                     "--at", (early + timedelta(minutes=1)).isoformat())  # fmt: skip
    assert refused.exit_code == 2 and "begins mid-way" in refused.output, refused.output
    assert dynamodb.list_tables()["TableNames"] == tables  # no table imported
