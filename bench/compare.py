"""Benchmark: two revisions' CLIs against one server state, their runs alternated.

    .venv/bin/python -m bench.compare OLD [NEW] [--items 20000] [--rounds 2]
        [--steps backfill,restore,restore-at,handler] [--output text|json]

OLD and NEW are git revisions (NEW defaults to the working tree). Each is exported with
``git archive`` into a temporary folder and run with this venv's Python and that folder's
``src`` first on PYTHONPATH: this venv's dependencies, that revision's code. The local servers
start once, the source table is filled once and backed up once (by OLD's backfill); then each
step runs OLD, NEW, NEW, OLD, OLD, NEW... (``--rounds`` pairs), so a drift of the shared
machine weighs on both alike:

- backfill: the same table into a fresh prefix each run (removed afterwards);
- restore / restore-at: the backup (latest, and ``--at`` a moment before ``--changed`` later
  changes written through the handler's code) into a fresh table each run (deleted afterwards);
- handler: the Lambda entry point on 100-record batches, in a child process with the
  revision's sources (bench.handler --entry-point), into a fresh prefix each run.

Per run: items/s, client CPU per item (the child's whole process tree, from its resource usage
once reaped), its peak RSS (VmHWM), and for restores the versions read. The servers' ceiling
(../shared/bench/ceiling) and the Node reference restore (bench/restore_reference.mjs) run once
in the same run; the issue-21 targets are checked against them.

Only options every revision has are used (positional arguments, --bucket, --prefix, --at,
--quiet, --output json): each revision runs with its own defaults (concurrency, partitions).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests import servers

from bench.common import (
    REPO,
    client,
    local_servers,
    measure_ceiling,
    measure_restore_reference,
    ratio,
)
from bench.recovery import TABLE, change_items, fill_table, restore_ceiling, timed

STEPS = ("backfill", "restore", "restore-at", "handler")
LABELS = ("OLD", "NEW")
# Issue 21's targets: (what, ceiling name, at least) for rates; the others are limits.
RATE_TARGETS = {
    "backfill": ("s3_versioned_conditional_put_per_s", 0.8),
    "handler": ("s3_versioned_put_per_s", 0.8),
    "restore": ("node_reference_items_per_s", 1.0),
    "restore-at": ("node_reference_items_per_s", 1.0),
}
RESTORE_CPU_LIMIT_US = 300
RSS_LIMIT_MB = 200


@dataclass(frozen=True)
class Revision:
    label: str  # OLD or NEW
    name: str  # as given, or "working tree"
    commit: str  # short hash (the working tree's: HEAD's, and whether src/ differs)
    src: Path  # put first on PYTHONPATH

    def environment(self, with_bench: bool = False) -> dict[str, str]:
        """PYTHONPATH for this revision's code (and this checkout's bench/ and tests/)."""
        paths = [str(self.src)] + ([str(REPO)] if with_bench else [])
        return {"PYTHONPATH": os.pathsep.join(paths)}


# --- pure logic ---------------------------------------------------------------------------


def alternation(rounds: int) -> list[int]:
    """Indexes into (OLD, NEW) in run order: OLD NEW, then NEW OLD, and so on (ABBA)."""
    order: list[int] = []
    for number in range(rounds):
        order += [0, 1] if number % 2 == 0 else [1, 0]
    return order


def summarize(runs: list[dict[str, Any]], measures: tuple[str, ...]) -> dict[str, Any]:
    """Per measure: the median and every run's figure, in run order."""
    return {
        measure: {
            "median": statistics.median(run[measure] for run in runs),
            "runs": [run[measure] for run in runs],
        }
        for measure in measures
        if runs and all(run.get(measure) is not None for run in runs)
    }


