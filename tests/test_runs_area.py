"""The runs area against the simulator over real HTTP: every metric equals the world's truth."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from exporter.areas import runs, stacks
from exporter.areas.runs import BATCH, batch_document, budget, naive_requests
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from tests._runs_support import (
    TERMINAL,
    lab,
    make_app,
    run_to_end,
    scrape,
    truth_active,
    truth_finished,
    truth_oldest_age,
    without,
)

SCHEMA = build_schema(
    (Path(__file__).parent.parent / "exporter/simulator/schema.graphql").read_text()
)
START = 1_780_000_000.0
FINISHED = "spacelift_runs_finished_total"


def _sim(stacks: int, activity: float = 0.0, seed: int = 3) -> Simulator:
    clock = SimClock(start=START)
    world = World(WorldConfig(seed=seed, stacks=stacks, activity=activity), clock)
    return Simulator(world)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """30 stacks (more than one batch, so the budgeted path runs), no random activity."""
    with _sim(30) as s:
        yield s


def _requests(sim: Simulator) -> int:
    return sum(n for op, n in sim.requests.items() if op != "SpaceliftExporterGetToken")


def _finished(app: object) -> dict[frozenset[tuple[str, str]], float]:
    """Runs counted so far; the 0-valued series exposed ahead of a first run are left out."""
    return {k: v for k, v in scrape(app)[FINISHED].items() if v}  # type: ignore[attr-defined]


def _stack_on(world: World, *, private: bool | None = None, autodeploy: bool = True) -> str:
    for sid, st in sorted(world.stacks.items()):
        if st.isDisabled or any(r.state not in TERMINAL for r in st.runs):
            continue
        if private is not None and (st.worker_pool is not None) != private:
            continue
        st.autodeploy = autodeploy
        return sid
    raise AssertionError("no idle stack")


# -- documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [runs.SPEC, stacks.SPEC], ids=lambda s: s.name)
def test_every_document_validates_against_the_schema(spec: object) -> None:
    for name, document in spec.documents.items():  # type: ignore[attr-defined]
        assert validate(SCHEMA, parse(document)) == [], name
        assert f"query {name}" in document


@pytest.mark.parametrize("n", [1, 2, 7, BATCH, 50])
def test_alias_batch_template_validates_for_every_size(n: int) -> None:
    document = batch_document(n)
    assert validate(SCHEMA, parse(document)) == []
    assert document.count("stack(id:") == n


# -- counting --------------------------------------------------------------------------------


def test_run_started_and_finished_between_two_polls_is_counted_once(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    assert _finished(app) == {}  # terminal runs of the past are the baseline

    sid = _stack_on(world)
    run = world.trigger_run(sid, "TRACKED", commit_timestamp=int(t0) - 600)
    run_to_end(world, run)
    assert app.poll_all()
    space = world.stacks[sid].space
    want = {lab(space=space, stack_id=sid, run_type="TRACKED", state=run.state): 1.0}
    assert _finished(app) == want == truth_finished(world, t0)

    m = scrape(app)
    duration = m["spacelift_run_duration_seconds_count"]
    assert duration == {lab(space=space, run_type="TRACKED", state=run.state): 1.0}
    total = m["spacelift_run_duration_seconds_sum"][
        lab(space=space, run_type="TRACKED", state=run.state)
    ]
    assert total == run.history[-1]["timestamp"] - run.createdAt
    ready = next(h["timestamp"] for h in run.history if h["state"] == "READY")
    prep = next(h["timestamp"] for h in run.history if h["state"] == "PREPARING")
    assert m["spacelift_run_queue_wait_seconds_sum"] == {
        lab(space=space, run_type="TRACKED"): prep - ready
    }
    if run.state == "FINISHED":
        assert m["spacelift_deployment_lead_time_seconds_sum"] == {
            lab(space=space): run.history[-1]["timestamp"] - (int(t0) - 600)
        }

    for _ in range(3):  # seen again and again: still one
        world.advance(30)
        assert app.poll_all()
        assert _finished(app) == want


def test_proposed_run_between_polls_is_found_by_the_sweep(sim: Simulator) -> None:
    """Proposed runs never change a stack's state; the sweep finds them within a few polls."""
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    sid = _stack_on(world)
    run = world.trigger_run(sid, "PROPOSED")
    run_to_end(world, run)
    polls = 0
    while _finished(app) != truth_finished(world, t0):
        polls += 1
        assert polls <= math.ceil(len(world.stacks) / BATCH) + 1, "sweep never reached it"
        world.advance(30)
        assert app.poll_all()
    assert sum(_finished(app).values()) == 1


