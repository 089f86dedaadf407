"""The invariants, checked across everything at once (issue 19): a Hypothesis state machine
interleaves changes (puts, updates, deletes, TTL deletes), Lambda deliveries (duplicates,
partial failures and the handler's retries, ranges given up on and replayed), stream
consumer runs (crashes and restarts from the checkpoint), and restores (latest, --at,
--into-existing, --delete-absent; killed and resumed). After every step:

- no acknowledged change is lost (each item's history holds every one, with its image);
- a restore, latest or at any past moment, equals the model's table at that moment;
- history lists nothing that is not a change of the item (and, with the feature
  ``history_once_in_order``, each change once in stream order);
- nothing present in the backup is ever deleted from a target table.

The world and the model are in ``tests/invariant_world.py``.

Both layouts (issue 22): the machine runs once per layout, the folder's ``layout.json``
choosing the writer and the restore as the commands do. The journal run adds its own rules
(``JournalInvariants``): compaction at a moment (killed and resumed), ranges redelivered with
other boundaries (Lambda's bisect-on-error), batches written late (after later ones), and
restores ``--at`` a change's own second (inside a batch) and around a base's moment; each base
made is checked against the model too. History is read through the folder's layout readers
(``jobs/layouts``) on both, and replay writes through the folder's layout's applier.
``LAYOUT_RULES`` says which of the item run's rules a layout takes (all, on both).

Budget: ``DYNAMO_BACKUPS_INVARIANT_EXAMPLES`` (default 10) examples of up to
``DYNAMO_BACKUPS_INVARIANT_STEPS`` (default 20) steps in ``scripts/test``, bounded to keep the
suite's run short (the seeds below run on every run as regular tests); raise both for a
longer run (README, Development). The rules that first exercised known defects are all on
(``ENABLED_BY_DEFAULT``) now that their fixes are merged; a rule for a new known defect starts
off and is switched on with ``DYNAMO_BACKUPS_INVARIANT_FEATURES`` (comma-separated) until its
fix merges:

- ``resume_delete_absent``: resume a killed --into-existing --delete-absent restore (item 1);
- ``replay_race``: the live trigger writes while replay runs (item 3; with identical images,
  item 6);
- ``late_older_copy``: a late copy of an older change arrives above a newer one (item 4);
- ``crash_keeps_lease``: a crashed consumer leaves its lease behind (item 5);
- ``history_once_in_order``: history must list each change once in stream order (a defect
  this test found; see test_history_lists_each_change_once_in_stream_order).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dynamo_backups.backup.layouts import LAYOUT_ITEMS, LAYOUT_JOURNAL
from tests import faultproxy
from tests.invariant_world import (
    EXTRA_KEY,
    KEYS,
    Faults,
    KilledRestore,
    World,
    close_handler_appliers,
)

pytestmark = pytest.mark.servers

KNOWN_DEFECT_FEATURES = frozenset(
    {
        "resume_delete_absent",
        "replay_race",
        "late_older_copy",
        "crash_keeps_lease",
        "history_once_in_order",
    }
)
# Once a defect's fix is merged, its feature goes here (and its test below loses its xfail).
ENABLED_BY_DEFAULT: frozenset[str] = KNOWN_DEFECT_FEATURES
FEATURES = ENABLED_BY_DEFAULT | frozenset(
    name.strip()
    for name in os.environ.get("DYNAMO_BACKUPS_INVARIANT_FEATURES", "").split(",")
    if name.strip()
)
if not FEATURES <= KNOWN_DEFECT_FEATURES:
    raise ValueError(
        f"DYNAMO_BACKUPS_INVARIANT_FEATURES: unknown {sorted(FEATURES - KNOWN_DEFECT_FEATURES)}; "
        f"known: {sorted(KNOWN_DEFECT_FEATURES)}"
    )
EXAMPLES = int(os.environ.get("DYNAMO_BACKUPS_INVARIANT_EXAMPLES", "10"))
STEPS = int(os.environ.get("DYNAMO_BACKUPS_INVARIANT_STEPS", "20"))
# A passing run takes under a minute; a failing one shrinks against the servers for minutes
# more. A longer run asked for in the environment has no time limit.
LONGER_RUN = any(
    name in os.environ
    for name in ("DYNAMO_BACKUPS_INVARIANT_EXAMPLES", "DYNAMO_BACKUPS_INVARIANT_STEPS")
)
TIME_LIMIT = 0 if LONGER_RUN else 900

# The item run's rules (and checks) each layout takes: all of them on both. History
# (``histories``, the history check at the end) reads either layout through the folder's
# layout readers (``jobs/layouts``), replay writes through the folder's layout's applier
# (``jobs/layouts``); a rule a layout cannot take yet would be left out here.
ITEM_RULES = frozenset({"replay", "history"})
LAYOUT_RULES: dict[str, frozenset[str]] = {
    LAYOUT_ITEMS: ITEM_RULES,
    LAYOUT_JOURNAL: ITEM_RULES,
}
# The journal run's budget: a share of the item run's (each of its restores and compactions
# waits a second or two for S3's clock, and compaction adds steps), so that it adds about a
# minute to the suite at the defaults; DYNAMO_BACKUPS_INVARIANT_JOURNAL_EXAMPLES sets it.
JOURNAL_EXAMPLES = int(
    os.environ.get("DYNAMO_BACKUPS_INVARIANT_JOURNAL_EXAMPLES", str(max(1, EXAMPLES // 2)))
)

keys = st.sampled_from(KEYS)
values = st.one_of(st.none(), st.integers(0, 2))  # None: a delete
gaps = st.integers(0, 2)  # seconds since the previous change (ties allowed)


class Invariants(RuleBasedStateMachine):
    """One example: a fresh backup folder, one delivery channel (Lambda or the consumer)."""

    env: dict[str, Any] = {}  # the servers and the proxy, set by the test function
    layout = LAYOUT_ITEMS

    def __init__(self) -> None:
        super().__init__()
        env = self.env
        self.world = World(
            env["s3"],
            env["bucket"],
            env["dynamodb"],
            env["dynamodb_endpoint"],
            env["proxy_endpoint"],
            env["faults"],
            env["features"],
            folder_layout=self.layout,
        )
        os.environ["BACKUP_PREFIX"] = self.world.prefix
        self.channel = "lambda"

    def feature(self, name: str) -> bool:
        return name in self.world.features

    def rule_on(self, name: str) -> bool:
        """Whether this layout takes the item run's rule (or check) ``name``."""
        return name in LAYOUT_RULES[self.layout]

    @initialize(
        channel=st.sampled_from(["lambda", "consumer"]),
        changes=st.lists(st.tuples(keys, values, gaps, st.booleans()), min_size=1, max_size=8),
    )
    def begin(self, channel: str, changes: list[tuple[str, int | None, int, bool]]) -> None:
        self.channel = channel
        self.change(changes)

    # --- the table changes -------------------------------------------------------------------

    @rule(changes=st.lists(st.tuples(keys, values, gaps, st.booleans()), min_size=1, max_size=4))
    def change(self, changes: list[tuple[str, int | None, int, bool]]) -> None:
        for key, value, gap, ttl in changes:
            self.world.change(key, value, gap, ttl)

    # --- the Lambda trigger ------------------------------------------------------------------

    def lambda_pending(self) -> bool:
        return self.channel == "lambda" and self.world.position < len(self.world.model.changes)

    @precondition(lambda self: self.lambda_pending())
    @rule(
        count=st.integers(1, 6),
        failing=st.one_of(st.none(), keys),
        only_deletes=st.booleans(),
    )
    def deliver(self, count: int, failing: str | None, only_deletes: bool) -> None:
        self.world.deliver(count, failing, only_deletes)

    @precondition(lambda self: self.channel == "lambda" and self.world.last_batch is not None)
    @rule()
    def redeliver_last_batch(self) -> None:
        self.world.redeliver_last_batch()

    @precondition(lambda self: self.lambda_pending())
    @rule(count=st.integers(1, 3), only_deletes=st.booleans())
    def give_up(self, count: int, only_deletes: bool) -> None:
        self.world.give_up(count, only_deletes)

    @precondition(lambda self: self.channel == "lambda" and bool(self.world.reports))
    @precondition(lambda self: self.rule_on("replay"))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        which = data.draw(st.integers(0, len(self.world.reports) - 1), label="report")
        racing, meanwhile = 0, None
        if self.feature("replay_race"):
            racing = data.draw(st.integers(1, 3), label="records the trigger writes meanwhile")
            if data.draw(st.booleans(), label="an item of the range changes meanwhile"):
                meanwhile = (data.draw(values, label="its new value"),)
        self.world.replay(which, racing, meanwhile)

    @precondition(lambda self: self.channel == "lambda" and self.feature("late_older_copy"))
    @rule(data=st.data())
    def late_older_copy(self, data: st.DataObject) -> None:
        model = self.world.model
        older = [
            change.index
            for change in model.changes
            if change.index in model.acked
            and any(
                later.key == change.key and later.index > change.index for later in model.changes
            )
        ]
        if older:
            self.world.redeliver_old(data.draw(st.sampled_from(older), label="older change"))

    # --- the stream consumer -----------------------------------------------------------------

    @precondition(lambda self: self.channel == "consumer")
    @rule(failing=st.one_of(st.none(), keys), attempts_failing=st.integers(1, 4))
    def consume(self, failing: str | None, attempts_failing: int) -> None:
        self.world.consume(failing, attempts_failing)

    @precondition(lambda self: self.channel == "consumer")
    @rule(crash_after=st.integers(0, 4))
    def consumer_crashes(self, crash_after: int) -> None:
        self.world.consume(crash_after=crash_after)

    # --- restore -----------------------------------------------------------------------------

    def draw_moment(self, data: st.DataObject) -> int | None:
        model = self.world.model
        kind = data.draw(st.sampled_from(["latest", "past", "far future"]), label="moment")
        if kind == "latest":
            return None
        if kind == "far future":  # past the skew: S3's order decides without metadata reads
            return model.clock + 2 * 3600 + 7200
        # Drawn relative to the model's start (wall-clock based), so examples replay.
        offset = data.draw(st.integers(-1, model.clock - model.start), label="seconds after start")
        return model.start + offset

    def after_restore(self, moment: int | None) -> None:
        # Later changes happen after the moment restored, so a resumed run means the same.
        model = self.world.model
        if moment is not None and moment >= model.clock and moment < model.clock + 3600:
            model.clock = moment + 1

    @precondition(lambda self: bool(self.world.model.acked))  # a backup to restore
    @rule(
        data=st.data(),
        mode=st.sampled_from(["new table", "into existing", "delete absent"]),
        live=st.dictionaries(st.sampled_from([*KEYS, EXTRA_KEY]), st.integers(7, 9)),
        kill_at=st.one_of(st.none(), st.integers(1, 3)),
    )
    def restore(
        self, data: st.DataObject, mode: str, live: dict[str, int], kill_at: int | None
    ) -> None:
        world = self.world
        moment = self.draw_moment(data)
        into_existing = mode != "new table"
        delete_absent = mode == "delete absent"
        if into_existing:
            target, before = world.make_target(live)
        else:
            target, before = f"{world.prefix}-restored-{len(world.targets)}", {}
        options = world.restore_options(
            moment, into_existing=into_existing, delete_absent=delete_absent
        )
        complete = world.restore(target, options, kill_at)
        world.check_restored(target, moment, before, into_existing, delete_absent, complete)
        if not complete:
            world.killed = KilledRestore(
                target,
                options,
                moment,
                before,
                len(world.model.changes),
                frozenset(world.model.acked),
            )
        self.after_restore(moment)

    def resumable(self) -> bool:
        killed = self.world.killed
        if killed is None:
            return False
        # A latest restore means the backup as it stands: resumed only while nothing changed.
        return killed.moment is not None or killed.changes_then == len(self.world.model.changes)

    @precondition(lambda self: self.resumable())
    @rule()
    def resume(self) -> None:
        world = self.world
        killed = world.killed
        assert killed is not None
        world.killed = None
        resume = not killed.options.delete_absent or self.feature("resume_delete_absent")
        options = killed.options.__class__(**{**killed.options.__dict__, "resume": resume})
        complete = world.restore(killed.target, options)
        assert complete, "a resumed restore did not complete"
        world.check_restored(
            killed.target,
            killed.moment,
            killed.before,
            options.into_existing,
            options.delete_absent,
            complete,
            killed.acked_then,
        )

    # --- after every step ------------------------------------------------------------------------

    @invariant()
    def histories(self) -> None:
        world = self.world
        if world.touched and self.rule_on("history"):
            world.check_history(world.touched, self.feature("history_once_in_order"))
            world.check_latest(world.touched)
        world.touched = set()

    def teardown(self) -> None:
        world = self.world
        try:
            if self.rule_on("history"):
                world.check_history(KEYS, self.feature("history_once_in_order"))
            if world.model.acked:  # and a latest restore at the end of every example
                target = f"{world.prefix}-final"
                complete = world.restore(target, world.restore_options(None))
                world.check_restored(target, None, {}, False, False, complete)
                assert complete, "the final restore did not complete"
        finally:
            world.cleanup()
            close_handler_appliers(lambda prefix: prefix == world.prefix)


