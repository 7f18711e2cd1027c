"""Degrade by field, not by area: an older self-hosted schema and a machine-user key, against
the simulator over real HTTP; and one stack listing per cycle for the stacks and runs areas."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.areas import AREAS, access, aggregates, runs, stack_listing, worker_pools
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from exporter.simulator.server import OLD_SELF_HOSTED
from exporter.web import landing_page
from tests._runs_support import lab, make_app, run_to_end, scrape, truth_finished

START = 1_780_000_000.0
ALL = tuple(name for name, spec in AREAS.items() if spec.enabled_by_default)


def world(stacks: int = 30) -> World:
    w = World(WorldConfig(seed=9, stacks=stacks, activity=0.0), SimClock(start=START))
    run_to_end(w, w.trigger_run(sorted(w.stacks)[0], "PROPOSED"))  # durations to aggregate
    return w


@pytest.fixture
def healthy() -> Iterator[Simulator]:
    with Simulator(world()) as s:
        yield s


def names(app: Any) -> set[str]:
    return {name for name, samples in scrape(app).items() if samples}


def unavailable(app: Any) -> dict[tuple[str, str], str]:
    return {
        (dict(k)["area"], dict(k)["field"]): dict(k)["reason"]
        for k in scrape(app).get("spacelift_api_field_unavailable", {})
    }


def test_older_schema_costs_only_the_series_needing_the_missing_fields(
    healthy: Simulator,
) -> None:
    full = make_app(healthy, areas=ALL)
    assert full.poll_all()
    with Simulator(world(), missing_fields=OLD_SELF_HOSTED) as old_sim:
        old = make_app(old_sim, areas=ALL)
        assert old.poll_all(), [(k, st.error) for k, st in old.store.items() if not st.ok]
        assert old.ready()
        lost = {
            *(m.name for m in aggregates.METRICS),
            access.SEATS_IN_USE.name,
            access.SEATS_LIMIT.name,
            worker_pools.SCHEDULABLE.name,
        }
        assert lost <= names(full)
        assert names(old) == (names(full) - lost) | {"spacelift_api_field_unavailable"}
        assert unavailable(old) == {
            ("aggregates", "Query.metrics"): "missing",
            ("access", "Query.seats"): "missing",
            ("worker_pools", "WorkerPool.schedulableRunsCount"): "missing",
            ("runs", "WorkerPool.schedulableRunsCount"): "missing",
        }
        page = landing_page(old)
        assert "Query.seats" in page and "upgrading" in page
        assert scrape(old)["spacelift_up"] == {lab(): 1}
        # The series that remain hold the same values as with the full schema.
        for name in ("spacelift_worker_pool_workers", "spacelift_stacks", "spacelift_api_keys"):
            assert scrape(old)[name] == scrape(full)[name], name


def test_validation_errors_sent_with_http_422_degrade_the_same_way() -> None:
    with Simulator(world(), missing_fields=OLD_SELF_HOSTED) as old_sim:
        old_sim.validation_status = 422  # as gqlgen-based GraphQL servers answer them
        app = make_app(old_sim, areas=("worker_pools", "access"))
        assert app.poll_all()
        assert unavailable(app) == {
            ("access", "Query.seats"): "missing",
            ("worker_pools", "WorkerPool.schedulableRunsCount"): "missing",
        }
        assert scrape(app)["spacelift_worker_pool_workers"]


def test_machine_user_key_keeps_the_stacks_area_without_stack_states(
    healthy: Simulator,
) -> None:
    w = healthy.world
    app = make_app(healthy, areas=("stacks", "aggregates"))
    healthy.gate_fields({"Stack.state"})
    assert app.poll_all()
    got = scrape(app)
    assert "spacelift_stack_state" not in got
    per_space: dict[str, int] = {}
    for st in w.stacks.values():
        per_space[st.space] = per_space.get(st.space, 0) + 1
    # counts by space (no state label), locks, drift and per-stack series are all there
    assert got["spacelift_stacks"] == {lab(space=s): n for s, n in per_space.items()}
    assert sum(got["spacelift_stacks_locked"].values()) == sum(
        1 for st in w.stacks.values() if st.lockedBy is not None
    )
    assert len(got["spacelift_stack_info"]) == len(w.stacks)
    # ... and the per-state counts come from the aggregates area
    by_state: dict[str, int] = {}
    for st in w.stacks.values():
        by_state[st.state] = by_state.get(st.state, 0) + 1
    assert got["spacelift_current_stacks_count_by_state"] == {
        lab(state=s): n for s, n in by_state.items()
    }
    assert unavailable(app) == {("stacks", "Stack.state"): "refused"}
    assert "not a machine user" in landing_page(app)

    # A new key (or the gate lifted) heals within one re-probe, without a restart.
    healthy.gate_fields(set())
    assert app.poll_all()
    assert "spacelift_stack_state" not in scrape(app)  # not asked again before the hour
    w.clock.advance(3601)
    assert app.poll_all()
    assert len(scrape(app)["spacelift_stack_state"]) == len(w.stacks)
    assert unavailable(app) == {}


def test_one_stack_listing_serves_both_the_stacks_and_the_runs_areas(
    healthy: Simulator,
) -> None:
    app = make_app(healthy, areas=("stacks", "runs"))
    pages = math.ceil(len(healthy.world.stacks) / stack_listing.PAGE)
    for _ in range(3):
        healthy.reset_counts()
        assert app.poll_all()
        assert healthy.requests["SpaceliftExporterStacks"] == pages  # not once per area
        healthy.world.advance(30)
    assert len(scrape(app)["spacelift_stack_info"]) == len(healthy.world.stacks)


def test_runs_are_counted_without_stack_states(healthy: Simulator) -> None:
    w = healthy.world
    healthy.gate_fields({"Stack.state"})
    app = make_app(healthy, areas=("runs",))
    t0 = w.clock.now()
    assert app.poll_all()
    sid = next(s.id for s in sorted(w.stacks.values(), key=lambda s: s.id) if s.worker_pool)
    run_to_end(w, w.trigger_run(sid, "TRACKED"))
    run_to_end(w, w.trigger_run(sid, "TASK"))
    w.advance(30)
    assert app.poll_all()
    got = scrape(app)["spacelift_runs_finished_total"]
    assert {k: v for k, v in got.items() if v} == truth_finished(w, t0)
    assert unavailable(app) == {("stacks", "Stack.state"): "refused"}


def test_failing_queues_keep_the_rest_of_the_runs_poll(healthy: Simulator) -> None:
    w = healthy.world
    app = make_app(healthy, areas=("runs",))
    t0 = w.clock.now()
    assert app.poll_all()
    sid = next(s.id for s in sorted(w.stacks.values(), key=lambda s: s.id) if s.worker_pool)
    run_to_end(w, w.trigger_run(sid, "TRACKED"))
    healthy.faults.http_status(502, operation="SpaceliftExporterRunQueues", times=5)
    assert not app.poll_all()
    (key,) = app.pollers
    st = app.store.get(key)
    assert st.partial and st.error_kind == "server_error"
    assert st.last_success == w.clock.now()  # fresh data served
    assert sum(scrape(app)["spacelift_runs_finished_total"].values()) == sum(
        truth_finished(w, t0).values()
    )
    healthy.faults.clear()
    assert app.poll_all()


def test_tasks_and_newest_first_history_counted_once_with_durations(healthy: Simulator) -> None:
    w = healthy.world
    w.config.runs_page_size = 10  # older pages must still be read
    app = make_app(healthy, areas=("runs",))
    assert app.poll_all()
    sid = next(
        s.id for s in sorted(w.stacks.values(), key=lambda s: s.id) if s.worker_pool is not None
    )
    made = []
    for _ in range(12):
        made.append(w.trigger_run(sid, "TASK"))
        run_to_end(w, made[-1], step=2)
    for _ in range(12):
        made.append(w.trigger_run(sid, "TRACKED"))
        run_to_end(w, made[-1], step=2)
    assert app.poll_all()
    assert app.poll_all()  # seen again: counted once
    got = scrape(app)
    for run_type in ("TASK", "TRACKED"):
        mine = [r for r in made if r.type == run_type]
        counted = sum(
            v
            for k, v in got["spacelift_runs_finished_total"].items()
            if ("run_type", run_type) in k and ("stack_id", sid) in k
        )
        assert counted == len(mine), run_type
        total = sum(
            v
            for k, v in got["spacelift_run_duration_seconds_sum"].items()
            if ("run_type", run_type) in k
        )
        assert total == sum(r.history[-1]["timestamp"] - r.createdAt for r in mine)


def test_runs_documents_select_the_queue_inline_and_order_it() -> None:
    assert "on SchedulableRunsConnection" not in runs.QUEUES_DOCUMENT
    assert runs.QUEUE_ORDER == {"field": "position", "direction": "ASC"}