def new_over_old(step: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """NEW's median over OLD's, per measure both have."""
    old, new = step.get("OLD", {}), step.get("NEW", {})
    return {
        measure: ratio(new[measure]["median"], old[measure]["median"])
        for measure in old
        if measure in new
    }


def check_targets(
    step: str, summary: dict[str, Any], ceilings: dict[str, float | None]
) -> list[dict[str, Any]]:
    """Issue 21's targets for one revision's medians on one step: what, value, limit, passed
    (None when the figure to compare with is missing)."""
    checks = []
    rate = summary.get("items_per_s", {}).get("median")
    ceiling_name, at_least = RATE_TARGETS[step]
    value = ratio(rate, ceilings.get(ceiling_name)) if rate is not None else None
    checks.append(
        {
            "target": f"items/s vs {ceiling_name}",
            "value": value,
            "limit": f">= {at_least}",
            "passed": None if value is None else value >= at_least,
        }
    )
    cpu = summary.get("client_cpu_us_per_item", {}).get("median")
    if step.startswith("restore") and cpu is not None:
        checks.append(
            {
                "target": "client CPU µs/item",
                "value": cpu,
                "limit": f"<= {RESTORE_CPU_LIMIT_US}",
                "passed": cpu <= RESTORE_CPU_LIMIT_US,
            }
        )
    rss = summary.get("peak_rss_mb", {}).get("median")
    if rss is not None:
        checks.append(
            {
                "target": "peak RSS MB",
                "value": rss,
                "limit": f"< {RSS_LIMIT_MB}",
                "passed": rss < RSS_LIMIT_MB,
            }
        )
    return checks


# --- revisions ----------------------------------------------------------------------------


def git(*arguments: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(REPO), *arguments], capture_output=True, check=True
    ).stdout


def export(label: str, name: str | None, into: Path) -> Revision:
    """The revision's src/ and pyproject.toml under ``into`` (the working tree's own src/ when
    ``name`` is None), byte-compiled now so that no measured run pays for it."""
    if name is None:
        head = git("rev-parse", "--short", "HEAD").decode().strip()
        changed = git("status", "--porcelain", "--", "src", "pyproject.toml").strip()
        commit = f"{head} with uncommitted changes" if changed else head
        revision = Revision(label, "working tree", commit, REPO / "src")
    else:
        commit = git("rev-parse", "--short", f"{name}^{{commit}}").decode().strip()
        archive = git("archive", "--format=tar", commit, "src", "pyproject.toml")
        folder = into / label
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        revision = Revision(label, name, commit, folder / "src")
    _check_imports(revision)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(revision.src)], check=True)
    return revision


def _check_imports(revision: Revision) -> None:
    """The revision's CLI must be the one this venv's Python imports (not an installed copy)."""
    found = subprocess.run(
        [sys.executable, "-c", "import dynamo_backups; print(dynamo_backups.__file__)"],
        env=dict(os.environ, **revision.environment()),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).is_relative_to(revision.src):
        raise SystemExit(f"error: {revision.label} imports dynamo_backups from {found}")


def dependency_notes(revision: Revision) -> list[str]:
    """The revision's declared dependencies that this venv does not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    pyproject = revision.src.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"].get("dependencies", [])
    notes = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            notes.append(f"{revision.label} needs {text}: not installed in this venv")
            continue
        if installed not in requirement.specifier:
            notes.append(f"{revision.label} needs {text}: this venv has {installed}")
    return notes


# --- the steps ----------------------------------------------------------------------------


@dataclass
class Bench:
    endpoints: dict[str, str]
    s3: Any
    dynamodb: Any
    bucket: str
    folder: str  # the backup every restore reads: <prefix>/<table>
    moment: str  # for restore --at
    items: int
    batches: int

    def backfill(self, revision: Revision, number: int) -> dict[str, Any]:
        prefix = f"backfill-{revision.label}-{number}-{uuid.uuid4().hex[:4]}"
        run = timed(
            self.endpoints,
            *("backfill", TABLE, "--bucket", self.bucket, "--prefix", prefix),
            extra_environment=revision.environment(),
        )
        assert run.report["tables"][0]["written"] == self.items, run.report
        delete_folder(self.s3, self.bucket, f"{prefix}/")
        return figures_of(run, self.items)

    def restore(self, revision: Revision, number: int, *extra: str) -> dict[str, Any]:
        target = f"Restored-{revision.label}-{number}-{uuid.uuid4().hex[:4]}"
        run = timed(
            self.endpoints,
            *("restore", self.bucket, self.folder, target, *extra),
            extra_environment=revision.environment(),
        )
        assert run.report["written"] == self.items, run.report
        self.dynamodb.delete_table(TableName=target)
        return {**figures_of(run, self.items), "versions_read": run.report.get("versions_read")}

    def restore_at(self, revision: Revision, number: int) -> dict[str, Any]:
        return self.restore(revision, number, "--at", self.moment)

    def handler(self, revision: Revision, number: int) -> dict[str, Any]:
        prefix = f"handler-{revision.label}-{number}-{uuid.uuid4().hex[:4]}"
        environment = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=servers.ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=servers.SECRET_KEY,
            AWS_DEFAULT_REGION=servers.REGION,
            AWS_ENDPOINT_URL_S3=self.endpoints["s3"],
            BACKUP_BUCKET=self.bucket,
            BACKUP_PREFIX=prefix,
            **revision.environment(with_bench=True),
        )
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.handler",
                "--entry-point",
                "--batches",
                str(self.batches),
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"handler of {revision.label} failed: {completed.stderr[-2000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        delete_folder(self.s3, self.bucket, f"{prefix}/")
        return {
            "items_per_s": result["records_per_s"],
            "client_cpu_us_per_item": result["client_cpu_us_per_record"],
            "peak_rss_mb": result["peak_rss_mb"],
            "seconds": result["seconds"],
        }


def figures_of(run: Any, items: int) -> dict[str, Any]:
    """A CLI run's figures (bench.recovery.timed's StepRun)."""
    return {
        "items_per_s": round(items / run.seconds),
        "client_cpu_us_per_item": round(run.cpu["client_s"] / items * 1e6),
        "peak_rss_mb": round(run.peak_rss_mb),
        "seconds": round(run.seconds, 1),
    }


def delete_folder(s3: Any, bucket: str, prefix: str) -> None:
    """Remove every version and delete marker under ``prefix``, so the bucket holds the same
    objects before each run."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        doomed = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


