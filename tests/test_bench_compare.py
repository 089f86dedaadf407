"""bench/compare.py's pure parts: the run order, the medians and ratios, the targets."""

from __future__ import annotations

from bench.compare import alternation, check_targets, new_over_old, summarize


def test_runs_alternate_old_new_new_old() -> None:
    assert alternation(1) == [0, 1]
    assert alternation(3) == [0, 1, 1, 0, 0, 1]
    assert alternation(4).count(0) == alternation(4).count(1) == 4


def test_summary_is_the_median_of_every_run_in_order() -> None:
    runs = [
        {"items_per_s": 900, "peak_rss_mb": 80, "versions_read": None},
        {"items_per_s": 1000, "peak_rss_mb": 90, "versions_read": None},
        {"items_per_s": 1300, "peak_rss_mb": 85, "versions_read": None},
    ]
    summary = summarize(runs, ("items_per_s", "peak_rss_mb", "versions_read"))
    assert summary["items_per_s"] == {"median": 1000, "runs": [900, 1000, 1300]}
    assert summary["peak_rss_mb"]["median"] == 85
    assert "versions_read" not in summary  # a figure a step does not have is left out


def test_ratios_are_new_median_over_old_median() -> None:
    step = {
        "OLD": summarize([{"items_per_s": 1000}, {"items_per_s": 1200}], ("items_per_s",)),
        "NEW": summarize([{"items_per_s": 880}, {"items_per_s": 1100}], ("items_per_s",)),
    }
    assert new_over_old(step) == {"items_per_s": 0.9}


def test_targets_of_issue_21() -> None:
    summary = summarize(
        [{"items_per_s": 1500, "client_cpu_us_per_item": 310, "peak_rss_mb": 120}],
        ("items_per_s", "client_cpu_us_per_item", "peak_rss_mb"),
    )
    checks = {
        check["target"]: check["passed"]
        for check in check_targets("restore", summary, {"node_reference_items_per_s": 1400})
    }
    assert checks == {
        "items/s vs node_reference_items_per_s": True,
        "client CPU µs/item": False,
        "peak RSS MB": True,
    }
    handler = check_targets("handler", summary, {"s3_versioned_put_per_s": 2000})
    assert [check["passed"] for check in handler] == [False, True]  # 0.75 < 0.8; no CPU limit
    unmeasured = check_targets("backfill", summary, {})
    assert unmeasured[0]["passed"] is None  # no ceiling measured: neither pass nor fail
