"""The scale model of docs/scale.md: time and money for 10^6, 10^8 and 10^9 items, from the
client CPU per item measured here (bench.engines, bench.handler) and AWS's published prices
and limits. Prints the document's tables; every input is a named constant below.

    .venv/bin/python -m bench.scale_model [--item-kb 1]
"""

from __future__ import annotations

import argparse
import math

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item-kb", type=float, default=1.0)
    parser.add_argument("--table-gb", type=float, default=100.0)
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


if __name__ == "__main__":
    main()