MEASURES = ("items_per_s", "client_cpu_us_per_item", "peak_rss_mb", "versions_read")


def run_steps(
    bench: Bench, revisions: list[Revision], steps: list[str], rounds: int
) -> dict[str, Any]:
    """Each step's runs, alternated; per revision their summary."""
    results: dict[str, Any] = {}
    order = alternation(rounds)
    for step in steps:
        measure = getattr(bench, step.replace("-", "_"))
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in LABELS}
        for number, index in enumerate(order):
            revision = revisions[index]
            figures = measure(revision, number)
            runs[revision.label].append(figures)
            print(f"{step} {revision.label}: {json.dumps(figures)}", file=sys.stderr, flush=True)
        results[step] = {label: summarize(runs[label], MEASURES) for label in LABELS}
        results[step]["new_over_old"] = new_over_old(results[step])
    return results


@contextmanager
def exported(old: str, new: str | None) -> Iterator[list[Revision]]:
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as folder:
        yield [export("OLD", old, Path(folder)), export("NEW", new, Path(folder))]


def prepare(endpoints: dict[str, str], revisions: list[Revision], arguments: Any) -> Bench:
    """One server state for every run: the table, its backup by OLD, a moment, changes."""
    s3 = client("s3", endpoints["s3"])
    dynamodb = client("dynamodb", endpoints["dynamodb"])
    bucket, prefix = "bench-compare", "source"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="warm", Body=b"x")
    fill_table(dynamodb, arguments.items)
    backup = timed(
        endpoints,
        *("backfill", TABLE, "--bucket", bucket, "--prefix", prefix),
        extra_environment=revisions[0].environment(),
    )
    assert backup.report["tables"][0]["written"] == arguments.items, backup.report
    time.sleep(1.5)  # S3 keeps whole seconds: the moment falls between the two sets of writes
    moment = datetime.now(UTC)
    time.sleep(1.5)
    change_items(s3, bucket, prefix, arguments.changed)
    return Bench(
        endpoints,
        s3,
        dynamodb,
        bucket,
        f"{prefix}/{TABLE}",
        moment.isoformat(),
        arguments.items,
        arguments.batches,
    )


