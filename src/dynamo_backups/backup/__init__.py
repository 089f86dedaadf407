"""A backup folder in a bucket: opening it the one way every command does (``folder``: its
``layout.json`` manifest and ``table.json`` description), writing versions and removals
(``writer``: put, put-if-absent, conditional writes, one copy each), reading versions and
documents (``reading``) and the backup as of a moment (``reader``), the bucket's versioning
check, and stream consumers' checkpoints (identity and leases).
"""
