"""The scale model of docs/scale.md: time and money for 10^6, 10^8 and 10^9 items, from the
client CPU per item measured here (bench.engines, bench.handler, bench.journal) and AWS's
published prices and limits, for the item layout and the journal layout (docs/journal.md,
"Costs"). Prints the document's tables; every input is a named constant below.

    .venv/bin/python -m bench.scale_model [--item-kb 1] [--table-gb 100]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

# --- measured on this machine (docs/performance.md; x86-64, 2 cores) ------------------------
# Client CPU per item of the whole process tree, on the processes engine (bench.engines).
BACKFILL_CPU_US_PER_ITEM = 510
RESTORE_CPU_US_PER_ITEM = 490
VERIFY_CPU_US_PER_ITEM = 210  # scan, fingerprint, list; a GET only for items that differ
HANDLER_CPU_US_PER_RECORD = 354  # bench.handler, fast transport
# Requests per item, as the commands make them.
LIST_ITEMS_PER_PAGE = 1000  # ListObjects(V2|Versions) pages
SCAN_ITEMS_PER_PAGE = 1000  # Scan pages of 1 KB items (1 MB pages)
BATCH_WRITE_ITEMS = 25

# --- AWS prices, us-east-1, list prices as of 2026 (check the pricing pages) ---------------
S3_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1000
S3_STORAGE_GB_MONTH = 0.023
DDB_WRITE_UNIT = 0.625 / 1e6  # on-demand, per write request unit (1 KB)
DDB_READ_UNIT = 0.125 / 1e6  # on-demand, per read request unit (4 KB strongly consistent)
DDB_EXPORT_GB = 0.10  # full export to S3
DDB_IMPORT_GB = 0.15  # import from S3, uncompressed size
DDB_PITR_GB_MONTH = 0.20  # continuous backups (point-in-time recovery)
LAMBDA_GB_SECOND = 0.0000133334  # arm64
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_MEMORY_GB = 0.5  # deploy's default (512 MB: about 0.29 of a vCPU)
LAMBDA_VCPU = 512 / 1769

# --- AWS limits (developer guides) ------------------------------------------------------------
S3_PUTS_PER_PREFIX = 3500  # per second per partitioned prefix; S3 splits prefixes as load grows
S3_GETS_PER_PREFIX = 5500
S3_LATENCY_S = 0.1  # "roughly 100-200 ms" first-byte latency for small objects (low end)
DDB_TABLE_UNITS = 40_000  # on-demand, per table, read and write request units per second
DDB_NEW_TABLE_WRITES = 4_000  # a new on-demand table, before it adapts (or is pre-warmed)
MONTH_S = 30.4 * 24 * 3600

SIZES = (10**6, 10**8, 10**9)
RATES = (10, 1_000, 10_000)

# --- the journal layout (docs/journal.md, "Costs" and "Retention") ---------------------------
JOURNAL_BATCHES = (100, 1_000, 10_000)  # records per delivered batch (deploy --batch-size)
BATCHING_WINDOW_S = 60  # deploy --batching-window's default
HOURS_PER_MONTH = MONTH_S / 3600
DAYS_PER_MONTH = MONTH_S / 86400
# Stored (gzipped) bytes per byte of item, for journal lines and for a base's data files. An
# assumption (docs/journal.md: gzip about 4x); bench.journal measures it for its own items.
JOURNAL_STORED_PER_ITEM_BYTE = 0.25
BASE_STORED_PER_ITEM_BYTE = 0.25
INDEX_STORED_BYTES_PER_ITEM = 40  # a base's index line per item, gzipped (bench.journal)
# Retention (docs/journal.md): every change kept 42 days; a base a day kept 2 days (6 days of
# 7: the week's first base is the weekly one), a base a week kept 43 days; monthly ones optional.
JOURNAL_KEEP_DAYS = 43  # deploy's --keep-changes-days
DAILY_BASE_KEEP_DAYS = 2
WEEKLY_BASE_KEEP_DAYS = 43
MONTHLY_BASE_KEEP_DAYS = 366
RESTORABLE_DAYS = 35  # the item layout keeps noncurrent versions this long for the same promise
# Compaction (jobs/compact.py), once a day: its units and the requests each makes. The fixed
# part is calibrated on bench.journal's counted compaction (2026-12-05: 3 route units, 16
# partitions, 304 pieces: 107 PUTs, 12 LISTs, 391 GETs and 3 HEADs; the formula below
# gives 99 PUTs and 384 GETs before the fixed part).
COMPACTION_PARTITIONS = 16  # compact --partitions default
COMPACTION_ROUTE_UNITS = 24  # one per hour folder of the day's journal
BASE_ROWS_PER_FILE = 100_000
COMPACTION_FIXED_PUTS = 8  # run, lease, moment, cutoff, manifest
COMPACTION_FIXED_GETS = 10  # their reads, HEADs of S3's clock
# The journal writer's CPU per record (bench.journal, 2026-12-05: JournalApplier on 10^6
# records in 1,000-record batches; the Lambda runtime's decoding of the event not included),
# and one S3 put (first-byte latency) per piece.
JOURNAL_HANDLER_CPU_US_PER_RECORD = 55
PITR_TARGET = {"table_gb": 10, "changes": 10**8, "batch": 10_000}  # deploy's default


def money(value: float) -> str:
    return f"${value:,.0f}" if value >= 10 else f"${value:,.2f}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"


def per_core(cpu_us: float) -> float:
    """Items per second one core does when the work is CPU-bound."""
    return 1e6 / cpu_us


def executors(rate: float, cpu_us: float, cores: int = 4) -> int:
    """Executors of ``cores`` cores that sustain ``rate`` items/s, with enough requests in
    flight per unit (--concurrency) that latency does not bind."""
    return max(1, math.ceil(rate / (per_core(cpu_us) * cores * 0.8)))


def backfill_rows(item_kb: float) -> list[str]:
    rows = []
    for items in SIZES:
        gb = items * item_kb / 2**20
        scan = items * item_kb / 4 * DDB_READ_UNIT  # consistent reads: 4 KB per unit
        puts = items * S3_PUT
        export = gb * DDB_EXPORT_GB
        split = min(S3_PUTS_PER_PREFIX * 16, per_core(BACKFILL_CPU_US_PER_ITEM) * 4 * 0.8 * 8)
        rows.append(
            f"| 10^{round(math.log10(items))} | {money(puts + scan)} | {money(puts + export)} | "
            f"{money(gb * S3_STORAGE_GB_MONTH)} | {duration(items / S3_PUTS_PER_PREFIX)} | "
            f"{duration(items / split)} |"
        )
    return rows


def target_rows() -> list[str]:
    """Executors of 4 cores for a job to end within a target time, and what else binds."""
    rows = []
    for items in SIZES:
        cells = []
        for hours in (24, 6):
            rate = items / (hours * 3600)
            prefixes = math.ceil(rate / S3_PUTS_PER_PREFIX)
            backfill = executors(rate, BACKFILL_CPU_US_PER_ITEM)
            restore = executors(min(rate, DDB_TABLE_UNITS), RESTORE_CPU_US_PER_ITEM)
            restore_note = "" if rate <= DDB_TABLE_UNITS else " (table limit: raise it)"
            cells.append(
                f"{rate:,.0f}/s: backfill {backfill}, S3 prefixes {prefixes}; "
                f"restore {restore}{restore_note}"
            )
        rows.append(f"| 10^{round(math.log10(items))} | {cells[0]} | {cells[1]} |")
    return rows


def continuous_rows(item_kb: float, table_gb: float) -> list[str]:
    rows = []
    for rate in RATES:
        changes = rate * MONTH_S
        batch = 100
        batch_seconds = max(
            batch * HANDLER_CPU_US_PER_RECORD / 1e6 / LAMBDA_VCPU,
            math.ceil(batch / 32) * S3_LATENCY_S,
        )
        lambda_cost = (changes / batch) * (
            LAMBDA_REQUEST + batch_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND
        )
        puts = changes * S3_PUT
        growth_gb = changes * item_kb / 2**20
        rows.append(
            f"| {rate:,} | {money(puts)} | {money(lambda_cost)} | "
            f"{growth_gb:,.0f} GB ({money(growth_gb * S3_STORAGE_GB_MONTH)}) | "
            f"{money(table_gb * DDB_PITR_GB_MONTH)} |"
        )
    return rows


def restore_rows(item_kb: float) -> list[str]:
    rows = []
    for items in SIZES:
        gb = items * item_kb / 2**20
        gets = items * S3_GET + items / LIST_ITEMS_PER_PAGE * S3_PUT
        writes = items * math.ceil(item_kb) * DDB_WRITE_UNIT
        json_gb = gb * 1.3  # DynamoDB JSON of the items, uncompressed
        files = max(1, min(50_000, math.ceil(json_gb * 1024 / 256)))
        native = gets + files * S3_PUT + json_gb * DDB_IMPORT_GB
        cold = items / DDB_NEW_TABLE_WRITES
        warm = items / DDB_TABLE_UNITS
        rows.append(
            f"| 10^{round(math.log10(items))} | {money(gets + writes)} | {duration(cold)} | "
            f"{duration(warm)} ({executors(DDB_TABLE_UNITS, RESTORE_CPU_US_PER_ITEM)} executors) | "
            f"{money(native)} |"
        )
    return rows


def verify_rows(item_kb: float) -> list[str]:
    rows = []
    for items in SIZES:
        scan = items * item_kb / 4 * DDB_READ_UNIT
        lists = items / LIST_ITEMS_PER_PAGE * S3_PUT
        rate = min(DDB_TABLE_UNITS * 4 / item_kb, per_core(VERIFY_CPU_US_PER_ITEM) * 4 * 8)
        rows.append(
            f"| 10^{round(math.log10(items))} | {money(scan + lists)} | {duration(items / rate)} "
            f"(8 executors) |"
        )
    return rows


def break_even(item_kb: float) -> str:
    per_change = S3_PUT
    changes_per_gb_month = DDB_PITR_GB_MONTH / per_change
    return (
        f"Each change costs {money(per_change * 1e6)} per million (one PUT) against PITR's "
        f"{money(DDB_PITR_GB_MONTH)} per GB-month of table: the two cost the same at "
        f"{changes_per_gb_month:,.0f} changes per GB of table per month, "
        f"{changes_per_gb_month / MONTH_S:.3f} changes/s per GB ({item_kb:g} KB items)."
    )


# --- the journal layout ----------------------------------------------------------------------


def journal_invocations(changes: float, batch: int, shards: int = 1, window_s: float = 60) -> float:
    """Batches delivered a month: per shard, a batch is full when ``batch`` records arrive
    within the window, else the window closes it (one batch a window while changes flow)."""
    per_shard = changes / shards
    return shards * max(per_shard / batch, min(per_shard, MONTH_S / window_s))


def journal_puts(changes: float, batch: int, shards: int = 1, window_s: float = 60) -> float:
    """PUTs a month (docs/journal.md, "Costs"): one per delivered batch, plus one per batch
    that crosses an hour (at most one per shard an hour)."""
    invocations = journal_invocations(changes, batch, shards, window_s)
    return invocations + min(invocations, shards * HOURS_PER_MONTH)


def gb_of(items: float, item_kb: float) -> float:
    return items * item_kb / 2**20


def compaction_requests(
    changes: float,
    table_items: float,
    batch: int,
    shards: int = 1,
    window_s: float = 60,
    days: int = 1,
) -> tuple[float, float]:
    """(PUT and LIST, GET) requests of one compaction of ``days`` of journal: the pieces read; one
    routed file per route unit and partition written and read; the previous base's files read
    and the new one's written; the journal listed from its first kept hour (a LIST per day
    folder and per 1,000 pieces) and each route unit's hour again; a ledger record per unit."""
    pieces_a_day = journal_puts(changes, batch, shards, window_s) / DAYS_PER_MONTH
    route_units = COMPACTION_ROUTE_UNITS * days
    data_files = COMPACTION_PARTITIONS * max(
        1, math.ceil(table_items / COMPACTION_PARTITIONS / BASE_ROWS_PER_FILE)
    )
    base_files = data_files + COMPACTION_PARTITIONS  # data and index
    routed = route_units * COMPACTION_PARTITIONS
    units = route_units + COMPACTION_PARTITIONS
    lists = JOURNAL_KEEP_DAYS + pieces_a_day * JOURNAL_KEEP_DAYS / 1000 + route_units
    puts = COMPACTION_FIXED_PUTS + units + routed + base_files + lists
    gets = COMPACTION_FIXED_GETS + pieces_a_day * days + routed + base_files
    return puts, gets


