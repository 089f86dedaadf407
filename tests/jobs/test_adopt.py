"""Adopting a folder written by the checklist's original Lambda: real stream records from
DynamoDB Local written as that Lambda writes them (into SeaweedFS), then continued by our
handler, then read back by restore, history, verify and snapshot as one history per item."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.pipeline.backup_applier import BackupApplier
from tests.conftest import unique_table_name
from tests.helpers import create_table, lambda_records, scan_all

pytestmark = pytest.mark.servers

HASH_FIRST = ("pk", "sk")
RANGE_FIRST = ("sk", "pk")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def replicator_lambda(
    s3: Any, bucket: str, prefix: str, records: list[dict[str, Any]], order: tuple[str, ...]
) -> None:
    """What mapbox/dynamodb-replicator's incremental backup does with a batch, written here
    from its source: the object is md5(JSON.stringify(Keys)) with the Keys in the order the
    stream record lists them (``order`` stands for that order), the body JSON.stringify of
    NewImage (UTF-8, no metadata), and a REMOVE a bare DeleteObject."""
    for record in records:
        keys = {name: record["dynamodb"]["Keys"][name] for name in order}
        text = json.dumps(keys, ensure_ascii=False, separators=(",", ":"))
        name = hashlib.md5(text.encode("utf-8")).hexdigest()
        table = record["eventSourceARN"].split("/")[1]
        object_key = f"{prefix}/{table}/{name}"
        if record["eventName"] == "REMOVE":
            s3.delete_object(Bucket=bucket, Key=object_key)
        else:
            body = json.dumps(record["dynamodb"]["NewImage"], ensure_ascii=False)
            s3.put_object(Bucket=bucket, Key=object_key, Body=body.encode("utf-8"))


def item(pk: str, sk: int, value: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}, "value": {"S": value}}


def key(pk: str, sk: int) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


A, B, C, D, E = ("ä-ü ✓", 1), ("plain", 2), ("keep", 3), ("日本", 4), ("ünï", 5)


class Replicated:
    """A table whose changes go to the stream, replicated as the original Lambda would."""

    def __init__(self, dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> None:
        self.dynamodb, self.streams, self.s3 = dynamodb, streams, s3
        self.bucket, self.prefix = bucket, prefix
        self.table = create_table(dynamodb, [("pk", "S"), ("sk", "N")])
        self.seen = 0

    def new_records(self) -> list[dict[str, Any]]:
        records = lambda_records(self.dynamodb, self.streams, self.table)
        fresh, self.seen = records[self.seen :], len(records)
        return fresh

    def put(self, *items: dict[str, Any]) -> None:
        for one in items:
            self.dynamodb.put_item(TableName=self.table, Item=one)

    def delete(self, *keys: dict[str, Any]) -> None:
        for one in keys:
            self.dynamodb.delete_item(TableName=self.table, Key=one)

    def replicate(self, orders: dict[tuple[str, int], tuple[str, ...]]) -> None:
        """The new stream records, each item's in the key order given for it."""
        for record in self.new_records():
            keys = record["dynamodb"]["Keys"]
            which = (keys["pk"]["S"], int(keys["sk"]["N"]))
            replicator_lambda(self.s3, self.bucket, self.prefix, [record], orders[which])

    def our_handler(self) -> None:
        """The new stream records through our Lambda handler's code."""
        applied = BackupApplier(BackupWriter(self.s3, self.bucket), self.prefix).apply(
            self.new_records()
        )
        assert applied.failures == []

    @property
    def folder(self) -> str:
        return f"{self.prefix}/{self.table}"


def checklist_era(replicated: Replicated) -> tuple[datetime, dict[str, dict[str, Any]]]:
    """Two rounds of changes written by the original Lambda, keys in both orders (the same
    item under two names, a delete under another name than the put); a moment between the
    rounds, and the table's state then."""
    replicated.put(item(*A, "a1"), item(*B, "b1"), item(*C, "c1"), item(*D, "d1"))
    replicated.replicate({A: HASH_FIRST, B: RANGE_FIRST, C: HASH_FIRST, D: RANGE_FIRST})
    time.sleep(1.1)  # S3 dates versions to the second
    between = datetime.now(UTC), scan_all(replicated.dynamodb, replicated.table)
    time.sleep(1.1)
    replicated.put(item(*A, "a2"))
    replicated.delete(key(*B))
    replicated.replicate({A: RANGE_FIRST, B: HASH_FIRST})
    return between


