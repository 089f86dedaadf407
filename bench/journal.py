"""Benchmark: the journal layout against the item layout (issue 22), on one server state.

    .venv/bin/python -m bench.journal [--items 20000] [--changed N] [--changes 1000000]
        [--at-items 10000] [--output text|json]

DynamoDB Local and SeaweedFS start once (as bench.compare starts them). Two parts:

1. **Restore, both layouts.** A table of ``--items`` items is backed up in both layouts: the
   item layout by ``backfill`` (the real command), the journal layout by the stream's INSERT
   records of the same items written through the journal writer (``JournalApplier``, batches
   of 1,000, as ``deploy --layout journal`` delivers them) and folded into a base by
   ``compact`` (the job). ``--changed`` items then change in both (the item layout through
   the handler's applier, the journal through the journal's), after the base. Each folder is
   restored (latest) by the real ``restore`` command in its own process: items/s, client CPU
   per item (its whole process tree), peak RSS (VmHWM). ``../shared/bench/ceiling`` runs once
   in the same run (after one unmeasured run that warms DynamoDB Local); the targets: the
   journal's rate >= 3x the item layout's and >= 0.8 of ``ddb_batch_write_items_per_s``. The
   two restored tables must be equal. A restore of one item (``--keys``) of the journal folder
   gives the command's fixed part (start, pin, table, base choice, routing); the journal's
   write phase is reported as items / (seconds - that), against the same ceiling.
2. **``--at`` on a journal of ``--changes`` changes** (default 10^6) to ``--at-items`` items,
   spread in time at 10^8 changes a month, written through the journal writer from synthetic
   stream records (1,000 a piece; every 97th change a REMOVE) and compacted twice (a base at
   half the span, then one at 80% from it, as a daily compaction would). ``restore --at`` a
   moment at 95% is timed (the real command, alone), then run again through a counting proxy
   for its requests; the second compaction's requests are counted the same way. The restored
   table must equal the state the benchmark computes from the changes. The history of one
   item is measured on both layouts when ``history`` reads a journal folder (``history_figures``;
   otherwise what it answered is reported).

Prints a table, then one JSON summary (``--output json``: the JSON only, as the last line).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.credentials import Credentials
from tests import servers
from tests.faultproxy import FaultProxy, Request

from bench.common import client, local_servers, measure_ceiling, ratio
from bench.recovery import TABLE, change_items, fill_table, item, timed
from dynamo_backups.aws.fast_objects import FastObjects
from dynamo_backups.backup.manifest import ensure_manifest
from dynamo_backups.backup.writer import BackupWriter
from dynamo_backups.core.layout import TableLayout
from dynamo_backups.jobs.compact import Compaction, CompactOptions
from dynamo_backups.pipeline.journal_applier import JournalApplier

ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-01-01T00:00:00.000"
BATCH = 1_000  # records a delivered batch (deploy --layout journal's default)
CHANGES_A_MONTH = 10**8  # the rate the --at journal is spread at (issue 22's target case)
MONTH_S = 30.4 * 24 * 3600
REMOVE_EVERY = 97
TARGET_TIMES_ITEMS = 3.0
TARGET_OF_CEILING = 0.8
KEY = [{"AttributeName": "pk", "KeyType": "HASH"}]


# --- the journal, written as the stream handler writes it ---------------------------------


def stream_record(index: int, version: int, when: float, sequence: int, event: str) -> dict:
    """A Lambda-shaped DynamoDB stream record of item ``index`` (REMOVE: no new image)."""
    change: dict[str, Any] = {
        "ApproximateCreationDateTime": when,
        "Keys": {"pk": {"S": f"user-{index:07d}"}},
        "SequenceNumber": f"{sequence:021d}",
        "SizeBytes": 200,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event != "REMOVE":
        change["NewImage"] = item(index, version)
    return {
        "eventID": f"{sequence:032x}",
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": change,
    }


def journal_writer(s3: Any, bucket: str, prefix: str) -> JournalApplier:
    """The handler's journal applier, on the fast transport, into a journal folder."""
    writer = BackupWriter(
        s3,
        bucket,
        objects=FastObjects(s3, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY)),
    )
    ensure_manifest(writer, TableLayout.of(prefix, TABLE), KEY, {"pk": "S"}, "journal")
    return JournalApplier(writer, prefix)