def journal_month(
    changes: float,
    table_gb: float,
    batch: int,
    item_kb: float = 1.0,
    shards: int = 1,
    window_s: float = BATCHING_WINDOW_S,
    monthly_bases: bool = False,
    compact_every_days: int = 1,
) -> dict[str, float]:
    """The journal layout's monthly cost, by part, for any moment of the last 35 days.
    ``compact_every_days`` 7: a weekly compaction and no daily bases (restores then read up to
    a week of journal instead of a day)."""
    puts = journal_puts(changes, batch, shards, window_s)
    journal_gb = gb_of(changes, item_kb) * JOURNAL_STORED_PER_ITEM_BYTE
    table_items = table_gb * 2**20 / item_kb
    base_gb = (
        table_gb * BASE_STORED_PER_ITEM_BYTE + table_items * INDEX_STORED_BYTES_PER_ITEM / 2**30
    )
    compaction_puts, compaction_gets = compaction_requests(
        changes, table_items, batch, shards, window_s, compact_every_days
    )
    compactions = DAYS_PER_MONTH / compact_every_days
    invocations = journal_invocations(changes, batch, shards, window_s)
    lambda_seconds = (
        changes * JOURNAL_HANDLER_CPU_US_PER_RECORD / 1e6 / LAMBDA_VCPU + puts * S3_LATENCY_S
    )
    parts = {
        "puts": puts * S3_PUT,
        "journal": journal_gb * JOURNAL_KEEP_DAYS / DAYS_PER_MONTH * S3_STORAGE_GB_MONTH,
        "weekly_bases": base_gb * WEEKLY_BASE_KEEP_DAYS / 7 * S3_STORAGE_GB_MONTH,
        "daily_bases": (
            base_gb * DAILY_BASE_KEEP_DAYS * 6 / 7 * S3_STORAGE_GB_MONTH
            if compact_every_days == 1
            else 0.0
        ),
        "monthly_bases": (
            base_gb * MONTHLY_BASE_KEEP_DAYS / DAYS_PER_MONTH * S3_STORAGE_GB_MONTH
            if monthly_bases
            else 0.0
        ),
        "compaction": compactions * (compaction_puts * S3_PUT + compaction_gets * S3_GET),
        "lambda": invocations * LAMBDA_REQUEST
        + lambda_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND,
    }
    parts["total"] = sum(parts.values())
    return parts


