"""The pure core: no I/O, no SDK. DynamoDB JSON kept lossless (``ddbjson``), canonical item
keys and object names (``keys``), where everything lives in a backup folder and what its
metadata says (``layout``), stream records as Lambda delivers them (``stream_records``), which
version of an item held at a moment (``pitr``), S3 listing answers (``s3_listing``), when a
shard is read to its end (``draining``), difference counting, condition expressions, the
function's metrics, rate limits, and small concurrency helpers. Everything above builds on it.
"""
