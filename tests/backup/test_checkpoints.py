"""One writer per destination: checkpoints keyed by everything that makes a destination
distinct, leased in S3 with conditional writes, locked on disk; and stream refusing to write
beside a Lambda trigger that already backs the table up. DynamoDB Local, SeaweedFS, moto."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamo_backups.backup.checkpoints import (
    CheckpointError,
    CheckpointIdentity,
    FileCheckpointStore,
    S3CheckpointStore,
)
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.cli import main
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.pipeline.backup_applier import BackupApplier
from dynamo_backups.pipeline.consumer import StreamConsumer
from tests.helpers import ONCE, QUICK_DRAIN, bodies, create_table, history, object_key, wait_until
from tests.moto_stack import moto_client, moto_server


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def versioned_bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.mark.servers
def test_each_destination_has_its_own_checkpoint(
    aws_env: Any, dynamodb: Any, s3: Any, bucket: str, prefix: str, tmp_path: Path
) -> None:
    table = create_table(dynamodb)
    for name in ("a", "b"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": name}})
    other_bucket = versioned_bucket(s3, f"{prefix}-second")
    destinations = [
        (bucket, f"{prefix}/EU"),
        (other_bucket, f"{prefix}/EU"),  # the same folder in a second bucket
        (bucket, f"{prefix}_EU"),  # a prefix that once named the same file
    ]
    for where, folder in destinations:
        result = invoke(
            "stream",
            table,
            "--bucket",
            where,
            "--prefix",
            folder,
            "--checkpoint-dir",
            str(tmp_path),
            *ONCE,
        )
        assert result.exit_code == 0, result.output
        assert "2 records backed up" in result.output, (where, folder, result.output)
        key = object_key(folder, table, {"pk": {"S": "b"}})
        assert bodies(history(s3, where, key)) == [{"pk": {"S": "b"}}]
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_a_checkpoint_of_another_destination_is_refused(tmp_path: Path) -> None:
    mine = CheckpointIdentity("arn:aws:dynamodb:eu-west-1:1:table/Users", "stream-backup", "b")
    theirs = CheckpointIdentity("arn:aws:dynamodb:us-east-1:1:table/Users", "stream-backup", "b")
    path = tmp_path / mine.file_name()
    stored = FileCheckpointStore(path, theirs)
    stored.save({"format": "dynamo-backups-checkpoint", "table": "Users", "stream_arn": "x"})
    stored.release()
    assert mine.file_name() != theirs.file_name()  # the names never collide ...
    with pytest.raises(CheckpointError, match="checkpoint of another destination"):
        FileCheckpointStore(path, mine).load()  # ... and a misplaced file is caught


def test_a_checkpoint_file_is_held_by_one_consumer(tmp_path: Path) -> None:
    identity = CheckpointIdentity("arn:aws:dynamodb:eu-west-1:1:table/Users", "c")
    first = FileCheckpointStore(tmp_path / identity.file_name(), identity)
    first.load()
    with pytest.raises(CheckpointError, match="in use by another consumer"):
        FileCheckpointStore(tmp_path / identity.file_name(), identity).load()
    first.release()
    FileCheckpointStore(tmp_path / identity.file_name(), identity).load()


def s3_consumer(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str, table: str, **options: Any
) -> StreamConsumer:
    writer = BackupWriter(s3, bucket)
    identity = CheckpointIdentity(
        f"arn:aws:dynamodb:ddblocal:000000000000:table/{table}", "twin", bucket, prefix
    )
    store = S3CheckpointStore(writer, identity.object_key(TableLayout.of(prefix, table)), identity)
    applier = BackupApplier(writer, prefix).apply
    return StreamConsumer(dynamodb, streams, table, applier, store, drain=QUICK_DRAIN, **options)


@pytest.mark.servers
def test_two_consumers_with_one_name_cannot_both_advance(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    stop = threading.Event()
    first = s3_consumer(dynamodb, streams, s3, bucket, prefix, table, stop=stop, poll_interval=0.05)
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            first.run(once=False)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        wait_until(lambda: history(s3, bucket, object_key(prefix, table, {"pk": {"S": "a"}})))
        second = s3_consumer(dynamodb, streams, s3, bucket, prefix, table)
        with pytest.raises(CheckpointError, match="held by another consumer"):
            second.run(once=True)

        # A consumer that ignored the lease and wrote the checkpoint anyway: the holder's
        # next conditional save fails, and it stops rather than interleave.
        key = first.store.object_key
        rogue = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        rogue["lease"] = {"owner": "rogue", "host": "elsewhere", "pid": 1, "seconds": 120}
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(rogue).encode())
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
        thread.join(15)
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], CheckpointError)
        assert "was written by another consumer" in str(errors[0])
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.servers
def test_a_released_checkpoint_is_taken_over_at_once(
    dynamodb: Any, streams: Any, s3: Any, bucket: str, prefix: str
) -> None:
    table = create_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    assert s3_consumer(dynamodb, streams, s3, bucket, prefix, table).run(once=True).records == 1
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    report = s3_consumer(dynamodb, streams, s3, bucket, prefix, table).run(once=True)
    assert report.records == 1  # no lease left behind; the position was kept


def test_stream_refuses_to_write_beside_a_backup_trigger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with moto_server() as moto:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
        dynamodb, s3 = moto_client(moto, "dynamodb"), moto_client(moto, "s3")
        dynamodb.create_table(
            TableName="Users",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        dynamodb.put_item(TableName="Users", Item={"id": {"S": "a"}})
        versioned_bucket(s3, "acme-backups")
        stream_arn = dynamodb.describe_table(TableName="Users")["Table"]["LatestStreamArn"]
        role = moto_client(moto, "iam").create_role(
            RoleName="backup", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as package:
            package.writestr("handler.py", "def backup(event, context): pass\n")
        functions = moto_client(moto, "lambda")
        functions.create_function(
            FunctionName="dynamo-backups-Users",
            Runtime="python3.13",
            Role=role,
            Handler="handler.backup",
            Code={"ZipFile": archive.getvalue()},
            Environment={"Variables": {"BACKUP_BUCKET": "acme-backups", "BACKUP_PREFIX": "Prod"}},
        )
        functions.create_event_source_mapping(
            EventSourceArn=stream_arn,
            FunctionName="dynamo-backups-Users",
            StartingPosition="TRIM_HORIZON",
        )
        base = ["--endpoint-url", moto, "--region", "us-east-1"]
        command = [
            "stream",
            "Users",
            "--bucket",
            "acme-backups",
            *ONCE,
            "--checkpoint-dir",
            str(tmp_path),
        ]
        refused = invoke(*base, *command, "--prefix", "Prod")
        assert refused.exit_code == 1
        assert (
            "already backed up into s3://acme-backups/Prod by the Lambda function "
            "dynamo-backups-Users" in refused.output
        )
        elsewhere = invoke(*base, *command, "--prefix", "Staging")  # another folder: fine
        assert elsewhere.exit_code == 0, elsewhere.output
        allowed = invoke(*base, *command, "--prefix", "Prod", "--allow-second-writer")
        assert allowed.exit_code == 0, allowed.output
