"""Point-in-time selection over an item's versions (pure; the I/O is a stub)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dynamo_backups.core.layout import VersionMetadata
from dynamo_backups.core.pitr import (
    ObjectVersion,
    decide_at,
    latest_decision,
    newest_first,
    select_at,
    stream_order,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def version(vid: str, received: float, size: int = 10, latest: bool = False) -> ObjectVersion:
    return ObjectVersion("k", vid, at(received), False, latest, size)


def marker(vid: str, received: float, latest: bool = False) -> ObjectVersion:
    return ObjectVersion("k", vid, at(received), True, latest)


class Inspector:
    """Metadata by version id; records which versions were read."""

    def __init__(self, changes: dict[str, tuple[float, str]], writer: str = "stream") -> None:
        self.writer = writer
        self.changes = changes
        self.read: list[str] = []

    def __call__(self, entry: ObjectVersion) -> VersionMetadata | None:
        self.read.append(entry.version_id)
        if entry.version_id not in self.changes:
            return None
        minutes, event = self.changes[entry.version_id]
        return VersionMetadata(self.writer, event, at(minutes))


def test_versions_received_after_the_moment_are_read_then_only_the_chosen_one() -> None:
    entries = [version("v2", 100, latest=True), version("v1", 10)]
    inspect = Inspector({"v2": (100, "MODIFY"), "v1": (10, "INSERT")})
    assert select_at(entries, at(50), inspect).version == entries[1]
    assert inspect.read == ["v2", "v1"]  # v1's read is its body: the reader keeps it


def test_late_delivery_is_dated_by_its_change_time() -> None:
    # An outage: changes at minutes 10 and 20 reached S3 only at minute 300.
    entries = [version("v2", 300, latest=True), version("v1", 300)]
    inspect = Inspector({"v2": (20, "MODIFY"), "v1": (10, "INSERT")})
    assert select_at(entries, at(5), inspect).version is None
    assert select_at(entries, at(15), inspect).version == entries[1]
    assert select_at(entries, at(25), inspect).version == entries[0]


def test_removal_dated_by_its_tombstone_even_when_written_late() -> None:
    entries = [marker("dm", 300, latest=True), version("tomb", 300, size=0), version("v1", 1)]
    inspect = Inspector({"tomb": (30, "REMOVE"), "v1": (1, "INSERT")})
    assert select_at(entries, at(20), inspect).version == entries[2]
    assert select_at(entries, at(40), inspect).version is None
    assert select_at(entries, at(400), inspect).version is None


def test_delete_marker_without_tombstone_dates_from_s3() -> None:
    entries = [marker("dm", 60, latest=True), version("v1", 1)]
    inspect = Inspector({})
    assert select_at(entries, at(58), inspect).version == entries[1]
    assert select_at(entries, at(61), inspect).version is None


def test_item_created_after_the_moment_is_absent() -> None:
    entries = [version("v1", 100, latest=True)]
    assert select_at(entries, at(99), Inspector({"v1": (99.5, "INSERT")})).version is None


def test_objects_without_metadata_are_dated_by_last_modified() -> None:
    entries = [version("v2", 100, latest=True), version("v1", 10)]
    inspect = Inspector({})
    assert select_at(entries, at(99), inspect).version == entries[1]
    assert select_at(entries, at(100), inspect).version == entries[0]


def test_listing_that_separates_delete_markers_is_put_in_order() -> None:
    listed = [version("v1", 1), version("t", 2, size=0), marker("dm", 2, latest=True)]
    assert [entry.version_id for entry in newest_first(listed)] == ["dm", "t", "v1"]
    interleaved = [marker("dm", 2, latest=True), version("t", 2, size=0), version("v1", 1)]
    assert newest_first(interleaved) == interleaved


class SequencedInspector(Inspector):
    """Metadata with sequence numbers: version id -> (change minutes, event, sequence)."""

    def __init__(self, changes: dict[str, tuple[float, str, str]]) -> None:
        super().__init__({})
        self.sequenced = changes

    def __call__(self, entry: ObjectVersion) -> VersionMetadata | None:
        self.read.append(entry.version_id)
        minutes, event, sequence = self.sequenced[entry.version_id]
        return VersionMetadata("stream", event, at(minutes), sequence)


def test_a_second_writer_that_wrote_an_old_change_last_does_not_win() -> None:
    # Writer A wrote v1 then v2; writer B, lagging, wrote v1 again on top of them.
    entries = [version("v1-late", 12, latest=True), version("v2", 11), version("v1", 10)]
    inspect = SequencedInspector(
        {"v1-late": (1, "INSERT", "100"), "v2": (2, "MODIFY", "200"), "v1": (1, "INSERT", "100")}
    )
    chosen = select_at(entries, at(13), inspect, timedelta(minutes=30)).version
    assert chosen is not None and chosen.version_id == "v2"  # the stream's last change


def test_equal_change_times_follow_the_sequence_numbers() -> None:
    # Change times to the minute (as some streams give them): the sequence decides.
    entries = [version("older", 12, latest=True), version("newer", 11)]
    inspect = SequencedInspector({"older": (5, "MODIFY", "100"), "newer": (5, "MODIFY", "101")})
    chosen = select_at(entries, at(13), inspect, timedelta(minutes=30)).version
    assert chosen is not None and chosen.version_id == "newer"


def test_a_late_old_change_competes_with_a_version_received_well_before() -> None:
    # A retry delivered an old change long after; the version received well before the
    # moment holds a later change and must win, so it is read too.
    entries = [version("late-retry", 100, latest=True), version("current", 8)]
    inspect = SequencedInspector(
        {"late-retry": (1, "INSERT", "100"), "current": (7, "MODIFY", "300")}
    )
    chosen = select_at(entries, at(60), inspect, timedelta(minutes=5)).version
    assert chosen is not None and chosen.version_id == "current"
    assert inspect.read == ["late-retry", "current"]


def test_in_order_versions_cost_no_extra_reads() -> None:
    entries = [version("v3", 100, latest=True), version("v2", 20), version("v1", 10)]
    inspect = SequencedInspector(
        {"v3": (90, "MODIFY", "3"), "v2": (19, "MODIFY", "2"), "v1": (9, "INSERT", "1")}
    )
    chosen = select_at(entries, at(50), inspect, timedelta(minutes=5)).version
    assert chosen is not None and chosen.version_id == "v2"
    assert inspect.read == ["v3", "v2"]  # v1 (received at 10) cannot be later than v2 (19)


def other_tool(vid: str, received: float, latest: bool = False) -> ObjectVersion:
    """A version under another tool's name for the same item: no metadata of ours."""
    return ObjectVersion("other", vid, at(received), False, latest, 10)