@pytest.fixture
def replicated(dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str) -> Replicated:
    return Replicated(dynamodb, streams, s3, bucket, prefix)


def restored(dynamodb: Any, bucket: str, folder: str, *options: str) -> dict[str, Any]:
    target = unique_table_name("adopted")
    result = invoke("restore", bucket, folder, target, "--key-schema", "pk:S,sk:N", *options)
    assert result.exit_code == 0, result.output
    return scan_all(dynamodb, target)


def adopt(bucket: str, folder: str, *options: str) -> dict[str, Any]:
    result = invoke(
        "--output", "json", "adopt", bucket, folder, "--key-schema", "pk:S,sk:N", *options
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_checklist_folder_is_adopted_and_restores_exactly_at_any_moment(
    aws_env: dict[str, str], dynamodb: Any, replicated: Replicated, s3: Any, bucket: str
) -> None:
    moment, then = checklist_era(replicated)

    # Before adoption: an item under the replicator's name stops the restore, naming adopt.
    target = unique_table_name("refused")
    refused = invoke("restore", bucket, replicated.folder, target, "--key-schema", "pk:S,sk:N")
    assert refused.exit_code == 1 and "dynamo-backups adopt" in refused.output

    report = adopt(bucket, replicated.folder)
    # a under two names, b's put reversed, d reversed (non-ASCII and reversed names are
    # never ours); c is ASCII in hash-first order: one name for both tools; b's delete
    # landed on a name with no put, matched to b by the names b may have.
    assert report["objects"] == 6
    namings = (report["replicator"], report["both"], report["ours"], report["unknown"])
    assert namings == (4, 1, 0, 0)
    assert (report["deletes_only"], report["deletes_matched"]) == (1, 1)
    assert report["aliases"] == 4 and report["items_with_aliases"] == 3
    manifest_key = f"{replicated.prefix}/.dynamo-backups/{replicated.table}/layout.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["adopted"]["naming"] == "replicator"

    now = scan_all(dynamodb, replicated.table)
    assert restored(dynamodb, bucket, replicated.folder) == now
    assert restored(dynamodb, bucket, replicated.folder, "--at", moment.isoformat()) == then
    assert then != now


def continued_by_our_handler(replicated: Replicated) -> None:
    """The switch: our handler takes the changes after the Lambda's era (its trigger
    replaced), an item deleted under one name re-created, a new non-ASCII item."""
    replicated.new_records()  # the era's records went to the original Lambda
    replicated.put(item(*A, "a3"), item(*B, "b2"), item(*D, "d2"), item(*E, "e1"))
    replicated.delete(key(*C))
    replicated.our_handler()


def test_continued_by_our_handler_history_verify_and_snapshot_see_one_item(
    aws_env: dict[str, str],
    dynamodb: Any,
    replicated: Replicated,
    s3: Any,
    bucket: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    checklist_era(replicated)
    adopt(bucket, replicated.folder)
    continued_by_our_handler(replicated)
    table = replicated.table
    now = scan_all(dynamodb, table)
    assert len(now) == 4
    assert restored(dynamodb, bucket, replicated.folder) == now

    keys_file = tmp_path / "keys.jsonl"
    keys_file.write_text('{"pk": "ä-ü ✓", "sk": 1}\n{"pk": "plain", "sk": 2}\n', encoding="utf-8")
    chosen = restored(dynamodb, bucket, replicated.folder, "--keys", str(keys_file))
    assert sorted(one["value"]["S"] for one in chosen.values()) == ["a3", "b2"]

    answer = invoke(
        "--output",
        "json",
        "history",
        table,
        '{"pk": "ä-ü ✓", "sk": 1}',
        "--bucket",
        bucket,
        "--prefix",
        prefix,
    )
    assert answer.exit_code == 0, answer.output
    values = [entry["item"]["value"]["S"] for entry in json.loads(answer.stdout)["history"]]
    assert values == ["a3", "a2", "a1"]  # three versions under three names, newest first

    checked = invoke("--output", "json", "verify", table, "--bucket", bucket, "--prefix", prefix)
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["items_in_table"] == 4 and report["objects_in_backup"] == 4
    assert report["missing"] == report["extra"] == report["different"] == 0

    destination = f"s3://{bucket}/{prefix}-snapshot"
    taken = invoke("snapshot", bucket, replicated.folder, "--to", destination)
    assert taken.exit_code == 0, taken.output
    assert snapshot_items(s3, bucket, f"{prefix}-snapshot/data/") == sorted(
        json.dumps(one, sort_keys=True) for one in now.values()
    )


def snapshot_items(s3: Any, bucket: str, data_prefix: str) -> list[str]:
    found = []
    for listed in s3.list_objects_v2(Bucket=bucket, Prefix=data_prefix).get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read())
        found += [
            json.dumps(json.loads(line)["Item"], sort_keys=True) for line in body.splitlines()
        ]
    return sorted(found)


def test_rewrite_copies_history_into_own_names_and_deletes_nothing(
    aws_env: dict[str, str],
    dynamodb: Any,
    replicated: Replicated,
    s3: Any,
    bucket: str,
) -> None:
    moment, _ = checklist_era(replicated)
    adopt(bucket, replicated.folder)
    continued_by_our_handler(replicated)
    # DynamoDB Local dates stream records to the minute: what --at answers for a moment
    # near the handler's changes depends on it; the rewrite must not change the answer.
    at_moment = restored(dynamodb, bucket, replicated.folder, "--at", moment.isoformat())
    before = {
        entry["VersionId"]
        for entry in s3.list_object_versions(Bucket=bucket, Prefix=f"{replicated.folder}/")[
            "Versions"
        ]
    }
    report = adopt(bucket, replicated.folder, "--rewrite")
    assert report["rewritten_items"] == 3 and report["versions_copied"] == 4  # a1 a2 b1 d1
    after = s3.list_object_versions(Bucket=bucket, Prefix=f"{replicated.folder}/")
    assert before <= {entry["VersionId"] for entry in after["Versions"]}  # nothing deleted

    # a's own name now holds its whole history, the latest state on top.
    own = f"{replicated.folder}/{own_name(key(*A))}"
    current = json.loads(s3.get_object(Bucket=bucket, Key=own)["Body"].read())
    assert current["value"] == {"S": "a3"}
    copied = [
        s3.head_object(Bucket=bucket, Key=own, VersionId=entry["VersionId"])["Metadata"]
        for entry in after["Versions"]
        if entry["Key"] == own
    ]
    # newest first: a3 put back on top as the change it is, a1 and a2 copied, a3 as written
    writers = [metadata.get("writer") for metadata in copied]
    assert writers[0] == writers[-1] == "stream" and sorted(writers[1:-1]) == ["adopt", "adopt"]
    assert copied[0]["sequence-number"] == copied[-1]["sequence-number"]

    now = scan_all(dynamodb, replicated.table)
    assert restored(dynamodb, bucket, replicated.folder) == now
    assert restored(dynamodb, bucket, replicated.folder, "--at", moment.isoformat()) == at_moment


def lines(body: bytes) -> list[bytes]:
    return body.splitlines()


def own_name(item_key: dict[str, Any]) -> str:
    canonical = json.dumps(item_key, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.md5(canonical).hexdigest()


def test_adopt_reports_the_same_on_worker_processes(
    aws_env: dict[str, str], dynamodb: Any, replicated: Replicated, bucket: str
) -> None:
    checklist_era(replicated)
    on_threads = adopt(bucket, replicated.folder)
    on_processes = adopt(bucket, replicated.folder, "--engine", "processes", "--workers", "2")
    counted = ("objects", "replicator", "both", "unknown", "deletes_only", "deletes_matched")
    assert {name: on_processes[name] for name in counted} == {
        name: on_threads[name] for name in counted
    }
    assert on_processes["aliases"] == on_threads["aliases"] == 4
    assert restored(dynamodb, bucket, replicated.folder) == scan_all(dynamodb, replicated.table)