@dataclass
class Written:
    records: int = 0
    batches: int = 0  # a batch crossing an hour is two pieces (the folder's listing counts them)
    cpu_s: float = 0.0  # this process's CPU while the applier ran (every thread)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "batches": self.batches,
            "records_per_s": round(self.records / self.seconds) if self.seconds else None,
            "cpu_us_per_record": round(self.cpu_s / self.records * 1e6) if self.records else None,
        }


def write_batches(applier: JournalApplier, records: Iterator[dict], written: Written) -> None:
    """Deliver ``records`` in batches of BATCH, as Lambda would; every batch must be written."""
    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) == BATCH:
            _deliver(applier, batch, written)
            batch = []
    if batch:
        _deliver(applier, batch, written)


def _deliver(applier: JournalApplier, batch: list[dict], written: Written) -> None:
    cpu, started = time.process_time(), time.perf_counter()
    result = applier.apply(batch)
    written.cpu_s += time.process_time() - cpu
    written.seconds += time.perf_counter() - started
    if result.failures:
        raise RuntimeError(f"a journal batch failed: {result.failures[0]}")
    written.records += len(batch)
    written.batches += 1


def compact(s3: Any, bucket: str, folder: str, at: datetime | None) -> dict[str, Any]:
    """The compaction job (the writers are done: it waits a second past its cutoff, not 20)."""
    time.sleep(1.1)  # a piece received in the cutoff's second would be late for the base
    objects = FastObjects(s3, bucket, Credentials(servers.ACCESS_KEY, servers.SECRET_KEY))
    started = time.perf_counter()
    job = Compaction(s3, objects, bucket, folder, CompactOptions(at=at, settle_seconds=1.0))
    report = job.run()
    if not report.complete:
        raise RuntimeError(f"compaction of {folder} failed: {report.errors}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "moment": report.moment,
        "items": report.items,
        "files": report.files,
        "pieces_read": report.pieces_read,
        "records_folded": report.records_folded,
    }


def folder_bytes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Objects and bytes under ``prefix``."""
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            count += 1
            size += entry["Size"]
    return {"objects": count, "bytes": size}


def item_bytes(index: int, version: int) -> int:
    """An item's size as DynamoDB counts it (attribute names and values), roughly."""
    total = 0
    for name, value in item(index, version).items():
        ((kind, body),) = value.items()
        total += len(name) + (sum(map(len, body)) if kind == "SS" else len(body))
    return total


# --- counting requests --------------------------------------------------------------------


def request_kind(service: str, request: Request) -> str:
    """What a request was: S3 LIST, GET, HEAD, PUT, DELETE, POST; DynamoDB's operation."""
    if service == "dynamodb":
        return "DynamoDB " + request.headers.get("x-amz-target", "?").split(".")[-1]
    query = urlsplit(request.path).query
    if request.method == "GET" and ("list-type" in query or "versions" in query):
        return "S3 LIST"
    return f"S3 {request.method}"


@contextmanager
def counting(endpoints: dict[str, str]) -> Iterator[tuple[dict[str, str], Counter[str]]]:
    """Proxies in front of both servers; the requests they saw, by kind, filled in on exit."""
    counts: Counter[str] = Counter()
    with FaultProxy(endpoints["s3"]) as s3, FaultProxy(endpoints["dynamodb"]) as dynamodb:
        yield {"s3": s3.endpoint, "dynamodb": dynamodb.endpoint}, counts
        for service, proxy in (("s3", s3), ("dynamodb", dynamodb)):
            counts.update(request_kind(service, request) for request in proxy.log.requests)


# --- the restores -------------------------------------------------------------------------


def restore_figures(
    endpoints: dict[str, str], bucket: str, folder: str, items: int, *extra: str
) -> tuple[str, dict[str, Any]]:
    """The real ``restore`` into a new table, in its own process: the table and figures."""
    target = f"Restored-{uuid.uuid4().hex[:6]}"
    run = timed(endpoints, "restore", bucket, folder, target, *extra)
    if run.report["written"] != items:
        raise RuntimeError(f"restore of {folder} wrote {run.report['written']}, not {items}")
    return target, {
        "items_per_s": round(items / run.seconds),
        "client_cpu_us_per_item": round(run.cpu["client_s"] / items * 1e6),
        "peak_rss_mb": round(run.peak_rss_mb),
        "seconds": round(run.seconds, 1),
        "objects_read": run.report.get("objects"),
        "records_or_versions_read": run.report.get("versions_read"),
    }