def test_across_names_the_latest_change_holds_dated_by_last_modified_for_other_tools() -> None:
    ours = [version("v1", 10, latest=True)]
    theirs = [other_tool("r2", 30, latest=True), other_tool("r1", 5)]
    inspect = Inspector({"v1": (10, "SNAPSHOT")}, writer="backfill")  # a read of the table
    own = decide_at(ours, at(1000), inspect)
    other = decide_at(theirs, at(1000), inspect)
    assert latest_decision([own, other]) == other  # minute 30 is after the backfill's 10
    early = [decide_at(ours, at(20), inspect), decide_at(theirs, at(20), inspect)]
    assert latest_decision(early) == early[0]  # at minute 20: our version of minute 10


def test_our_stream_record_holds_over_another_tools_version_received_later() -> None:
    # The same change reached the other tool's name a little after its stream time, and
    # our handler dates it by the stream (to the second, or coarser): ours holds.
    ours = [version("v1", 10, latest=True)]
    theirs = [other_tool("r1", 10.5, latest=True)]
    inspect = Inspector({"v1": (10, "MODIFY")})
    decisions = [decide_at(ours, at(1000), inspect), decide_at(theirs, at(1000), inspect)]
    assert latest_decision(decisions) == decisions[0]
    assert decisions[0] is not None and decisions[0].change_time == at(10)


def test_decide_at_dates_a_version_received_well_before_the_moment() -> None:
    entries = [version("v2", 100, latest=True), version("v1", 10)]
    inspect = Inspector({"v2": (90, "MODIFY"), "v1": (10, "INSERT")})
    decision = decide_at(entries, at(500), inspect)
    assert decision is not None and decision.change_time == at(90) and not decision.removed
    removed = decide_at([marker("dm", 50, latest=True), version("v1", 10)], at(500), inspect)
    assert removed is not None and removed.removed and removed.change_time == at(50)


# --- the stream's order at any distance in time (issue 19, item 4) --------------------------

LATEST = datetime(9999, 1, 1, tzinfo=UTC)
HOURS = 60.0


