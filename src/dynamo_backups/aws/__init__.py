"""The AWS adapters: the only package that imports boto3, botocore or the object-store
transport (obstore). It makes sessions and clients the AWS way (profiles, regions, the
standard endpoint variables), resolves endpoints exactly as botocore does, sends the hot-path
object requests through a maintained fast library, classifies and retries failures, and
writes BatchWriteItem until every request is in (``batch_write``).
Everything outside it receives clients and adapters as arguments.
"""
