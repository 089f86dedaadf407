"""A journal folder's retention (docs/journal.md, "Retention"), pure: which class a base is
(``daily``, ``weekly``, ``monthly``: the tag its objects are put with), the S3 lifecycle rules
that expire the journal and the bases by age and tag, the check that a policy keeps what
compaction needs, and which base a compaction may start from.

How the rules keep what compaction needs. A compaction folds the newest base before its
moment (the *previous* base) with the journal written since that base's moment. S3 expires an
object no sooner than ``days`` after it was created (its creation time plus the days, rounded
up to the next midnight UTC), and compaction runs every ``compact_every_hours``. So:

- the newest daily base outlives the wait for the next compaction by a day
  (``daily_days * 24 >= compact_every_hours + 24``);
- a weekly base (the first of each ISO week) and the journal since it outlive the week and the
  wait for a compaction by a day (``weekly_days`` and ``changes_days`` ``* 24 >=
  7 * 24 + compact_every_hours + 24``), so that when daily bases were lost (compactions failed
  for days) a compaction starts from the week's base and finds the journal since it.

A policy breaking either is refused (``RetentionPolicyError``). And a compaction never takes
as its previous base one that the rules may have begun to expire (``base_expiry_reason``:
within ``SAFETY_MARGIN`` of its class's days), nor one older than the journal's days
(``journal_gap_reason``: changes since it may have expired): it refuses instead, never folding
a journal with holes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DAILY, WEEKLY, MONTHLY = "daily", "weekly", "monthly"
CLASSES = (DAILY, WEEKLY, MONTHLY)  # shortest kept first
RETENTION_TAG = "dynamo-backups-retention"  # the tag key a base's objects are put with
RETENTION_FORMAT = "dynamo-backups-retention"
# How close to its expiry a base or the journal may be before a compaction will not use it:
# a compaction's reads span its run (resumed by the scheduled function every hour), and the
# base's files are written after its cutoff (so expire no sooner than it).
SAFETY_MARGIN = timedelta(hours=12)
NONCURRENT_DAYS = 1  # an expired version (now noncurrent) is removed a day later
MAX_COMPACT_EVERY_HOURS = 7 * 24  # every ISO week has a base
LIFECYCLE_ID_LIMIT = 255


class RetentionPolicyError(ValueError):
    """A retention policy that cannot keep what compaction or a restore needs."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a journal folder keeps each thing, in days, and how often it is compacted."""

    changes_days: int = 43  # journal/ objects: every change
    daily_days: int = 2  # bases tagged daily
    weekly_days: int = 43  # bases tagged weekly: the first of each ISO week
    monthly_days: int | None = 366  # bases tagged monthly (None: no monthly class)
    compact_every_hours: int = 24

    def days_of(self, retention: str | None) -> int | None:
        """How long a base of this class is kept (None: untagged, never expired by us)."""
        if retention == DAILY:
            return self.daily_days
        if retention == WEEKLY:
            return self.weekly_days
        if retention == MONTHLY:
            return self.monthly_days or self.weekly_days
        return None

    @property
    def restorable_days(self) -> int:
        """Any moment this many days back is restorable: a weekly base at most a week and a
        compaction interval before it, and the journal from there, are both kept."""
        waits = 7 + math.ceil(self.compact_every_hours / 24)
        return min(self.changes_days, self.weekly_days) - waits

    def to_dict(self) -> dict[str, Any]:
        return {"format": RETENTION_FORMAT, "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RetentionPolicy:
        if document.get("format") != RETENTION_FORMAT:
            raise RetentionPolicyError("not a dynamo-backups retention document")
        try:
            monthly = document.get("monthly_days")
            return cls(
                changes_days=int(document["changes_days"]),
                daily_days=int(document["daily_days"]),
                weekly_days=int(document["weekly_days"]),
                monthly_days=int(monthly) if monthly is not None else None,
                compact_every_hours=int(document["compact_every_hours"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RetentionPolicyError(f"a retention document without {error}") from None


def check_policy(policy: RetentionPolicy) -> RetentionPolicy:
    """``policy``, or ``RetentionPolicyError`` naming the rule it breaks (module docstring)."""
    every = policy.compact_every_hours
    if not 1 <= every <= MAX_COMPACT_EVERY_HOURS:
        raise RetentionPolicyError(
            f"--compact-every {every}: 1 to {MAX_COMPACT_EVERY_HOURS} hours (a base every week)"
        )
    for name, days in (
        ("--keep-changes-days", policy.changes_days),
        ("--keep-daily-bases-days", policy.daily_days),
        ("--keep-weekly-bases-days", policy.weekly_days),
    ):
        if days < 1:
            raise RetentionPolicyError(f"{name} {days}: at least 1")
    if policy.daily_days * 24 < every + 24:
        raise RetentionPolicyError(
            f"--keep-daily-bases-days {policy.daily_days}: a daily base must be kept a day "
            f"longer than the {every} hours to the next compaction, which starts from it: "
            f"at least {math.ceil((every + 24) / 24)}"
        )
    week = 7 * 24 + every + 24
    for name, days in (
        ("--keep-weekly-bases-days", policy.weekly_days),
        ("--keep-changes-days", policy.changes_days),
    ):
        if days * 24 < week:
            raise RetentionPolicyError(
                f"{name} {days}: a week's first base and the journal after it must outlive "
                "the week, the wait for a compaction and a day (a compaction falls back to "
                f"them when daily bases are gone): at least {math.ceil(week / 24)}"
            )
    if policy.monthly_days is not None and policy.monthly_days < policy.weekly_days:
        raise RetentionPolicyError(
            f"--keep-monthly-bases-days {policy.monthly_days}: a monthly base is also its "
            f"week's base: at least --keep-weekly-bases-days ({policy.weekly_days})"
        )
    return policy


# --- a base's class ------------------------------------------------------------------------


def retention_class(moment: datetime, earlier: Iterable[datetime], monthly: bool = True) -> str:
    """The class of a base of ``moment`` given the moments of the complete bases before it:
    monthly when none is in its calendar month, weekly when none is in its ISO week, else
    daily. An incomplete base (no manifest) is not passed in: it may never complete."""
    moment = moment.astimezone(UTC)
    week = moment.isocalendar()[:2]
    same_month = same_week = False
    for given in earlier:
        other = given.astimezone(UTC)
        if other >= moment:
            continue
        same_month |= (other.year, other.month) == (moment.year, moment.month)
        same_week |= other.isocalendar()[:2] == week
    if monthly and not same_month:
        return MONTHLY
    if not same_week:
        return WEEKLY
    return DAILY


def retention_tags(retention: str) -> dict[str, str]:
    """The tags a base's objects are put with (``x-amz-tagging``)."""
    if retention not in CLASSES:
        raise RetentionPolicyError(f"unknown retention class {retention!r}")
    return {RETENTION_TAG: retention}


# --- which base a compaction may start from -------------------------------------------------


def base_expiry_reason(
    base_id: str,
    retention: str | None,
    created: datetime,
    now: datetime,
    policy: RetentionPolicy,
) -> str | None:
    """Why a base created (first object written) at ``created`` may be partly expired by
    ``now`` under ``policy``, or None. A base's files are written over its compaction's run
    and expire on different days; within the margin its manifest may outlive its data."""
    days = policy.days_of(retention)
    if days is None:
        return None
    if now + SAFETY_MARGIN < created + timedelta(days=days):
        return None
    return (
        f"base {base_id} ({retention}) was written {_age(now - created)} ago and its objects "
        f"expire after {days} days"
    )


def journal_gap_reason(
    since: datetime, now: datetime, policy: RetentionPolicy, what: str
) -> str | None:
    """Why the journal written after ``since`` may have lost objects by ``now``, or None."""
    if now + SAFETY_MARGIN < since + timedelta(days=policy.changes_days):
        return None
    return (
        f"{what} is {_age(now - since)} old and the journal's objects expire after "
        f"{policy.changes_days} days: changes made since it may be gone"
    )


def _age(span: timedelta) -> str:
    return f"{span.total_seconds() / 86400:.1f} days"


# --- the lifecycle rules ---------------------------------------------------------------------


def lifecycle_rule_id(table_folder: str, what: str) -> str:
    """A rule's ID, unique per folder (ours are found and replaced by it)."""
    rule_id = f"dynamo-backups {table_folder.rstrip('/')} {what}"
    if len(rule_id) <= LIFECYCLE_ID_LIMIT:
        return rule_id
    digest = hashlib.sha256(table_folder.encode("utf-8")).hexdigest()[:16]
    return f"dynamo-backups {digest} {what}"


def lifecycle_rules(table_folder: str, policy: RetentionPolicy) -> list[dict[str, Any]]:
    """The rules of one journal folder (``<prefix>/<table>/``), as PutBucketLifecycleConfiguration
    takes them: the journal by age, each base class by its tag (a prefix and a tag filter is
    ``And``), expired versions removed a day after they stop being current, and the delete
    markers left alone removed (a separate rule: ``ExpiredObjectDeleteMarker`` takes neither
    ``Days`` nor a tag filter). Nothing outside ``journal/`` and ``bases/`` is touched, so an
    item layout's history in the same folder keeps its versions."""
    journal, bases = f"{table_folder}journal/", f"{table_folder}bases/"
    noncurrent = {"NoncurrentDays": NONCURRENT_DAYS}
    rules: list[dict[str, Any]] = [
        {
            "ID": lifecycle_rule_id(table_folder, "journal"),
            "Status": "Enabled",
            "Filter": {"Prefix": journal},
            "Expiration": {"Days": policy.changes_days},
            "NoncurrentVersionExpiration": noncurrent,
        }
    ]
    for retention in CLASSES:
        days = policy.days_of(retention)
        assert days is not None
        rules.append(
            {
                "ID": lifecycle_rule_id(table_folder, f"bases {retention}"),
                "Status": "Enabled",
                "Filter": {
                    "And": {
                        "Prefix": bases,
                        "Tags": [{"Key": RETENTION_TAG, "Value": retention}],
                    }
                },
                "Expiration": {"Days": days},
                "NoncurrentVersionExpiration": noncurrent,
            }
        )
    for what, prefix in (("journal markers", journal), ("bases markers", bases)):
        rules.append(
            {
                "ID": lifecycle_rule_id(table_folder, what),
                "Status": "Enabled",
                "Filter": {"Prefix": prefix},
                "Expiration": {"ExpiredObjectDeleteMarker": True},
            }
        )
    return rules


def merge_lifecycle_rules(
    existing: Iterable[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The bucket's rules with ours added or replaced by ID; every other rule kept as it is."""
    ids = {rule["ID"] for rule in ours}
    return [rule for rule in existing if rule.get("ID") not in ids] + ours