class JournalInvariants(Invariants):
    """The same machine on a journal folder, with the journal's own rules."""

    layout = LAYOUT_JOURNAL

    @initialize(
        # The journal's own delivery rules are the trigger's: it comes up twice as often.
        channel=st.sampled_from(["lambda", "lambda", "consumer"]),
        changes=st.lists(st.tuples(keys, values, gaps, st.booleans()), min_size=1, max_size=8),
    )
    def begin(self, channel: str, changes: list[tuple[str, int | None, int, bool]]) -> None:
        super().begin(channel, changes)

    def draw_moment(self, data: st.DataObject) -> int | None:
        world = self.world
        kinds = ["item run's"]
        model = world.model
        delivered = [change.when for change in model.changes if change.index in model.acked]
        if delivered:
            kinds.append("a change's second")  # inside the batch that holds it
        if world.bases:
            kinds.append("around a base")
        kind = data.draw(st.sampled_from(kinds), label="journal moment")
        if kind == "a change's second":
            return data.draw(st.sampled_from(delivered), label="change time")
        if kind == "around a base":
            base = data.draw(st.sampled_from(sorted(world.bases)), label="base")
            return base + data.draw(st.integers(-1, 1), label="seconds from the base")
        return super().draw_moment(data)

    @precondition(lambda self: bool(self.world.model.acked))  # a journal to fold
    @rule(
        data=st.data(),
        kill_after=st.one_of(st.none(), st.none(), st.integers(0, 12)),
        next_second=st.booleans(),
    )
    def compact(self, data: st.DataObject, kill_after: int | None, next_second: bool) -> None:
        model = self.world.model
        kind = data.draw(st.sampled_from(["past", "now"]), label="base moment")
        moment = None
        if kind == "past":
            offset = data.draw(st.integers(0, model.clock - model.start), label="after start")
            moment = model.start + offset
        self.world.compact(moment, kill_after, next_second=next_second)

    @precondition(lambda self: self.world.killed_compaction is not None)
    @rule()
    def resume_compaction(self) -> None:
        self.world.resume_compaction()

    @precondition(lambda self: self.channel == "lambda" and self.world.position > 0)
    @rule(back=st.integers(1, 6), count=st.integers(1, 6))
    def redeliver_range(self, back: int, count: int) -> None:
        self.world.redeliver_range(back, count)

    @precondition(lambda self: self.lambda_pending())
    @rule(count=st.integers(1, 3))
    def hold_back(self, count: int) -> None:
        self.world.hold_back(count)

    @precondition(lambda self: self.channel == "lambda" and bool(self.world.held))
    @rule(data=st.data())
    def deliver_held(self, data: st.DataObject) -> None:
        which = data.draw(st.integers(0, len(self.world.held) - 1), label="held batch")
        self.world.deliver_held(which)


