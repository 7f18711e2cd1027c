"""The aggregates area (Spacelift's ``metrics``) against the simulator over real HTTP."""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterator

import pytest

from exporter.areas import aggregates
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from tests._runs_support import lab, make_app, run_to_end, scrape

START = 1_780_000_000.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    world = World(WorldConfig(seed=5, stacks=40, activity=0.0), SimClock(start=START))
    with Simulator(world) as s:
        yield s


def test_official_names_and_values_equal_the_world(sim: Simulator) -> None:
    world = sim.world
    for sid in sorted(world.stacks)[:3]:
        run_to_end(world, world.trigger_run(sid, "PROPOSED"))
    app = make_app(sim, areas=("aggregates",))
    sim.reset_counts()
    assert app.poll_all()
    assert sim.requests["SpaceliftExporterAggregates"] == 1  # one request, whatever the size
    got = scrape(app)
    by_state = collections.Counter(st.state for st in world.stacks.values())
    assert got["spacelift_current_stacks_count_by_state"] == {
        lab(state=s): n for s, n in by_state.items()
    }
    drifted = sum(st.entityCount for st in world.stacks.values() if st.isDrifted)
    total = sum(st.entityCount for st in world.stacks.values())
    assert got["spacelift_current_resources_count_by_drift"] == {
        lab(state="DRIFTED"): drifted,
        lab(state="IN_SYNC"): total - drifted,
    }
    sizes = [st.entityCount for st in world.stacks.values()]
    assert got["spacelift_current_avg_stack_size_by_resource_count"] == {
        lab(): pytest.approx(statistics.fmean(sizes))
    }
    # Nanoseconds, as the API and the official exporter give them.
    durations = list(world.recent_durations)
    assert durations
    assert got["spacelift_current_median_run_duration"] == {
        lab(): pytest.approx(statistics.median(durations) * 1e9)
    }
    assert got["spacelift_current_average_run_duration"] == {
        lab(): pytest.approx(statistics.fmean(durations) * 1e9)
    }


def test_no_finished_run_yet_omits_the_durations_instead_of_zero(sim: Simulator) -> None:
    sim.world.recent_durations.clear()
    app = make_app(sim, areas=("aggregates",))
    assert app.poll_all()
    got = scrape(app)
    assert "spacelift_current_median_run_duration" not in got
    assert got["spacelift_current_stacks_count_by_state"]


def test_refused_metrics_is_reported_as_an_unavailable_field_not_an_outage(
    sim: Simulator,
) -> None:
    app = make_app(sim, areas=("aggregates",))
    assert app.poll_all()
    sim.gate_fields({"metrics"})
    assert app.poll_all()
    got = scrape(app)
    assert "spacelift_current_stacks_count_by_state" not in got
    assert got["spacelift_api_field_unavailable"] == {
        lab(area="aggregates", field="Query.metrics", reason="refused"): 1
    }
    assert got["spacelift_up"] == {lab(): 1}


def test_points_without_a_label_are_skipped_and_parsing_is_strict() -> None:
    snap = aggregates.parse(
        {
            "metrics": {
                "stacksCountByState": [
                    {"value": 3, "labels": ["FINISHED"]},
                    {"value": 9, "labels": []},
                ],
                "resourcesCountByDrift": [],
                "avgStackSizeByResourceCount": [{"value": 23, "labels": []}],
                "averageRunDuration": [],
                "medianRunDuration": [],
            }
        }
    )
    assert snap.points["stacksCountByState"] == (("FINISHED", 3.0), ("", 9.0))
    from exporter.errors import MalformedResponseError

    with pytest.raises(MalformedResponseError):
        aggregates.parse({"metrics": {"stacksCountByState": [{"value": "x", "labels": []}]}})


def test_run_lists_are_optional_fields_counted(sim: Simulator) -> None:
    world = sim.world
    sid = sorted(world.stacks)[0]
    world.trigger_run(sid, "TRACKED", needs_approval=True)
    app = make_app(sim, areas=("aggregates",))
    assert app.poll_all()
    got = scrape(app)
    waiting = sum(1 for r in world.active.values() if r.needsApproval)
    assert waiting >= 1
    assert got["spacelift_current_runs_needing_approval"] == {lab(): waiting}
    sim.gate_fields({"Metrics.needsApprovalRuns"})
    assert app.poll_all()
    got = scrape(app)
    assert "spacelift_current_runs_needing_approval" not in got
    assert got["spacelift_current_stacks_count_by_state"]  # the rest still served
    assert got["spacelift_api_field_unavailable"] == {
        lab(area="aggregates", field="Metrics.needsApprovalRuns", reason="refused"): 1
    }
