"""Continuous, point-in-time backups of DynamoDB tables into a versioned S3 bucket.

This package's root imports nothing beyond the standard library, so the Lambda handler
(``dynamo_backups.handler``) loads with only boto3 installed.
"""

__version__ = "0.1.0"