@pytest.fixture
def invariant_env(
    s3: Any,
    bucket: str,
    dynamodb: Any,
    dynamodb_local: Any,
    seaweedfs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """The servers behind a fault proxy, and the handler's environment pointing at it."""
    faults = Faults()
    with faultproxy.FaultProxy(seaweedfs.endpoint, faults.rule) as proxy:
        monkeypatch.setenv("BACKUP_BUCKET", bucket)
        monkeypatch.setenv("BACKUP_PREFIX", "unset")
        monkeypatch.setenv("BACKUP_CONCURRENCY", "4")
        monkeypatch.setenv("BACKUP_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        yield {
            "s3": s3,
            "bucket": bucket,
            "dynamodb": dynamodb,
            "dynamodb_endpoint": dynamodb_local.endpoint,
            "proxy_endpoint": proxy.endpoint,
            "faults": faults,
        }


MACHINES: dict[str, type[Invariants]] = {
    LAYOUT_ITEMS: Invariants,
    LAYOUT_JOURNAL: JournalInvariants,
}


def run_machine(
    env: dict[str, Any],
    features: frozenset[str],
    examples: int,
    steps: int,
    layout: str = LAYOUT_ITEMS,
) -> None:
    machine = MACHINES[layout]
    machine.env = {**env, "features": features}
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            report_multiple_bugs=False,
        ),
    )


