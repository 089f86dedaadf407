"""The AWS adapters: the only package that imports boto3, botocore or the object-store
transport (obstore). It makes sessions and clients the AWS way (profiles, regions, the
standard endpoint variables), resolves endpoints exactly as botocore does, sends the hot-path
object requests through a maintained fast library, and classifies and retries failures.
Everything outside it receives clients and adapters as arguments.
"""