def test_no_run_counted_twice_over_many_polls_of_a_busy_account() -> None:
    with _sim(120, activity=6.0, seed=5) as sim:
        world = sim.world
        app = make_app(sim)
        t0 = world.clock.now()
        for _ in range(25):
            assert app.poll_all()
            got = _finished(app)
            truth = truth_finished(world, t0)
            # never more than the truth (no double count) ...
            assert all(v <= truth.get(k, 0) for k, v in got.items()), (got, truth)
            # ... and active runs match, but for runs queued seconds ago that no signal shows
            assert without(scrape(app)["spacelift_runs"], "QUEUED") == truth_active(
                world, skip_queued=True
            )
            world.advance(30)
        world.config.activity = 0.0
        world.advance(4 * 3600)  # everything in flight ends (humans answer within 15 min)
        for _ in range(8):  # the sweep visits all 120 stacks
            assert app.poll_all()
            world.advance(30)
        assert _finished(app) == truth_finished(world, t0)
        assert sum(_finished(app).values()) > 50


def test_active_runs_and_oldest_age_match_the_world(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    assert app.poll_all()
    a = world.trigger_run(_stack_on(world, autodeploy=False), "TRACKED")
    b = world.trigger_run(_stack_on(world, private=True), "TASK")
    world.advance(20)
    c = world.trigger_run(_stack_on(world), "TRACKED", needs_approval=True)
    d = world.trigger_run(_stack_on(world), "PROPOSED", needs_approval=True)
    world.advance(15)
    assert app.poll_all()
    m = scrape(app)
    assert m["spacelift_runs"] == truth_active(world)
    assert m["spacelift_runs_oldest_age_seconds"] == truth_oldest_age(world)
    spaces = {world.stacks[c.stack_id].space, world.stacks[d.stack_id].space}
    assert sum(m["spacelift_runs_needing_approval"].values()) == 2
    assert {dict(k)["space"] for k in m["spacelift_runs_needing_approval"]} == spaces

    world.approve(c.id)
    world.approve(d.id)
    run_to_end(world, a)
    world.advance(400)
    assert app.poll_all()
    m = scrape(app)
    assert m["spacelift_runs"] == truth_active(world)
    assert m["spacelift_runs_oldest_age_seconds"] == truth_oldest_age(world)
    assert m.get("spacelift_runs_needing_approval", {}) == {}
    assert b.state in TERMINAL


def test_outage_runs_that_finish_meanwhile_are_counted_after_recovery(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    started = [world.trigger_run(_stack_on(world), "TRACKED") for _ in range(3)]
    world.advance(15)
    assert app.poll_all()
    assert scrape(app)["spacelift_runs"] == truth_active(world)

    sim.faults.http_status(503, times=None)
    for run in started:
        run_to_end(world, run)
    late = world.trigger_run(_stack_on(world), "TRACKED")  # starts and ends in the outage
    run_to_end(world, late)
    assert not app.poll_all()
    assert not app.poll_all()
    m = scrape(app)
    assert m["spacelift_poll_success"][lab(area="runs")] == 0
    assert _finished(app) == {}  # the last good data

    sim.faults.clear()
    assert app.poll_all()
    assert _finished(app) == truth_finished(world, t0)
    assert sum(_finished(app).values()) == 4
    world.advance(30)
    assert app.poll_all()
    assert sum(_finished(app).values()) == 4


def test_restart_with_a_state_file_neither_recounts_nor_misses(
    sim: Simulator, tmp_path: Path
) -> None:
    world = sim.world
    state = tmp_path / "state" / "exporter.json"
    app = make_app(sim, state_file=state)
    t0 = world.clock.now()
    assert app.poll_all()
    first = world.trigger_run(_stack_on(world), "TRACKED")
    run_to_end(world, first)
    pending = world.trigger_run(_stack_on(world), "TRACKED")
    world.advance(20)
    assert app.poll_all()
    assert sum(_finished(app).values()) == 1
    app.close()
    assert json.loads(state.read_text())["sections"]

    # The exporter is down: the pending run ends, another one starts and ends.
    run_to_end(world, pending)
    other = world.trigger_run(_stack_on(world), "TRACKED")
    run_to_end(world, other)

    app2 = make_app(sim, state_file=state)
    assert app2.poll_all()
    assert _finished(app2) == truth_finished(world, t0)
    assert sum(_finished(app2).values()) == 3
    world.advance(30)
    assert app2.poll_all()
    assert sum(_finished(app2).values()) == 3
    assert not list(state.parent.glob("*.json.*")), "temporary files left behind"


def test_state_file_is_written_only_when_the_ledger_changed(sim: Simulator, tmp_path: Path) -> None:
    world = sim.world
    path = tmp_path / "state.json"
    app = make_app(sim, state_file=path)
    assert app.poll_all()
    sid = _stack_on(world, private=False)
    world.trigger_run(sid, "TRACKED")
    world.advance(5)
    assert app.poll_all()
    written = path.stat().st_ino  # each write is a new file renamed over the old one
    writes = scrape(app)["spacelift_state_file_writes_total"]
    assert writes[lab(outcome="success")] == 2 and writes[lab(outcome="failure")] == 0
    for _ in range(3):  # nothing happened: no rewrite, no fsync
        assert app.poll_all()
        assert path.stat().st_ino == written
    assert scrape(app)["spacelift_state_file_writes_total"][lab(outcome="success")] == 2
    section = json.loads(path.read_text())["sections"]["127.0.0.1/runs"]
    assert section["active"] and all(row[-1] for row in section["finished"])  # no 0 placeholders
    app.close()
    app2 = make_app(sim, state_file=path)  # placeholders come back from the active run
    assert app2.poll_all()
    space = world.stacks[sid].space
    assert (
        scrape(app2)[FINISHED][lab(space=space, stack_id=sid, run_type="TRACKED", state="FAILED")]
        == 0
    )


def test_a_failing_state_file_write_is_counted(sim: Simulator, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    app = make_app(sim, state_file=blocker / "state.json")
    assert app.poll_all()  # the poll itself is fine; the write fails, and says so
    writes = scrape(app)["spacelift_state_file_writes_total"]
    assert writes == {lab(outcome="success"): 0, lab(outcome="failure"): 1}


def test_restart_without_a_state_file_takes_a_new_baseline(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    assert app.poll_all()
    run = world.trigger_run(_stack_on(world), "TRACKED")
    run_to_end(world, run)
    assert app.poll_all()
    assert sum(_finished(app).values()) == 1
    app.close()

    app2 = make_app(sim)
    t1 = world.clock.now()
    assert app2.poll_all()
    assert _finished(app2) == {}  # already terminal at the first poll: the baseline
    nxt = world.trigger_run(_stack_on(world), "TRACKED")
    run_to_end(world, nxt)
    assert app2.poll_all()
    assert _finished(app2) == truth_finished(world, t1)
    assert sum(_finished(app2).values()) == 1


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"format": "spacelift-exporter-state/1", "sections": {}})[:-3]],
)
def test_corrupt_state_file_is_reported_and_ignored(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    world = sim.world
    run = world.trigger_run(_stack_on(world), "TRACKED")
    run_to_end(world, run)
    with caplog.at_level(logging.WARNING):
        app = make_app(sim, state_file=state)
        assert app.poll_all()
    assert any("state file corrupt" in r.getMessage() for r in caplog.records)
    assert _finished(app) == {}  # clean baseline: the run before start is not counted
    json.loads(state.read_text())  # rewritten whole and valid


def test_unusable_ledger_section_is_reported_and_ignored(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.json"
    account = "127.0.0.1"
    state.write_text(
        json.dumps(
            {
                "format": "spacelift-exporter-state/1",
                "sections": {f"{account}/runs": {"version": 1, "baseline": "soon"}},
            }
        )
    )
    with caplog.at_level(logging.WARNING):
        app = make_app(sim, state_file=state)
        assert app.poll_all()
    assert any("run ledger in the state file is unusable" in r.getMessage() for r in caplog.records)
    assert scrape(app)["spacelift_poll_success"][lab(area="runs")] == 1


def test_deleted_stack_series_disappear_and_space_total_stays(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    sid = _stack_on(world)
    space = world.stacks[sid].space
    run = world.trigger_run(sid, "TRACKED")
    run_to_end(world, run)
    busy = world.trigger_run(sid, "TRACKED")
    world.advance(15)
    assert app.poll_all()
    assert any(dict(k).get("stack_id") == sid for k in _finished(app))
    assert busy.state not in TERMINAL

    world.delete_stack(sid)
    assert app.poll_all()
    m = scrape(app)
    assert not any(dict(k).get("stack_id") == sid for k in m[FINISHED])
    assert m["spacelift_runs"] == truth_active(world)
    assert _finished(app) == truth_finished(world, t0)
    for _ in range(3):  # past the grace: no retired stack_id="" series born at its history
        assert app.poll_all()
        assert not any(("stack_id", sid) in k for k in scrape(app)[FINISHED])
        assert _finished(app) == truth_finished(world, t0)
    assert not any(dict(k).get("space") == space for k in _finished(app))


def test_without_stack_id_a_deleted_stack_leaves_the_space_total_continuous(
    sim: Simulator,
) -> None:
    world = sim.world
    app = make_app(sim, options={"runs": {"stack_id_label": False}})
    assert app.poll_all()
    sid = _stack_on(world)
    space = world.stacks[sid].space
    for _ in range(3):
        run_to_end(world, world.trigger_run(sid, "TRACKED"))
        assert app.poll_all()
    before = _finished(app)
    assert sum(v for k, v in before.items() if ("space", space) in k) == 3
    world.delete_stack(sid)
    for _ in range(4):  # through the grace and beyond: the space's series never move
        world.advance(30)
        assert app.poll_all()
        assert _finished(app) == before


def test_a_stack_missing_from_the_listing_for_a_while_is_not_counted_again(
    sim: Simulator,
) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    sid = _stack_on(world)
    for _ in range(5):
        run_to_end(world, world.trigger_run(sid, "TRACKED"))
        world.advance(30)
        assert app.poll_all()
    assert _finished(app) == truth_finished(world, t0)
    hidden = world.stacks.pop(sid)  # invisible to the key (a space permission change)
    world.stacks_version += 1
    for _ in range(3):  # longer than the grace: the ledger forgets it
        world.advance(30)
        assert app.poll_all()
    world.stacks[sid] = hidden
    world.stacks_version += 1
    run_to_end(world, world.trigger_run(sid, "TRACKED"))  # one more while it is back
    for _ in range(4):
        world.advance(30)
        assert app.poll_all()
    assert _finished(app) == truth_finished(world, t0)
    assert sum(v for k, v in _finished(app).items() if ("stack_id", sid) in k) == 6


def test_an_active_run_buried_under_newer_runs_is_resolved_and_nothing_is_lost(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unconfirmed run discarded during an outage while 400 newer runs ran on its stack:
    more than the pages a poll reads. It is asked for by id (no phantom active run), and the
    runs the first poll could not reach are read by the next ones (none lost)."""
    import exporter.simulator.world as sim_world

    monkeypatch.setattr(sim_world, "RUN_RETENTION", 10_000)
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    sid = _stack_on(world, autodeploy=False)
    buried = world.trigger_run(sid, "TRACKED")
    while buried.state != "UNCONFIRMED":
        world.advance(5)
    world.advance(30)
    assert app.poll_all()
    assert scrape(app)["spacelift_runs"] == truth_active(world)
    world.discard(buried.id)  # the API is down meanwhile: the exporter sees none of this
    for _ in range(400):
        run_to_end(world, world.trigger_run(sid, "TASK"), step=2)
    polls = []
    for _ in range(4):
        world.advance(30)
        sim.reset_counts()
        assert app.poll_all()
        polls.append(sim.requests["SpaceliftExporterStackRuns"])
    m = scrape(app)
    assert m["spacelift_runs"] == truth_active(world) == {}
    assert m["spacelift_runs_oldest_age_seconds"] == {}
    assert _finished(app) == truth_finished(world, t0)
    assert sum(_finished(app).values()) == 401
    assert polls[-1] <= 1  # settled: no page hunt every poll
    (runs_area,) = app.pollers
    ledger = app.pollers[runs_area].ledger  # type: ignore[attr-defined]
    assert sum(len(d) for d in ledger.done.values()) <= 2 and not ledger.gaps


def test_a_burst_longer_than_a_poll_reads_is_counted_on_a_small_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stack's newest runs are read at every poll of a small account; the older part of
    a 400-run burst (more than one poll reads) is read on in slots of its own."""
    import exporter.simulator.world as sim_world

    monkeypatch.setattr(sim_world, "RUN_RETENTION", 10_000)
    with _sim(12) as sim:
        world = sim.world
        app = make_app(sim)
        t0 = world.clock.now()
        assert app.poll_all()
        sid = _stack_on(world)
        for _ in range(400):
            run_to_end(world, world.trigger_run(sid, "TASK"), step=2)
        for _ in range(3):
            world.advance(30)
            assert app.poll_all()
        assert _finished(app) == truth_finished(world, t0)
        assert sum(_finished(app).values()) == 400
        (runs_area,) = app.pollers
        assert not app.pollers[runs_area].ledger.gaps  # type: ignore[attr-defined]


def test_new_space_and_new_stack_are_picked_up(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    space = world.add_space("newteam")
    stack = world.add_stack("newteam-network", space=space.id, autodeploy=True)
    assert app.poll_all()
    run = world.trigger_run(stack.id, "TRACKED")
    world.advance(15)
    assert app.poll_all()
    assert scrape(app)["spacelift_runs"] == truth_active(world)
    run_to_end(world, run)
    assert app.poll_all()
    got = _finished(app)
    assert got == truth_finished(world, t0)
    assert {dict(k)["space"] for k in got} == {space.id}


def test_stack_id_label_can_be_switched_off(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim, options={"runs": {"stack_id_label": False}})
    t0 = world.clock.now()
    assert app.poll_all()
    for _ in range(3):
        run_to_end(world, world.trigger_run(_stack_on(world), "TRACKED"))
    assert app.poll_all()
    got = _finished(app)
    assert got == truth_finished(world, t0, by_stack=False)
    assert not any("stack_id" in dict(k) for k in got)


def test_small_account_reads_every_stack_in_one_request() -> None:
    with _sim(12) as sim:
        world = sim.world
        app = make_app(sim)
        t0 = world.clock.now()
        assert app.poll_all()
        proposed = world.trigger_run(_stack_on(world), "PROPOSED")
        task = world.trigger_run(_stack_on(world, private=True), "TASK")
        run_to_end(world, proposed)
        run_to_end(world, task)
        sim.reset_counts()
        assert app.poll_all()
        # One listing page, one batch: every run seen at once; a list whose newest page was
        # all new (the stack's first proposed run) is read on to an empty page, as only an
        # empty page ends a list.
        assert _requests(sim) == 3
        assert _finished(app) == truth_finished(world, t0)
        assert sum(_finished(app).values()) == 2


def test_request_budget_on_a_moderately_sized_account() -> None:
    """A steady-state poll costs at most S/50 + A/20 + pools + 2 requests, never naive's."""
    with _sim(300, activity=4.0, seed=7) as sim:
        world = sim.world
        app = make_app(sim)
        pools = len(world.pools)
        for _ in range(3):  # warm up: the first poll looks at every busy stack
            assert app.poll_all()
            world.advance(30)
        worst = 0.0
        for _ in range(12):
            before = {sid: (st.state, st.stateSetAt) for sid, st in world.stacks.items()}
            since = world.clock.now() - 30
            sim.reset_counts()
            assert app.poll_all()
            made = _requests(sim)
            # A: stacks whose state changed or whose runs moved since the last poll
            changed = {
                sid for sid, st in world.stacks.items() if before[sid] != (st.state, st.stateSetAt)
            }
            changed |= {
                r.stack_id
                for r in world.runs.values()
                if r.history and r.history[-1]["timestamp"] >= since
            }
            target = budget(len(world.stacks), len(changed), pools)
            assert made <= target, (made, target, len(changed))
            assert made < naive_requests(len(world.stacks))
            worst = max(worst, made / target)
            world.advance(30)
        assert worst > 0


def test_request_budget_holds_with_a_large_pool_queue() -> None:
    """A pool without workers and 600 drift-detection runs waiting (six queue pages): the
    pages after the first are read only when the queue changed, so a steady poll stays in
    budget; runs leaving from deep in the queue are still counted, once."""
    with _sim(300, seed=7) as sim:
        world = sim.world
        app = make_app(sim)
        t0 = world.clock.now()
        pools = len(world.pools)
        assert app.poll_all()
        pool = sorted(world.pools)[0]
        world.set_workers(pool, 0)
        on_pool = sorted(s for s, st in world.stacks.items() if st.worker_pool == pool)
        on_pool = [s for s in on_pool if not world.stacks[s].isDisabled]
        waiting = [
            world.trigger_run(on_pool[i % len(on_pool)], "PROPOSED", drift_detection=True)
            for i in range(600)
        ]
        world.advance(30)
        assert app.poll_all()
        for _ in range(3):
            world.advance(30)
            sim.reset_counts()
            assert app.poll_all()
            made = _requests(sim)
            assert made <= budget(len(world.stacks), 0, pools), made
            assert sim.requests["SpaceliftExporterRunQueuePage"] == 0
            assert scrape(app)["spacelift_runs"] == truth_active(world)
        for r in waiting[-5:]:  # canceled from the end of the queue
            world.finish_run(r.id, "CANCELED")
        for _ in range(2):
            world.advance(30)
            assert app.poll_all()
        assert scrape(app)["spacelift_runs"] == truth_active(world)
        assert _finished(app) == truth_finished(world, t0)
        assert sum(_finished(app).values()) == 5


def test_exposition_passes_promtool(sim: Simulator, tmp_path: Path) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    world = sim.world
    app = make_app(sim, areas=("runs", "stacks"))
    assert app.poll_all()
    run_to_end(world, world.trigger_run(_stack_on(world), "TRACKED"))
    world.trigger_run(_stack_on(world), "TRACKED")
    world.advance(15)
    assert app.poll_all()
    body, _ = app.exposition.render(None)
    out = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == b"" and out.stderr.strip() == b"", out.stdout + out.stderr


def test_a_failed_batch_fails_the_poll_and_nothing_is_lost(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    run_to_end(world, world.trigger_run(_stack_on(world), "TRACKED"))
    sim.faults.field_error("stack", "internal error", times=1)
    assert not app.poll_all()
    assert _finished(app) == {}
    assert app.poll_all()
    assert _finished(app) == truth_finished(world, t0)
    assert sum(_finished(app).values()) == 1


def test_public_pool_refused_to_machine_sessions_still_counts(sim: Simulator) -> None:
    world = sim.world
    sim.gate_fields({"publicWorkerPool"})
    app = make_app(sim)
    t0 = world.clock.now()
    assert app.poll_all()
    runs_ = [world.trigger_run(_stack_on(world, private=p), "TRACKED") for p in (True, False)]
    world.advance(20)
    assert app.poll_all()
    assert scrape(app)["spacelift_runs"] == truth_active(world)
    for r in runs_:
        run_to_end(world, r)
    sim.reset_counts()
    assert app.poll_all()
    assert sim.requests["SpaceliftExporterRunQueuesPrivate"] == 1
    assert sim.requests["SpaceliftExporterRunQueues"] == 0  # refused once, not asked again
    assert _finished(app) == truth_finished(world, t0)
    assert sum(_finished(app).values()) == 2


def test_counter_series_exist_at_zero_before_their_first_run_finishes(sim: Simulator) -> None:
    # increase() cannot see the first increment of a series born at 1: while a run is active,
    # the series it will most likely move are already exposed at 0.
    world = sim.world
    app = make_app(sim)
    app.poll_all()
    sid = _stack_on(world, private=False)
    run = world.trigger_run(sid)
    world.advance(5)
    (runs_area,) = app.pollers
    app.poll(runs_area)
    series = scrape(app)[FINISHED]
    space = world.stacks[sid].space
    for outcome in ("FINISHED", "FAILED"):
        key = lab(space=space, stack_id=sid, run_type="TRACKED", state=outcome)
        assert series.get(key) == 0.0, (outcome, sorted(series))
    run_to_end(world, run)
    app.poll(runs_area)
    done = lab(space=space, stack_id=sid, run_type="TRACKED", state=run.state)
    assert scrape(app)[FINISHED][done] == 1.0