@pytest.mark.timeout(TIME_LIMIT)
def test_invariants_hold_across_everything(invariant_env: dict[str, Any]) -> None:
    run_machine(invariant_env, FEATURES, EXAMPLES, STEPS)


@pytest.mark.timeout(TIME_LIMIT)
def test_invariants_hold_across_everything_on_the_journal_layout(
    invariant_env: dict[str, Any],
) -> None:
    run_machine(invariant_env, FEATURES, JOURNAL_EXAMPLES, STEPS, LAYOUT_JOURNAL)


# --- the minimal failing examples it found, kept as regular tests -----------------------------


def make_world(env: dict[str, Any], *features: str, folder_layout: str = LAYOUT_ITEMS) -> World:
    world = World(
        env["s3"],
        env["bucket"],
        env["dynamodb"],
        env["dynamodb_endpoint"],
        env["proxy_endpoint"],
        env["faults"],
        frozenset(features),
        folder_layout=folder_layout,
    )
    os.environ["BACKUP_PREFIX"] = world.prefix
    return world


@pytest.fixture
def world(invariant_env: dict[str, Any]) -> Any:
    made: list[World] = []

    def make(*features: str) -> World:
        made.append(make_world(invariant_env, *features))
        return made[-1]

    yield make
    for each in made:
        each.cleanup()
        close_handler_appliers(lambda prefix, each=each: prefix == each.prefix)


