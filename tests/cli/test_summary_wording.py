"""Counts in the restore summary in the right number: "1 object", not "1 objects"."""

from __future__ import annotations

from dynamo_backups.cli.restore import summary_text
from dynamo_backups.jobs.restore import RestoreReport


def test_one_of_each_is_said_in_the_singular() -> None:
    report = RestoreReport("s3://b/Prod/Users", "Users2", objects=1, written=1, absent=1)
    report.invalid, report.invalid_objects = 1, ["s3://b/Prod/Users/x: not JSON"]
    _, second, third = summary_text(report).splitlines()[:3]
    assert second.startswith("wrote 1 item; 1 object deleted or absent at that time; "), second
    assert "; 1 object examined in " in second, second
    assert third == "1 invalid object:", third


def test_many_are_said_in_the_plural_with_thousands_separated() -> None:
    report = RestoreReport("s3://b/Prod/Users", "Users2", objects=12_345, written=2, absent=0)
    line = summary_text(report).splitlines()[1]
    assert line.startswith("wrote 2 items; 0 objects deleted or absent"), line
    assert "; 12,345 objects examined" in line, line
