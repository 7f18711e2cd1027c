"""The run ledger on hand-built observations: counting rules, planning, persistence."""

from __future__ import annotations

import json

import pytest

from exporter.areas.run_ledger import (
    MISSING_GRACE,
    PROPOSED,
    RUNS,
    TOMBSTONE_RETENTION,
    Ledger,
    ListView,
    Lookup,
    RunObs,
    StackMark,
)
from exporter.areas.runs import parse_run

T0 = 1_000_000.0
SPACE = "space-a"


def run(
    rid: str,
    state: str,
    created: float,
    *,
    stack: str = "s1",
    rtype: str = "TRACKED",
    path: tuple[str, ...] = (),
    step: float = 10,
    commit: float | None = None,
    approval: bool = False,
) -> RunObs:
    states = path or ("QUEUED", "READY", "PREPARING", "PLANNING", state)
    if states[-1] != state:
        states = (*states, state)
    history = tuple((s, created + i * step) for i, s in enumerate(states))
    return RunObs(
        rid,
        stack,
        rtype,
        state,
        created,
        history[-1][1],
        needs_approval=approval,
        commit_ts=commit,
        history=history,
    )


def mark(state: str = "FINISHED", at: float = T0, approval: bool = False) -> StackMark:
    return StackMark(SPACE, state, at, approval)


def view(*runs: RunObs, stack: str = "s1", kind: str = RUNS, complete: bool = True) -> ListView:
    return ListView(stack, kind, tuple(runs), complete)


def total(led: Ledger) -> int:
    return sum(led.finished.values())


def test_terminal_runs_before_the_baseline_are_history() -> None:
    led = Ledger(baseline=T0)
    old = run("r1", "FINISHED", T0 - 500)
    led.apply({"s1": mark()}, [], [view(old)], T0)
    assert total(led) == 0


def test_a_run_seen_in_many_polls_is_counted_once() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark()}
    active = run("r1", "PLANNING", T0 + 10)
    led.apply(listing, [], [view(active)], T0 + 40)
    assert "r1" in led.active and total(led) == 0
    done = run("r1", "FINISHED", T0 + 10)
    for i in range(4):
        led.apply(listing, [], [view(done)], T0 + 100 + i)
    assert counted(led) == {(SPACE, "s1", "TRACKED", "FINISHED"): 1}
    assert "r1" not in led.active


def test_a_run_never_seen_active_is_counted_when_first_seen_terminal() -> None:
    led = Ledger(baseline=T0)
    r = run("r1", "FAILED", T0 + 5, commit=T0 - 100)
    led.apply({"s1": mark()}, [], [view(r)], T0 + 100)
    assert counted(led) == {(SPACE, "s1", "TRACKED", "FAILED"): 1}
    assert led.lead_time == {}  # only FINISHED tracked runs
    led.apply({"s1": mark()}, [], [view(r)], T0 + 200)
    assert total(led) == 1


def test_histograms_duration_queue_wait_and_lead_time() -> None:
    led = Ledger(baseline=T0)
    r = run("r1", "FINISHED", T0 + 100, step=40, commit=T0 - 1000)  # 5 states, 40 s apart
    led.apply({"s1": mark()}, [], [view(r)], T0 + 1000)
    d = led.duration[(SPACE, "TRACKED", "FINISHED")]
    assert d.total == 160 and sum(d.counts) == 1
    q = led.queue_wait[(SPACE, "TRACKED")]
    assert q.total == 40  # READY at +40, PREPARING at +80
    lt = led.lead_time[SPACE]
    assert lt.total == (T0 + 260) - (T0 - 1000)
    assert d.cumulative()[-1] == 1.0


def test_queue_wait_takes_the_ready_right_before_the_first_preparing() -> None:
    r = RunObs(
        "r",
        "s",
        "TRACKED",
        "FINISHED",
        0,
        90,
        history=(
            ("QUEUED", 0),
            ("READY", 5),
            ("PREPARING", 20),
            ("CONFIRMED", 60),
            ("FINISHED", 90),
        ),
    )
    assert r.queue_wait() == 15
    assert RunObs("r", "s", "TASK", "CANCELED", 0, 1, history=(("QUEUED", 0),)).queue_wait() is None


def test_floor_keeps_the_ledger_small_and_blocks_recounts() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark()}
    runs = [run(f"r{i:02d}", "FINISHED", T0 + i * 100) for i in range(30)][::-1]
    led.apply(listing, [], [view(*runs)], T0 + 5000)
    assert total(led) == 30
    assert sum(len(d) for d in led.done.values()) <= 1  # only the newest, at the floor
    led.apply(listing, [], [view(*runs)], T0 + 6000)
    assert total(led) == 30


