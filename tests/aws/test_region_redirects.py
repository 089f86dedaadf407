"""A bucket in an opt-in region (me-south-1 here) addressed through another region's
endpoint answers 400 IllegalLocationConstraintException. botocore's S3RegionRedirectorv2
follows it as a redirect (for any operation but CreateBucket): the region from the answer's
x-amz-bucket-region header, else its <Region>, else from HeadBucket. The fast transport
follows it the same way. The fault proxy answers as S3 does in front of SeaweedFS."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_backups import handler
from dynamo_backups.aws.fast_objects import FastObjects
from tests import faultproxy
from tests.aws.test_transport import CREDENTIALS, SCOPE, local_client
from tests.helpers import bodies, create_table, history, lambda_records, object_key

pytestmark = pytest.mark.servers

OPT_IN_REGION = "me-south-1"
ILLEGAL_LOCATION = (
    b"<Error><Code>IllegalLocationConstraintException</Code><Message>The me-south-1 location "
    b"constraint is incompatible for the region specific endpoint this request was sent to."
    b"</Message></Error>"
)


def opt_in_bucket(name_the_region: bool) -> faultproxy.Rule:
    """S3's answers for a bucket in an opt-in region to requests signed for another region;
    with ``name_the_region`` the error answers carry x-amz-bucket-region."""

    def rule(request: faultproxy.Request) -> str | faultproxy.Answer:
        scope = SCOPE.search(request.headers.get("authorization", ""))
        signed_right = scope is not None and scope.group(1) == OPT_IN_REGION
        region_header = {"x-amz-bucket-region": OPT_IN_REGION}
        if request.method == "HEAD" and request.path.rstrip("/").count("/") == 1:
            return faultproxy.Answer(200 if signed_right else 400, region_header)  # HeadBucket
        if scope is None or signed_right:
            return faultproxy.FORWARD
        headers = {"Content-Type": "application/xml", **(region_header if name_the_region else {})}
        return faultproxy.Answer(400, headers, ILLEGAL_LOCATION)

    return rule


def signing_regions(proxy: faultproxy.FaultProxy) -> list[str]:
    return [SCOPE.search(r.headers["authorization"]).group(1) for r in proxy.log.requests]


def test_an_opt_in_region_bucket_is_followed_from_a_put(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    """The answer names no region: it is found with HeadBucket, as botocore does."""
    with faultproxy.FaultProxy(seaweedfs.endpoint, opt_in_bucket(False)) as proxy:
        objects = FastObjects(
            local_client("s3", proxy.endpoint, "us-east-1"),
            bucket,
            CREDENTIALS,
            client_in_region=lambda region: local_client("s3", proxy.endpoint, region),
        )
        for index in range(3):
            objects.put_object(f"{prefix}/k{index}", b"{}", "application/json", {"n": str(index)})
        objects.delete_object(f"{prefix}/k0")
        assert objects.read_object(f"{prefix}/k2") == (b"{}", {"n": "2"})
        assert objects.target.signing_region == OPT_IN_REGION
        regions = signing_regions(proxy)
        heads = [r for r in proxy.log.requests if r.method == "HEAD"]
    assert regions[0] == "us-east-1" and heads
    assert regions[-5:] == [OPT_IN_REGION] * 5  # 3 puts, the delete, the read
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/k1")["Metadata"] == {"n": "1"}


def test_an_opt_in_region_named_in_the_answer_is_followed_without_asking_again(
    seaweedfs: Any, s3: Any, bucket: str, prefix: str
) -> None:
    s3.put_object(Bucket=bucket, Key=f"{prefix}/listed", Body=b"{}")
    with faultproxy.FaultProxy(seaweedfs.endpoint, opt_in_bucket(True)) as proxy:
        objects = FastObjects(
            local_client("s3", proxy.endpoint, "us-east-1"),
            bucket,
            CREDENTIALS,
            client_in_region=lambda region: local_client("s3", proxy.endpoint, region),
        )
        page = objects.list_objects_page(f"{prefix}/")
        assert [entry["Key"] for entry in page.objects] == [f"{prefix}/listed"]
        assert objects.target.signing_region == OPT_IN_REGION
        assert not [r for r in proxy.log.requests if r.method == "HEAD"]


def test_the_handler_backs_up_into_an_opt_in_region_bucket_from_another_region(
    dynamodb: Any,
    streams: Any,
    seaweedfs: Any,
    s3: Any,
    bucket: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its first request is a put through the fast transport (nothing botocore sent before
    has taught the client the bucket's region)."""
    table = create_table(dynamodb)
    for index in range(3):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{index}"}, "n": {"N": "7"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k0"}})
    records = lambda_records(dynamodb, streams, table)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    with faultproxy.FaultProxy(seaweedfs.endpoint, opt_in_bucket(False)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("BACKUP_BUCKET", bucket)
        monkeypatch.setenv("BACKUP_PREFIX", prefix)
        monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "3")
        assert handler.backup({"Records": records}, Context()) == {"batchItemFailures": []}
        regions = signing_regions(proxy)
    assert regions[0] == "us-east-1" and regions[-1] == OPT_IN_REGION
    assert bodies(history(s3, bucket, object_key(prefix, table, {"pk": {"S": "k0"}}))) == [
        "DM",
        None,
        {"pk": {"S": "k0"}, "n": {"N": "7"}},
    ]
