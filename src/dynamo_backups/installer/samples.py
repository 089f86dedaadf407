"""The AWS Lambda console's "DynamoDB Update" sample events, for the checklist's "Test
function" step: an INSERT, a MODIFY and a REMOVE of item {"Id": 101} of table
ExampleTableWithStream."""

from __future__ import annotations

from typing import Any

SAMPLE_TABLE = "ExampleTableWithStream"
SAMPLE_KEY = {"Id": {"N": "101"}}

CONSOLE_STREAM = "table/ExampleTableWithStream/stream/2015-06-27T00:48:05.899"
CONSOLE_ARN_CLASSIC = f"arn:aws:dynamodb:us-west-2:account-id:{CONSOLE_STREAM}"
# The console's classic "DynamoDB Update" template: no change times, account "account-id".
CONSOLE_SAMPLE_CLASSIC: dict[str, Any] = {
    "Records": [
        {
            "eventID": "1",
            "eventVersion": "1.0",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-west-2",
            "eventSourceARN": CONSOLE_ARN_CLASSIC,
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "SequenceNumber": "111",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "2",
            "eventVersion": "1.0",
            "eventName": "MODIFY",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-west-2",
            "eventSourceARN": CONSOLE_ARN_CLASSIC,
            "dynamodb": {
                "OldImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "SequenceNumber": "222",
                "Keys": {"Id": {"N": "101"}},
                "SizeBytes": 59,
                "NewImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "3",
            "eventVersion": "1.0",
            "eventName": "REMOVE",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-west-2",
            "eventSourceARN": CONSOLE_ARN_CLASSIC,
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "SizeBytes": 38,
                "SequenceNumber": "333",
                "OldImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
    ]
}
CONSOLE_ARN_CURRENT = f"arn:aws:dynamodb:us-east-1:123456789012:{CONSOLE_STREAM}"
CONSOLE_SAMPLE_CURRENT: dict[str, Any] = {  # the current template, with ApproximateCreationDateTime
    "Records": [
        {
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": CONSOLE_ARN_CURRENT,
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "ApproximateCreationDateTime": 1428537600,
                "SequenceNumber": "4421584500000000017450439091",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "c81e728d9d4c2f636f067f89cc14862c",
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": CONSOLE_ARN_CURRENT,
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
                "OldImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "ApproximateCreationDateTime": 1428537600,
                "SequenceNumber": "4421584500000000017450439092",
                "SizeBytes": 59,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "eccbc87e4b5ce2fe28308fd9f2a7baf3",
            "eventName": "REMOVE",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": CONSOLE_ARN_CURRENT,
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "OldImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
                "ApproximateCreationDateTime": 1428537600,
                "SequenceNumber": "4421584500000000017450439093",
                "SizeBytes": 38,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
    ]
}