def item_layout_month(
    changes: float, table_gb: float, item_kb: float = 1.0, batch: int = 100
) -> dict[str, float]:
    """The item layout's monthly cost for the same promise: a PUT per change, every version
    kept 35 days (a lifecycle rule on noncurrent versions), the current items, the Lambda."""
    batch_seconds = max(
        batch * HANDLER_CPU_US_PER_RECORD / 1e6 / LAMBDA_VCPU,
        math.ceil(batch / 32) * S3_LATENCY_S,
    )
    parts = {
        "puts": changes * S3_PUT,
        "versions": (gb_of(changes, item_kb) * RESTORABLE_DAYS / DAYS_PER_MONTH + table_gb)
        * S3_STORAGE_GB_MONTH,
        "lambda": (changes / batch)
        * (LAMBDA_REQUEST + batch_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND),
    }
    parts["total"] = sum(parts.values())
    return parts


def pitr_month(table_gb: float) -> float:
    return table_gb * DDB_PITR_GB_MONTH


@dataclass(frozen=True)
class TargetCase:
    """Issue 22's target: a 10 GB table, 10^8 changes a month, any moment of the last 35
    days restorable: the journal below PITR's price and at least 100x cheaper than the item
    layout."""

    journal: dict[str, float]
    item_layout: dict[str, float]
    pitr: float

    @property
    def times_cheaper(self) -> float:
        return self.item_layout["total"] / self.journal["total"]

    @property
    def below_pitr(self) -> bool:
        return self.journal["total"] < self.pitr

    @property
    def met(self) -> bool:
        return self.below_pitr and self.times_cheaper >= 100