def test_floor_stays_under_the_oldest_active_run() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark()}
    stuck = run("a", "UNCONFIRMED", T0 + 10)
    newer = run("b", "FINISHED", T0 + 50)
    led.apply(listing, [], [view(newer, stuck)], T0 + 100)
    assert led.floor[("s1", RUNS)] == T0 + 10
    discarded = run("a", "DISCARDED", T0 + 10)
    led.apply(listing, [], [view(newer, discarded)], T0 + 200)
    assert counted(led) == {
        (SPACE, "s1", "TRACKED", "FINISHED"): 1,
        (SPACE, "s1", "TRACKED", "DISCARDED"): 1,
    }


def test_an_active_run_missing_from_a_complete_list_is_dropped_uncounted() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark()}
    led.apply(listing, [], [view(run("a", "PLANNING", T0 + 1))], T0 + 10)
    led.apply(listing, [], [view(run("a2", "PLANNING", T0 + 3), run("a", "PLANNING", T0 + 1))], 0)
    led.apply(listing, [], [view(run("b", "FINISHED", T0 + 5), run("a", "APPLYING", T0 + 1))], 0)
    assert "a2" not in led.active and "a" in led.active  # within the part read: gone
    assert total(led) == 1
    led.apply(listing, [], [view(run("c", "PLANNING", T0 + 30))], T0 + 40)
    led.apply(listing, [], [view(complete=False)], T0 + 50)  # incomplete: keep it
    assert "c" in led.active
    # older than everything read: not proof it is gone; asked for by id, it is
    led.apply(listing, [], [view(run("d", "FINISHED", T0 + 60))], T0 + 60)
    assert "a" in led.active
    led.apply(listing, [], [], T0 + 70, [Lookup("s1", "a", None)])
    assert "a" not in led.active and total(led) == 2


def test_an_active_run_beyond_the_pages_read_is_asked_for_by_id_and_counted() -> None:
    led = Ledger(baseline=T0)
    listing = {f"s{i}": mark() for i in range(3)}
    led.apply(listing, [], [view(run("old", "UNCONFIRMED", T0 + 1))], T0 + 10)
    newer = [run(f"n{i}", "FINISHED", T0 + 1000 - i) for i in range(60)]
    reached = [*newer, run("x", "FINISHED", T0 - 5000)]
    assert not led.needs_older_page(reached, "s1", RUNS)  # no page hunt for the old run
    wants = led.plan(listing, [], batch=3, now=T0 + 20, sweep_slots=3)
    assert wants["s1"].lookup == "old"
    led.apply(
        listing, [], [view(*newer)], T0 + 20, [Lookup("s1", "old", run("old", "DISCARDED", T0 + 1))]
    )
    assert "old" not in led.active and total(led) == 61
    assert counted(led)[(SPACE, "s1", "TRACKED", "DISCARDED")] == 1
    assert led.floor[("s1", RUNS)] == T0 + 1000 and led.done[("s1", RUNS)] == {"n0": T0 + 1000}


def test_an_incomplete_read_leaves_a_gap_the_next_polls_read_on() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark()}
    led.apply(listing, [], [view(run("base", "FINISHED", T0 + 1))], T0 + 10)
    runs_ = [run(f"n{i:03d}", "FINISHED", T0 + 1000 - i) for i in range(300)]
    first, rest = runs_[:250], runs_[250:]
    led.apply(listing, [], [view(*first, complete=False)], T0 + 20)
    assert led.floor[("s1", RUNS)] == T0 + 1  # not raised over the runs not read
    assert led.gaps[("s1", RUNS)] == ["n249"]
    wants = led.plan(listing, [], batch=20, now=T0 + 30, sweep_slots=0)
    assert wants["s1"].runs_before == "n249"
    led.apply(
        listing,
        [],
        [ListView("s1", RUNS, (*rest, run("base", "FINISHED", T0 + 1)), True, "n249")],
        T0 + 30,
    )
    assert total(led) == 301 and ("s1", RUNS) not in led.gaps
    assert led.floor[("s1", RUNS)] == T0 + 1000 - 250


def test_plan_reads_changed_stacks_and_queue_leavers() -> None:
    led = Ledger(baseline=T0)
    listing = {f"s{i}": mark() for i in range(5)}
    q = run("q", "PLANNING", T0, stack="s3", rtype="PROPOSED")
    led.apply(listing, [q], [], T0)
    assert led.active["q"].in_queue

    changed = dict(listing)
    changed["s1"] = mark("APPLYING", T0 + 5)
    changed["s2"] = mark(approval=True)
    wants = led.plan(changed, [], batch=5, now=T0 + 30, sweep_slots=0)
    assert wants["s1"].runs and not wants["s1"].proposed
    assert wants["s2"].runs and wants["s2"].proposed
    assert wants["s3"].proposed and not wants["s3"].runs  # left the queue
    assert set(wants) == {"s1", "s2", "s3"}


