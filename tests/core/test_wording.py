"""Counts in messages take the noun's right number."""

from dynamo_backups.core.wording import counted


def test_one_is_singular_and_others_plural() -> None:
    assert counted(1, "attempt") == "1 attempt"
    assert counted(0, "attempt") == "0 attempts"
    assert counted(3, "retry", "retries") == "3 retries"
    assert counted(1, "retry", "retries") == "1 retry"
    assert counted(12000, "version") == "12,000 versions"