def sequenced(changes: dict[str, tuple[float, str, str]]) -> SequencedInspector:
    return SequencedInspector(changes)


def late_copy_far_above_a_newer_change() -> tuple[list[ObjectVersion], SequencedInspector]:
    """v1 (minute 0) and v2 (hour 1) arrived on time; a retry of v1 arrived at hour 5."""
    entries = [
        version("v1-late", 5 * HOURS, latest=True),
        version("v2", 1 * HOURS),
        version("v1", 0.1),
    ]
    changes = {
        "v1-late": (0, "INSERT", "100"),
        "v2": (1 * HOURS - 0.1, "MODIFY", "200"),
        "v1": (0, "INSERT", "100"),
    }
    return entries, sequenced(changes)


def test_a_late_old_copy_hours_above_a_newer_change_loses_at_every_later_moment() -> None:
    entries, inspect = late_copy_far_above_a_newer_change()
    for moment in (at(2 * HOURS), at(6 * HOURS), at(24 * HOURS), LATEST):
        chosen = select_at(entries, moment, inspect).version
        assert chosen is not None and chosen.version_id == "v2", moment
    chosen = select_at(entries, at(30), inspect).version
    assert chosen is not None and chosen.version_id == "v1-late"  # before v2's change


def test_latest_costs_one_read_when_versions_arrived_in_order_and_apart() -> None:
    entries = [version("v3", 3 * HOURS, latest=True), version("v2", 2 * HOURS), version("v1", 0)]
    inspect = sequenced(
        {"v3": (3 * HOURS, "MODIFY", "3"), "v2": (2 * HOURS, "MODIFY", "2"), "v1": (0, "", "1")}
    )
    selection = select_at(entries, LATEST, inspect)
    assert selection.version == entries[0]
    assert inspect.read == ["v3"] and selection.inspected == 1


def test_latest_reads_below_only_as_far_as_a_later_change_could_be() -> None:
    # A burst: v4 and v3 came within the skew (5 minutes here) of each other, v2 and v1 long
    # before.
    entries = [
        version("v4", 100, latest=True),
        version("v3", 99),
        version("v2", 50),
        version("v1", 10),
    ]
    inspect = sequenced(
        {
            "v4": (99.5, "MODIFY", "4"),
            "v3": (98.5, "MODIFY", "3"),
            "v2": (49, "MODIFY", "2"),
            "v1": (9, "INSERT", "1"),
        }
    )
    assert select_at(entries, LATEST, inspect, timedelta(minutes=5)).version == entries[0]
    assert inspect.read == ["v4", "v3"]
    # With the default allowance (seconds), v3, received half a minute before v4's change,
    # cannot hold a later one: v4 is the only read.
    inspect.read.clear()
    assert select_at(entries, LATEST, inspect).version == entries[0]
    assert inspect.read == ["v4"]


def test_a_late_removal_copy_does_not_delete_a_newer_state() -> None:
    # The item was deleted (hour 1), put again (hour 2); a replay wrote the hour-1 removal
    # (tombstone and delete marker) again at hour 6.
    entries = [
        marker("dm-late", 6 * HOURS, latest=True),
        version("tomb-late", 6 * HOURS, size=0),
        version("v2", 2 * HOURS),
        marker("dm", 1 * HOURS),
        version("tomb", 1 * HOURS, size=0),
        version("v1", 0),
    ]
    inspect = sequenced(
        {
            "tomb-late": (1 * HOURS, "REMOVE", "200"),
            "v2": (2 * HOURS, "INSERT", "300"),
            "tomb": (1 * HOURS, "REMOVE", "200"),
            "v1": (0, "INSERT", "100"),
        }
    )
    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None and chosen.version_id == "v2"
    assert select_at(entries, at(1.5 * HOURS), inspect).version is None
    chosen = select_at(entries, at(30), inspect).version
    assert chosen is not None and chosen.version_id == "v1"


def test_a_late_put_copy_does_not_bring_back_a_removed_item() -> None:
    entries = [
        version("v1-late", 8 * HOURS, latest=True),
        marker("dm", 1 * HOURS),
        version("tomb", 1 * HOURS, size=0),
        version("v1", 0),
    ]
    inspect = sequenced(
        {
            "v1-late": (0, "INSERT", "100"),
            "tomb": (1 * HOURS, "REMOVE", "200"),
            "v1": (0, "INSERT", "100"),
        }
    )
    assert select_at(entries, LATEST, inspect).version is None
    assert select_at(entries, at(9 * HOURS), inspect).version is None