def restored_latest(world: World) -> None:
    """A latest restore into a new table equals the model (every change acknowledged)."""
    target = f"{world.prefix}-latest-{len(world.targets)}"
    assert world.restore(target, world.restore_options(None))
    world.check_restored(target, None, {}, False, False, True)


def test_a_restarted_consumer_and_a_redelivered_batch_keep_every_change(world: Any) -> None:
    """The seeds the machine explores first: a crash mid-batch, a batch delivered twice."""
    consumer = make_world_changes(world(), [("a", 0), ("b", 1), ("a", None)])
    consumer.consume(crash_after=1)
    consumer.consume()
    consumer.check_history(KEYS, strict_order=False)
    restored_latest(consumer)

    trigger = make_world_changes(world(), [("a", 0), ("a", 1), ("b", None)])
    trigger.deliver(3, failing="a")
    trigger.redeliver_last_batch()
    trigger.check_history(KEYS, strict_order=False)
    restored_latest(trigger)


def test_a_removal_given_up_after_its_tombstone_is_replayed_in_order(world: Any) -> None:
    """A seed the machine found (a harness fault then): the trigger gives up on a removal
    whose tombstone was written and whose delete marker failed; replay settles it."""
    trigger = make_world_changes(world(), [("a", 0), ("b", 0), ("a", None)])
    trigger.give_up(2)
    trigger.give_up(1, only_deletes=True)
    trigger.replay(1)
    trigger.replay(0)
    trigger.check_history(KEYS, strict_order=False)
    restored_latest(trigger)


def make_world_changes(world: World, changes: list[tuple[str, int | None]]) -> World:
    for key, value in changes:
        world.change(key, value, 1)
    return world


def test_history_lists_each_change_once_in_stream_order(world: Any) -> None:
    consumer = make_world_changes(world(), [("a", 0)])
    consumer.consume(crash_after=1)  # wrote the change, died before its checkpoint
    consumer.consume()  # the restart writes it again
    consumer.check_history(["a"], strict_order=True)


def test_item1_resumed_delete_absent_keeps_what_the_backup_holds(world: Any) -> None:
    trigger = make_world_changes(world(), [("a", 0), ("b", 0), ("c", 0), ("d", 0)])
    trigger.deliver(4)
    target, before = trigger.make_target({"a": 7, "b": 7, "c": 7, "d": 7, EXTRA_KEY: 7})
    options = trigger.restore_options(None, into_existing=True, delete_absent=True)
    # Partition 4 (b and d) is written, then the worker writing partition 9 (a) dies.
    assert not trigger.restore(target, options, kill_at=2)
    trigger.check_restored(target, None, before, True, True, complete=False)
    resumed = options.__class__(**{**options.__dict__, "resume": True})
    assert trigger.restore(target, resumed)
    trigger.check_restored(target, None, before, True, True, complete=True)


def test_item3_replay_racing_the_trigger_keeps_the_newest_state(world: Any) -> None:
    trigger = make_world_changes(world("replay_race"), [("a", 0), ("a", 1), ("a", 2)])
    trigger.give_up(1)  # a=0 given up on, reported
    trigger.deliver(1)  # a=1
    trigger.replay(0, racing=1)  # a=2 written by the trigger while replay runs
    trigger.check_history(["a"], strict_order=False)
    restored_latest(trigger)


