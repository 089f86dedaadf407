"""Review of the stream-order selection (pitr-order): listings where restore, history and
verify pick the wrong version. Pure: synthetic listings against core/pitr."""

from __future__ import annotations

import pytest

from dynamo_backups.core.layout import VersionMetadata
from dynamo_backups.core.pitr import ObjectVersion, select_at, stream_order
from tests.core.pitr_listings import LATEST, Recorded, marker, sec, version


def stream(event: str, changed: float, sequence: str) -> VersionMetadata:
    return VersionMetadata("stream", event, sec(changed), sequence)


def table_read(writer: str, changed: float) -> VersionMetadata:
    """A backfill or repair version: the table read at ``changed``, no sequence number."""
    return VersionMetadata(writer, "SNAPSHOT", sec(changed))


# --- minute precision mode on AWS data (times to the second) ---------------------------------


@pytest.mark.parametrize("writer", ["backfill", "repair"])
def test_aws_stream_change_on_a_whole_minute_does_not_beat_a_later_table_read(
    writer: str,
) -> None:
    """AWS (ApproximateCreationDateTime to the second). 12:00:00 (on the minute by chance,
    1 in 60): INSERT v=1. 12:00:20: MODIFY v=2, whose stream record is not in S3 (Lambda lag,
    a disabled stream, records trimmed after a >24 h outage). 12:00:40: verify --repair (or a
    backfill) reads the table, v=2, and writes it dated 12:00:40. The table's latest state is
    the 12:00:40 read. The lone stream change on :00 switches selection to 'minute
    precision', where 12:00:40 and 12:00:00 are one minute and the sequence number puts the
    stream's v=1 last."""
    entries = [version("read", 41, latest=True), version("insert", 1)]
    inspect = Recorded({"read": table_read(writer, 40), "insert": stream("INSERT", 0, "100")})
    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None and chosen.version_id == "read", "restore took the older v=1"
    # at a moment after the read, the same
    chosen = select_at(entries, sec(50), inspect).version
    assert chosen is not None and chosen.version_id == "read"


def test_aws_whole_minute_removal_does_not_delete_a_later_read_item() -> None:
    """Same shape with a removal: REMOVE at 12:00:00 (tombstone and marker), the item put
    again at 12:00:20 (record lagging), a backfill reads it at 12:00:40. Restore says absent."""
    entries = [
        version("read", 41, latest=True),
        marker("dm", 1),
        version("tomb", 1, size=0),
        version("insert", -3600),
    ]
    inspect = Recorded(
        {
            "read": table_read("backfill", 40),
            "tomb": stream("REMOVE", 0, "200"),
            "insert": stream("INSERT", -3600 + 7, "100"),
        }
    )
    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None and chosen.version_id == "read", "restore dropped the item"


def test_history_and_restore_agree_on_the_minute_rule() -> None:
    """history learns the precision from every version of the object, selection only from
    the versions its walk reads: an older stream change off the minute (read by history,
    never by a latest restore) makes them disagree on the same listing."""
    entries = [
        version("read", 41, latest=True),
        version("modify", 1),
        version("insert", -3600 + 18),
    ]
    recorded = {
        "read": table_read("repair", 40),
        "modify": stream("MODIFY", 0, "200"),
        "insert": stream("INSERT", -3600 + 17, "100"),
    }
    history_first = stream_order(entries, recorded)[0].entry.version_id
    restored = select_at(entries, LATEST, Recorded(recorded)).version
    assert restored is not None
    assert restored.version_id == history_first, (
        f"history shows {history_first} as the current state, restore takes {restored.version_id}"
    )


# --- delete markers with no tombstone directly under them ------------------------------------


def test_a_removal_marker_separated_from_its_tombstone_is_dated_by_its_own_tombstone() -> None:
    """A REMOVE is two writes (tombstone, then delete marker). If another writer's version
    lands between them (a replay running while the live handler catches up, a second
    consumer), the marker has no tombstone directly under it and is dated by LastModified,
    a second after the change: it then beats a re-INSERT of the same second (higher sequence
    number) that sits below it, and restore drops the item."""
    entries = [
        marker("dm", 11, latest=True),  # REMOVE seq 100's second write
        version("insert", 11),  # INSERT seq 200 (same second), by the other writer
        version("tomb", 10, size=0),  # REMOVE seq 100's first write
        version("v1", -3600),
    ]
    inspect = Recorded(
        {
            "insert": stream("INSERT", 10, "200"),
            "tomb": stream("REMOVE", 10, "100"),
            "v1": stream("INSERT", -3600, "50"),
        }
    )
    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None and chosen.version_id == "insert", "restore dropped the item"


# --- garbled metadata ------------------------------------------------------------------------


def test_a_garbled_sequence_number_does_not_crash_selection() -> None:
    """``str.isdigit`` accepts characters ``int`` refuses (superscripts): one garbled
    version raises ValueError out of selection, ending the whole restore."""
    entries = [version("v2", 100, latest=True), version("v1", 10)]
    inspect = Recorded({"v2": stream("MODIFY", 99, "12\u00b3"), "v1": stream("INSERT", 9, "100")})
    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None


# --- an adopted folder: a backfill on top of the own name's stream history ----------------


def test_own_name_with_stream_history_holds_over_a_later_write_under_another_name() -> None:
    """An adopted folder. Own name: the stream's INSERT v=1 at 12:00:07, then the backfill's
    read (v=1) at 12:00:37 on top. The replicator (another tool, no metadata, same stream)
    retried a batch and wrote its copy of the 11:59 state (v=0) under its name at 12:01:07.
    From 12:00:07 on our handler records every change, so nothing under the other name can
    be newer (history caps it there: merged_order's handover). latest_decision only trusts
    the own name when its *latest* version is a stream or repair one: the backfill on top
    makes it take the replicator's 12:01:07 copy, v=0."""
    from dynamo_backups.core.pitr import decide_at, latest_decision

    own = [version("backfill", 38, latest=True), version("insert", 8)]
    other = [
        ObjectVersion("other", "r-late", sec(67), False, True, 10),
        ObjectVersion("other", "r0", sec(-53), False, False, 10),
    ]
    inspect = Recorded({"backfill": table_read("backfill", 37), "insert": stream("INSERT", 7, "1")})
    decisions = [decide_at(own, LATEST, inspect), decide_at(other, LATEST, inspect)]
    chosen = latest_decision(decisions)
    assert chosen is not None and chosen.entry.version_id == "backfill", (
        f"restore takes {chosen.entry.version_id if chosen else None}"
    )