def test_a_deleted_item_costs_one_read_of_its_tombstone() -> None:
    entries = [marker("dm", 3 * HOURS, latest=True), version("tomb", 3 * HOURS, size=0)]
    entries.append(version("v1", 0))
    inspect = sequenced({"tomb": (3 * HOURS, "REMOVE", "2"), "v1": (0, "INSERT", "1")})
    assert select_at(entries, LATEST, inspect).version is None
    assert inspect.read == ["tomb"]


def test_a_stream_change_delivered_after_a_backfill_that_read_it_later_loses() -> None:
    # The backfill read the item at hour 2 (no sequence number); the stream's record of the
    # hour-1 change reached S3 only at hour 3: the backfill's later read holds.
    entries = [version("stream", 3 * HOURS, latest=True), version("backfill", 2 * HOURS)]

    def inspect(entry: ObjectVersion) -> VersionMetadata:
        if entry.version_id == "stream":
            return VersionMetadata("stream", "MODIFY", at(1 * HOURS), "500")
        return VersionMetadata("backfill", "SNAPSHOT", at(2 * HOURS))

    chosen = select_at(entries, LATEST, inspect).version
    assert chosen is not None and chosen.version_id == "backfill"


def test_stream_order_places_late_copies_and_duplicates() -> None:
    entries, inspect = late_copy_far_above_a_newer_change()
    metadata = {entry.version_id: inspect(entry) for entry in entries}
    placed = stream_order(entries, metadata)
    assert [one.entry.version_id for one in placed] == ["v2", "v1-late", "v1"]
    by_id = {one.entry.version_id: one for one in placed}
    assert by_id["v1-late"].late and by_id["v1-late"].duplicate_of == entries[2]
    assert not by_id["v2"].late and by_id["v2"].duplicate_of is None
    assert not by_id["v1"].late and by_id["v1"].duplicate_of is None


def test_stream_order_keeps_a_removal_marker_above_its_tombstone() -> None:
    entries = [
        marker("dm", 6 * HOURS, latest=True),
        version("tomb", 6 * HOURS, size=0),
        version("v2", 2 * HOURS),
        version("v1", 0),
    ]
    inspect = sequenced(
        {
            "tomb": (1 * HOURS, "REMOVE", "200"),  # a late delivery of an hour-1 removal
            "v2": (2 * HOURS, "MODIFY", "300"),
            "v1": (0, "INSERT", "100"),
        }
    )
    metadata = {e.version_id: None if e.is_delete_marker else inspect(e) for e in entries}
    placed = stream_order(entries, metadata)
    assert [one.entry.version_id for one in placed] == ["v2", "dm", "tomb", "v1"]
    assert [one.late for one in placed] == [False, False, True, False]


def test_backfill_over_a_removal_then_its_copy_of_the_removal_in_stream_order() -> None:
    # The stream removed the item at minute 10 after the backfill read it (minute 5); S3 let
    # the backfill's image through over the delete marker, and the backfill wrote the removal
    # again on top, with the removal's change time and sequence number.
    entries = [
        marker("dm-copy", 30, latest=True),
        version("tomb-copy", 30, size=0),
        version("scanned", 29),
        marker("dm", 11),
        version("tomb", 11, size=0),
        version("v1", 1),
    ]
    changes = {
        "tomb-copy": VersionMetadata("backfill", "REMOVE", at(10), "200"),
        "scanned": VersionMetadata("backfill", "SNAPSHOT", at(5)),
        "tomb": VersionMetadata("stream", "REMOVE", at(10), "200"),
        "v1": VersionMetadata("stream", "INSERT", at(0.5), "100"),
    }
    assert select_at(entries, LATEST, lambda entry: changes[entry.version_id]).version is None
    chosen = select_at(entries, at(7), lambda entry: changes[entry.version_id]).version
    assert chosen is not None and chosen.version_id == "scanned"
    placed = stream_order(entries, {**changes, "dm-copy": None, "dm": None})
    assert [one.entry.version_id for one in placed] == [
        "dm-copy", "tomb-copy", "dm", "tomb", "scanned", "v1",
    ]  # fmt: skip
    by_id = {one.entry.version_id: one for one in placed}
    assert by_id["tomb-copy"].duplicate_of == entries[4] and not by_id["tomb-copy"].late
    assert by_id["scanned"].late and by_id["scanned"].duplicate_of is None
