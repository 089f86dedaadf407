"""A journal folder's retention (core/retention.py): a base's class, the policy check, which
base a compaction may start from, and the lifecycle rules (docs/journal.md, "Retention")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dynamo_backups.core.retention import (
    DAILY,
    MONTHLY,
    RETENTION_TAG,
    WEEKLY,
    RetentionPolicy,
    RetentionPolicyError,
    base_expiry_reason,
    check_policy,
    journal_gap_reason,
    lifecycle_rules,
    merge_lifecycle_rules,
    retention_class,
    retention_tags,
)


def at(day: int, hour: int = 1, month: int = 6) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


# 2026-06-01 is a Monday; 2026-06-08 the next Monday.


def test_the_first_base_of_a_month_is_monthly_of_a_week_weekly_else_daily() -> None:
    assert retention_class(at(1), []) == MONTHLY
    assert retention_class(at(2), [at(1)]) == DAILY
    assert retention_class(at(8), [at(1), at(2)]) == WEEKLY  # a new ISO week, same month
    assert retention_class(at(8, 5), [at(1), at(8)]) == DAILY
    assert retention_class(at(1, month=7), [at(30)]) == MONTHLY  # Wednesday, new month
    # Only earlier bases count: one made later (compact --at an earlier moment) does not.
    assert retention_class(at(3), [at(4)]) == MONTHLY
    assert retention_class(at(3), [at(3)]) == MONTHLY  # itself
    # Without a monthly class the first of the month is whatever its week makes it.
    assert retention_class(at(3), [at(1)], monthly=False) == DAILY
    assert retention_class(at(1), [], monthly=False) == WEEKLY
    # An ISO week spanning two months: the 1st of July 2026 is in the week of June 29.
    assert retention_class(at(1, month=7), [at(29)], monthly=False) == DAILY


def test_tags_name_a_known_class_only() -> None:
    assert retention_tags(WEEKLY) == {RETENTION_TAG: "weekly"}
    with pytest.raises(RetentionPolicyError):
        retention_tags("hourly")


def test_the_default_policy_keeps_35_days_restorable_and_passes_its_check() -> None:
    policy = check_policy(RetentionPolicy())
    assert policy.restorable_days == 35
    assert RetentionPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (RetentionPolicy(daily_days=1), "--keep-daily-bases-days 1: .* at least 2"),
        (RetentionPolicy(compact_every_hours=48, daily_days=2), "at least 3"),
        (RetentionPolicy(weekly_days=8), "--keep-weekly-bases-days 8: .* at least 9"),
        (RetentionPolicy(changes_days=8), "--keep-changes-days 8: .* at least 9"),
        (RetentionPolicy(monthly_days=30), "--keep-monthly-bases-days 30"),
        (RetentionPolicy(compact_every_hours=169), "--compact-every 169"),
        (RetentionPolicy(compact_every_hours=0), "--compact-every 0"),
    ],
)
def test_a_policy_that_would_expire_what_compaction_needs_is_refused(
    policy: RetentionPolicy, message: str
) -> None:
    with pytest.raises(RetentionPolicyError, match=message):
        check_policy(policy)


def test_the_smallest_policies_that_keep_what_compaction_needs_pass() -> None:
    check_policy(RetentionPolicy(changes_days=9, daily_days=2, weekly_days=9, monthly_days=None))
    check_policy(RetentionPolicy(changes_days=9, daily_days=2, weekly_days=9, monthly_days=9))
    check_policy(
        RetentionPolicy(changes_days=15, daily_days=8, weekly_days=15, compact_every_hours=168)
    )


def test_a_base_near_its_expiry_and_a_journal_past_its_days_are_not_used() -> None:
    policy = RetentionPolicy()
    created = at(10)
    # The next day's compaction, started up to 11 hours late, still starts from a daily base.
    late = created + timedelta(hours=35)
    assert base_expiry_reason("b", DAILY, created, late, policy) is None
    reason = base_expiry_reason("b", DAILY, created, created + timedelta(hours=36), policy)
    assert reason is not None and "expire after 2 days" in reason
    assert base_expiry_reason("b", WEEKLY, created, created + timedelta(days=42), policy) is None
    assert base_expiry_reason("b", WEEKLY, created, created + timedelta(days=42.5), policy)
    assert base_expiry_reason("b", None, created, created + timedelta(days=900), policy) is None
    assert journal_gap_reason(created, created + timedelta(days=42), policy, "x") is None
    gap = journal_gap_reason(created, created + timedelta(days=42.5), policy, "base b")
    assert gap is not None and gap.startswith("base b is 42.5 days old")


def test_the_lifecycle_rules_of_a_journal_folder() -> None:
    rules = lifecycle_rules("Prod/Users/", RetentionPolicy())
    noncurrent = {"NoncurrentDays": 1}

    def tagged(value: str, days: int) -> dict:
        return {
            "ID": f"dynamo-backups Prod/Users bases {value}",
            "Status": "Enabled",
            "Filter": {
                "And": {
                    "Prefix": "Prod/Users/bases/",
                    "Tags": [{"Key": RETENTION_TAG, "Value": value}],
                }
            },
            "Expiration": {"Days": days},
            "NoncurrentVersionExpiration": noncurrent,
        }

    assert rules == [
        {
            "ID": "dynamo-backups Prod/Users journal",
            "Status": "Enabled",
            "Filter": {"Prefix": "Prod/Users/journal/"},
            "Expiration": {"Days": 43},
            "NoncurrentVersionExpiration": noncurrent,
        },
        tagged("daily", 2),
        tagged("weekly", 43),
        tagged("monthly", 366),
        {
            "ID": "dynamo-backups Prod/Users journal markers",
            "Status": "Enabled",
            "Filter": {"Prefix": "Prod/Users/journal/"},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
        {
            "ID": "dynamo-backups Prod/Users bases markers",
            "Status": "Enabled",
            "Filter": {"Prefix": "Prod/Users/bases/"},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    ]
    # No monthly class: a base tagged monthly earlier lives as long as a weekly one.
    no_monthly = lifecycle_rules("Prod/Users/", RetentionPolicy(monthly_days=None))
    assert no_monthly[3]["Expiration"] == {"Days": 43}
    long_folder = "P" * 300 + "/Users/"
    assert all(len(rule["ID"]) <= 255 for rule in lifecycle_rules(long_folder, RetentionPolicy()))


def test_merging_keeps_every_other_rule_and_replaces_ours_by_id() -> None:
    theirs = {
        "ID": "logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 7},
    }
    old_ours = {**lifecycle_rules("Prod/Users/", RetentionPolicy())[0], "Expiration": {"Days": 99}}
    ours = lifecycle_rules("Prod/Users/", RetentionPolicy())
    merged = merge_lifecycle_rules([theirs, old_ours], ours)
    assert merged == [theirs, *ours]
