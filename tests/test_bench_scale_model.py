"""bench/scale_model.py's journal arithmetic (docs/journal.md, "Costs"; docs/scale.md)."""

from __future__ import annotations

import pytest
from bench import scale_model as model

MONTH_OF_WINDOWS = model.MONTH_S / 60  # batches a shard-month when the window closes each


def test_puts_under_load_are_changes_over_the_batch_size_plus_hour_splits() -> None:
    hours = model.HOURS_PER_MONTH
    assert model.journal_puts(10**8, 1_000) == pytest.approx(10**5 + hours)
    assert model.journal_puts(10**8, 100) == pytest.approx(10**6 + hours)
    assert model.journal_puts(10**9, 1_000) == pytest.approx(10**6 + hours)
    # per change: 1/batch once the hour splits are small beside it
    assert model.journal_puts(10**9, 100) / 10**9 == pytest.approx(0.01, rel=0.001)


def test_a_quiet_shard_pays_a_batch_a_window() -> None:
    """10^6 changes a month is 0.38 a second: a 60 s window closes with 23 records."""
    assert model.journal_invocations(10**6, 1_000) == pytest.approx(MONTH_OF_WINDOWS)
    assert model.journal_invocations(10**6, 100) == pytest.approx(MONTH_OF_WINDOWS)
    assert model.journal_invocations(10**6, 1_000, window_s=300) == pytest.approx(
        MONTH_OF_WINDOWS / 5
    )
    # never more batches than changes
    assert model.journal_invocations(1_000, 1_000) == 1_000


def test_shards_split_the_changes_and_each_has_its_window_floor() -> None:
    # 10^8 a month over 4 shards: 9.5 changes/s each, 570 a window: under 1,000
    four = model.journal_invocations(10**8, 1_000, shards=4)
    assert four == pytest.approx(4 * MONTH_OF_WINDOWS)
    # over 2 shards: 19/s each, 1,142 a window: the batches fill
    assert model.journal_invocations(10**8, 1_000, shards=2) == pytest.approx(10**5)


def test_item_layout_pays_a_put_per_change() -> None:
    parts = model.item_layout_month(10**8, 10)
    assert parts["puts"] == pytest.approx(500.0)
    versions_gb = 10**8 / 2**20 * 35 / model.DAYS_PER_MONTH + 10
    assert parts["versions"] == pytest.approx(versions_gb * 0.023)
    assert parts["total"] == pytest.approx(parts["puts"] + parts["versions"] + parts["lambda"])


def test_journal_month_parts_follow_the_retention() -> None:
    parts = model.journal_month(10**8, 10, 1_000)
    assert parts["puts"] == pytest.approx(model.journal_puts(10**8, 1_000) * 0.005 / 1_000)
    journal_gb = 10**8 / 2**20 * model.JOURNAL_STORED_PER_ITEM_BYTE
    assert parts["journal"] == pytest.approx(journal_gb * 43 / model.DAYS_PER_MONTH * 0.023)
    items = 10 * 2**20
    base_gb = (
        10 * model.BASE_STORED_PER_ITEM_BYTE + items * model.INDEX_STORED_BYTES_PER_ITEM / 2**30
    )
    assert parts["weekly_bases"] == pytest.approx(base_gb * 43 / 7 * 0.023)
    assert parts["daily_bases"] == pytest.approx(base_gb * 2 * 6 / 7 * 0.023)
    assert parts["monthly_bases"] == 0
    with_monthly = model.journal_month(10**8, 10, 1_000, monthly_bases=True)
    assert with_monthly["monthly_bases"] == pytest.approx(
        base_gb * 366 / model.DAYS_PER_MONTH * 0.023
    )
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))


def test_compaction_reads_a_days_pieces_and_writes_a_base() -> None:
    puts, gets = model.compaction_requests(10**8, 10 * 2**20, 1_000)
    pieces_a_day = model.journal_puts(10**8, 1_000) / model.DAYS_PER_MONTH
    data_files = 16 * 7  # 655,360 items a partition, 100,000 a file
    routed = 24 * 16
    assert gets == pytest.approx(
        model.COMPACTION_FIXED_GETS + pieces_a_day + routed + data_files + 16
    )
    lists = 43 + pieces_a_day * 43 / 1_000 + 24
    assert puts == pytest.approx(
        model.COMPACTION_FIXED_PUTS + (24 + 16) + routed + data_files + 16 + lists
    )


def test_the_target_case_is_judged_on_the_totals() -> None:
    case = model.target_case()
    assert case.pitr == pytest.approx(2.0)
    assert case.times_cheaper == pytest.approx(case.item_layout["total"] / case.journal["total"])
    assert case.below_pitr == (case.journal["total"] < 2.0)
    assert case.met == (case.below_pitr and case.times_cheaper >= 100)
    verdict = model.target_verdict(1, 1.0)
    assert ("target met" in verdict) == case.met


def test_puts_per_change_rows() -> None:
    rows = model.puts_per_change_rows()
    assert rows[0].startswith("| 100 | 0.01 | ")
    assert rows[1].startswith("| 1,000 | 0.001 | ")
    assert rows[2].startswith("| 10,000 | 0.0001 | ")


def test_the_target_case_uses_deploys_batch_and_a_busy_shard_pays_a_put_a_window() -> None:
    """deploy --layout journal's default batch (10,000, trimmed by Lambda to 6 MB): at 10^8
    changes a month (38.6 a second) the 60 s window closes each batch, 2,315 records."""
    from dynamo_backups.installer.functions import JOURNAL_BATCH_SIZE

    assert model.PITR_TARGET["batch"] == JOURNAL_BATCH_SIZE == 10_000
    hours = model.HOURS_PER_MONTH
    assert model.journal_puts(10**8, 10_000) == pytest.approx(MONTH_OF_WINDOWS + hours)
    case = model.target_case()
    assert case.journal["puts"] == pytest.approx((MONTH_OF_WINDOWS + hours) * 0.005 / 1_000)


def test_a_weekly_compaction_keeps_no_daily_bases_and_reads_a_week() -> None:
    daily = model.journal_month(10**8, 10, 1_000)
    weekly = model.journal_month(10**8, 10, 1_000, compact_every_days=7)
    assert weekly["daily_bases"] == 0 and daily["daily_bases"] > 0
    assert weekly["weekly_bases"] == daily["weekly_bases"]
    puts, gets = model.compaction_requests(10**8, 10 * 2**20, 1_000, days=7)
    pieces_a_week = 7 * model.journal_puts(10**8, 1_000) / model.DAYS_PER_MONTH
    assert gets == pytest.approx(model.COMPACTION_FIXED_GETS + pieces_a_week + 168 * 16 + 128)
    runs = model.DAYS_PER_MONTH / 7
    assert weekly["compaction"] == pytest.approx(runs * (puts * 0.005 + gets * 0.0004) / 1_000)