def reference_rates(bench: Bench, steps: list[str]) -> dict[str, float | None]:
    """The servers' ceiling and the Node reference restore, once, in this server state."""
    ceiling = measure_ceiling(bench.endpoints, "s3,dynamodb", "--items", "20000") or {}
    rates: dict[str, float | None] = {
        name: value for name, value in ceiling.items() if name.endswith("_per_s")
    }
    rates["restore_ceiling"] = restore_ceiling(ceiling or None)
    if any(step.startswith("restore") for step in steps):
        table = f"NodeReference-{uuid.uuid4().hex[:4]}"
        reference = measure_restore_reference(
            bench.endpoints, bench.bucket, bench.folder, table, "pk"
        )
        if reference:
            assert reference["written"] == bench.items, reference
            bench.dynamodb.delete_table(TableName=table)
            rates["node_reference_items_per_s"] = reference["items_per_s"]
    return rates


# --- report -------------------------------------------------------------------------------


def text_report(results: dict[str, Any]) -> str:
    lines = [
        f"{label}: {info['name']}"
        + (f" ({info['commit']})" if info["commit"] != info["name"] else "")
        for label, info in results["revisions"].items()
    ]
    lines += [f"note: {note}" for note in results["notes"]]
    lines.append(f"items {results['items']}, rounds {results['rounds']}, order {results['order']}")
    header = ["step", "rev", "items/s", "CPU µs/item", "peak RSS MB", "versions read"]
    rows = [header]
    for step in results["steps"]:
        for label in (*LABELS, "NEW/OLD"):
            if label == "NEW/OLD":
                ratios = results["steps"][step]["new_over_old"]
                rows.append(["", label, *(_cell(ratios.get(m)) for m in MEASURES)])
                continue
            summary = results["steps"][step][label]
            rows.append([step, label, *(_median_and_runs(summary.get(m)) for m in MEASURES)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.append("reference rates (once, same run): " + json.dumps(results["reference"]))
    lines.append("targets (issue 21), on medians:")
    for step, by_label in results["targets"].items():
        for label, checks in by_label.items():
            for check in checks:
                verdict = {True: "pass", False: "FAIL", None: "n/a"}[check["passed"]]
                lines.append(
                    f"  {step:<10} {label}  {check['target']}: {check['value']} "
                    f"({check['limit']}) {verdict}"
                )
    return "\n".join(lines)


def _median_and_runs(figure: dict[str, Any] | None) -> str:
    if not figure:
        return "-"
    return f"{_cell(figure['median'])} [{', '.join(_cell(value) for value in figure['runs'])}]"


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def all_targets(
    results: dict[str, Any], rates: dict[str, float | None]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    targets: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for step, by_label in results.items():
        targets[step] = {label: check_targets(step, by_label[label], rates) for label in LABELS}
        if step.startswith("restore"):
            value = by_label["new_over_old"].get("items_per_s")
            targets[step]["NEW"].append(
                {
                    "target": "items/s vs OLD's",
                    "value": value,
                    "limit": ">= 1.0",
                    "passed": None if value is None else value >= 1.0,
                }
            )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="git revision (commit, tag, branch)")
    parser.add_argument("new", nargs="?", help="git revision (default: the working tree)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--changed", type=int, help="changes after the moment (default items/10)")
    parser.add_argument("--rounds", type=int, default=2, help="OLD/NEW pairs per step")
    parser.add_argument("--batches", type=int, default=30, help="handler: 100-record batches")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--output", choices=("text", "json"), default="text")
    arguments = parser.parse_args()
    arguments.changed = arguments.items // 10 if arguments.changed is None else arguments.changed
    steps = arguments.steps.split(",")
    if unknown := set(steps) - set(STEPS):
        parser.error(f"no such step: {', '.join(sorted(unknown))} (steps: {', '.join(STEPS)})")
    with exported(arguments.old, arguments.new) as revisions, local_servers() as endpoints:
        notes = [note for revision in revisions for note in dependency_notes(revision)]
        bench = prepare(endpoints, revisions, arguments)
        rates = reference_rates(bench, steps)
        results = run_steps(bench, revisions, steps, arguments.rounds)
    report = {
        "revisions": {r.label: {"name": r.name, "commit": r.commit} for r in revisions},
        "notes": notes,
        "items": arguments.items,
        "changed_after_moment": arguments.changed,
        "rounds": arguments.rounds,
        "order": " ".join(LABELS[index] for index in alternation(arguments.rounds)),
        "steps": results,
        "reference": rates,
        "targets": all_targets(results, rates),
    }
    print(json.dumps(report, indent=2) if arguments.output == "json" else text_report(report))


if __name__ == "__main__":
    main()