def target_case(shards: int = 1, item_kb: float = 1.0, compact_every_days: int = 1) -> TargetCase:
    case = PITR_TARGET
    return TargetCase(
        journal_month(
            case["changes"],
            case["table_gb"],
            case["batch"],
            item_kb,
            shards=shards,
            compact_every_days=compact_every_days,
        ),
        item_layout_month(case["changes"], case["table_gb"], item_kb),
        pitr_month(case["table_gb"]),
    )


def puts_per_change_rows(shards: int = 1) -> list[str]:
    rows = []
    for batch in JOURNAL_BATCHES:
        cells = [f"{1 / batch:g}"]
        for changes in SIZES:
            cells.append(f"{journal_puts(changes, batch, shards) / changes:.4f}")
        rows.append(f"| {batch:,} | " + " | ".join(cells) + " |")
    return rows


def journal_cost_rows(table_gb: float, item_kb: float, shards: int = 1) -> list[str]:
    rows = []
    for changes in SIZES:
        items = item_layout_month(changes, table_gb, item_kb)["total"]
        cells = [money(items)]
        for batch in JOURNAL_BATCHES:
            journal = journal_month(changes, table_gb, batch, item_kb, shards)["total"]
            cells.append(f"{money(journal)} ({items / journal:,.0f}x)")
        cells.append(money(pitr_month(table_gb)))
        rows.append(f"| 10^{round(math.log10(changes))} | " + " | ".join(cells) + " |")
    return rows


