"""Applying stream batches: the backup applier (each change a version, in stream order per
item), the replica applier (the last change per item, by BatchWriteItem), and the stream
consumer that reads a table's stream on any host (``stream_source``: which stream, shards
parents first) and feeds either, checkpointed. The Lambda
handlers (``dynamo_backups.handler``) run the same appliers.
"""