def test_plan_at_first_sight_reads_only_busy_stacks() -> None:
    led = Ledger(baseline=T0)
    listing = {"idle": mark("FINISHED"), "busy": mark("PLANNING"), "never": mark("NONE")}
    wants = led.plan(listing, [], batch=20, now=T0, sweep_slots=0)
    assert set(wants) == {"busy"}


def test_sweep_fills_spare_slots_and_walks_every_stack() -> None:
    led = Ledger(baseline=T0)
    listing = {f"s{i:02d}": mark() for i in range(10)}
    led.apply(listing, [], [], T0)
    seen: set[str] = set()
    for i in range(5):
        wants = led.plan(listing, [], batch=4, now=T0 + i, sweep_slots=4)
        assert len(wants) == 4
        seen |= set(wants)
        led.apply(listing, [], [], T0 + i)  # the poll succeeded: the cursor moves on
    assert seen == set(listing)


def test_a_failed_poll_does_not_move_the_sweep_on() -> None:
    led = Ledger(baseline=T0)
    listing = {f"s{i:02d}": mark() for i in range(10)}
    led.apply(listing, [], [], T0)
    first = led.plan(listing, [], batch=4, now=T0, sweep_slots=4)
    # the poll's requests failed: apply is never called, the next poll sweeps the same stacks
    assert led.plan(listing, [], batch=4, now=T0 + 30, sweep_slots=4) == first
    led.apply(listing, [], [], T0 + 30)
    assert not set(led.plan(listing, [], batch=4, now=T0 + 60, sweep_slots=4)) & set(first)


def test_the_sweep_gets_slots_when_changed_stacks_fill_whole_batches() -> None:
    led = Ledger(baseline=T0)
    listing = {f"s{i:02d}": mark() for i in range(10)}
    led.apply(listing, [], [], T0)
    changed = {sid: (mark("PLANNING", T0 + 5) if sid < "s04" else m) for sid, m in listing.items()}
    wants = led.plan(changed, [], batch=4, now=T0 + 30, sweep_slots=4)
    assert len(wants) > 4  # four changed stacks fill a batch; the sweep gets one of its own


def test_deleted_stack_is_forgotten_after_the_grace_and_its_counts_retire() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark(), "s2": mark()}
    led.apply(listing, [], [view(run("r", "FINISHED", T0 + 1))], T0 + 10)
    led.apply(listing, [], [view(run("a", "PLANNING", T0 + 20))], T0 + 30)
    for i in range(MISSING_GRACE):
        assert "s1" in led.stacks
        led.apply({"s2": mark()}, [], [], T0 + 40 + i)
    assert "s1" not in led.stacks and "a" not in led.active
    # its count and floor stay with it (a tombstone) until TOMBSTONE_RETENTION has passed
    assert counted(led) == {(SPACE, "s1", "TRACKED", "FINISHED"): 1}
    assert led.handled(run("r", "FINISHED", T0 + 1))
    led.apply({"s2": mark()}, [], [], T0 + 50 + TOMBSTONE_RETENTION)
    assert counted(led) == {(SPACE, "", "TRACKED", "FINISHED"): 1}
    assert "s1" not in led.forgotten and ("s1", RUNS) not in led.floor


def test_a_stack_back_after_the_grace_is_not_counted_again() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark(), "s2": mark()}
    old = [run(f"r{i}", "FINISHED", T0 + 10 * i) for i in range(5, 0, -1)]
    led.apply(listing, [], [view(*old)], T0 + 100)
    assert total(led) == 5
    for i in range(MISSING_GRACE + 1):
        led.apply({"s2": mark()}, [], [], T0 + 110 + i)
    assert "s1" in led.forgotten
    back = led.plan(listing, [], batch=20, now=T0 + 200, sweep_slots=0)
    assert back["s1"].runs and back["s1"].proposed  # read what it ran while away
    led.apply(listing, [], [view(run("n", "FAILED", T0 + 150), *old)], T0 + 200)
    assert total(led) == 6 and "s1" not in led.forgotten
    assert counted(led)[(SPACE, "s1", "TRACKED", "FINISHED")] == 5


def test_needs_older_page_when_everything_read_is_new() -> None:
    led = Ledger(baseline=T0)
    new = [run(f"n{i}", "FINISHED", T0 + 100 - i) for i in range(3)]
    assert led.needs_older_page(new, "s1", RUNS)
    old = [*new, run("o", "FINISHED", T0 - 1000)]
    assert not led.needs_older_page(old, "s1", RUNS)