def test_item6_identical_image_written_during_replay_does_not_pass_a_condition(
    world: Any,
) -> None:
    trigger = make_world_changes(world("replay_race"), [("a", 0), ("a", 1), ("a", 0)])
    trigger.give_up(1)  # a=0 given up on
    trigger.deliver(1)  # a=1
    trigger.replay(0, racing=1)  # the trigger writes a=0 again: the same body, the same ETag
    restored_latest(trigger)


def test_item4_a_late_older_copy_does_not_win(world: Any) -> None:
    trigger = make_world_changes(world("late_older_copy"), [("a", 0), ("a", 1)])
    trigger.deliver(2)
    trigger.redeliver_old(0)  # a=0 arrives again, after a=1
    restored_latest(trigger)


def test_item5_a_restarted_consumer_takes_over_a_dead_process_lease(world: Any) -> None:
    consumer = make_world_changes(world("crash_keeps_lease"), [("a", 0), ("a", 1)])
    consumer.consume(crash_after=1)  # dies holding the lease (host: this one, pid: dead)
    consumer.consume()
    restored_latest(consumer)


def test_a_restore_at_a_moment_whose_only_change_was_given_up_deletes_nothing(world: Any) -> None:
    """A seed the machine found: the one change made by the moment was given up on (never in
    the backup) and a later one is in it, so a --at --delete-absent restore finds no item
    then and deletes nothing; the model's unacknowledged item is no item the backup held."""
    trigger = world()
    trigger.change("a", 0, 0)
    trigger.give_up(1)
    trigger.change("b", 1, 600)
    trigger.deliver(1)
    moment = trigger.model.start
    target, before = trigger.make_target({"b": 7, EXTRA_KEY: 7})
    options = trigger.restore_options(moment, into_existing=True, delete_absent=True)
    assert trigger.restore(target, options)
    assert trigger.nothing_then
    trigger.check_restored(target, moment, before, True, True, complete=True)


# --- the journal layout's seeds ---------------------------------------------------------------


@pytest.fixture
def journal_world(invariant_env: dict[str, Any]) -> Any:
    made: list[World] = []

    def make(*features: str) -> World:
        made.append(make_world(invariant_env, *features, folder_layout=LAYOUT_JOURNAL))
        return made[-1]

    yield make
    for each in made:
        each.cleanup()
        close_handler_appliers(lambda prefix, each=each: prefix == each.prefix)


def test_journal_late_and_bisected_batches_around_a_killed_compaction(journal_world: Any) -> None:
    """The journal run's seed: a batch held back and written after a base of a moment it
    holds a removal at (a late change, weighed against the base's index), a failed batch
    redelivered with other boundaries, a compaction killed and resumed; restores at the
    base's moment and around it, inside a batch, and latest, one killed and resumed."""
    trigger = make_world_changes(
        journal_world(),
        [("a", 0), ("b", 1), ("a", None), ("c", 2), ("b", 2), ("d", 0)],
    )
    start = trigger.model.start
    trigger.deliver(2)  # a=0, b=1
    trigger.hold_back(2)  # the removal of a and c=2: written late
    trigger.deliver(2, failing="b")  # b=2, d=0: the piece holding b fails, nothing acked
    trigger.redeliver_range(1, 2)  # c=2, b=2: boundaries no batch had
    trigger.deliver(1)  # d=0
    base = start + 3  # the removal of a's second
    assert not trigger.compact(base, kill_after=3)
    trigger.resume_compaction()  # checks the base against the model
    trigger.deliver_held(0)  # late for the base: its removal of a must still count
    assert trigger.model.acked == set(range(6))
    trigger.check_history(KEYS, strict_order=True)  # journal pieces and the base, each once
    trigger.check_latest(KEYS)
    for moment in (base, base - 1, base + 1, None):
        target = f"{trigger.prefix}-at-{len(trigger.targets)}"
        assert trigger.restore(target, trigger.restore_options(moment))
        trigger.check_restored(target, moment, {}, False, False, True)
    target, before = trigger.make_target({"a": 7, "c": 7, EXTRA_KEY: 7})
    options = trigger.restore_options(base, into_existing=True, delete_absent=True)
    assert not trigger.restore(target, options, kill_at=1)
    trigger.check_restored(target, base, before, True, True, complete=False)
    resumed = options.__class__(**{**options.__dict__, "resume": True})
    assert trigger.restore(target, resumed)
    trigger.check_restored(target, base, before, True, True, complete=True)