def journal_target_rows(shards: int, item_kb: float) -> list[str]:
    case = target_case(shards, item_kb)
    rows = [
        f"| {name.replace('_', ' ')} | {money(value)} |" for name, value in case.journal.items()
    ]
    rows.append(f"| item layout, same promise | {money(case.item_layout['total'])} |")
    rows.append(f"| PITR | {money(case.pitr)} |")
    return rows


def target_verdict(shards: int, item_kb: float, compact_every_days: int = 1) -> str:
    case = target_case(shards, item_kb, compact_every_days)
    yes = {True: "yes", False: "NO"}
    s3_alone = case.journal["total"] - case.journal["lambda"]
    cadence = "daily" if compact_every_days == 1 else f"every {compact_every_days} days"
    return (
        f"{shards} shard(s), compaction {cadence}: journal {money(case.journal['total'])} a "
        f"month (S3 alone {money(s3_alone)}) against PITR's "
        f"{money(case.pitr)} (below: {yes[case.below_pitr]}), the item layout's "
        f"{money(case.item_layout['total'])}: {case.times_cheaper:,.0f}x cheaper (at least "
        f"100x: {yes[case.times_cheaper >= 100]}); target {'met' if case.met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item-kb", type=float, default=1.0)
    parser.add_argument("--table-gb", type=float, default=100.0)
    parser.add_argument("--journal-table-gb", type=float, default=10.0)
    arguments = parser.parse_args()
    kb = arguments.item_kb
    print("Backfill (one-off)\n")
    print(
        "| items | scan + PUTs | export + PUTs | storage / month | one S3 prefix (3,500/s) "
        "| 16 prefixes, 8 executors |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(backfill_rows(kb)))
    print("\nExecutors (4 cores each) for a job within 24 h and within 6 h\n")
    print("| items | 24 h | 6 h |")
    print("|---|---|---|")
    print("\n".join(target_rows()))
    print(f"\nContinuous backup, per month ({arguments.table_gb:g} GB table for PITR)\n")
    print("| changes/s | S3 PUTs | Lambda | versions kept | PITR instead |")
    print("|---|---|---|---|---|")
    print("\n".join(continuous_rows(kb, arguments.table_gb)))
    print("\nRestore\n")
    print(
        "| items | per object: cost | new table (4,000/s) | pre-warmed (40,000/s) | ImportTable |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(restore_rows(kb)))
    print("\nVerify\n")
    print("| items | cost | time |")
    print("|---|---|---|")
    print("\n".join(verify_rows(kb)))
    print("\n" + break_even(kb))
    print(f"\nJournal layout: PUTs per change (1 shard, {BATCHING_WINDOW_S} s window)\n")
    print("| batch | under load | 10^6 a month | 10^8 a month | 10^9 a month |")
    print("|---|---|---|---|---|")
    print("\n".join(puts_per_change_rows()))
    print(
        f"\nJournal layout: monthly cost, any moment of the last {RESTORABLE_DAYS} days "
        f"({arguments.journal_table_gb:g} GB table, 1 shard; x: times cheaper than items)\n"
    )
    columns = (
        "changes a month",
        "item layout",
        "journal, batches of 100",
        "of 1,000",
        "of 10,000 (deploy's default)",
        "PITR",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    print("\n".join(journal_cost_rows(arguments.journal_table_gb, kb)))
    print("\nThe target case: 10 GB, 10^8 changes a month, batches of 10,000, 1 shard\n")
    print("| part | per month |")
    print("|---|---|")
    print("\n".join(journal_target_rows(1, kb)))
    print()
    for shards, every in ((1, 1), (2, 1), (4, 1), (1, 7), (4, 7)):
        print(target_verdict(shards, kb, every))


if __name__ == "__main__":
    main()