def test_state_round_trips_through_json() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark(), "s2": StackMark("space-b", "PLANNING", None, True, "abc")}
    led.apply(
        listing,
        [run("q", "PLANNING", T0 + 3, stack="s2", rtype="PROPOSED")],
        [
            view(run("r", "FINISHED", T0 + 1, commit=T0 - 60), run("x", "FINISHED", T0 - 9999)),
            view(run("p", "UNCONFIRMED", T0 + 2, stack="s2"), stack="s2"),
        ],
        T0 + 50,
    )
    text = json.dumps(led.to_json())
    back = Ledger.from_json(json.loads(text))
    assert back.to_json() == led.to_json()
    assert back.active["q"].in_queue and back.active["q"].obs == led.active["q"].obs
    assert back.finished == led.finished and back.lead_time.keys() == led.lead_time.keys()


@pytest.mark.parametrize(
    "raw",
    [None, [], {"version": 99}, {"version": 1, "baseline": "x"}, {"version": 1, "baseline": 1}],
)
def test_bad_state_raises(raw: object) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        Ledger.from_json(raw)


def test_parse_run_from_an_api_answer() -> None:
    raw = {
        "id": "01ABC",
        "type": "PROPOSED",
        "state": "FINISHED",
        "createdAt": 10,
        "updatedAt": 50,
        "driftDetection": True,
        "needsApproval": False,
        "commit": {"timestamp": 5},
        "history": [
            {"state": "QUEUED", "timestamp": 10},
            {"state": "FINISHED", "timestamp": 50},
        ],
    }
    r = parse_run(raw, "stack", "x")
    assert r.kind == PROPOSED and r.drift and r.commit_ts == 5 and r.entered_at == 50
    from exporter.errors import MalformedResponseError

    with pytest.raises(MalformedResponseError):
        parse_run({**raw, "history": None}, "stack", "x")


def counted(led: Ledger) -> dict[tuple[str, str, str, str], int]:
    """Runs counted; the 0-valued keys exposed ahead of a first run are left out."""
    return {k: v for k, v in led.finished.items() if v}


def test_an_active_run_exposes_its_likely_outcomes_at_zero() -> None:
    led = Ledger(baseline=T0)
    led.apply({"s1": mark()}, [], [view(run("r1", "PLANNING", T0 + 10))], T0 + 20)
    assert led.finished == {
        (SPACE, "s1", "TRACKED", "FINISHED"): 0,
        (SPACE, "s1", "TRACKED", "FAILED"): 0,
    }
    # proposed runs and tasks change no infrastructure: no placeholders (half the series)
    led.apply({"s1": mark()}, [], [view(run("p1", "PLANNING", T0 + 11, rtype="PROPOSED"))], T0)
    led.apply({"s1": mark()}, [], [view(run("t1", "PLANNING", T0 + 12, rtype="TASK"))], T0)
    assert all(k[2] == "TRACKED" for k in led.finished)


def test_placeholders_are_not_persisted_and_come_back_from_the_active_runs() -> None:
    led = Ledger(baseline=T0)
    led.apply({"s1": mark()}, [], [view(run("r1", "PLANNING", T0 + 10))], T0 + 20)
    raw = led.to_json()
    assert raw["finished"] == []
    assert Ledger.from_json(json.loads(json.dumps(raw))).finished == led.finished


def test_changed_only_when_something_worth_saving_happened() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark(), "s2": mark()}
    active = run("a", "PLANNING", T0 + 10)
    led.apply(
        listing, [active], [view(run("r", "FINISHED", T0 + 5, stack="s2"), stack="s2")], T0 + 20
    )
    assert led.changed
    led.changed = False
    for i in range(3):  # the same picture again: nothing to write
        led.plan(listing, [active], batch=1, now=T0 + 30 + i, sweep_slots=1)
        led.apply(
            listing, [active], [view(run("r", "FINISHED", T0 + 5, stack="s2"), stack="s2")], T0 + 30
        )
        assert not led.changed
    led.apply(listing, [run("a", "APPLYING", T0 + 10, step=20)], [], T0 + 60)
    assert led.changed


def test_history_in_any_order_is_read_by_timestamp() -> None:
    newest_first = (("FAILED", T0 + 90), ("PREPARING", T0 + 40), ("READY", T0 + 10))
    r = RunObs("r", "s1", "TRACKED", "FAILED", T0, T0 + 90, history=newest_first)
    assert r.queue_wait() == 30 and r.entered_at == T0 + 90


def test_gaps_and_tombstones_survive_a_restart() -> None:
    led = Ledger(baseline=T0)
    listing = {"s1": mark(), "s2": mark()}
    runs_ = [run(f"n{i:03d}", "FINISHED", T0 + 1000 - i) for i in range(10)]
    led.apply(listing, [], [view(*runs_, complete=False)], T0 + 20)
    for i in range(MISSING_GRACE):
        led.apply({"s1": mark()}, [], [], T0 + 30 + i)
    back = Ledger.from_json(json.loads(json.dumps(led.to_json())))
    assert back.gaps == {("s1", RUNS): ["n009"]} and set(back.forgotten) == {"s2"}
    assert back.to_json() == led.to_json()