def scan_table(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.update((entry["pk"]["S"], entry) for entry in page["Items"])
    return items


def history_figures(
    endpoints: dict[str, str], bucket: str, prefix: str, table: str, key: str
) -> dict[str, Any]:
    """``history`` of one item (the real command): time, versions, requests (a second run
    through the counting proxy). On a branch whose ``history`` does not read journal folders
    it fails or finds nothing: then what it answered is the result."""
    arguments = ("history", table, key, "--bucket", bucket, "--prefix", prefix)
    try:
        run = timed(endpoints, *arguments)
    except RuntimeError as error:
        return {"supported": False, "answer": str(error)[-300:]}
    with counting(endpoints) as (proxied, counts):
        timed(proxied, *arguments)
    return {
        "supported": True,
        "seconds": round(run.seconds, 2),
        "versions": len(run.report.get("history", [])),
        "requests": dict(sorted(counts.items())),
    }


# --- the two parts ------------------------------------------------------------------------


def compare_restores(
    endpoints: dict[str, str], s3: Any, dynamodb: Any, bucket: str, arguments: Any
) -> dict[str, Any]:
    items = arguments.items
    fill_table(dynamodb, items)
    backfill = timed(endpoints, "backfill", TABLE, "--bucket", bucket, "--prefix", "items")
    assert backfill.report["tables"][0]["written"] == items, backfill.report
    applier = journal_writer(s3, bucket, "journal")
    written = Written()
    start = time.time() - 600
    write_batches(
        applier,
        (stream_record(i, 0, start, i + 1, "INSERT") for i in range(items)),
        written,
    )
    compaction = compact(s3, bucket, f"journal/{TABLE}", None)
    time.sleep(1.5)  # the later changes are after the base's moment
    change_items(s3, bucket, "items", arguments.changed)
    now = time.time()
    write_batches(
        applier,
        (stream_record(i, 1, now, items + i + 1, "MODIFY") for i in range(arguments.changed)),
        written,
    )
    # DynamoDB Local is a JVM: its first BatchWriteItem load runs slower until compiled. One
    # unmeasured run of the ceiling warms it, so the ceiling and both layouts' restores meet
    # the same warm server (a cold ceiling would be lower, and the first restore slower).
    measure_ceiling(endpoints, "dynamodb", "--items", str(arguments.ceiling_items))
    ceiling = measure_ceiling(
        endpoints,
        "s3,dynamodb",
        *("--items", str(arguments.ceiling_items), "--objects", str(arguments.ceiling_objects)),
    )
    runs: dict[str, dict[str, Any]] = {}
    tables: dict[str, str] = {}
    for layout in ("items", "journal", "journal", "items")[: 2 * arguments.rounds]:
        table, figures = restore_figures(endpoints, bucket, f"{layout}/{TABLE}", items)
        runs[layout] = _better(runs[layout], figures) if layout in runs else figures
        if layout in tables:
            dynamodb.delete_table(TableName=table)
        else:
            tables[layout] = table
    if scan_table(dynamodb, tables["items"]) != scan_table(dynamodb, tables["journal"]):
        raise RuntimeError("the two layouts' restores differ")
    for table in tables.values():
        dynamodb.delete_table(TableName=table)
    fixed = fixed_seconds(endpoints, bucket, f"journal/{TABLE}", dynamodb)
    runs["journal"]["write_phase_items_per_s"] = round(
        items / max(runs["journal"]["seconds"] - fixed, 0.001)
    )
    batch_write = (ceiling or {}).get("ddb_batch_write_items_per_s")
    journal_rate, items_rate = runs["journal"]["items_per_s"], runs["items"]["items_per_s"]
    times = ratio(journal_rate, items_rate)
    of_ceiling = ratio(journal_rate, batch_write)
    write_phase_of_ceiling = ratio(runs["journal"]["write_phase_items_per_s"], batch_write)
    stored = {
        "journal": folder_bytes(s3, bucket, f"journal/{TABLE}/journal/"),
        "bases": folder_bytes(s3, bucket, f"journal/{TABLE}/bases/"),
    }
    return {
        "items": items,
        "changed_after_base": arguments.changed,
        "journal_writes": written.figures(),
        "compaction": compaction,
        "stored": stored,
        "item_bytes": item_bytes(0, 1),
        "restore": runs,
        "journal_fixed_seconds": fixed,
        "ceiling": ceiling,
        "targets": [
            _check("journal restore / item restore", times, TARGET_TIMES_ITEMS),
            _check("journal restore / ddb_batch_write_items_per_s", of_ceiling, TARGET_OF_CEILING),
            _check(
                "journal restore's write phase / ddb_batch_write_items_per_s",
                write_phase_of_ceiling,
                TARGET_OF_CEILING,
            ),
        ],
    }


def fixed_seconds(endpoints: dict[str, str], bucket: str, folder: str, dynamodb: Any) -> float:
    """What a journal restore costs before and beside its writes (start, pin, table, base
    choice, routing): the time of a restore of one item (``--keys``) of the same folder."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as keys:
        keys.write(json.dumps({"pk": item(0, 0)["pk"]}) + "\n")
        keys.flush()
        target = f"Restored-{uuid.uuid4().hex[:6]}"
        run = timed(endpoints, "restore", bucket, folder, target, "--keys", keys.name)
    dynamodb.delete_table(TableName=target)
    if run.report["written"] != 1:
        raise RuntimeError(f"the one-key restore of {folder} wrote {run.report['written']}")
    return round(run.seconds, 2)


def _better(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Of two runs of one restore, the faster (the other's rate kept for the record)."""
    best, other = sorted((first, second), key=lambda run: -run["items_per_s"])
    return {**best, "other_run_items_per_s": other["items_per_s"]}


def _check(what: str, value: float | None, at_least: float) -> dict[str, Any]:
    return {
        "target": what,
        "value": value,
        "limit": f">= {at_least}",
        "passed": None if value is None else value >= at_least,
    }


def changes_over_time(changes: int, items: int, start: float) -> Iterator[tuple[float, dict]]:
    """The --at journal's changes, in stream order: (time, record)."""
    step = MONTH_S / CHANGES_A_MONTH
    for number in range(changes):
        index, version = number % items, number // items
        event = "REMOVE" if number % REMOVE_EVERY == REMOVE_EVERY - 1 else "MODIFY"
        if version == 0 and event == "MODIFY":
            event = "INSERT"
        when = start + number * step
        yield when, stream_record(index, version, when, number + 1, event)


def state_at(changes: int, items: int, start: float, moment: float) -> dict[str, Any]:
    """Each item's state at ``moment`` (the changes made at or before it), as restore must
    give it."""
    state: dict[str, Any] = {}
    for when, record in changes_over_time(changes, items, start):
        if when > moment:
            break
        key = record["dynamodb"]["Keys"]["pk"]["S"]
        state[key] = record["dynamodb"].get("NewImage")
    return {key: image for key, image in state.items() if image is not None}


def restore_at_a_million(
    endpoints: dict[str, str], s3: Any, dynamodb: Any, bucket: str, arguments: Any
) -> dict[str, Any]:
    changes, items = arguments.changes, arguments.at_items
    span = changes * MONTH_S / CHANGES_A_MONTH
    start = float(int(time.time() - span - 600))
    applier = journal_writer(s3, bucket, "big")
    written = Written()
    write_batches(
        applier, (record for _, record in changes_over_time(changes, items, start)), written
    )
    folder = f"big/{TABLE}"

    def moment(fraction: float) -> datetime:
        return datetime.fromtimestamp(int(start + span * fraction), UTC)

    first = compact(s3, bucket, folder, moment(0.5))
    with counting(endpoints) as (proxied, compaction_requests):
        proxied_s3 = client("s3", proxied["s3"])
        second = compact(proxied_s3, bucket, folder, moment(0.8))
    at = moment(0.95)
    expected = state_at(changes, items, start, at.timestamp())
    table, figures = restore_figures(
        endpoints, bucket, folder, len(expected), "--at", at.isoformat()
    )
    restored = scan_table(dynamodb, table)
    if restored != expected:
        raise RuntimeError(f"restore --at {at} differs from the changes' state at it")
    dynamodb.delete_table(TableName=table)
    with counting(endpoints) as (proxied, restore_requests):
        table, _ = restore_figures(proxied, bucket, folder, len(expected), "--at", at.isoformat())
    dynamodb.delete_table(TableName=table)
    return {
        "changes": changes,
        "items": items,
        "span_hours": round(span / 3600, 2),
        "journal_writes": written.figures(),
        "stored": {
            "journal": folder_bytes(s3, bucket, f"{folder}/journal/"),
            "bases": folder_bytes(s3, bucket, f"{folder}/bases/"),
        },
        "compaction_at_half": first,
        "compaction_at_80_percent": {
            **second,
            "note": "through the counting proxy",
            "requests": dict(sorted(compaction_requests.items())),
        },
        "restore_at_95_percent": {
            **figures,
            "at": at.isoformat(),
            "requests": dict(sorted(restore_requests.items())),
        },
    }


# --- report -------------------------------------------------------------------------------


def text_report(summary: dict[str, Any]) -> str:
    both = summary["restore_both_layouts"]
    lines = [
        f"restore of {both['items']:,} items ({both['changed_after_base']:,} changed after the "
        "base), latest, one server state:",
        "layout   items/s  CPU µs/item  peak RSS MB  objects read",
    ]
    for layout in ("items", "journal"):
        run = both["restore"][layout]
        lines.append(
            f"{layout:<8} {run['items_per_s']:>7,}  {run['client_cpu_us_per_item']:>11,}  "
            f"{run['peak_rss_mb']:>11,}  {run['objects_read']:>12,}"
        )
    journal = both["restore"]["journal"]
    lines.append(
        f"journal restore's fixed part (a one-key restore): {both['journal_fixed_seconds']} s; "
        f"its write phase: {journal['write_phase_items_per_s']:,} items/s"
    )
    ceiling = both["ceiling"] or {}
    lines.append(f"ceiling (same run): {json.dumps(ceiling)}")
    for check in both["targets"]:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[check["passed"]]
        lines.append(f"  {check['target']}: {check['value']} ({check['limit']}) {verdict}")
    writes = both["journal_writes"]
    lines.append(
        f"journal writer: {writes['records_per_s']:,} records/s, {writes['cpu_us_per_record']} "
        f"µs CPU per record; stored {json.dumps(both['stored'])}, item ~{both['item_bytes']} B"
    )
    big = summary.get("restore_at_journal")
    if big:
        lines.append(
            f"journal of {big['changes']:,} changes to {big['items']:,} items over "
            f"{big['span_hours']} h: written at {big['journal_writes']['records_per_s']:,} "
            f"records/s ({big['journal_writes']['cpu_us_per_record']} µs CPU each)"
        )
        for name in ("compaction_at_half", "compaction_at_80_percent", "restore_at_95_percent"):
            step = big[name]
            lines.append(f"  {name}: {step['seconds']} s; requests {step.get('requests', '-')}")
    for name, figures in summary.get("history", {}).items():
        lines.append(f"history of one item, {name}: {json.dumps(figures)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--changed", type=int, help="changes after the base (default items/10)")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=1, help="runs a layout")
    parser.add_argument("--changes", type=int, default=10**6, help="the --at journal (0: none)")
    parser.add_argument("--at-items", type=int, default=10_000)
    parser.add_argument("--ceiling-items", type=int, default=20_000)
    parser.add_argument("--ceiling-objects", type=int, default=5_000)
    parser.add_argument("--output", choices=("text", "json"), default="text")
    arguments = parser.parse_args()
    if arguments.changed is None:
        arguments.changed = arguments.items // 10
    summary: dict[str, Any] = {}
    with local_servers() as endpoints:
        s3 = client("s3", endpoints["s3"])
        dynamodb = client("dynamodb", endpoints["dynamodb"])
        bucket = "bench-journal"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="warm", Body=b"x")
        summary["restore_both_layouts"] = compare_restores(
            endpoints, s3, dynamodb, bucket, arguments
        )
        if arguments.changes:
            summary["restore_at_journal"] = restore_at_a_million(
                endpoints, s3, dynamodb, bucket, arguments
            )
        key = json.dumps({"pk": "user-0000000"})
        summary["history"] = {
            "items layout (2 versions)": history_figures(endpoints, bucket, "items", TABLE, key),
        }
        if arguments.changes:
            summary["history"][f"journal of {arguments.changes:,} changes"] = history_figures(
                endpoints, bucket, "big", TABLE, key
            )
    if arguments.output == "text":
        print(text_report(summary))
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(json.dumps(summary, default=str))  # one line, the last


if __name__ == "__main__":
    main()
